"""Triton kernels of the PAM operations, bit-exact against :mod:`revcheck.oracle.pam`.

The operations of :mod:`revcheck.kernels.pam`, with the same names, operands and
``mode=`` keyword: ``pam_mul``, ``pam_div``, ``pam_mul_grad``, ``pa_log2``,
``pa_exp2`` (elementwise, broadcasting) and ``pam_matmul`` (canonical
``"sequential"`` accumulation order only).  The torch kernels' extra options
(``order=`` of ``pam_matmul``, ``compiled=`` of ``pam_mul``) do not exist here.

Two kernels: one elementwise kernel serves all five operations (a ``tl.constexpr``
operation code selects the arithmetic, so each operation still compiles to its own
specialised program) and one matmul kernel.  Both work on the integer bit patterns
of their operands; a format enters a kernel only as ``tl.constexpr`` field widths,
biases and special encodings taken from :mod:`revcheck.formats`, so one kernel body
serves every format.  ``FN`` is the format's special-value encoding as a code
(0 ``"ieee"``, 1 ``"fn"``, 2 ``"fnuz"``, 3 ``"none"``: nonzero means "no
infinity").  Formats without a torch dtype (fp6, fp4) come as ``uint8`` bit
patterns with ``fmt=`` (docs/spec.md D1.10); the host sign-extends their
patterns to ``int8`` before a launch and masks the results back to their width,
so the kernels only ever see sign-extended signed patterns.  The elementwise
arithmetic is exact integer arithmetic followed by one round to nearest even
(docs/spec.md §2); the matmul forms each product the same way in the accumulator format
(:func:`revcheck.formats.accumulator_format`) and adds the products one ``k`` at
a time with a plain floating-point add, in order, so it can be bit-exact against
the oracle.  There is no float multiply anywhere for the compiler to contract
into an FMA, and the kernels are also compiled with ``enable_fp_fusion=False``.

No autograd (docs/spec.md D2.13): an operand that requires grad (with grad enabled)
is refused with :class:`~revcheck.errors.UsageError`, never silently detached; the
torch kernels of :mod:`revcheck.kernels.pam` have the gradients.  The matmul's float
additions run on the device: on CUDA the host's flush-to-zero flag does not apply;
under the interpreter they run in the calling thread's float unit, so an ``"ieee"``
matmul refuses to run while that thread flushes subnormals
(``torch.set_flush_denormal(True)``, docs/spec.md D2.14).

Devices: CUDA tensors, or CPU tensors under Triton's interpreter.  Triton reads
``TRITON_INTERPRET`` when a kernel is *defined*, i.e. when this module is
imported: set ``TRITON_INTERPRET=1`` in the environment before the first
``import revcheck.kernels.triton_pam`` (``nox -s tests`` does) to run on the CPU.
:data:`INTERPRETED` records which mode the kernels were built in.

Importing this module without triton installed raises :class:`ModuleNotFoundError`
(``name='triton'``) that names the ``revcheck[triton]`` extra.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from revcheck import bits as _bits
from revcheck import formats
from revcheck.errors import UsageError
from revcheck.formats import FloatFormat
from revcheck.kernels.pam import _format_of_tensor
from revcheck.modes import check_mode

try:
    import triton
    import triton.language as tl
except ModuleNotFoundError as error:  # pragma: no cover - exercised only where triton is absent
    # ModuleNotFoundError (name="triton"), not a bare ImportError: pytest.importorskip and
    # find_spec-style checks treat it as "optional dependency absent" and skip instead of erroring.
    raise ModuleNotFoundError(
        "revcheck.kernels.triton_pam needs triton: pip install 'revcheck[triton]' (or 'triton>=3.0'); "
        "use revcheck.kernels.pam for the torch implementation of the same operations instead",
        name="triton",
    ) from error

__all__ = [
    "INTERPRETED",
    "pa_exp2",
    "pa_log2",
    "pam_div",
    "pam_matmul",
    "pam_mul",
    "pam_mul_grad",
    "supported_formats",
]


def _interpreter_on() -> bool:
    # Ask triton itself (it decides when @triton.jit runs); older versions only had the variable.
    try:
        return bool(triton.knobs.runtime.interpret)
    except AttributeError:
        return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "yes", "on")


#: Whether the kernels were defined for Triton's CPU interpreter (``TRITON_INTERPRET=1`` at import).
INTERPRETED: bool = _interpreter_on()

# The interpreter pays per program, not per element: few large blocks there, GPU-sized ones on CUDA.
_BLOCK = 1 << 14 if INTERPRETED else 1024
_MATMUL_BLOCK = 32
_LAUNCH_OPTIONS: dict[str, Any] = {"enable_fp_fusion": False}


# ---- device-side helpers ---------------------------------------------------------------


@triton.jit
def _msb_position(m):
    """floor(log2(m)) for 0 < m < 2**63 (binary search; Triton's interpreter has no clz)."""
    position = tl.zeros_like(m)
    for step in tl.static_range(6):
        shift = 32 >> step  # constexpr already; re-annotating it in static_range does not compile
        upper = m >> shift
        found = upper != 0
        position += tl.where(found, shift, 0)
        m = tl.where(found, upper, m)
    return position


@triton.jit
def _decode(
    bits, MB: tl.constexpr, BIAS: tl.constexpr, EXP_MAX: tl.constexpr, FN: tl.constexpr, FTZ: tl.constexpr
):
    """Split patterns into sign, classes and |x| = 2**E * (1 + F / 2**MB), subnormals normalized.

    Under FTZ a subnormal is classified as zero (it keeps its sign).  ``FN`` is the
    encoding code of the module docstring.
    """
    x = bits.to(tl.int64)
    negative = x < 0  # patterns are loaded as (sign-extended) signed integers
    magnitude = x & ((EXP_MAX << MB) | ((1 << MB) - 1))
    exponent_field = magnitude >> MB
    mantissa = magnitude & ((1 << MB) - 1)
    if FN == 1:
        is_nan = magnitude == ((EXP_MAX << MB) | ((1 << MB) - 1))
        is_inf = magnitude != magnitude
    elif FN == 2:  # fnuz: the pattern of -0 is the one NaN
        is_nan = negative & (magnitude == 0)
        is_inf = magnitude != magnitude
    elif FN == 3:  # none: every pattern is a number
        is_nan = magnitude != magnitude
        is_inf = magnitude != magnitude
    else:
        is_nan = magnitude > (EXP_MAX << MB)
        is_inf = magnitude == (EXP_MAX << MB)
    subnormal = (exponent_field == 0) & (mantissa != 0)
    is_zero = ((magnitude == 0) & ~is_nan) | subnormal if FTZ else (magnitude == 0) & ~is_nan
    normalize = MB - _msb_position(tl.maximum(mantissa, 1))
    exponent = tl.where(subnormal, 1 - BIAS - normalize, exponent_field - BIAS)
    fraction = tl.where(subnormal, (mantissa << normalize) & ((1 << MB) - 1), mantissa)
    return negative, is_nan, is_inf, is_zero, exponent, fraction


@triton.jit
def _round_shift(significand, shift):
    """significand / 2**shift rounded to nearest even, for shifts in [1, 62].

    A sticky bit already OR-ed into the lowest bit keeps working as long as it lies
    below the rounding position.
    """
    one = tl.full(significand.shape, 1, tl.int64)
    quotient = significand >> shift
    remainder = significand & ((one << shift) - 1)
    half = one << (shift - 1)
    round_up = (remainder > half) | ((remainder == half) & ((quotient & 1) == 1))
    return quotient + round_up.to(tl.int64)


@triton.jit
def _encode(
    exponent,
    significand,
    MB: tl.constexpr,
    EXTRA: tl.constexpr,
    BIAS: tl.constexpr,
    EXP_MAX: tl.constexpr,
    MAX_FINITE: tl.constexpr,
    OVERFLOW: tl.constexpr,
    FTZ: tl.constexpr,
):
    """Magnitude pattern of 2**exponent * significand / 2**(MB + EXTRA), rounded once to nearest even.

    ``significand`` is normalized: its leading one is bit MB + EXTRA (a sticky bit may
    be OR-ed into bit 0 when EXTRA >= 2).  Gradual underflow rounds the exact value
    (under FTZ a value below the smallest normal becomes zero); overflow gives
    OVERFLOW (infinity, or the largest finite value of a saturating format).
    """
    biased = exponent + BIAS
    if EXTRA > 0:
        rounded = _round_shift(significand, tl.zeros_like(significand) + EXTRA)
        carry = rounded >> (MB + 1)  # rounding up to 2**(MB + 1) moves to the next binade
        normal_biased = biased + carry
        fraction = (rounded >> carry) & ((1 << MB) - 1)
    else:
        normal_biased = biased
        fraction = significand & ((1 << MB) - 1)
    clamped = tl.minimum(tl.maximum(normal_biased, 0), EXP_MAX)
    normal = (clamped << MB) | fraction
    overflow = (normal_biased > EXP_MAX) | (normal > MAX_FINITE)
    normal = tl.where(overflow, OVERFLOW, normal)
    if FTZ:
        tiny = tl.zeros_like(normal)
    else:
        # Shifting MB + EXTRA + 2 places leaves < 1/2 ulp of the smallest subnormal: 0.
        shift = tl.minimum(tl.maximum(1 - biased, 1) + EXTRA, MB + EXTRA + 2)
        tiny = _round_shift(significand, shift)
    return tl.where(biased >= 1, normal, tiny)


@triton.jit
def _assemble(
    negative,
    is_nan,
    is_inf,
    is_zero,
    magnitude,
    SIGN_MIN: tl.constexpr,
    NAN: tl.constexpr,
    OVERFLOW: tl.constexpr,
    FN: tl.constexpr = 0,
):
    """Signed pattern (as a signed integer of the format's width) from classes and a finite magnitude.

    FN 2 (fnuz): a zero result is +0 (docs/spec.md D2.15); FN 3 (no NaN): a NaN
    result is the zero with the result's sign (D2.16).
    """
    magnitude = tl.where(is_zero, 0, magnitude)
    magnitude = tl.where(is_inf, OVERFLOW, magnitude)
    if FN == 3:
        magnitude = tl.where(is_nan, 0, magnitude)
    if FN == 2:
        negative = negative & (magnitude != 0)
    signed = tl.where(negative, magnitude | SIGN_MIN, magnitude)
    if FN == 3:
        return signed
    return tl.where(is_nan, NAN, signed)


@triton.jit
def _pam_mul_fields(
    a,
    b,
    IN_MB: tl.constexpr,
    IN_BIAS: tl.constexpr,
    IN_EXP_MAX: tl.constexpr,
    IN_FN: tl.constexpr,
    OUT_MB: tl.constexpr,
    OUT_BIAS: tl.constexpr,
    OUT_EXP_MAX: tl.constexpr,
    OUT_MAX_FINITE: tl.constexpr,
    OUT_OVERFLOW: tl.constexpr,
    OUT_SIGN_MIN: tl.constexpr,
    OUT_NAN: tl.constexpr,
    FTZ: tl.constexpr,
    OUT_FN: tl.constexpr = 0,
):
    """a ⊡ b from input-format patterns to output-format patterns (OUT_MB >= IN_MB: exact widening).

    ``OUT_FN`` is the output format's encoding code (0, ``"ieee"``, for the accumulators)."""
    a_neg, a_nan, a_inf, a_zero, a_exp, a_frac = _decode(a, IN_MB, IN_BIAS, IN_EXP_MAX, IN_FN, FTZ)
    b_neg, b_nan, b_inf, b_zero, b_exp, b_frac = _decode(b, IN_MB, IN_BIAS, IN_EXP_MAX, IN_FN, FTZ)
    # Integer addition of the patterns, done on the fields: a carry out of the fraction
    # sum bumps the exponent (the Ma + Mb >= 1 branch of docs/spec.md §2).
    total = a_frac + b_frac
    carry = total >> IN_MB
    exponent = a_exp + b_exp + carry
    fraction = (total - (carry << IN_MB)) << (OUT_MB - IN_MB)
    magnitude = _encode(
        exponent,
        fraction | (1 << OUT_MB),
        OUT_MB,
        0,
        OUT_BIAS,
        OUT_EXP_MAX,
        OUT_MAX_FINITE,
        OUT_OVERFLOW,
        FTZ,
    )
    is_nan = a_nan | b_nan | (a_inf & b_zero) | (a_zero & b_inf)
    is_inf = a_inf | b_inf
    is_zero = a_zero | b_zero
    return _assemble(
        a_neg ^ b_neg, is_nan, is_inf, is_zero, magnitude, OUT_SIGN_MIN, OUT_NAN, OUT_OVERFLOW, OUT_FN
    )


@triton.jit
def _pam_div_fields(
    a,
    b,
    MB: tl.constexpr,
    BIAS: tl.constexpr,
    EXP_MAX: tl.constexpr,
    FN: tl.constexpr,
    MAX_FINITE: tl.constexpr,
    OVERFLOW: tl.constexpr,
    SIGN_MIN: tl.constexpr,
    NAN: tl.constexpr,
    FTZ: tl.constexpr,
):
    """a ⊘ b on patterns of one format: integer subtraction of the fields, rounded once."""
    a_neg, a_nan, a_inf, a_zero, a_exp, a_frac = _decode(a, MB, BIAS, EXP_MAX, FN, FTZ)
    b_neg, b_nan, b_inf, b_zero, b_exp, b_frac = _decode(b, MB, BIAS, EXP_MAX, FN, FTZ)
    difference = a_frac - b_frac
    borrow = (difference < 0).to(tl.int64)
    exponent = a_exp - b_exp - borrow
    fraction = difference + (borrow << MB)
    magnitude = _encode(exponent, fraction | (1 << MB), MB, 0, BIAS, EXP_MAX, MAX_FINITE, OVERFLOW, FTZ)
    is_nan = a_nan | b_nan | (a_zero & b_zero) | (a_inf & b_inf)
    is_inf = a_inf | b_zero
    is_zero = a_zero | b_inf
    return _assemble(a_neg ^ b_neg, is_nan, is_inf, is_zero, magnitude, SIGN_MIN, NAN, OVERFLOW, FN)


@triton.jit
def _pam_mul_grad_fields(
    a,
    b,
    MB: tl.constexpr,
    BIAS: tl.constexpr,
    EXP_MAX: tl.constexpr,
    FN: tl.constexpr,
    MAX_FINITE: tl.constexpr,
    OVERFLOW: tl.constexpr,
    SIGN_MIN: tl.constexpr,
    NAN: tl.constexpr,
    FTZ: tl.constexpr,
):
    """d(a ⊡ b)/da = sign(b) * 2**(Eb + [Ma + Mb >= 1]); zero/inf ``a`` count with their fraction field 0."""
    _a_neg, a_nan, a_inf, a_zero, _a_exp, a_frac = _decode(a, MB, BIAS, EXP_MAX, FN, FTZ)
    b_neg, b_nan, b_inf, b_zero, b_exp, b_frac = _decode(b, MB, BIAS, EXP_MAX, FN, FTZ)
    a_frac = tl.where(a_zero | a_inf, 0, a_frac)
    carry = (a_frac + b_frac) >> MB
    power = tl.zeros_like(b_exp) + (1 << MB)
    magnitude = _encode(b_exp + carry, power, MB, 0, BIAS, EXP_MAX, MAX_FINITE, OVERFLOW, FTZ)
    is_nan = a_nan | b_nan | (a_inf & b_zero) | (a_zero & b_inf)
    return _assemble(b_neg, is_nan, b_inf, b_zero, magnitude, SIGN_MIN, NAN, OVERFLOW, FN)


@triton.jit
def _pa_log2_fields(
    x,
    MB: tl.constexpr,
    BIAS: tl.constexpr,
    EXP_MAX: tl.constexpr,
    FN: tl.constexpr,
    MAX_FINITE: tl.constexpr,
    OVERFLOW: tl.constexpr,
    SIGN_MIN: tl.constexpr,
    NAN: tl.constexpr,
    FTZ: tl.constexpr,
):
    """E + M of |x|, rounded once; ±0 -> -inf, ±inf -> +inf (±max for saturating formats)."""
    _x_neg, x_nan, x_inf, x_zero, x_exp, x_frac = _decode(x, MB, BIAS, EXP_MAX, FN, FTZ)
    # E + M = (E * 2**MB + F) / 2**MB exactly: a fixed-point integer, normalized below to
    # MB + 3 fraction bits with everything shifted out kept as a sticky bit.
    fixed = (x_exp << MB) + x_frac
    negative = fixed < 0
    count = tl.abs(fixed)
    top = _msb_position(tl.maximum(count, 1))
    right = tl.maximum(top - (MB + 3), 0)
    left = tl.maximum((MB + 3) - top, 0)
    kept = count >> right
    sticky = ((kept << right) != count).to(tl.int64)
    significand = (kept << left) | sticky
    magnitude = _encode(top - MB, significand, MB, 3, BIAS, EXP_MAX, MAX_FINITE, OVERFLOW, FTZ)
    finite = ~(x_nan | x_inf | x_zero)
    negative = tl.where(finite, negative, x_zero)
    return _assemble(
        negative, x_nan, x_inf | x_zero, finite & (count == 0), magnitude, SIGN_MIN, NAN, OVERFLOW, FN
    )


@triton.jit
def _pa_exp2_fields(
    y,
    MB: tl.constexpr,
    EB: tl.constexpr,
    BIAS: tl.constexpr,
    EXP_MAX: tl.constexpr,
    FN: tl.constexpr,
    MAX_FINITE: tl.constexpr,
    OVERFLOW: tl.constexpr,
    SIGN_MIN: tl.constexpr,
    NAN: tl.constexpr,
    FTZ: tl.constexpr,
):
    """2**floor(y) * (1 + y - floor(y)), rounded once; -inf -> +0, +inf -> +inf, ±0 -> 1."""
    y_neg, y_nan, y_inf, y_zero, y_exp, y_frac = _decode(y, MB, BIAS, EXP_MAX, FN, FTZ)
    finite = ~(y_nan | y_inf | y_zero)
    # |y| >= 2**(EB + 1) lies beyond emax + 1 and below emin - MB - 2: overflow or +0.
    huge = finite & (y_exp >= EB + 1)
    exponent = tl.where(huge, 0, y_exp)
    significand = y_frac | (1 << MB)
    # |y| = significand / 2**k: k fraction bits (none when k <= 0).
    k = MB - exponent
    k_right = tl.minimum(tl.maximum(k, 0), 62)
    k_left = tl.minimum(tl.maximum(-k, 0), 62)
    integer_part = tl.where(k <= 0, significand << k_left, significand >> k_right)
    fraction_numerator = tl.where(k <= 0, 0, significand - (integer_part << k_right))
    # floor(frac(|y|) * 2**P) with P = MB + 2 bits, plus a sticky bit for the rest.
    P: tl.constexpr = MB + 2
    drop = tl.minimum(tl.maximum(k - P, 0), 62)
    kept = fraction_numerator >> drop
    lost = ((kept << drop) != fraction_numerator).to(tl.int64)
    high = kept << tl.minimum(tl.maximum(P - k, 0), 62)
    has_fraction = fraction_numerator != 0
    # y < 0 with a fraction: floor(y) = -ceil(|y|) and y - floor(y) = 1 - frac(|y|).
    flip = y_neg & has_fraction
    fraction_high = tl.where(flip, (1 << P) - high - lost, high)
    floor_y = tl.where(y_neg, -integer_part - has_fraction.to(tl.int64), integer_part)
    significand_out = (((1 << P) + fraction_high) << 1) | lost
    floor_y = tl.where(finite, floor_y, 0)
    significand_out = tl.where(finite, significand_out, tl.zeros_like(significand_out) + (1 << (P + 1)))
    magnitude = _encode(floor_y, significand_out, MB, 3, BIAS, EXP_MAX, MAX_FINITE, OVERFLOW, FTZ)
    to_infinity = (huge | y_inf) & ~y_neg
    to_zero = (huge | y_inf) & y_neg
    positive = y_neg & ~y_neg
    return _assemble(positive, y_nan, to_infinity, to_zero, magnitude, SIGN_MIN, NAN, OVERFLOW, FN)


# ---- kernels -------------------------------------------------------------------------------
# Two kernels, both taking a format as the constexpr parameters of _FormatConstants: one elementwise
# kernel for the five operations and one matmul kernel.


# Operation codes of _elementwise_kernel; OP is a constexpr, so each op compiles to its own program.
_OP_CODES = {"pam_mul": 0, "pam_div": 1, "pam_mul_grad": 2, "pa_log2": 3, "pa_exp2": 4}


@triton.jit
def _elementwise_kernel(
    a_ptr,
    b_ptr,
    out_ptr,
    n,
    MB: tl.constexpr,
    EB: tl.constexpr,
    BIAS: tl.constexpr,
    EXP_MAX: tl.constexpr,
    FN: tl.constexpr,
    MAX_FINITE: tl.constexpr,
    OVERFLOW: tl.constexpr,
    SIGN_MIN: tl.constexpr,
    NAN: tl.constexpr,
    FTZ: tl.constexpr,
    OP: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """One BLOCK of ``out = op(a[, b])``; unary ops (OP 3, 4) never read ``b_ptr``."""
    offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    inside = offsets < n
    a = tl.load(a_ptr + offsets, mask=inside, other=0)
    if OP == 0:
        b = tl.load(b_ptr + offsets, mask=inside, other=0)
        result = _pam_mul_fields(
            a, b, MB, BIAS, EXP_MAX, FN, MB, BIAS, EXP_MAX, MAX_FINITE, OVERFLOW, SIGN_MIN, NAN, FTZ, FN
        )
    elif OP == 1:
        b = tl.load(b_ptr + offsets, mask=inside, other=0)
        result = _pam_div_fields(a, b, MB, BIAS, EXP_MAX, FN, MAX_FINITE, OVERFLOW, SIGN_MIN, NAN, FTZ)
    elif OP == 2:
        b = tl.load(b_ptr + offsets, mask=inside, other=0)
        result = _pam_mul_grad_fields(a, b, MB, BIAS, EXP_MAX, FN, MAX_FINITE, OVERFLOW, SIGN_MIN, NAN, FTZ)
    elif OP == 3:
        result = _pa_log2_fields(a, MB, BIAS, EXP_MAX, FN, MAX_FINITE, OVERFLOW, SIGN_MIN, NAN, FTZ)
    else:
        result = _pa_exp2_fields(a, MB, EB, BIAS, EXP_MAX, FN, MAX_FINITE, OVERFLOW, SIGN_MIN, NAN, FTZ)
    tl.store(out_ptr + offsets, result.to(out_ptr.dtype.element_ty), mask=inside)


@triton.jit
def _pam_matmul_kernel(
    a_ptr,
    b_ptr,
    c_ptr,
    M,
    N,
    K,
    stride_ab,
    stride_am,
    stride_ak,
    stride_bb,
    stride_bk,
    stride_bn,
    stride_cb,
    stride_cm,
    stride_cn,
    IN_MB: tl.constexpr,
    IN_BIAS: tl.constexpr,
    IN_EXP_MAX: tl.constexpr,
    IN_FN: tl.constexpr,
    ACC_MB: tl.constexpr,
    ACC_BIAS: tl.constexpr,
    ACC_EXP_MAX: tl.constexpr,
    ACC_MAX_FINITE: tl.constexpr,
    ACC_OVERFLOW: tl.constexpr,
    ACC_SIGN_MIN: tl.constexpr,
    ACC_NAN: tl.constexpr,
    ACC_INT: tl.constexpr,
    ACC_FLOAT: tl.constexpr,
    FTZ: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    """One BLOCK_M x BLOCK_N tile of C; every element adds p_0, p_1, ... p_{K-1} in that order."""
    batch = tl.program_id(2)
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    row_inside = rows < M
    col_inside = cols < N
    a_row_ptrs = a_ptr + batch * stride_ab + rows * stride_am
    b_col_ptrs = b_ptr + batch * stride_bb + cols * stride_bn
    accumulator = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC_FLOAT)
    for k in range(0, K):
        a = tl.load(a_row_ptrs + k * stride_ak, mask=row_inside, other=0)
        b = tl.load(b_col_ptrs + k * stride_bk, mask=col_inside, other=0)
        product_bits = _pam_mul_fields(
            a[:, None],
            b[None, :],
            IN_MB,
            IN_BIAS,
            IN_EXP_MAX,
            IN_FN,
            ACC_MB,
            ACC_BIAS,
            ACC_EXP_MAX,
            ACC_MAX_FINITE,
            ACC_OVERFLOW,
            ACC_SIGN_MIN,
            ACC_NAN,
            FTZ,
        )
        product = product_bits.to(ACC_INT).to(ACC_FLOAT, bitcast=True)
        accumulator = accumulator + product
        if FTZ:
            # A partial sum below the smallest normal is exact (x + y never rounds there), so
            # flushing the rounded sum is flushing the exact one.
            sum_bits = accumulator.to(ACC_INT, bitcast=True)
            tiny = (sum_bits & (ACC_EXP_MAX << ACC_MB)) == 0
            sum_bits = tl.where(tiny, sum_bits & ACC_SIGN_MIN, sum_bits)
            accumulator = sum_bits.to(ACC_FLOAT, bitcast=True)
    # A NaN made by the adds (inf - inf) carries whatever sign the hardware gives it: canonicalize.
    sum_bits = accumulator.to(ACC_INT, bitcast=True)
    is_nan = (sum_bits & ~ACC_SIGN_MIN) > (ACC_EXP_MAX << ACC_MB)
    accumulator = tl.where(is_nan, ACC_NAN, sum_bits).to(ACC_FLOAT, bitcast=True)
    c_ptrs = c_ptr + batch * stride_cb + rows[:, None] * stride_cm + cols[None, :] * stride_cn
    tl.store(c_ptrs, accumulator, mask=row_inside[:, None] & col_inside[None, :])


# ---- host side ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _FormatConstants:
    mantissa_bits: int
    exponent_bits: int
    bias: int
    exp_max: int
    fn: int
    max_finite: int
    overflow: int
    sign_min: int
    nan: int


# The kernels' FN code of each special-value encoding (FloatFormat.nan_encoding).
_ENCODING_CODES = {"ieee": 0, "fn": 1, "fnuz": 2, "none": 3}


def _constants(fmt: FloatFormat) -> _FormatConstants:
    # The NaN as the kernels see patterns, sign-extended (fnuz: 0x80 is -128); formats without NaN: unused.
    nan = fmt.canonical_nan if fmt.has_nan else 0
    return _FormatConstants(
        mantissa_bits=fmt.mantissa_bits,
        exponent_bits=fmt.exponent_bits,
        bias=fmt.bias,
        exp_max=fmt.max_biased_exponent,
        fn=_ENCODING_CODES[fmt.nan_encoding],
        max_finite=fmt.max_finite,
        overflow=fmt.overflow_magnitude,
        # The sign bit as a negative number of the signed container: OR-ing it into a
        # magnitude gives the signed view of the pattern without overflowing int64.
        sign_min=-fmt.sign_mask,
        nan=nan - (1 << fmt.width) if nan & fmt.sign_mask else nan,
    )


def supported_formats() -> tuple[str, ...]:
    """Names of the formats these kernels accept (all of :data:`revcheck.formats.FORMATS`)."""
    return formats.names()


def _format_of(*tensors: torch.Tensor, fmt: object = None) -> FloatFormat:
    if not all(isinstance(t, torch.Tensor) for t in tensors):
        given = ", ".join(type(t).__name__ for t in tensors)
        raise TypeError(f"operands must be torch tensors, got {given}; use torch.as_tensor(...) first")
    dtypes = {t.dtype for t in tensors}
    if len(dtypes) != 1:
        raise TypeError(
            f"operands have different dtypes {sorted(map(str, dtypes))}; convert them to one dtype first"
        )
    return _format_of_tensor(tensors[0], "operand", fmt)


def _signed_patterns(x: torch.Tensor, fmt: FloatFormat) -> torch.Tensor:
    """The operand as the kernels read it: patterns as signed integers of the container, sign-extended.

    A pattern narrower than its container (fp6, fp4 in uint8) gets its sign bit copied into the
    padding bits, so that the kernels' ``x < 0`` and magnitude masks hold for every format.
    """
    int_dtype = getattr(torch, fmt.int_dtype.name)
    if not fmt.padding_bits:
        return x.contiguous().view(int_dtype)
    wide = x.contiguous().to(torch.int16)
    return torch.where((wide & fmt.sign_mask) != 0, wide - (1 << fmt.width), wide).to(int_dtype)


def _check_device(*tensors: torch.Tensor) -> torch.device:
    devices = {t.device for t in tensors}
    if len(devices) != 1:
        raise ValueError(f"operands are on different devices {sorted(map(str, devices))}; move them to one")
    device = tensors[0].device
    if device.type == "cpu" and not INTERPRETED:
        raise RuntimeError(
            "Triton kernels on CPU tensors need Triton's interpreter: set TRITON_INTERPRET=1 in the "
            "environment before importing revcheck.kernels.triton_pam, or use CUDA tensors"
        )
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"device {device} is not supported; use cuda (or cpu with TRITON_INTERPRET=1)")
    return device


def _refuse_grad(op: str, *tensors: torch.Tensor) -> None:
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        raise UsageError(
            f"the Triton {op} has no autograd, and its result would be silently detached from an input "
            f"that requires grad; use revcheck.kernels.pam.{op} (differentiable, same bits) or pass "
            "detached inputs"
        )


def _host_flushes_subnormals() -> bool:
    """Whether this thread's float unit flushes subnormal results or reads subnormal inputs as zero."""
    smallest_normal = np.array([2.0**-126], dtype=np.float32)
    flushed_result = (smallest_normal * np.float32(0.5))[0] == 0
    flushed_input = (np.array([2.0**-149], dtype=np.float32) + np.float32(0.0))[0] == 0
    return bool(flushed_result or flushed_input)


def _launch_elementwise(
    op: str, operands: tuple[torch.Tensor, ...], mode: str, fmt_given: object = None
) -> torch.Tensor:
    ftz = check_mode(mode) == "ftz"
    fmt = _format_of(*operands, fmt=fmt_given)
    _check_device(*operands)
    _refuse_grad(op, *operands)
    operands = tuple(torch.broadcast_tensors(*operands))
    out = torch.empty(operands[0].shape, dtype=operands[0].dtype, device=operands[0].device)
    n = out.numel()
    if n == 0:
        return out
    c = _constants(fmt)
    int_dtype = getattr(torch, fmt.int_dtype.name)
    block = min(_BLOCK, max(16, triton.next_power_of_2(n)))
    inputs = [_signed_patterns(x, fmt) for x in operands]
    first, second = inputs[0], inputs[-1]  # a unary op passes x twice; its kernel never reads the second
    _elementwise_kernel[(triton.cdiv(n, block),)](
        first, second, out.view(int_dtype), n,
        MB=c.mantissa_bits, EB=c.exponent_bits, BIAS=c.bias, EXP_MAX=c.exp_max, FN=c.fn,
        MAX_FINITE=c.max_finite, OVERFLOW=c.overflow, SIGN_MIN=c.sign_min, NAN=c.nan, FTZ=ftz,
        OP=_OP_CODES[op], BLOCK=block, **_LAUNCH_OPTIONS,
    )  # fmt: skip
    if fmt.padding_bits:  # back from sign-extended to width-bit patterns
        out.bitwise_and_(fmt.pattern_mask)
    return out


def pam_mul(a: torch.Tensor, b: torch.Tensor, *, mode: str = "ieee", fmt: object = None) -> torch.Tensor:
    """PAM product a ⊡ b elementwise (broadcasting), in the operands' dtype, bit-exact vs the oracle.

    ``fmt=`` names the format of ``uint8`` bit-pattern operands (fp6, fp4), as in every op here.
    """
    return _launch_elementwise("pam_mul", (a, b), mode, fmt)


def pam_div(a: torch.Tensor, b: torch.Tensor, *, mode: str = "ieee", fmt: object = None) -> torch.Tensor:
    """PAM quotient a ⊘ b elementwise (broadcasting), in the operands' dtype, bit-exact vs the oracle."""
    return _launch_elementwise("pam_div", (a, b), mode, fmt)


def pam_mul_grad(a: torch.Tensor, b: torch.Tensor, *, mode: str = "ieee", fmt: object = None) -> torch.Tensor:
    """d(a ⊡ b)/da = sign(b) * 2**(Eb + [Ma + Mb >= 1]) elementwise, in the operands' dtype.

    Special cases as :func:`revcheck.oracle.pam.pam_mul_grad`: NaN where the product
    is NaN, ±0 for b = ±0, ±inf for b = ±inf.
    """
    return _launch_elementwise("pam_mul_grad", (a, b), mode, fmt)


def pa_log2(x: torch.Tensor, *, mode: str = "ieee", fmt: object = None) -> torch.Tensor:
    """Piecewise-affine log2: E + M of |x| in x's dtype, rounded once; ±0 -> -inf, ±inf -> +inf."""
    return _launch_elementwise("pa_log2", (x,), mode, fmt)


def pa_exp2(y: torch.Tensor, *, mode: str = "ieee", fmt: object = None) -> torch.Tensor:
    """Piecewise-affine exp2: 2**floor(y) * (1 + y - floor(y)) in y's dtype, rounded once."""
    return _launch_elementwise("pa_exp2", (y,), mode, fmt)


def pam_matmul(A: torch.Tensor, B: torch.Tensor, *, mode: str = "ieee", fmt: object = None) -> torch.Tensor:
    """PAM matrix product A ⊡ B in the accumulator dtype, summed in the canonical sequential order.

    ``A`` is ``(..., M, K)`` and ``B`` is ``(..., K, N)`` with broadcasting batch
    dimensions; the result is fp32 (fp64 for fp64 inputs): each product is the PAM
    product of the exactly widened operands, and ``C[i, j]`` is
    ``((0 + p_0) + p_1) + ... + p_{K-1}``, every add rounded to nearest even.
    """
    return _launch_matmul(_pam_matmul_kernel, A, B, mode, fmt)


def _launch_matmul(
    kernel: Any, A: torch.Tensor, B: torch.Tensor, mode: str, fmt_given: object = None
) -> torch.Tensor:
    """Checks, batching and launch of a matmul kernel with :func:`_pam_matmul_kernel`'s signature."""
    ftz = check_mode(mode) == "ftz"
    fmt = _format_of(A, B, fmt=fmt_given)
    device = _check_device(A, B)
    _refuse_grad("pam_matmul", A, B)
    if not ftz and device.type == "cpu" and _host_flushes_subnormals():
        raise UsageError(
            "the Triton interpreter adds with this thread's float unit, which flushes subnormals "
            "(torch.set_flush_denormal(True)): an 'ieee' pam_matmul would be wrong there. Call "
            "torch.set_flush_denormal(False), use mode='ftz', or revcheck.kernels.pam.pam_matmul "
            "(immune to the flag)"
        )
    if A.dim() < 2 or B.dim() < 2:
        raise ValueError(
            f"pam_matmul needs A of shape (..., M, K) and B of shape (..., K, N); got {tuple(A.shape)} "
            f"and {tuple(B.shape)} (use unsqueeze for vectors)"
        )
    if A.shape[-1] != B.shape[-2]:
        raise ValueError(f"inner dimensions differ: A is {tuple(A.shape)}, B is {tuple(B.shape)}")
    acc = formats.accumulator_format(fmt)
    M, K = A.shape[-2:]
    N = B.shape[-1]
    batch_shape = torch.broadcast_shapes(A.shape[:-2], B.shape[:-2])
    batches = batch_shape.numel()
    A3 = A.expand(*batch_shape, M, K).reshape(batches, M, K).contiguous()
    B3 = B.expand(*batch_shape, K, N).reshape(batches, K, N).contiguous()
    acc_dtype = _bits.torch_dtype(acc)
    C3 = torch.empty((batches, M, N), dtype=acc_dtype, device=A.device)
    if C3.numel() == 0 or K == 0:
        return C3.zero_().reshape(*batch_shape, M, N)
    ci, ca = _constants(fmt), _constants(acc)
    A_int, B_int = _signed_patterns(A3, fmt), _signed_patterns(B3, fmt)
    # Small tiles for small matrices: the interpreter's cost grows with the tile, used or not.
    block_m = min(_MATMUL_BLOCK, triton.next_power_of_2(M))
    block_n = min(_MATMUL_BLOCK, triton.next_power_of_2(N))
    grid = (triton.cdiv(M, block_m), triton.cdiv(N, block_n), batches)
    kernel[grid](
        A_int, B_int, C3, M, N, K, *A_int.stride(), *B_int.stride(), *C3.stride(),
        IN_MB=ci.mantissa_bits, IN_BIAS=ci.bias, IN_EXP_MAX=ci.exp_max, IN_FN=ci.fn,
        ACC_MB=ca.mantissa_bits, ACC_BIAS=ca.bias, ACC_EXP_MAX=ca.exp_max, ACC_MAX_FINITE=ca.max_finite,
        ACC_OVERFLOW=ca.overflow, ACC_SIGN_MIN=ca.sign_min, ACC_NAN=ca.nan,
        ACC_INT=getattr(tl, acc.int_dtype.name), ACC_FLOAT=getattr(tl, acc.numpy_float_name or ""),
        FTZ=ftz, BLOCK_M=block_m, BLOCK_N=block_n, **_LAUNCH_OPTIONS,
    )  # fmt: skip
    return C3.reshape(*batch_shape, M, N)
