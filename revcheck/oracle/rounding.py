"""Integer-level building blocks of the oracle: decode, round once, add.

Everything works on NumPy integer arrays; no value is ever routed through a
float type (the one float use, :func:`bit_length`, only estimates a bit length
and is corrected exactly).  The helpers are shared by the PA operations of
:mod:`revcheck.oracle.pam`.

Representation.  A finite nonzero value is decoded into ``negative``,
``exponent`` ``E`` and ``fraction`` ``f`` with ``|x| = 2**E * (1 + f / 2**m)``,
``m = fmt.mantissa_bits``, ``0 <= f < 2**m``.  Subnormals are *normalised*:
their ``E`` lies below ``fmt.emin`` and ``f`` comes from the exact value
(docs/spec.md §2).  Zeros, infinities and NaNs are flagged, with ``E = f = 0``.

Rounding.  :func:`round_to_format` rounds an exact value
``significand * 2**(exponent - m - extra_bits)`` once to ``fmt``:
round-to-nearest-even, gradual underflow, overflow to ``±inf`` -- or to
``±max_finite`` for saturating formats (every format without infinity:
fp8_e4m3fn, the fnuz and the fp6/fp4 formats; like CUDA's
``__NV_SATFINITE``).  A zero result in a format without −0 (fnuz) is +0
(docs/spec.md D2.15): :func:`round_to_format`, :func:`special_bits` and
:func:`signed_bits` drop the sign of a zero there.

A ``significand`` may carry a *sticky bit* in its least significant position
(an OR of everything shifted out below it): rounding at any coarser position
then decides exactly as for the exact value.

Modes (names and validation: :mod:`revcheck.modes`).  ``"ieee"`` is the
above.  ``"ftz"``: subnormal *inputs* decode as zero of the same sign; a
result whose *exact* value has magnitude below the smallest normal becomes
zero of the result's sign (tininess before rounding).  The functions here
take a mode already validated by their callers.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from revcheck import formats
from revcheck.formats import FloatFormat
from revcheck.modes import check_mode

__all__ = [
    "Decoded",
    "add",
    "bit_length",
    "check_bits",
    "convert",
    "decode",
    "encode_exact",
    "nan_result",
    "round_scaled",
    "round_to_format",
    "signed_bits",
    "special_bits",
]

BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.int64]
UIntArray = npt.NDArray[np.unsignedinteger[Any]]

# Shifts are clamped here: NumPy (like C) leaves shifts by >= 64 undefined.  Every
# significand handled below is < 2**61, so a right shift by 62 already gives 0.
_MAX_SHIFT = 62
# Guard on the significands round_scaled hands on: keep them well below 2**61.
_MAX_EXTRA_BITS = 8
# Exponent given to zeros in add(): far below any normalised exponent of any format.
_ZERO_EXPONENT = -(1 << 20)


class Decoded(NamedTuple):
    """Fields of decoded bit patterns (all arrays of one shape)."""

    negative: BoolArray
    exponent: IntArray
    fraction: IntArray
    is_zero: BoolArray
    is_inf: BoolArray
    is_nan: BoolArray

    @property
    def is_finite_nonzero(self) -> BoolArray:
        return ~(self.is_zero | self.is_inf | self.is_nan)

    def significand(self, fmt: FloatFormat) -> IntArray:
        """``2**m + f`` for finite nonzero values, 0 elsewhere."""
        one = np.int64(1 << fmt.mantissa_bits)
        return np.where(self.is_finite_nonzero, self.fraction + one, np.int64(0))


def check_bits(bits: object, fmt: FloatFormat, name: str) -> UIntArray:
    """``bits`` as an array of ``fmt.uint_dtype``; anything else is a ``TypeError`` (never converted)."""
    if isinstance(bits, (np.ndarray, np.generic)):
        dtype = bits.dtype
        if dtype == fmt.uint_dtype:
            array = np.asarray(bits)
            if fmt.padding_bits and array.size and int(array.max()) >> fmt.width:
                raise ValueError(
                    f"{name} holds {fmt.name} patterns with a bit above bit {fmt.width - 1} set (largest "
                    f"{int(array.max()):#x}); {fmt.width}-bit patterns sit in the low bits of a "
                    f"{fmt.uint_dtype} with the rest zero (docs/spec.md D1.9)"
                )
            return array
        if dtype.kind == "f":
            hint = "pass bit patterns instead: revcheck.bits.to_bits(x)"
        else:
            hint = f"use {fmt.uint_dtype} bit patterns of {fmt.name} (revcheck.bits.to_bits)"
        raise TypeError(
            f"{name} has dtype {dtype}, but {fmt.name} bit patterns must be {fmt.uint_dtype}; {hint}"
        )
    raise TypeError(
        f"{name} is a {type(bits).__name__}; the oracle takes NumPy arrays of {fmt.uint_dtype} "
        f"({fmt.name} bit patterns), e.g. np.asarray(x, dtype=np.{fmt.uint_dtype})"
    )


def bit_length(values: IntArray) -> IntArray:
    """Exact ``int.bit_length`` of non-negative int64 values below 2**62, elementwise."""
    values = np.asarray(values, dtype=np.int64)
    _, estimate = np.frexp(values.astype(np.float64))
    estimate = estimate.astype(np.int64)
    # float64 rounding can only push the estimate up by one (to the next power of two).
    too_big = (estimate > 0) & ((values >> np.maximum(estimate - 1, 0)) == 0)
    return estimate - too_big


def decode(bits: UIntArray, fmt: FloatFormat, mode: str) -> Decoded:
    """Decode bit patterns of ``fmt`` (subnormals normalised; flushed to zero in ``"ftz"``)."""
    m = fmt.mantissa_bits
    dtype = fmt.uint_dtype.type
    negative = (bits >> dtype(fmt.width - 1)).astype(bool)
    magnitude = bits & dtype(fmt.magnitude_mask)
    no_specials = np.zeros(magnitude.shape, dtype=bool)
    if fmt.nan_encoding == "ieee":
        is_nan = magnitude > dtype(fmt.exponent_mask)
        is_inf = magnitude == dtype(fmt.exponent_mask)
    elif fmt.nan_encoding == "fn":
        is_nan, is_inf = magnitude == dtype(fmt.magnitude_mask), no_specials
    elif fmt.nan_encoding == "fnuz":  # the pattern of -0 is the one NaN
        is_nan, is_inf = bits == dtype(fmt.sign_mask), no_specials
    else:  # "none": every pattern is a number
        is_nan, is_inf = no_specials, no_specials
    magnitude64 = magnitude.astype(np.int64)
    biased = magnitude64 >> m
    field = magnitude64 & np.int64(fmt.mantissa_mask)
    is_subnormal = (biased == 0) & (field != 0)
    is_zero = (magnitude64 == 0) & ~is_nan
    if mode == "ftz":
        is_zero = is_zero | is_subnormal
        is_subnormal = np.zeros_like(is_subnormal)
    special = is_zero | is_inf | is_nan
    exponent = np.where(special, np.int64(0), biased - np.int64(fmt.bias))
    fraction = np.where(special, np.int64(0), field)
    if is_subnormal.any():
        # A subnormal's value is field * 2**(emin - m); shift its leading one up to bit m.
        shift = np.int64(m + 1) - bit_length(field)
        exponent = np.where(is_subnormal, np.int64(fmt.emin) - shift, exponent)
        normalised = (field << np.where(is_subnormal, shift, 0)) - np.int64(1 << m)
        fraction = np.where(is_subnormal, normalised, fraction)
    return Decoded(negative, exponent, fraction, is_zero, is_inf, is_nan)


def special_bits(negative: BoolArray | np.bool_, magnitude: int, fmt: FloatFormat) -> UIntArray:
    """Patterns ``±magnitude`` with the sign of ``negative`` (a zero is +0 where −0 does not exist)."""
    dtype = fmt.uint_dtype.type
    if magnitude == 0 and not fmt.has_negative_zero:
        return np.where(negative, dtype(0), dtype(0))
    return np.where(negative, dtype(fmt.sign_mask | magnitude), dtype(magnitude))


def signed_bits(negative: BoolArray, magnitude: npt.NDArray[Any], fmt: FloatFormat) -> UIntArray:
    """Patterns with the sign of ``negative`` and the magnitudes ``magnitude`` (zeros +0 without −0)."""
    negative = np.asarray(negative, dtype=bool)
    magnitude = np.asarray(magnitude).astype(fmt.uint_dtype)
    if not fmt.has_negative_zero:  # docs/spec.md D2.15: a zero result is +0
        negative = negative & (magnitude != 0)
    return np.where(negative, magnitude | fmt.uint_dtype.type(fmt.sign_mask), magnitude).astype(
        fmt.uint_dtype
    )


def nan_result(nan: BoolArray, negative: BoolArray, out: UIntArray, fmt: FloatFormat) -> UIntArray:
    """``out`` where ``nan`` is False; elsewhere the canonical NaN, or in a format without NaN the
    zero with the sign of ``negative`` (the XOR sign of the operands: docs/spec.md D2.16)."""
    if fmt.has_nan:
        return np.where(nan, fmt.uint_dtype.type(fmt.canonical_nan), out)
    return np.where(nan, special_bits(negative, 0, fmt), out)


def round_to_format(
    negative: BoolArray,
    exponent: IntArray,
    significand: IntArray,
    extra_bits: int | IntArray,
    fmt: FloatFormat,
    mode: str,
) -> UIntArray:
    """Round ``±significand * 2**(exponent - m - extra_bits)`` once to ``fmt``; return bit patterns.

    ``significand`` is 0 (giving a signed zero) or normalised: its leading one
    is bit ``m + extra_bits``, so ``exponent`` is ``floor(log2 |value|)``.  It
    must stay below 2**60.  Its lowest bit may be a sticky bit (module docstring).
    """
    m = fmt.mantissa_bits
    negative = np.asarray(negative, dtype=bool)
    exponent = np.asarray(exponent, dtype=np.int64)
    significand = np.asarray(significand, dtype=np.int64)
    biased = exponent + np.int64(fmt.bias)
    # One more low bit makes every shift >= 1, so "half" below is always a real bit.
    doubled = significand << np.int64(1)
    shift = np.minimum(np.int64(1) + extra_bits + np.maximum(np.int64(1) - biased, 0), _MAX_SHIFT)
    quotient = doubled >> shift
    remainder = doubled - (quotient << shift)
    half = np.int64(1) << (shift - 1)
    # Round half to even: up when remainder > half, or == half with an odd quotient.
    quotient = quotient + ((remainder + (quotient & 1)) > half)
    # The code of the result is the integer count of quanta plus the exponent field offset; a
    # quotient that rounded up to 2**(m+1) carries into the exponent by itself.
    field_offset = (np.clip(biased, 1, fmt.max_biased_exponent) - 1).astype(np.uint64) << np.uint64(m)
    code = field_offset + quotient.astype(np.uint64)
    overflow = (biased > fmt.max_biased_exponent) | (code > np.uint64(fmt.max_finite))
    code = np.where(overflow, np.uint64(fmt.overflow_magnitude), code)
    underflow_to_zero = significand == 0
    if mode == "ftz":
        underflow_to_zero = underflow_to_zero | (biased < 1)
    code = np.where(underflow_to_zero, np.uint64(0), code)
    if not fmt.has_negative_zero:  # docs/spec.md D2.15: a zero result is +0
        negative = negative & (code != 0)
    code = code | np.where(negative, np.uint64(fmt.sign_mask), np.uint64(0))
    return code.astype(fmt.uint_dtype)


def round_scaled(
    negative: BoolArray, magnitude: IntArray, scale: int | IntArray, fmt: FloatFormat, mode: str
) -> UIntArray:
    """Round ``±magnitude * 2**scale`` (``0 <= magnitude < 2**62``, any bit length) once to ``fmt``.

    ``magnitude``'s lowest bit may be a sticky bit.
    """
    m = fmt.mantissa_bits
    magnitude = np.asarray(magnitude, dtype=np.int64)
    top = bit_length(magnitude) - 1
    # Left-align short magnitudes to bit m (exact); right-align long ones to bit m + 8 with sticky.
    left = np.maximum(np.int64(m) - top, 0)
    right = np.maximum(top - np.int64(m + _MAX_EXTRA_BITS), 0)
    kept = magnitude >> right
    sticky = (kept << right) != magnitude
    aligned = np.where(top < 0, np.int64(0), (kept | sticky) << left)
    extra = np.maximum(top - np.int64(m), 0) - right
    exponent = top + scale
    return round_to_format(negative, exponent, aligned, extra, fmt, mode)


def encode_exact(decoded: Decoded, source: FloatFormat, target: FloatFormat) -> UIntArray:
    """Re-encode values decoded from ``source`` in ``target``, which must hold them all exactly.

    NaN becomes ``target``'s canonical NaN; infinities stay infinities.
    """
    if target.mantissa_bits < source.mantissa_bits:
        raise ValueError(f"{target.name} cannot hold every {source.name} value exactly")
    widened = decoded.significand(source) << np.int64(target.mantissa_bits - source.mantissa_bits)
    out = round_to_format(decoded.negative, decoded.exponent, widened, 0, target, "ieee")
    out = np.where(decoded.is_inf, special_bits(decoded.negative, target.overflow_magnitude, target), out)
    return np.where(decoded.is_nan, target.uint_dtype.type(target.canonical_nan), out)


def add(x_bits: UIntArray, y_bits: UIntArray, fmt: FloatFormat, mode: str) -> UIntArray:
    """``fl(x + y)`` in ``fmt`` on bit patterns: exact sum rounded once (RNE), IEEE special cases.

    An exact zero sum is +0 unless both addends are -0.  In ``"ftz"`` subnormal
    addends count as zero and a sum below the smallest normal becomes zero of
    the exact sum's sign.  NaN results are canonical.
    """
    m = fmt.mantissa_bits
    x = decode(x_bits, fmt, mode)
    y = decode(y_bits, fmt, mode)
    x_exponent = np.where(x.is_zero, np.int64(_ZERO_EXPONENT), x.exponent)
    y_exponent = np.where(y.is_zero, np.int64(_ZERO_EXPONENT), y.exponent)
    x_significand = x.significand(fmt)
    y_significand = y.significand(fmt)
    x_is_bigger = (x_exponent > y_exponent) | ((x_exponent == y_exponent) & (x_significand >= y_significand))
    big_exponent = np.where(x_is_bigger, x_exponent, y_exponent)
    small_exponent = np.where(x_is_bigger, y_exponent, x_exponent)
    big_negative = np.where(x_is_bigger, x.negative, y.negative)
    small_negative = np.where(x_is_bigger, y.negative, x.negative)
    guard = np.int64(3)
    big = np.where(x_is_bigger, x_significand, y_significand) << guard
    small_full = np.where(x_is_bigger, y_significand, x_significand) << guard
    distance = np.minimum(big_exponent - small_exponent, _MAX_SHIFT)
    small = small_full >> distance
    small = small | ((small << distance) != small_full)
    total = np.where(big_negative == small_negative, big + small, big - small)
    scale = big_exponent - np.int64(m) - guard
    out = round_scaled(big_negative, total, scale, fmt, mode)
    exact_zero = total == 0
    out = np.where(exact_zero, special_bits(x.negative & y.negative, 0, fmt), out)
    any_inf = x.is_inf | y.is_inf
    inf_negative = np.where(x.is_inf, x.negative, y.negative)
    out = np.where(any_inf, special_bits(inf_negative, fmt.overflow_magnitude, fmt), out)
    nan = x.is_nan | y.is_nan | (x.is_inf & y.is_inf & (x.negative != y.negative))
    return nan_result(nan, np.zeros_like(nan), out, fmt).astype(fmt.uint_dtype)


def convert(bits: object, source: object, target: object, *, mode: str = "ieee") -> UIntArray:
    """Bit patterns of ``source`` rounded once to ``target`` (round to nearest even): a cast.

    Finite values are rounded by :func:`round_scaled` (gradual underflow in
    ``"ieee"``; in ``"ftz"`` subnormal inputs are zeros and results whose exact
    value is below ``target``'s smallest normal are zeros); ±inf and overflow
    give ±inf, or ±max_finite in a format without infinity (docs/spec.md D1.1);
    NaN gives ``target``'s canonical NaN (D1.2); a zero keeps its sign (+0 in a
    format without −0).

    Raises
    ------
    ValueError
        For a NaN input when ``target`` has no NaN (fp6, fp4): there is no value
        to give it (docs/spec.md D1.8).
    TypeError
        For ``bits`` that are not ``source`` bit patterns.

    Examples
    --------
    >>> import numpy as np
    >>> from revcheck.bits import to_bits
    >>> [hex(b) for b in convert(to_bits(np.array([1.0, 5.0, 1e9, -1e-9])), "fp64", "fp4_e2m1fn")]
    ['0x2', '0x6', '0x7', '0x8']
    """
    check_mode(mode)
    src, dst = formats.get(source), formats.get(target)
    array = check_bits(bits, src, "bits")
    x = decode(array, src, mode)
    if not dst.has_nan and bool(x.is_nan.any()):
        first = tuple(int(i) for i in np.argwhere(x.is_nan)[0]) if x.is_nan.ndim else ()
        raise ValueError(
            f"{int(x.is_nan.sum())} NaN input(s) (first at index {first}) but {dst.name} has no NaN; "
            "replace them first (docs/spec.md D1.8)"
        )
    out = round_scaled(x.negative, x.significand(src), x.exponent - np.int64(src.mantissa_bits), dst, mode)
    out = np.where(x.is_zero, special_bits(x.negative, 0, dst), out)
    out = np.where(x.is_inf, special_bits(x.negative, dst.overflow_magnitude, dst), out)
    return nan_result(x.is_nan, x.negative, out, dst).astype(dst.uint_dtype)
