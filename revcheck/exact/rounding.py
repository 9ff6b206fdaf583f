"""Exact values of bit patterns and one rounding back, with Fractions (independent of the oracle).

Written from the format's fields only; slow and simple on purpose.  A decoded
value is an :class:`Exact`: a kind (``"nan" "inf" "zero" "finite"``), a sign
and, for finite values, the magnitude as a :class:`fractions.Fraction`.

:func:`round_fraction` rounds an exact magnitude to the nearest representable
value (ties to the even significand), with the subnormal grid below
``2^emin``; a result above the largest finite value overflows to infinity, or
saturates to the largest finite value in a format without infinity.  Mode
``"ftz"``: subnormal inputs decode as zero of their sign and an exact result
below ``2^emin`` in magnitude becomes zero of its sign.

Special encodings follow ``fmt.nan_encoding`` (docs/spec.md D1.6): ``"fnuz"``
formats read the pattern of −0 as their one NaN and write every zero as +0;
``"none"`` formats (fp6, fp4) have no NaN and no infinity at all.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from functools import cache, lru_cache

from revcheck import formats
from revcheck.formats import FloatFormat

__all__ = [
    "Exact",
    "convert",
    "decode",
    "encode_special",
    "floor_log2",
    "max_finite_value",
    "round_fraction",
    "value_of",
]


@dataclass(frozen=True)
class Exact:
    """One decoded value."""

    kind: str
    negative: bool
    magnitude: Fraction = Fraction(0)

    @property
    def signed(self) -> Fraction:
        return -self.magnitude if self.negative else self.magnitude


def _fmt(fmt: object) -> FloatFormat:
    return formats.get(fmt)


@lru_cache(maxsize=1 << 17)
def decode(bits: int, fmt: object, mode: str = "ieee") -> Exact:
    """The exact value of one bit pattern of ``fmt``."""
    f = _fmt(fmt)
    bits = int(bits)
    if not 0 <= bits < (1 << f.width):
        raise ValueError(f"{bits:#x} is not a {f.width}-bit pattern of {f.name}")
    negative = bool(bits >> (f.width - 1))
    exponent_field = (bits >> f.mantissa_bits) & ((1 << f.exponent_bits) - 1)
    mantissa_field = bits & ((1 << f.mantissa_bits) - 1)
    all_ones = (1 << f.exponent_bits) - 1
    if f.nan_encoding == "ieee" and exponent_field == all_ones:
        return Exact("nan", negative) if mantissa_field else Exact("inf", negative)
    if f.nan_encoding == "fn" and exponent_field == all_ones and mantissa_field == (1 << f.mantissa_bits) - 1:
        return Exact("nan", negative)
    if f.nan_encoding == "fnuz" and bits == 1 << (f.width - 1):
        return Exact("nan", True)
    if exponent_field == 0:
        if mantissa_field == 0 or mode == "ftz":
            return Exact("zero", negative)
        return Exact("finite", negative, Fraction(mantissa_field) * _pow2(1 - f.bias - f.mantissa_bits))
    significand = Fraction((1 << f.mantissa_bits) + mantissa_field, 1 << f.mantissa_bits)
    return Exact("finite", negative, significand * _pow2(exponent_field - f.bias))


def value_of(bits: int, fmt: object, mode: str = "ieee") -> Fraction | float:
    """Exact value as a Fraction, or a float for NaN, infinities and zeros (keeps -0.0)."""
    x = decode(bits, fmt, mode)
    if x.kind == "nan":
        return math.nan
    if x.kind == "inf":
        return -math.inf if x.negative else math.inf
    if x.kind == "zero":
        return -0.0 if x.negative else 0.0
    return x.signed


def _pow2(n: int) -> Fraction:
    return Fraction(2) ** n


def floor_log2(value: Fraction) -> int:
    """``floor(log2(value))`` for ``value > 0``, exactly."""
    e = value.numerator.bit_length() - value.denominator.bit_length()
    while _pow2(e) > value:
        e -= 1
    while _pow2(e + 1) <= value:
        e += 1
    return e


@cache
def max_finite_value(fmt: object) -> Fraction:
    """The largest finite value of ``fmt``."""
    f = _fmt(fmt)
    top_field = (1 << f.exponent_bits) - (2 if f.nan_encoding == "ieee" else 1)
    # fn formats lose the all-ones significand of the top binade to NaN; fnuz and none keep it.
    top_mantissa = (1 << f.mantissa_bits) - (2 if f.nan_encoding == "fn" else 1)
    return Fraction((1 << f.mantissa_bits) + top_mantissa, 1 << f.mantissa_bits) * _pow2(top_field - f.bias)


def encode_special(kind: str, negative: bool, fmt: object) -> int:
    """Bits of ``"nan"`` (canonical, sign 0), ``"inf"`` (±inf or ±max finite) or ``"zero"``.

    A zero is +0 in a format without −0 (fnuz); ``"nan"`` in a format without NaN
    is a ``ValueError`` (its callers decide what replaces it: docs/spec.md D2.16).
    """
    f = _fmt(fmt)
    sign = (1 << (f.width - 1)) if negative else 0
    all_ones = (1 << f.exponent_bits) - 1
    if kind == "nan":
        if f.nan_encoding == "ieee":
            return (all_ones << f.mantissa_bits) | (1 << (f.mantissa_bits - 1))
        if f.nan_encoding == "fnuz":
            return 1 << (f.width - 1)
        if f.nan_encoding == "none":
            raise ValueError(f"{f.name} has no NaN")
        return (all_ones << f.mantissa_bits) | ((1 << f.mantissa_bits) - 1)
    if kind == "inf":
        if f.has_inf:
            return sign | (all_ones << f.mantissa_bits)
        return sign | _encode_finite(max_finite_value(f), f)
    if kind == "zero":
        return 0 if f.nan_encoding == "fnuz" else sign
    raise ValueError(f"unknown special kind {kind!r}")


def _encode_finite(magnitude: Fraction, f: FloatFormat) -> int:
    """Bits of a representable positive magnitude."""
    emin = 1 - f.bias
    e = floor_log2(magnitude)
    if e < emin:
        field = magnitude / _pow2(emin - f.mantissa_bits)
        assert field.denominator == 1
        return int(field)
    fraction = magnitude / _pow2(e) - 1
    field = fraction * (1 << f.mantissa_bits)
    assert field.denominator == 1
    return ((e + f.bias) << f.mantissa_bits) | int(field)


def round_fraction(negative: bool, magnitude: Fraction, fmt: object, mode: str = "ieee") -> int:
    """Round ``±magnitude`` (exact, ``>= 0``) once to ``fmt``; return the bit pattern."""
    f = _fmt(fmt)
    if magnitude == 0:
        return encode_special("zero", negative, f)
    emin = 1 - f.bias
    e = floor_log2(magnitude)
    if mode == "ftz" and e < emin:
        return encode_special("zero", negative, f)
    quantum = _pow2(max(e, emin) - f.mantissa_bits)
    count = round(magnitude / quantum)  # Fraction.__round__: ties to even
    rounded = count * quantum
    if rounded > max_finite_value(f):
        return encode_special("inf", negative, f)
    if rounded == 0:
        return encode_special("zero", negative, f)
    sign = (1 << (f.width - 1)) if negative else 0
    return sign | _encode_finite(rounded, f)


def convert(bits: int, source: object, target: object, mode: str = "ieee") -> int:
    """One pattern of ``source`` rounded once to ``target``: the exact model of a cast.

    NaN gives ``target``'s canonical NaN (a ``ValueError`` where ``target`` has
    none); ±inf gives ±inf or ±max finite; a zero keeps its sign (+0 in fnuz).
    """
    x = decode(bits, source, mode)
    if x.kind == "finite":
        return round_fraction(x.negative, x.magnitude, target, mode)
    return encode_special(x.kind, x.negative, target)
