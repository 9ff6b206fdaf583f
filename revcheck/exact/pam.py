"""Exact model of the PA operations: scalar Python ints in and out, Fractions inside (level R).

Deliberately independent of the oracle's arithmetic, so that the two can check
each other: this package never imports :mod:`revcheck.oracle`, and its decoding
and rounding (:mod:`revcheck.exact.rounding`) are written anew from the format's
fields, with Fractions instead of integer bit manipulation.  Each value is
decoded to an exact rational, split as ``|x| = 2^E·(1 + M)``, the formula of
docs/spec.md §2 is evaluated exactly, and the result is rounded once with
:func:`revcheck.exact.rounding.round_fraction`.

What it does share are *policies*, which are definitions rather than arithmetic
and must not be answered differently by two modules: the mode names and their
validation (:mod:`revcheck.modes`), the formats' fields and the accumulator
format of a matrix product (:mod:`revcheck.formats`).  Rounding code must never
be shared: a bug in it would then pass both models.

The semantic decisions are the oracle's (see :mod:`revcheck.oracle.pam`),
restated here as code: formats without infinity saturate to ±max finite where
±inf would be, NaN results are the canonical NaN, ftz flushes subnormal inputs
and results whose exact value is below ``2^emin``; in a format without −0
every zero is +0 (:func:`revcheck.exact.rounding.encode_special`), and in a
format without NaN the NaN case ``±0 ⊘ ±0`` is the zero with the XOR sign
(docs/spec.md D2.15, D2.16).  ``pam_matmul`` takes small 2-D arrays (or
nested lists) of ints.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any

import numpy as np

from revcheck import formats
from revcheck.exact.rounding import (
    Exact,
    decode,
    encode_special,
    floor_log2,
    max_finite_value,
    round_fraction,
)
from revcheck.formats import FloatFormat, accumulator_format
from revcheck.modes import check_mode

__all__ = [
    "accumulator_format",
    "add",
    "pa_exp2",
    "pa_log2",
    "pam_div",
    "pam_matmul",
    "pam_mul",
    "pam_mul_grad",
    "pam_mul_value",
    "split",
]


def _setup(fmt: object, mode: str) -> FloatFormat:
    check_mode(mode)
    return formats.get(fmt)


def _nan(negative: bool, f: FloatFormat) -> int:
    """A NaN result: the canonical NaN, or where the format has none the zero of sign ``negative``."""
    if f.nan_encoding == "none":
        return encode_special("zero", negative, f)
    return encode_special("nan", False, f)


def split(magnitude: Fraction) -> tuple[int, Fraction]:
    """``(E, M)`` with ``magnitude = 2^E·(1 + M)``, ``0 <= M < 1``."""
    e = floor_log2(magnitude)
    return e, magnitude / Fraction(2) ** e - 1


def pam_mul_value(a: int, b: int, fmt: object) -> Fraction:
    """The exact (unrounded) signed value of ``a ⊡ b`` for finite nonzero operands."""
    x, y = decode(a, fmt), decode(b, fmt)
    if x.kind != "finite" or y.kind != "finite":
        raise ValueError("pam_mul_value needs finite nonzero operands")
    ea, ma = split(x.magnitude)
    eb, mb = split(y.magnitude)
    if ma + mb < 1:
        value = Fraction(2) ** (ea + eb) * (1 + ma + mb)
    else:
        value = Fraction(2) ** (ea + eb + 1) * (ma + mb)
    return -value if x.negative != y.negative else value


def pam_mul(a: int, b: int, fmt: object, mode: str = "ieee") -> int:
    """``a ⊡ b``."""
    f = _setup(fmt, mode)
    x, y = decode(a, f, mode), decode(b, f, mode)
    negative = x.negative != y.negative
    if "nan" in (x.kind, y.kind) or {x.kind, y.kind} == {"inf", "zero"}:
        return encode_special("nan", False, f)
    if "inf" in (x.kind, y.kind):
        return encode_special("inf", negative, f)
    if "zero" in (x.kind, y.kind):
        return encode_special("zero", negative, f)
    ea, ma = split(x.magnitude)
    eb, mb = split(y.magnitude)
    if ma + mb < 1:
        exact = Fraction(2) ** (ea + eb) * (1 + ma + mb)
    else:
        exact = Fraction(2) ** (ea + eb + 1) * (ma + mb)
    return round_fraction(negative, exact, f, mode)


def pam_div(a: int, b: int, fmt: object, mode: str = "ieee") -> int:
    """``a ⊘ b``."""
    f = _setup(fmt, mode)
    x, y = decode(a, f, mode), decode(b, f, mode)
    negative = x.negative != y.negative
    if "nan" in (x.kind, y.kind) or x.kind == y.kind == "zero" or x.kind == y.kind == "inf":
        return _nan(negative, f)
    if x.kind == "inf" or y.kind == "zero":
        return encode_special("inf", negative, f)
    if x.kind == "zero" or y.kind == "inf":
        return encode_special("zero", negative, f)
    ea, ma = split(x.magnitude)
    eb, mb = split(y.magnitude)
    if ma >= mb:
        exact = Fraction(2) ** (ea - eb) * (1 + ma - mb)
    else:
        exact = Fraction(2) ** (ea - eb - 1) * (2 + ma - mb)
    return round_fraction(negative, exact, f, mode)


def pa_log2(x_bits: int, fmt: object, mode: str = "ieee") -> int:
    """``E + M`` of ``|x|``."""
    f = _setup(fmt, mode)
    x = decode(x_bits, f, mode)
    if x.kind == "nan":
        return encode_special("nan", False, f)
    if x.kind == "zero":
        return encode_special("inf", True, f)
    if x.kind == "inf":
        return encode_special("inf", False, f)
    e, m = split(x.magnitude)
    value = e + m
    return round_fraction(value < 0, abs(value), f, mode)


def pa_exp2(y_bits: int, fmt: object, mode: str = "ieee") -> int:
    """``2^floor(y)·(1 + y - floor(y))``."""
    f = _setup(fmt, mode)
    y = decode(y_bits, f, mode)
    if y.kind == "nan":
        return encode_special("nan", False, f)
    if y.kind == "inf":
        return encode_special("zero", False, f) if y.negative else encode_special("inf", False, f)
    value = y.signed
    emin, emax = 1 - f.bias, _emax(f)
    # Beyond these, 2^floor(y) alone overflows, or is below half the smallest subnormal.
    if value >= emax + 2:
        return encode_special("inf", False, f)
    if value <= emin - f.mantissa_bits - 3:
        return encode_special("zero", False, f)
    n = math.floor(value)
    exact = Fraction(2) ** n * (1 + value - n)
    return round_fraction(False, exact, f, mode)


def _emax(f: FloatFormat) -> int:
    return floor_log2(max_finite_value(f))


def pam_mul_grad(a: int, b: int, fmt: object, mode: str = "ieee") -> int:
    """``d(a ⊡ b)/da = sign(b)·2^(Eb + [Ma + Mb >= 1])`` (special cases as in the oracle)."""
    f = _setup(fmt, mode)
    x, y = decode(a, f, mode), decode(b, f, mode)
    if "nan" in (x.kind, y.kind) or {x.kind, y.kind} == {"inf", "zero"}:
        return encode_special("nan", False, f)
    if y.kind == "zero":
        return encode_special("zero", y.negative, f)
    if y.kind == "inf":
        return encode_special("inf", y.negative, f)
    ma = split(x.magnitude)[1] if x.kind == "finite" else Fraction(0)
    eb, mb = split(y.magnitude)
    return round_fraction(y.negative, Fraction(2) ** (eb + (1 if ma + mb >= 1 else 0)), f, mode)


def add(x_bits: int, y_bits: int, fmt: object, mode: str = "ieee") -> int:
    """IEEE ``fl(x + y)``, round to nearest even (ftz: flushed inputs and tiny sums)."""
    f = _setup(fmt, mode)
    x, y = decode(x_bits, f, mode), decode(y_bits, f, mode)
    if "nan" in (x.kind, y.kind) or (x.kind == y.kind == "inf" and x.negative != y.negative):
        return encode_special("nan", False, f)
    if x.kind == "inf" or y.kind == "inf":
        return encode_special("inf", x.negative if x.kind == "inf" else y.negative, f)
    total = x.signed + y.signed
    if total == 0:
        return encode_special("zero", x.negative and y.negative, f)
    return round_fraction(total < 0, abs(total), f, mode)


def _widen(bits: int, source: FloatFormat, target: FloatFormat, mode: str) -> int:
    x: Exact = decode(bits, source, mode)
    if x.kind != "finite":
        return encode_special(x.kind, x.negative, target)
    return round_fraction(x.negative, x.magnitude, target, "ieee")


def pam_matmul(A: Any, B: Any, fmt: object, mode: str = "ieee") -> list[list[int]]:
    """Sequential PAM matrix product of an M×K and a K×N array of ints, in the accumulator format."""
    f = _setup(fmt, mode)
    acc = accumulator_format(f)
    A_array, B_array = np.asarray(A, dtype=object), np.asarray(B, dtype=object)
    if A_array.ndim != 2 or B_array.ndim != 2 or A_array.shape[1] != B_array.shape[0]:
        raise ValueError(f"need M×K and K×N operands, got shapes {A_array.shape} and {B_array.shape}")
    (rows, depth), width = A_array.shape, B_array.shape[1]
    result = []
    for i in range(rows):
        out_row = []
        for j in range(width):
            total = 0  # +0.0
            for k in range(depth):
                a = _widen(int(A_array[i, k]), f, acc, mode)
                b = _widen(int(B_array[k, j]), f, acc, mode)
                total = add(total, pam_mul(a, b, acc, mode), acc, mode)
            out_row.append(total)
        result.append(out_row)
    return result
