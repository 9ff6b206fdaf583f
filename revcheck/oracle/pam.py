"""The PAM oracle: piecewise-affine operations on bit patterns, pure NumPy (docs/spec.md §2).

Every function takes NumPy arrays of ``fmt.uint_dtype`` (bit patterns of any
format of :mod:`revcheck.formats`), broadcasts them like a ufunc, and returns
bit patterns.  Each result is the exact piecewise-affine function of the
inputs rounded ONCE to the output format, round-to-nearest-even.  Nothing is
converted silently: a wrong dtype, an unknown mode or order is an error.

Decisions (beyond the letter of docs/spec.md §2):

* Modes (names and validation: :mod:`revcheck.modes`).  ``mode="ieee"``:
  gradual underflow, overflow to ±inf.  ``mode="ftz"``: subnormal INPUTS are
  zero of the same sign; a result whose EXACT value has magnitude below the
  smallest normal is zero of the result's sign (tininess before rounding);
  otherwise as ``"ieee"``.
* A format without infinity (fp8_e4m3fn, the fnuz, fp6 and fp4 formats):
  every result that would be ±inf (overflow, ``x ⊘ ±0``, ``pa_log2(0)``,
  ``pa_exp2`` overflow) is ±max_finite (saturation, like CUDA's
  ``__NV_SATFINITE``; docs/spec.md D1.1, D2.17).
* A computed NaN is always the format's canonical quiet NaN
  (``fmt.canonical_nan``, sign 0; fnuz: ``0x80``), whatever NaN came in.  In
  a format without NaN (fp6, fp4) the one NaN case that can arise, ``±0 ⊘ ±0``,
  is the zero with the XOR sign (D2.16).
* A zero result in a format without −0 (fnuz) is +0 (D2.15).
* ``pa_log2`` and ``pa_exp2`` return the input's format, rounded once.
  ``pa_log2(±0) = -inf``, ``pa_log2(±inf) = +inf``, the sign of ``x`` is
  ignored, ``pa_log2(1) = +0``.  ``pa_exp2(±0) = 1``, ``pa_exp2(-inf) = +0``.
* ``pam_mul_grad(a, b)`` = ``sign(b) · 2^(Eb + [Ma + Mb >= 1])``.  Where the
  forward result is NaN (NaN in, ``±inf ⊡ ±0``, ``±0 ⊡ ±inf``) it is NaN; for
  ``b = ±0`` (``a`` finite) it is zero with the sign of ``b``; for ``b = ±inf``
  (``a`` nonzero) it is ±inf with the sign of ``b``; for ``a = ±0`` or
  ``a = ±inf`` the formula is used with ``Ma = 0`` (their fraction field).
* ``pam_matmul``: inputs are first flushed (``"ftz"``, with the INPUT format's
  subnormals) and widened exactly to :func:`accumulator_format` (the one
  definition is :func:`revcheck.formats.accumulator_format`); products are
  ``pam_mul`` in the accumulator format (same mode), then summed sequentially
  ``acc = +0.0; acc = fl(acc + p_k)``, RNE.  In ``"ftz"`` a partial sum below
  the accumulator's smallest normal becomes zero of the exact sum's sign.  An
  exact zero sum is +0 unless both addends are -0 (IEEE RNE).

Speed: ``pam_mul``/``pam_div`` first compute every element by the integer
identity ``I(|a|) ± I(|b|) ∓ I(1.0)`` in the patterns' own width (wrapping
arithmetic, see :func:`_affine_fast`), prove from the operands' magnitude
extremes that every input and result is normal (the common case, a few
passes), else test each element and redo those where an input or the result
is not normal through the general path.  Equal-shape operands larger than
``_FAST_BLOCK`` go block by block (:func:`_affine_blocks`), so that the passes
after the first find their block in the cache.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import numpy as np
import numpy.typing as npt

from revcheck import formats
from revcheck.formats import FloatFormat, accumulator_format
from revcheck.modes import check_mode
from revcheck.oracle import rounding
from revcheck.oracle.rounding import (
    Decoded,
    check_bits,
    decode,
    nan_result,
    round_to_format,
    signed_bits,
    special_bits,
)

__all__ = [
    "ORDERS",
    "accumulator_format",
    "gamma",
    "pa_exp2",
    "pa_log2",
    "pam_div",
    "pam_matmul",
    "pam_matmul_bound",
    "pam_mul",
    "pam_mul_grad",
    "within_bound",
]

ORDERS = ("sequential",)
_BLOCK = 1 << 15
# Elements per block of the fast path: two operand blocks and a result block (fp32: 768 KiB) stay in a
# core's L2 cache, and a block is long enough that the per-call cost of a ufunc stays small.
_FAST_BLOCK = 1 << 16

UIntArray = npt.NDArray[np.unsignedinteger[Any]]
ObjectArray = npt.NDArray[np.object_]


# ---- elementwise operations ------------------------------------------------------------


def _prepare(arrays: dict[str, object], fmt: object, mode: object) -> tuple[FloatFormat, list[UIntArray]]:
    fmt_ = formats.get(fmt)
    check_mode(mode)
    return fmt_, [check_bits(array, fmt_, name) for name, array in arrays.items()]


# Reductions over a float view are faster than over the unsigned one; only for widths NumPy has natively.
_FLOAT_VIEWS: dict[np.dtype[Any], np.dtype[Any]] = {
    np.dtype(np.uint32): np.dtype(np.float32),
    np.dtype(np.uint64): np.dtype(np.float64),
}


def _magnitude_extremes(x: UIntArray, fmt: FloatFormat, scratch: UIntArray) -> tuple[int, int]:
    """Smallest and largest ``I(|x|)`` over all elements (``scratch``: a buffer of ``x``'s size).

    Nonnegative patterns order like the floats they encode, so min/max may run on a
    float view.  A NaN magnitude makes both float reductions NaN, whose pattern
    exceeds ``max_finite``: callers then see a non-normal largest magnitude, as they
    should.  (Flush-denormal CPU modes can only make a subnormal win the minimum.)
    """
    scratch = scratch[: x.size].reshape(x.shape)
    np.bitwise_and(x, fmt.uint_dtype.type(fmt.magnitude_mask), out=scratch)
    float_dtype = _FLOAT_VIEWS.get(scratch.dtype)
    if float_dtype is None:
        return int(scratch.min()), int(scratch.max())
    floats = scratch.view(float_dtype)
    low, high = floats.min(), floats.max()
    return int(low.view(scratch.dtype)), int(high.view(scratch.dtype))


def _extremes_by_order(x: UIntArray, fmt: FloatFormat) -> tuple[int, int]:
    """Smallest and largest ``I(|x|)`` from four reductions of ``x`` itself: no pass writes memory.

    Only for patterns that fill their container (the sign bit is the container's top bit).  In the
    unsigned order every positive pattern lies below every negative one; in the signed (two's
    complement) order every negative one lies below every positive one, and within one sign both
    orders follow the magnitude.  So the unsigned minimum is the smallest positive magnitude (or,
    with no positive element, the smallest negative one) and the signed minimum the smallest
    negative magnitude (or the smallest positive one): the smaller of their magnitudes is the
    smallest of all.  The maxima likewise.  Integer comparisons only: no NaN or flush-denormal
    question arises.
    """
    signed = x.view(np.dtype(f"i{x.dtype.itemsize}"))
    mask = fmt.magnitude_mask
    low = min(int(np.minimum.reduce(x)) & mask, int(np.minimum.reduce(signed)) & mask)
    high = max(int(np.maximum.reduce(x)) & mask, int(np.maximum.reduce(signed)) & mask)
    return low, high


def _range_proven(a: tuple[int, int], b: tuple[int, int], fmt: FloatFormat, divide: bool) -> bool:
    """Whether magnitudes in ``[a_low, a_high]`` and ``[b_low, b_high]`` are all normal and so is every
    ``t = I(|a|) ± I(|b|) ∓ I(1)`` they can make (then the integer identity is exact everywhere)."""
    (a_low, a_high), (b_low, b_high) = a, b
    operands_normal = min(a_low, b_low) >= fmt.min_normal and max(a_high, b_high) <= fmt.max_finite
    if divide:
        t_low, t_high = a_low - b_high + fmt.one, a_high - b_low + fmt.one
    else:
        t_low, t_high = a_low + b_low - fmt.one, a_high + b_high - fmt.one
    return operands_normal and fmt.min_normal <= t_low and t_high <= fmt.max_finite


def _identity(a: UIntArray, b: UIntArray, fmt: FloatFormat, divide: bool, out: UIntArray) -> None:
    """``out = a ± b ∓ I(1)`` in wrapping arithmetic of the container's width."""
    one = fmt.uint_dtype.type(fmt.one)
    if divide:
        np.subtract(a, b, out=out)
        out += one
    else:
        np.add(a, b, out=out)
        out -= one
    if fmt.padding_bits:  # patterns narrower than their container wrap at 2**width, not at the container
        out &= fmt.uint_dtype.type(fmt.pattern_mask)


def _affine_blocks(a: UIntArray, b: UIntArray, fmt: FloatFormat, divide: bool) -> tuple[UIntArray, Any]:
    """:func:`_affine_fast` for equal shapes, one ``_FAST_BLOCK`` at a time; same (bits, valid).

    Per block, the range proof of :func:`_affine_fast` from :func:`_extremes_by_order` (reads only),
    then the identity, both while the block is in the cache; a block the proof does not cover gets the
    exact per-element test of :func:`_element_validity`.
    """
    result: UIntArray = np.empty(a.shape, dtype=fmt.uint_dtype)
    flat_a, flat_b, flat_result = a.reshape(-1), b.reshape(-1), result.reshape(-1)
    valid = None
    for start in range(0, flat_a.size, _FAST_BLOCK):
        block = slice(start, start + _FAST_BLOCK)
        x, y, out = flat_a[block], flat_b[block], flat_result[block]
        proven = _range_proven(_extremes_by_order(x, fmt), _extremes_by_order(y, fmt), fmt, divide)
        _identity(x, y, fmt, divide, out)
        if proven:
            continue
        block_valid = _element_validity(x, y, out, fmt)
        if block_valid is not True:
            if valid is None:
                valid = np.ones(flat_a.size, dtype=bool)
            valid[block] = block_valid
    return result, (True if valid is None else valid.reshape(a.shape))


def _affine_fast(a: UIntArray, b: UIntArray, fmt: FloatFormat, divide: bool) -> tuple[UIntArray, Any]:
    """Integer identity for normal operands with a normal result; returns (bits, valid).

    ``r = a ± b ∓ I(1)`` in wrapping ``width``-bit arithmetic: the sign bit of
    ``r`` is the XOR of the signs unless the magnitude part ``t = I(|a|) ±
    I(|b|) ∓ I(1)`` left ``[0, 2**(width-1))``.

    Cheap test first: from the extremes of ``I(|a|)`` and ``I(|b|)`` (one
    masking pass and two reductions per operand; per block, four reductions
    and no masking, in :func:`_affine_blocks`) the range of every ``t`` is
    bounded; if both operands are normal everywhere and that range lies in the
    normal codes, every element is valid.  Otherwise the exact per-element
    test: ``t`` lies in an interval narrower than ``2**width``, so ``v = r XOR
    (sign(a) XOR sign(b))`` is ``t mod 2**width`` and ``(v - min_normal) mod
    2**width <= max_finite - min_normal`` says exactly that ``t`` is a normal
    code; the same test on ``I(|x|)`` says that ``x`` is normal.  ``valid`` is
    ``True`` when every element passed, else a boolean array.  In-place steps
    keep temporaries few: this is the hot path of exhaustive sweeps.
    """
    if a.shape == b.shape and a.size > _FAST_BLOCK and fmt.width == 8 * fmt.uint_dtype.itemsize:
        return _affine_blocks(a, b, fmt, divide)
    # The result's buffer is the scratch of the range proof before it receives the result: fresh
    # multi-megabyte temporaries cost more in page faults than the arithmetic.
    result: UIntArray = np.empty(np.broadcast_shapes(a.shape, b.shape), dtype=fmt.uint_dtype)
    flat_result = result.reshape(-1)
    proven = False
    if result.size:
        a_extremes = _magnitude_extremes(a, fmt, flat_result)
        b_extremes = _magnitude_extremes(b, fmt, flat_result)
        proven = _range_proven(a_extremes, b_extremes, fmt, divide)
    _identity(a, b, fmt, divide, result)
    if proven:
        return result, True
    return result, _element_validity(a, b, result, fmt)


def _element_validity(a: UIntArray, b: UIntArray, result: UIntArray, fmt: FloatFormat) -> Any:
    """The exact per-element test of :func:`_affine_fast` on the identity's ``result``: ``True`` or a mask."""
    dtype = fmt.uint_dtype.type
    magnitude_mask, sign_mask = dtype(fmt.magnitude_mask), dtype(fmt.sign_mask)
    low, span = dtype(fmt.min_normal), dtype(fmt.max_finite - fmt.min_normal)
    scratch: UIntArray = np.empty(result.shape, dtype=result.dtype)
    flat_scratch = scratch.reshape(-1)
    worst = dtype(0)
    for operand in (a, b):
        operand_scratch = flat_scratch[: operand.size].reshape(operand.shape)
        np.bitwise_and(operand, magnitude_mask, out=operand_scratch)
        operand_scratch -= low
        worst = max(worst, operand_scratch.max(initial=dtype(0)))
    # t mod 2**width is r with the expected sign stripped.
    np.bitwise_xor(a, b, out=scratch)
    scratch &= sign_mask
    scratch ^= result
    scratch -= low
    worst = max(worst, scratch.max(initial=dtype(0)))
    if worst <= span:
        return True
    valid = scratch <= span
    for operand in (a, b):
        valid &= (operand & magnitude_mask) - low <= span
    return valid


def _affine(a: UIntArray, b: UIntArray, fmt: FloatFormat, mode: str, divide: bool) -> UIntArray:
    if a.ndim == 0 and b.ndim == 0:
        return _affine(a.reshape(1), b.reshape(1), fmt, mode, divide).reshape(())
    result, valid = _affine_fast(a, b, fmt, divide)
    if valid is not True:
        slow_at = np.flatnonzero(~valid)
        a_flat, b_flat = (np.broadcast_to(x, result.shape).reshape(-1) for x in (a, b))
        flat = result.reshape(-1)
        general = _pam_div_general if divide else _pam_mul_general
        # Blocks that stay in cache: these paths make many int64 temporaries.
        for start in range(0, slow_at.size, _BLOCK):
            at = slow_at[start : start + _BLOCK]
            flat[at] = _out_of_range(a_flat[at], b_flat[at], fmt, mode, divide, general)
        result = flat.reshape(result.shape)
    return result


def _out_of_range(
    a: UIntArray, b: UIntArray, fmt: FloatFormat, mode: str, divide: bool, general: Any
) -> UIntArray:
    """Elements the fast path rejected: normal operands with a result out of the normal range are
    rounded straight from ``t`` (the common case of exhaustive sweeps); the rest take ``general``."""
    if fmt.width >= 64:  # t could overflow int64
        return general(a, b, fmt, mode)  # type: ignore[no-any-return]
    m = fmt.mantissa_bits
    magnitude_mask = fmt.uint_dtype.type(fmt.magnitude_mask)
    mag_a = (a & magnitude_mask).astype(np.int64)
    mag_b = (b & magnitude_mask).astype(np.int64)
    normal = (mag_a >= fmt.min_normal) & (mag_a <= fmt.max_finite)
    normal &= (mag_b >= fmt.min_normal) & (mag_b <= fmt.max_finite)
    one = np.int64(fmt.one)
    t = mag_a - mag_b + one if divide else mag_a + mag_b - one
    negative = ((a ^ b) >> fmt.uint_dtype.type(fmt.width - 1)).astype(bool)
    # Far out of range needs no rounding: overflow, or below half the smallest subnormal (ftz: below
    # the smallest normal) is zero.  Only the band in between is rounded.
    lowest_kept = fmt.min_normal if mode == "ftz" else (fmt.emin + fmt.bias - m - 1) << m
    magnitude = np.where(t > fmt.max_finite, np.int64(fmt.overflow_magnitude), np.int64(0))
    band = (t >= lowest_kept) & (t <= fmt.max_finite)
    out = signed_bits(negative, magnitude, fmt)
    if band.any():
        t_band = t[band]
        # t = (E + bias)·2^m + f with the floor shift, also for t < 0.
        exponent = (t_band >> np.int64(m)) - np.int64(fmt.bias)
        significand = (t_band & np.int64(fmt.mantissa_mask)) + np.int64(1 << m)
        out[band] = round_to_format(negative[band], exponent, significand, 0, fmt, mode)
    if not normal.all():
        special = ~normal
        out[special] = general(a[special], b[special], fmt, mode)
    return out


def _pam_mul_general(a: UIntArray, b: UIntArray, fmt: FloatFormat, mode: str) -> UIntArray:
    m = fmt.mantissa_bits
    x, y = decode(a, fmt, mode), decode(b, fmt, mode)
    negative = x.negative ^ y.negative
    fraction_sum = x.fraction + y.fraction
    carry = fraction_sum >> m
    # Ma + Mb < 1: 2^(Ea+Eb)·(1 + Ma + Mb); else 2^(Ea+Eb+1)·(Ma + Mb), i.e. significand = fraction sum.
    significand = fraction_sum + ((np.int64(1) - carry) << m)
    out = round_to_format(negative, x.exponent + y.exponent + carry, significand, 0, fmt, mode)
    out = np.where(x.is_zero | y.is_zero, special_bits(negative, 0, fmt), out)
    out = np.where(x.is_inf | y.is_inf, special_bits(negative, fmt.overflow_magnitude, fmt), out)
    nan = x.is_nan | y.is_nan | (x.is_inf & y.is_zero) | (x.is_zero & y.is_inf)
    return nan_result(nan, negative, out, fmt)


def _pam_div_general(a: UIntArray, b: UIntArray, fmt: FloatFormat, mode: str) -> UIntArray:
    m = fmt.mantissa_bits
    x, y = decode(a, fmt, mode), decode(b, fmt, mode)
    negative = x.negative ^ y.negative
    difference = x.fraction - y.fraction
    borrow = (difference < 0).astype(np.int64)
    # Ma >= Mb: 2^(Ea-Eb)·(1 + Ma - Mb); else 2^(Ea-Eb-1)·(2 + Ma - Mb).
    significand = difference + ((np.int64(1) + borrow) << m)
    out = round_to_format(negative, x.exponent - y.exponent - borrow, significand, 0, fmt, mode)
    to_zero = (x.is_zero & ~y.is_zero) | (~x.is_inf & y.is_inf)
    to_inf = (x.is_inf & ~y.is_inf) | (~x.is_zero & y.is_zero)
    out = np.where(to_zero, special_bits(negative, 0, fmt), out)
    out = np.where(to_inf, special_bits(negative, fmt.overflow_magnitude, fmt), out)
    nan = x.is_nan | y.is_nan | (x.is_zero & y.is_zero) | (x.is_inf & y.is_inf)
    return nan_result(nan, negative, out, fmt)


def pam_mul(a_bits: object, b_bits: object, fmt: object, *, mode: str = "ieee") -> UIntArray:
    """PAM product ``a ⊡ b`` of bit patterns of ``fmt``, broadcast, rounded once (docs/spec.md §2).

    For normal inputs and a normal result this is ``I(|a|) + I(|b|) - I(1.0)``
    with the XOR of the signs.
    """
    fmt_, (a, b) = _prepare({"a_bits": a_bits, "b_bits": b_bits}, fmt, mode)
    return _affine(a, b, fmt_, mode, divide=False)


def pam_div(a_bits: object, b_bits: object, fmt: object, *, mode: str = "ieee") -> UIntArray:
    """PAM quotient ``a ⊘ b`` of bit patterns of ``fmt``, broadcast, rounded once (docs/spec.md §2).

    For normal inputs and a normal result this is ``I(|a|) - I(|b|) + I(1.0)``.
    """
    fmt_, (a, b) = _prepare({"a_bits": a_bits, "b_bits": b_bits}, fmt, mode)
    return _affine(a, b, fmt_, mode, divide=True)


def pa_log2(x_bits: object, fmt: object, *, mode: str = "ieee") -> UIntArray:
    """``E + M`` of ``|x|`` in ``fmt``, rounded once; ``±0 -> -inf``, ``±inf -> +inf``, NaN -> NaN."""
    fmt_, (x_array,) = _prepare({"x_bits": x_bits}, fmt, mode)
    m = fmt_.mantissa_bits
    x = decode(x_array, fmt_, mode)
    # E + M = (E·2^m + f)·2^-m exactly.
    fixed = (x.exponent << np.int64(m)) + x.fraction
    out = rounding.round_scaled(fixed < 0, np.abs(fixed), -m, fmt_, mode)
    out = np.where(x.is_zero, special_bits(np.True_, fmt_.overflow_magnitude, fmt_), out)
    out = np.where(x.is_inf, special_bits(np.False_, fmt_.overflow_magnitude, fmt_), out)
    return nan_result(x.is_nan, x.negative, out, fmt_)


def pa_exp2(y_bits: object, fmt: object, *, mode: str = "ieee") -> UIntArray:
    """``2^floor(y) · (1 + y - floor(y))`` in ``fmt``, rounded once; ``-inf -> +0``, ``+inf -> +inf``."""
    fmt_, (y_array,) = _prepare({"y_bits": y_bits}, fmt, mode)
    m = fmt_.mantissa_bits
    y = decode(y_array, fmt_, mode)
    finite = y.is_finite_nonzero
    significand = y.significand(fmt_)
    # From |y| >= 2^T on, y >= emax + 2 (overflow) or y <= emin - m - 3 (+0: below half the smallest
    # subnormal), whatever the other bits.
    threshold = max(fmt_.emax + 2, fmt_.bias + m + 3).bit_length()
    huge = finite & (y.exponent >= threshold)
    exponent = np.where(huge, np.int64(0), y.exponent)
    # |y| = significand / 2^k: k fractional bits.
    k = np.int64(m) - exponent
    integer_part = np.where(
        k <= 0, significand << np.maximum(-k, 0), significand >> np.minimum(np.maximum(k, 0), 62)
    )
    fraction_numerator = significand - np.where(k <= 0, significand, integer_part << np.clip(k, 0, 62))
    # floor({|y|}·2^P) with P = m + 2 bits, and a sticky bit for whatever lies below.
    precision = m + 2
    drop = np.clip(k - precision, 0, 62)
    kept = fraction_numerator >> drop
    lost = ((kept << drop) != fraction_numerator).astype(np.int64)
    high = kept << np.clip(precision - k, 0, 62)
    has_fraction = fraction_numerator != 0
    # y < 0 with a fraction: floor(y) = -ceil(|y|) and y - floor(y) = 1 - {|y|}.
    flip = y.negative & has_fraction
    fraction_high = np.where(flip, (np.int64(1) << precision) - high - lost, high)
    floor_y = np.where(y.negative, -integer_part - has_fraction, integer_part)
    significand_out = (((np.int64(1) << precision) + fraction_high) << np.int64(1)) | lost
    floor_y = np.where(finite, floor_y, np.int64(0))
    significand_out = np.where(finite, significand_out, np.int64(1) << (precision + 1))
    out = round_to_format(np.zeros(y.negative.shape, bool), floor_y, significand_out, 3, fmt_, mode)
    overflow = (huge & ~y.negative) | (y.is_inf & ~y.negative)
    out = np.where(overflow, special_bits(np.False_, fmt_.overflow_magnitude, fmt_), out)
    out = np.where((huge & y.negative) | (y.is_inf & y.negative), fmt_.uint_dtype.type(0), out)
    return nan_result(y.is_nan, y.negative, out, fmt_)


def pam_mul_grad(a_bits: object, b_bits: object, fmt: object, *, mode: str = "ieee") -> UIntArray:
    """Exact derivative of ``a ⊡ b`` with respect to ``a``: ``sign(b) · 2^(Eb + [Ma + Mb >= 1])``.

    Special cases are listed in the module docstring.
    """
    fmt_, (a_array, b_array) = _prepare({"a_bits": a_bits, "b_bits": b_bits}, fmt, mode)
    broadcast_a, broadcast_b = np.broadcast_arrays(a_array, b_array)
    m = fmt_.mantissa_bits
    x, y = decode(broadcast_a, fmt_, mode), decode(broadcast_b, fmt_, mode)
    carry = (x.fraction + y.fraction) >> m
    power = np.full(y.exponent.shape, np.int64(1) << m)
    out = round_to_format(y.negative, y.exponent + carry, power, 0, fmt_, mode)
    out = np.where(y.is_zero, special_bits(y.negative, 0, fmt_), out)
    out = np.where(y.is_inf, special_bits(y.negative, fmt_.overflow_magnitude, fmt_), out)
    nan = x.is_nan | y.is_nan | (x.is_inf & y.is_zero) | (x.is_zero & y.is_inf)
    return nan_result(nan, y.negative, out, fmt_)


# ---- matrix product --------------------------------------------------------------------


def _check_order(order: object) -> None:
    if order not in ORDERS:
        raise ValueError(
            f"unknown order {order!r}; the oracle computes only {', '.join(repr(o) for o in ORDERS)}; "
            "for kernels with another summation order use within_bound(...)"
        )


def _products(A_bits: object, B_bits: object, fmt: object, mode: object) -> tuple[FloatFormat, UIntArray]:
    """Products ``p[..., i, k, j] = A[..., i, k] ⊡ B[..., k, j]`` in the accumulator format."""
    fmt_, (A, B) = _prepare({"A_bits": A_bits, "B_bits": B_bits}, fmt, mode)
    assert isinstance(mode, str)
    if A.ndim < 2 or B.ndim < 2:
        raise ValueError(
            f"pam_matmul needs A of shape (..., M, K) and B of shape (..., K, N); got shapes "
            f"{A.shape} and {B.shape}"
        )
    if A.shape[-1] != B.shape[-2]:
        raise ValueError(f"inner dimensions differ: A has shape {A.shape}, B has shape {B.shape}")
    acc = accumulator_format(fmt_)
    A_wide = rounding.encode_exact(decode(A, fmt_, mode), fmt_, acc)
    B_wide = rounding.encode_exact(decode(B, fmt_, mode), fmt_, acc)
    return acc, pam_mul(A_wide[..., :, :, None], B_wide[..., None, :, :], acc, mode=mode)


def pam_matmul(
    A_bits: object, B_bits: object, fmt: object, *, order: str = "sequential", mode: str = "ieee"
) -> UIntArray:
    """PAM matrix product of ``A (..., M, K)`` and ``B (..., K, N)``, bits of the accumulator format.

    Products ``A[i,k] ⊡ B[k,j]`` are formed in :func:`accumulator_format` after
    widening the inputs exactly; they are summed ``acc = +0.0``, then
    ``acc = fl(acc + p_k)`` for ``k = 0 .. K-1``, round-to-nearest-even.
    Only ``order="sequential"`` exists here.
    """
    _check_order(order)
    acc, products = _products(A_bits, B_bits, fmt, mode)
    total = np.zeros(products.shape[:-2] + products.shape[-1:], dtype=acc.uint_dtype)
    for k in range(products.shape[-2]):
        total = rounding.add(total, products[..., k, :], acc, mode)
    return total


def gamma(n: int, fmt: FloatFormat) -> Fraction:
    """``γ_n = n·u / (1 - n·u)`` with ``u = 2^-p`` the unit roundoff of ``fmt`` (RNE)."""
    u = Fraction(1, 1 << fmt.precision)
    if n * u >= 1:
        raise ValueError(f"γ_{n} is undefined for {fmt.name} (n·u >= 1)")
    return n * u / (1 - n * u)


class _ProductSums:
    """Exact sums over k of the products (Python ints in units of the accumulator's quantum)."""

    def __init__(self, products: UIntArray, acc: FloatFormat, mode: str) -> None:
        decoded: Decoded = decode(products, acc, mode)
        self.acc = acc
        self.terms = products.shape[-2]
        self.quantum = Fraction(1, 1 << (acc.mantissa_bits - acc.emin))
        finite = decoded.is_finite_nonzero
        # value / quantum = significand · 2^(E - emin), an integer (subnormals are multiples of it).
        shift = np.where(finite, decoded.exponent - acc.emin, 0).astype(object)
        significand = decoded.significand(acc).astype(object)
        units = np.where(shift >= 0, significand * (2 ** np.maximum(shift, 0)), 0)
        units = np.where(shift < 0, significand // (2 ** np.maximum(-shift, 0)), units)
        units = np.where(finite, units, 0)
        signed = np.where(decoded.negative, -units, units)
        self.sum = signed.sum(axis=-2)
        self.positive = np.where(decoded.negative, 0, units).sum(axis=-2)
        self.negative = np.where(decoded.negative, units, 0).sum(axis=-2)
        self.has_nan: npt.NDArray[np.bool_] = np.asarray(decoded.is_nan.any(axis=-2))
        self.has_pos_inf: npt.NDArray[np.bool_] = np.asarray(
            (decoded.is_inf & ~decoded.negative).any(axis=-2)
        )
        self.has_neg_inf: npt.NDArray[np.bool_] = np.asarray((decoded.is_inf & decoded.negative).any(axis=-2))

    def bound_of(self, absolute_units: object, mode: str) -> Fraction:
        """``γ_{K-1}·Σ|p|`` plus, in ftz, ``(K-1)·2^emin·(1 + γ_{K-1})`` for flushed partial sums."""
        n = max(self.terms - 1, 0)
        g = gamma(n, self.acc)
        bound = g * Fraction(int(absolute_units)) * self.quantum  # type: ignore[call-overload]
        if mode == "ftz":
            bound += n * Fraction(2) ** self.acc.emin * (1 + g)
        return bound


def pam_matmul_bound(
    A_bits: object, B_bits: object, fmt: object, *, mode: str = "ieee"
) -> tuple[ObjectArray, ObjectArray]:
    """Exact sum of the products and a rigorous bound on any summation order's error.

    Returns object arrays of shape ``(..., M, N)``: ``exact_sum`` holds
    ``Fraction`` s (or ``float`` ``nan``/``±inf`` where a product is NaN or
    infinite: NaN for NaN or both infinities, else that infinity) and ``bound``
    holds ``Fraction`` s (0 where ``exact_sum`` is not finite).

    The bound: every addition of any order (any binary tree, with or without
    adds of +0) satisfies ``fl(x + y) = (x + y)(1 + δ)``, ``|δ| <= u = 2^-p``,
    also with gradual underflow (a sum in the subnormal range is exact), so
    ``|c - s| <= γ_{K-1}·Σ|p_k|`` with ``γ_n = n·u/(1 - n·u)`` (Higham, Thm 4.4
    form).  In ``"ftz"`` each of the ``K-1`` additions may also flush a result
    below ``2^emin``, which adds ``(K-1)·2^emin·(1 + γ_{K-1})``.  It holds
    absent overflow; :func:`within_bound` handles overflow explicitly.
    """
    check_mode(mode)
    acc, products = _products(A_bits, B_bits, fmt, mode)
    sums = _ProductSums(products, acc, mode)
    exact = np.empty(sums.sum.shape, dtype=object)
    bound = np.empty(sums.sum.shape, dtype=object)
    for index in np.ndindex(*sums.sum.shape):
        if sums.has_nan[index] or (sums.has_pos_inf[index] and sums.has_neg_inf[index]):
            exact[index], bound[index] = float("nan"), Fraction(0)
        elif sums.has_pos_inf[index] or sums.has_neg_inf[index]:
            exact[index] = float("inf") if sums.has_pos_inf[index] else float("-inf")
            bound[index] = Fraction(0)
        else:
            exact[index] = Fraction(int(sums.sum[index])) * sums.quantum
            bound[index] = sums.bound_of(sums.positive[index] + sums.negative[index], mode)
    return exact, bound


def within_bound(
    C_acc_bits: object, A_bits: object, B_bits: object, fmt: object, *, mode: str = "ieee"
) -> Any:
    """Whether each ``C[..., i, j]`` (accumulator-format bits) is a possible result of SOME summation order.

    Finite ``C``: ``|c - s| <= bound`` (:func:`pam_matmul_bound`), compared in
    exact rationals; the sign of a zero is not checked.  Non-finite cases:

    * a NaN product, or products of both infinities: ``C`` must be NaN;
    * products ``+inf`` (no ``-inf``): ``C`` must be ``+inf``, or NaN if the
      negative products could overflow to ``-inf`` first, i.e.
      ``(1 + γ_{K-1})·Σ_{p<0}|p| (+ ftz term) >= Ω``, the smallest value that
      rounds to infinity, ``Ω = 2^emax·(2 - 2^-p)``; symmetrically for ``-inf``;
    * all products finite: ``C = +inf`` is allowed iff the positive products
      could reach ``Ω`` (same test), ``-inf`` likewise, NaN iff both.
    """
    check_mode(mode)
    acc, products = _products(A_bits, B_bits, fmt, mode)
    C = check_bits(C_acc_bits, acc, "C_acc_bits")
    sums = _ProductSums(products, acc, mode)
    if C.shape != sums.sum.shape:
        raise ValueError(f"C_acc_bits has shape {C.shape}, the product of A and B has {sums.sum.shape}")
    c = decode(C, acc, "ieee")
    c_units = c.significand(acc).astype(object) * 1  # exact value below, per element
    n = max(sums.terms - 1, 0)
    g = gamma(n, acc)
    omega = Fraction(2) ** acc.emax * (2 - Fraction(1, 1 << acc.precision))
    ftz_term = n * Fraction(2) ** acc.emin * (1 + g) if mode == "ftz" else Fraction(0)
    result = np.zeros(sums.sum.shape, dtype=bool)
    for index in np.ndindex(*sums.sum.shape):
        positive_reach = (1 + g) * Fraction(int(sums.positive[index])) * sums.quantum + ftz_term
        negative_reach = (1 + g) * Fraction(int(sums.negative[index])) * sums.quantum + ftz_term
        can_pos, can_neg = positive_reach >= omega, negative_reach >= omega
        is_nan, is_inf, neg = bool(c.is_nan[index]), bool(c.is_inf[index]), bool(c.negative[index])
        if sums.has_nan[index] or (sums.has_pos_inf[index] and sums.has_neg_inf[index]):
            ok = is_nan
        elif sums.has_pos_inf[index]:
            ok = (is_inf and not neg) or (is_nan and can_neg)
        elif sums.has_neg_inf[index]:
            ok = (is_inf and neg) or (is_nan and can_pos)
        elif is_nan:
            ok = can_pos and can_neg
        elif is_inf:
            ok = can_neg if neg else can_pos
        else:
            exact = Fraction(int(sums.sum[index])) * sums.quantum
            magnitude = Fraction(0)
            if not c.is_zero[index]:
                magnitude = Fraction(int(c_units[index])) * Fraction(2) ** (
                    int(c.exponent[index]) - acc.mantissa_bits
                )
            value = -magnitude if neg else magnitude
            ok = abs(value - exact) <= sums.bound_of(sums.positive[index] + sums.negative[index], mode)
        result[index] = ok
    return result
