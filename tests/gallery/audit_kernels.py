"""Kernels for the audit gallery: realistic CORRECT ones and realistic WRONG ones (planted bugs).

The correct kernels are written here independently of ``revcheck.kernels``: plain
torch, integer arithmetic on bit views (decode to sign / exponent / significand
as int64, add, round once to nearest even, encode).  Each wrong kernel is the
correct one with ONE realistic mistake; :data:`AUDIT_BUGS` says which op it
claims to implement and which class of counterexample must expose it.
:data:`PLANTED_BUGS` holds them as records of the one planted-bug harness
(tests/harness.py): the check is the audit itself, with its DEFAULT settings
(counted cases, then derandomized Hypothesis examples), and it catches a bug only
by raising :class:`FlaggedAsPlanted`, an audit failure whose counterexample has
the declared class; the same audit of the correct kernel (:data:`CORRECT_KERNELS`)
must pass.  ``tests/test_audit_gallery.py`` adds what is particular to the audit
(false alarms in every format, seeds, the README's table).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import torch

from revcheck import formats
from revcheck.audit.report import AuditFailure, Counterexample
from revcheck.formats import FloatFormat
from tests.harness import PlantedBug, check_with

Tensor = torch.Tensor

# ---- bit-level helpers ------------------------------------------------------------------------


class Decoded(NamedTuple):
    """Fields of each element: |x| = significand · 2**(exponent - mantissa_bits) for finite nonzero x."""

    negative: Tensor
    nan: Tensor
    inf: Tensor
    zero: Tensor
    significand: Tensor  # in [2**m, 2**(m+1)) for finite nonzero values (subnormals normalized)
    exponent: Tensor  # unbiased floor(log2|x|)


def _int_dtype(fmt: FloatFormat) -> torch.dtype:
    return getattr(torch, fmt.int_dtype.name)


def _magnitude(x: Tensor, fmt: FloatFormat) -> tuple[Tensor, Tensor]:
    """(sign bit set, magnitude bits) as int64, from the raw bit view."""
    raw = x.view(_int_dtype(fmt)).to(torch.int64)
    return raw < 0, raw & fmt.magnitude_mask


def _msb(value: Tensor) -> Tensor:
    """Index of the highest set bit of each value in [1, 2**62); 0 for 0."""
    position = torch.zeros_like(value)
    for step in (32, 16, 8, 4, 2, 1):
        higher = (value >> (position + step)) != 0
        position = torch.where(higher, position + step, position)
    return position


def decode(x: Tensor, mode: str = "ieee", *, flush_subnormals: bool | None = None) -> Decoded:
    fmt = formats.get(x.dtype)
    negative, magnitude = _magnitude(x, fmt)
    field = magnitude >> fmt.mantissa_bits
    fraction = magnitude & fmt.mantissa_mask
    nan = magnitude == fmt.canonical_nan if fmt.saturates else magnitude > fmt.exponent_mask
    inf = magnitude == fmt.exponent_mask if fmt.has_inf else torch.zeros_like(nan)
    subnormal = (field == 0) & (fraction != 0)
    flush = mode == "ftz" if flush_subnormals is None else flush_subnormals
    zero = (magnitude == 0) | (subnormal & flush)
    shift = fmt.mantissa_bits - _msb(fraction)
    significand = torch.where(subnormal, fraction << shift, fraction | (1 << fmt.mantissa_bits))
    exponent = torch.where(subnormal, fmt.emin - shift, field - fmt.bias)
    return Decoded(negative, nan, inf, zero, significand, exponent)


def _round_shift(value: Tensor, shift: Tensor, *, half_up: bool = False) -> Tensor:
    """value / 2**shift rounded to nearest, ties to even (value >= 0, value < 2**62, shift >= 0)."""
    safe = shift.clamp(1, 62)
    quotient = value >> safe
    remainder = value & ((1 << safe) - 1)
    half = 1 << (safe - 1)
    tie_up = torch.ones_like(quotient, dtype=torch.bool) if half_up else (quotient & 1) == 1
    rounded = quotient + ((remainder > half) | ((remainder == half) & tie_up)).to(torch.int64)
    rounded = torch.where(shift > 62, torch.zeros_like(rounded), rounded)
    return torch.where(shift <= 0, value, rounded)


def encode_magnitude(significand: Tensor, scale: Tensor, fmt: FloatFormat, mode: str) -> Tensor:
    """Magnitude bits of significand · 2**scale, rounded once to nearest even (significand < 2**62)."""
    top = _msb(significand)
    exponent = (top + scale).clamp(fmt.emin - fmt.mantissa_bits - 4, fmt.emax + 2)
    effective = exponent.clamp(min=fmt.emin)
    right = effective - fmt.mantissa_bits - scale
    shifted_left = significand << (-right).clamp(0, 62)
    rounded = torch.where(right <= 0, shifted_left, _round_shift(significand, right))
    # Clamped so that the sum below cannot leave int64 even for fp64; the flag keeps the overflow.
    overflow = exponent > fmt.emax
    magnitude = ((effective.clamp(max=fmt.emax) + fmt.bias - 1) << fmt.mantissa_bits) + rounded
    overflow = overflow | (magnitude > fmt.max_finite)
    magnitude = torch.where(overflow, torch.full_like(magnitude, fmt.overflow_magnitude), magnitude)
    tiny = (top + scale) < fmt.emin
    if mode == "ftz":
        magnitude = torch.where(tiny, torch.zeros_like(magnitude), magnitude)
    return torch.where(significand == 0, torch.zeros_like(magnitude), magnitude)


def assemble(negative: Tensor, magnitude: Tensor, fmt: FloatFormat, dtype: torch.dtype) -> Tensor:
    sign = fmt.sign_mask if fmt.width < 64 else -(1 << 63)
    pattern = torch.where(negative, magnitude | sign, magnitude)
    return pattern.to(_int_dtype(fmt)).view(dtype)


def _nan_pattern(fmt: FloatFormat, like: Tensor) -> Tensor:
    return torch.full_like(like, fmt.canonical_nan)


# ---- correct PAM kernels (with switches for the planted bugs) --------------------------------


@dataclass(frozen=True)
class Bugs:
    """One switch per planted mistake; all off is the correct kernel."""

    flush_subnormal_inputs: bool = False
    unsigned_zero: bool = False
    overflow_to_nan: bool = False
    storage_width_overflow_check: bool = False


CORRECT = Bugs()


def _pam_affine(a: Tensor, b: Tensor, mode: str, divide: bool, bugs: Bugs) -> Tensor:
    fmt = formats.get(a.dtype)
    m = fmt.mantissa_bits
    flush = True if bugs.flush_subnormal_inputs else None
    x, y = decode(a, mode, flush_subnormals=flush), decode(b, mode, flush_subnormals=flush)
    negative = x.negative ^ y.negative
    if divide:
        difference = x.significand - y.significand
        borrow = (difference < 0).to(torch.int64)
        significand = difference + ((1 + borrow) << m)
        exponent = x.exponent - y.exponent - borrow
        nan = x.nan | y.nan | (x.zero & y.zero) | (x.inf & y.inf)
        infinite = ((x.inf & ~y.inf) | (y.zero & ~x.zero)) & ~nan
        zero = ((x.zero & ~y.zero) | (y.inf & ~x.inf)) & ~nan
    else:
        total = x.significand + y.significand - (2 << m)
        carry = (total >= (1 << m)).to(torch.int64)
        significand = torch.where(carry == 1, total, total + (1 << m))
        exponent = x.exponent + y.exponent + carry
        nan = x.nan | y.nan | (x.inf & y.zero) | (x.zero & y.inf)
        infinite = (x.inf | y.inf) & ~nan
        zero = (x.zero | y.zero) & ~nan & ~infinite
    magnitude = encode_magnitude(significand, exponent - m, fmt, mode)
    if bugs.overflow_to_nan:
        overflowed = (magnitude == fmt.overflow_magnitude) & (exponent > fmt.emax)
        nan = nan | (overflowed & ~zero & ~infinite)
    if bugs.storage_width_overflow_check and not divide:
        # The fast path I(|a|) + I(|b|) - I(1.0) in the storage integer type: a carry out of the
        # top bit wraps negative and the overflow test below never sees it.
        storage = _int_dtype(fmt)
        _, ma = _magnitude(a, fmt)
        _, mb = _magnitude(b, fmt)
        fast = ma.to(storage) + mb.to(storage) - torch.tensor(fmt.one).to(storage)
        wrapped = (fast < 0) & (ma + mb - fmt.one > fmt.max_finite)
        magnitude = torch.where(wrapped, fast.to(torch.int64) & fmt.magnitude_mask, magnitude)
    magnitude = torch.where(infinite, torch.full_like(magnitude, fmt.overflow_magnitude), magnitude)
    magnitude = torch.where(zero, torch.zeros_like(magnitude), magnitude)
    if bugs.unsigned_zero:
        negative = negative & (magnitude != 0)
    result = torch.where(nan, _nan_pattern(fmt, magnitude), magnitude)
    negative = negative & ~nan
    return assemble(negative, result, fmt, a.dtype)


def pam_mul(a: Tensor, b: Tensor, *, mode: str = "ieee") -> Tensor:
    """Correct PAM multiply."""
    return _pam_affine(a, b, mode, False, CORRECT)


def pam_div(a: Tensor, b: Tensor, *, mode: str = "ieee") -> Tensor:
    """Correct PAM divide."""
    return _pam_affine(a, b, mode, True, CORRECT)


def pa_log2(x: Tensor, *, mode: str = "ieee") -> Tensor:
    """Correct piecewise-affine log2: E + M, rounded once."""
    fmt = formats.get(x.dtype)
    d = decode(x, mode)
    m = fmt.mantissa_bits
    fixed = (d.exponent << m) + d.significand - (1 << m)
    negative = fixed < 0
    magnitude = encode_magnitude(fixed.abs(), torch.full_like(fixed, -m), fmt, mode)
    magnitude = torch.where(d.inf | d.zero, torch.full_like(magnitude, fmt.overflow_magnitude), magnitude)
    negative = torch.where(
        d.inf, torch.zeros_like(negative), torch.where(d.zero, torch.ones_like(negative), negative)
    )
    negative = negative & ~d.nan
    magnitude = torch.where(d.nan, _nan_pattern(fmt, magnitude), magnitude)
    return assemble(negative, magnitude, fmt, x.dtype)


def _pam_mul_grad(a: Tensor, b: Tensor, mode: str, *, carry: bool) -> Tensor:
    fmt = formats.get(a.dtype)
    m = fmt.mantissa_bits
    x, y = decode(a, mode), decode(b, mode)
    # Ma, Mb: the fraction fields of the (normalised) values; zeros and infinities have none.
    fraction_a = torch.where(x.zero | x.inf, 0, x.significand - (1 << m))
    fraction_b = torch.where(y.zero | y.inf, 0, y.significand - (1 << m))
    step = ((fraction_a + fraction_b) >> m) if carry else torch.zeros_like(fraction_a)
    magnitude = encode_magnitude(torch.full_like(step, 1 << m), y.exponent + step - m, fmt, mode)
    magnitude = torch.where(y.zero, torch.zeros_like(magnitude), magnitude)
    magnitude = torch.where(y.inf, torch.full_like(magnitude, fmt.overflow_magnitude), magnitude)
    nan = x.nan | y.nan | (x.inf & y.zero) | (x.zero & y.inf)
    magnitude = torch.where(nan, _nan_pattern(fmt, magnitude), magnitude)
    return assemble(y.negative & ~nan, magnitude, fmt, a.dtype)


def pam_mul_grad(a: Tensor, b: Tensor, *, mode: str = "ieee") -> Tensor:
    """Correct derivative of a ⊡ b with respect to a: sign(b) · 2**(Eb + [Ma + Mb >= 1])."""
    return _pam_mul_grad(a, b, mode, carry=True)


def pam_mul_grad_without_carry(a: Tensor, b: Tensor, *, mode: str = "ieee") -> Tensor:
    """WRONG: sign(b) · 2**Eb, forgetting the exponent step where the significand sum carries."""
    return _pam_mul_grad(a, b, mode, carry=False)


_EXP2_OUT_OF_RANGE = 11  # |y| >= 2**11 overflows or underflows in every format up to fp64


def pa_exp2(y: Tensor, *, mode: str = "ieee") -> Tensor:
    """Correct piecewise-affine exp2: 2**floor(y) (1 + y - floor(y)), rounded once."""
    fmt = formats.get(y.dtype)
    d = decode(y, mode)
    m = fmt.mantissa_bits
    extra = m + 3  # fraction bits kept, plus a sticky bit below them (round to odd, then RNE)
    fraction_bits = (m - d.exponent).clamp(0, 200)
    integer = torch.where(
        d.exponent >= m,
        d.significand << (d.exponent - m).clamp(0, 20),
        d.significand >> fraction_bits.clamp(0, 62),
    )
    low = d.significand & ((1 << fraction_bits.clamp(0, 62)) - 1)
    down = (fraction_bits - extra).clamp(0, 62)
    sticky = ((low & ((1 << down) - 1)) != 0).to(torch.int64)
    fraction = torch.where(
        fraction_bits <= extra, low << (extra - fraction_bits).clamp(0, 62), (low >> down) | sticky
    )
    has_fraction = fraction != 0
    floor = torch.where(d.negative, -integer - has_fraction.to(torch.int64), integer)
    fraction = torch.where(d.negative & has_fraction, (1 << extra) - fraction, fraction)
    magnitude = encode_magnitude(fraction + (1 << extra), floor - extra, fmt, mode)
    huge = d.exponent >= _EXP2_OUT_OF_RANGE
    magnitude = torch.where(huge & ~d.negative, torch.full_like(magnitude, fmt.overflow_magnitude), magnitude)
    magnitude = torch.where(huge & d.negative, torch.zeros_like(magnitude), magnitude)
    magnitude = torch.where(d.zero, torch.full_like(magnitude, fmt.one), magnitude)
    magnitude = torch.where(d.inf, torch.where(d.negative, 0, fmt.overflow_magnitude), magnitude)
    magnitude = torch.where(d.nan, _nan_pattern(fmt, magnitude), magnitude)
    return assemble(torch.zeros_like(d.negative), magnitude, fmt, y.dtype)


def _fp32_only(x: Tensor, name: str) -> None:
    if x.dtype != torch.float32:
        raise TypeError(f"{name} supports float32 only, got {x.dtype}")


def pa_exp2_flushes_last_binade(y: Tensor, *, mode: str = "ieee") -> Tensor:
    """WRONG (fp32 only): every y below emin - m (= -149) gives +0.

    "Below the smallest subnormal is zero" forgets that 2**floor(y) (1 + f) for y in (-150, -149)
    rounds UP to the smallest subnormal: wrong only in the last binade above the underflow threshold.
    """
    _fp32_only(y, "pa_exp2_flushes_last_binade")
    fmt = formats.get(y.dtype)
    result = pa_exp2(y, mode=mode)
    below = (y < fmt.emin - fmt.mantissa_bits) & torch.isfinite(y)
    return torch.where(below, torch.zeros_like(result), result)


def pa_log2_near_one_shortcut(x: Tensor, *, mode: str = "ieee") -> Tensor:
    """WRONG (fp32 only): returns +0 when |x| is within 4 ULPs of 1, so that pa_log2(1) is "surely" +0.

    pa_log2(1 + k ulp) is k · 2**-23, exactly: the tolerance throws away the results a few ULPs from 1.
    """
    _fp32_only(x, "pa_log2_near_one_shortcut")
    result = pa_log2(x, mode=mode)
    near_one = (x.abs() - 1).abs() < 4 * torch.finfo(torch.float32).eps
    return torch.where(near_one, torch.zeros_like(result), result)


# ---- PAM matrix product ----------------------------------------------------------------------


def _accumulator_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _flush_tiny_sum(total: Tensor) -> Tensor:
    smallest_normal = torch.finfo(total.dtype).tiny
    return torch.where(
        (total.abs() < smallest_normal) & (total != 0), torch.zeros_like(total).copysign(total), total
    )


def _products(A: Tensor, B: Tensor, mode: str) -> Tensor:
    accumulator = _accumulator_dtype(A.dtype)
    if mode == "ftz":  # flush subnormals of the INPUT format before widening
        fmt = formats.get(A.dtype)
        A = _flush_inputs(A, fmt)
        B = _flush_inputs(B, fmt)
    wide_a, wide_b = A.to(accumulator), B.to(accumulator)
    return pam_mul(wide_a[:, :, None], wide_b[None, :, :], mode=mode)  # (M, K, N)


def _flush_inputs(t: Tensor, fmt: FloatFormat) -> Tensor:
    negative, magnitude = _magnitude(t, fmt)
    subnormal = (magnitude >> fmt.mantissa_bits == 0) & (magnitude != 0)
    return assemble(negative, torch.where(subnormal, torch.zeros_like(magnitude), magnitude), fmt, t.dtype)


def pam_matmul(A: Tensor, B: Tensor, *, mode: str = "ieee") -> Tensor:
    """Correct PAM matmul: products in the accumulator dtype, summed sequentially over k from +0.0."""
    products = _products(A, B, mode)
    total = torch.zeros(products.shape[0], products.shape[2], dtype=products.dtype, device=products.device)
    for k in range(products.shape[1]):
        total = total + products[:, k, :]
        if mode == "ftz":
            total = _flush_tiny_sum(total)
    return total


def pam_matmul_pairwise(A: Tensor, B: Tensor, *, mode: str = "ieee") -> Tensor:
    """WRONG for pam_matmul (pairwise tree order over k), fine for pam_matmul_any_order."""
    terms = list(_products(A, B, mode).unbind(dim=1))
    if not terms:
        return torch.zeros(A.shape[0], B.shape[1], dtype=_accumulator_dtype(A.dtype), device=A.device)
    while len(terms) > 1:
        paired = [terms[i] + terms[i + 1] for i in range(0, len(terms) - 1, 2)]
        if mode == "ftz":
            paired = [_flush_tiny_sum(t) for t in paired]
        terms = paired + ([terms[-1]] if len(terms) % 2 else [])
    # + 0.0 as in the sequential order (acc starts at +0.0): turns a lone -0 into +0.
    total = torch.zeros_like(terms[0]) + terms[0]
    return total


def pam_matmul_random_order(A: Tensor, B: Tensor, *, mode: str = "ieee") -> Tensor:
    """WRONG (nondeterministic): sums in a fresh random order on every call, like atomics on a GPU."""
    products = _products(A, B, mode)
    order = torch.randperm(products.shape[1])
    total = torch.zeros(products.shape[0], products.shape[2], dtype=products.dtype, device=products.device)
    for k in order.tolist():
        total = total + products[:, k, :]
        if mode == "ftz":
            total = _flush_tiny_sum(total)
    return total


def pam_matmul_input_dtype_accumulator(A: Tensor, B: Tensor, *, mode: str = "ieee") -> Tensor:
    """WRONG even for pam_matmul_any_order: products and partial sums rounded to the INPUT dtype."""
    products = _products(A, B, mode).to(A.dtype)
    total = torch.zeros(products.shape[0], products.shape[2], dtype=A.dtype, device=A.device)
    for k in range(products.shape[1]):
        total = total + products[:, k, :]
    return total.to(_accumulator_dtype(A.dtype))


def pam_matmul_inf_times_finite_is_nan(A: Tensor, B: Tensor, *, mode: str = "ieee") -> Tensor:
    """WRONG: an emulation of the PAM paper's CUDA matmul, whose product of inf and a finite value is NaN.

    The product guard tests "either operand not finite -> NaN" instead of "inf with zero, or NaN":
    ``inf ⊡ 1`` is NaN inside the product, so a row with an infinity sums to NaN, not ±inf.
    """
    products = _products(A, B, mode)
    infinite = torch.isinf(A.to(products.dtype))[:, :, None] | torch.isinf(B.to(products.dtype))[None, :, :]
    products = torch.where(infinite, torch.full_like(products, float("nan")), products)
    total = torch.zeros(products.shape[0], products.shape[2], dtype=products.dtype, device=products.device)
    for k in range(products.shape[1]):
        total = total + products[:, k, :]
        if mode == "ftz":
            total = _flush_tiny_sum(total)
    return total


SPLIT_K_BLOCK = 32


def pam_matmul_split_k_low_precision(A: Tensor, B: Tensor, *, mode: str = "ieee") -> Tensor:
    """WRONG even for pam_matmul_any_order: split-K with bf16 partial sums once K > 32.

    Each block of 32 products is summed in the accumulator dtype, but the partial sums are
    stored in bf16 (to halve the workspace) before the final reduction; with one block (K <= 32)
    nothing is stored and the result is exact, so only reductions longer than a block leave the bound.
    """
    products = _products(A, B, mode)
    blocks = products.split(SPLIT_K_BLOCK, dim=1)
    partials = []
    for block in blocks:
        partial = torch.zeros(products.shape[0], products.shape[2], dtype=products.dtype, device=A.device)
        for k in range(block.shape[1]):
            partial = partial + block[:, k, :]
        partials.append(partial)
    if len(partials) == 1:
        return partials[0]
    total = torch.zeros_like(partials[0])
    for partial in partials:
        total = total + partial.to(torch.bfloat16).to(products.dtype)
    return total


def pam_matmul_flushes_subnormal_products(A: Tensor, B: Tensor, *, mode: str = "ieee") -> Tensor:
    """WRONG in mode "ieee": products below the accumulator's smallest normal are flushed to zero.

    (A product kernel compiled with flush-to-zero.)  fp16 and fp8 products are never subnormal in
    fp32 (docs/spec.md F2.10): the bug shows only for fp32, bf16 and fp64 inputs.
    """
    products = _flush_tiny_sum(_products(A, B, mode))
    total = torch.zeros(products.shape[0], products.shape[2], dtype=products.dtype, device=products.device)
    for k in range(products.shape[1]):
        total = total + products[:, k, :]
        if mode == "ftz":
            total = _flush_tiny_sum(total)
    return total


def pam_matmul_backward_approx(
    A: Tensor, B: Tensor, G: Tensor, *, mode: str = "ieee"
) -> tuple[Tensor, Tensor]:
    """Correct approximate backward: dA = G ⊡@ Bᵀ, dB = Aᵀ ⊡@ G in the accumulator, rounded to A's dtype."""
    accumulator = _accumulator_dtype(A.dtype)
    grad_a = pam_matmul(G, B.to(accumulator).T.contiguous(), mode=mode)
    grad_b = pam_matmul(A.to(accumulator).T.contiguous(), G, mode=mode)
    return grad_a.to(A.dtype), grad_b.to(B.dtype)


def pam_matmul_backward_narrow_gradient(
    A: Tensor, B: Tensor, G: Tensor, *, mode: str = "ieee"
) -> tuple[Tensor, Tensor]:
    """WRONG: the upstream gradient is cast to the parameters' dtype first (to "save memory").

    For fp32 and fp64 that cast is the identity; for bf16, fp16 and fp8 it rounds G before the
    products, so the gradients differ from the backward PAMMatmul defines.
    """
    narrow = G.to(A.dtype).to(G.dtype)
    return pam_matmul_backward_approx(A, B, narrow, mode=mode)


# ---- planted PAM bugs ------------------------------------------------------------------------


def pam_mul_flushes_subnormals(a: Tensor, b: Tensor, *, mode: str = "ieee") -> Tensor:
    """WRONG: treats subnormal inputs as zero even in mode "ieee" (denormals-are-zero hardware default)."""
    return _pam_affine(a, b, mode, False, Bugs(flush_subnormal_inputs=True))


def pam_mul_unsigned_zero(a: Tensor, b: Tensor, *, mode: str = "ieee") -> Tensor:
    """WRONG: every zero result is +0 (the sign of zero is lost)."""
    return _pam_affine(a, b, mode, False, Bugs(unsigned_zero=True))


def pam_mul_overflow_nan(a: Tensor, b: Tensor, *, mode: str = "ieee") -> Tensor:
    """WRONG: an overflowing product becomes NaN instead of ±inf (±448 in fp8_e4m3fn)."""
    return _pam_affine(a, b, mode, False, Bugs(overflow_to_nan=True))


def pam_mul_storage_width(a: Tensor, b: Tensor, *, mode: str = "ieee") -> Tensor:
    """WRONG: the overflow test of the integer fast path runs in int16 (int8/int32/int64) and wraps."""
    return _pam_affine(a, b, mode, False, Bugs(storage_width_overflow_check=True))


def pam_div_flushes_subnormals(a: Tensor, b: Tensor, *, mode: str = "ieee") -> Tensor:
    """WRONG: denormals-are-zero in the divide."""
    return _pam_affine(a, b, mode, True, Bugs(flush_subnormal_inputs=True))


def pa_log2_float_route(x: Tensor, *, mode: str = "ieee") -> Tensor:
    """WRONG: E from torch.log2, M from a float division by torch.exp2(E); zero/inf/NaN special-cased."""
    magnitude = x.abs()
    exponent = torch.floor(torch.log2(magnitude))
    mantissa = magnitude * torch.exp2(-exponent) - 1
    result = exponent + mantissa
    result = torch.where(magnitude == 0, torch.full_like(result, -float("inf")), result)
    return torch.where(torch.isinf(magnitude), magnitude, result)


def pa_exp2_float_route(y: Tensor, *, mode: str = "ieee") -> Tensor:
    """WRONG: 2**floor(y) * (1 + y - floor(y)) evaluated in the input's float dtype, left to right."""
    floor = torch.floor(y)
    result = torch.exp2(floor) * (1 + y - floor)
    return torch.where(torch.isinf(y), torch.exp2(y), result)


# ---- BDIA kernels ------------------------------------------------------------------------------


def bdia_quantize(y: Tensor, grid_bits: int) -> Tensor:
    """Correct quantizer: the scaling by 2**grid_bits is exact in float64, torch.round ties to even."""
    return torch.round(y.to(torch.float64) * 2.0**grid_bits).to(torch.int64)


def bdia_quantize_half_up(y: Tensor, grid_bits: int) -> Tensor:
    """WRONG: floor(y * 2**grid_bits + 0.5) rounds ties up instead of to even."""
    return torch.floor(y.to(torch.float64) * 2.0**grid_bits + 0.5).to(torch.int64)


def _gamma_column(gamma: Tensor, like: Tensor) -> Tensor:
    return gamma.to(like.dtype).reshape(gamma.shape + (1,) * (like.dim() - 1))


def _mix(
    X_cur: Tensor, h: Tensor, gamma: Tensor, grid_bits: int, compute_dtype: torch.dtype, fused: bool
) -> Tensor:
    x = X_cur.to(compute_dtype) * 2.0**-grid_bits
    g = _gamma_column(gamma, x)
    if fused:  # one rounding at the end, as an FMA-contracting compiler would produce
        wide = (1 - g.double()) * x.double() + (1 + g.double()) * h.double()
        return wide.to(compute_dtype)
    return (1 - g) * x + (1 + g) * h.to(compute_dtype)


def _forward(
    X_prev: Tensor,
    X_cur: Tensor,
    h: Tensor,
    gamma: Tensor,
    grid_bits: int,
    compute_dtype: torch.dtype,
    *,
    fused: bool = False,
    side_from: str = "prev",
) -> tuple[Tensor, Tensor]:
    y = _mix(X_cur, h, gamma, grid_bits, compute_dtype, fused)
    code_y = bdia_quantize(y, grid_bits)
    side = (X_prev if side_from == "prev" else X_cur) & 1
    half = (X_prev + side) >> 1
    signed = torch.where(_gamma_column(gamma, y) > 0, half, -half)
    return signed + code_y, side.to(torch.uint8)


def bdia_forward_step(
    X_prev: Tensor,
    X_cur: Tensor,
    h: Tensor,
    gamma: Tensor,
    grid_bits: int,
    *,
    compute_dtype: torch.dtype = torch.float32,
) -> tuple[Tensor, Tensor]:
    """Correct BDIA forward step."""
    return _forward(X_prev, X_cur, h, gamma, grid_bits, compute_dtype)


def bdia_forward_step_fma(
    X_prev: Tensor,
    X_cur: Tensor,
    h: Tensor,
    gamma: Tensor,
    grid_bits: int,
    *,
    compute_dtype: torch.dtype = torch.float32,
) -> tuple[Tensor, Tensor]:
    """WRONG: y_k contracted (computed in float64, rounded once) instead of fl(fl(t1) + fl(t2))."""
    return _forward(X_prev, X_cur, h, gamma, grid_bits, compute_dtype, fused=True)


def bdia_forward_step_wrong_side_bit(
    X_prev: Tensor,
    X_cur: Tensor,
    h: Tensor,
    gamma: Tensor,
    grid_bits: int,
    *,
    compute_dtype: torch.dtype = torch.float32,
) -> tuple[Tensor, Tensor]:
    """WRONG: the side bit is taken from X_cur instead of X_prev."""
    return _forward(X_prev, X_cur, h, gamma, grid_bits, compute_dtype, side_from="cur")


def _inverse(
    X_next: Tensor,
    X_cur: Tensor,
    h: Tensor,
    gamma: Tensor,
    s_prev: Tensor,
    grid_bits: int,
    compute_dtype: torch.dtype,
    subtract_side: bool,
) -> Tensor:
    y = _mix(X_cur, h, gamma, grid_bits, compute_dtype, fused=False)
    difference = X_next - bdia_quantize(y, grid_bits)
    signed = torch.where(_gamma_column(gamma, y) > 0, 2 * difference, -2 * difference)
    return signed - s_prev.to(torch.int64) if subtract_side else signed


def bdia_inverse_step(
    X_next: Tensor,
    X_cur: Tensor,
    h: Tensor,
    gamma: Tensor,
    s_prev: Tensor,
    grid_bits: int,
    *,
    compute_dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Correct BDIA inverse step."""
    return _inverse(X_next, X_cur, h, gamma, s_prev, grid_bits, compute_dtype, subtract_side=True)


def bdia_inverse_step_ignores_side_bit(
    X_next: Tensor,
    X_cur: Tensor,
    h: Tensor,
    gamma: Tensor,
    s_prev: Tensor,
    grid_bits: int,
    *,
    compute_dtype: torch.dtype = torch.float32,
) -> Tensor:
    """WRONG: forgets to subtract the stored side bit."""
    return _inverse(X_next, X_cur, h, gamma, s_prev, grid_bits, compute_dtype, subtract_side=False)


def bdia_forward_step_through_float64(
    X_prev: Tensor,
    X_cur: Tensor,
    h: Tensor,
    gamma: Tensor,
    grid_bits: int,
    *,
    compute_dtype: torch.dtype = torch.float32,
) -> tuple[Tensor, Tensor]:
    """WRONG above 2**53: x = X * 2**-l converted int64 -> float64 -> fp32, which rounds twice.

    Exact while float64 holds the code (|X| <= 2**53); above, the first rounding can leave a tie
    that the second rounds to even, where one rounding of X rounds up.
    """
    x = (X_cur.to(torch.float64) * 2.0**-grid_bits).to(compute_dtype)
    g = _gamma_column(gamma, x)
    y = (1 - g) * x + (1 + g) * h.to(compute_dtype)
    side = X_prev & 1
    half = (X_prev + side) >> 1
    return torch.where(g > 0, half, -half) + bdia_quantize(y, grid_bits), side.to(torch.uint8)


def bdia_inference_step(
    X_cur: Tensor, h: Tensor, grid_bits: int, *, compute_dtype: torch.dtype = torch.float32
) -> Tensor:
    """Correct BDIA inference step (gamma = 0): X_next = X_cur + R(h)."""
    return X_cur + bdia_quantize(h.to(compute_dtype), grid_bits)


def bdia_inference_step_rounds_sum(
    X_cur: Tensor, h: Tensor, grid_bits: int, *, compute_dtype: torch.dtype = torch.float32
) -> Tensor:
    """WRONG: the public BDIA ViT's inference rule R(fl(x + h)), which rounds twice (docs/spec.md D3.1)."""
    x = X_cur.to(compute_dtype) * 2.0**-grid_bits
    return bdia_quantize(x + h.to(compute_dtype), grid_bits)


# ---- the catalogue ---------------------------------------------------------------------------------

CORRECT_KERNELS: dict[str, Any] = {
    "pam_mul": pam_mul,
    "pam_div": pam_div,
    "pam_mul_grad": pam_mul_grad,
    "pa_log2": pa_log2,
    "pa_exp2": pa_exp2,
    "pam_matmul": pam_matmul,
    "pam_matmul_any_order": pam_matmul_pairwise,
    "pam_matmul_backward_approx": pam_matmul_backward_approx,
    "bdia_quantize": bdia_quantize,
    "bdia_forward_step": bdia_forward_step,
    "bdia_inverse_step": bdia_inverse_step,
    "bdia_inference_step": bdia_inference_step,
}


class AuditBug(NamedTuple):
    """A wrong kernel, the op it claims to be, the formats audited, and what must expose it.

    ``expect`` are conditions on the counterexample: ``"input:subnormal"`` (some
    input has that class or label), ``"expected:-zero"`` / ``"actual:nan"``
    (signed or unsigned class of the first output), ``"label:tie"``.
    """

    kernel: Any
    op: str
    formats: tuple[str, ...]
    expect: tuple[str, ...]
    determinism: bool = False


AUDIT_BUGS: dict[str, AuditBug] = {
    "flushed subnormals": AuditBug(pam_mul_flushes_subnormals, "pam_mul", ("bf16",), ("input:subnormal",)),
    "flushed subnormals (divide)": AuditBug(
        pam_div_flushes_subnormals, "pam_div", ("fp16",), ("input:subnormal",)
    ),
    "lost sign of zero": AuditBug(
        pam_mul_unsigned_zero, "pam_mul", ("fp32",), ("expected:-zero", "actual:+zero")
    ),
    "overflow to NaN": AuditBug(
        pam_mul_overflow_nan, "pam_mul", ("bf16",), ("input:normal", "expected:inf", "actual:nan")
    ),
    "overflow to NaN (saturating fp8_e4m3fn)": AuditBug(
        pam_mul_overflow_nan, "pam_mul", ("fp8_e4m3fn",), ("input:normal", "expected:normal", "actual:nan")
    ),
    "int16 wrap-around in the overflow test": AuditBug(
        pam_mul_storage_width, "pam_mul", ("fp16",), ("input:normal", "expected:inf", "actual:normal")
    ),
    "gradient without the carry": AuditBug(
        pam_mul_grad_without_carry, "pam_mul_grad", ("bf16",), ("input:normal", "expected:normal")
    ),
    "float log2 route": AuditBug(pa_log2_float_route, "pa_log2", ("fp32",), ("input:subnormal",)),
    "float exp2 route": AuditBug(pa_exp2_float_route, "pa_exp2", ("bf16",), ("input:normal",)),
    "exp2 flushes its last binade (fp32 only)": AuditBug(
        pa_exp2_flushes_last_binade, "pa_exp2", ("fp32",), ("expected:subnormal", "actual:+zero")
    ),
    "log2 near one shortcut (fp32 only)": AuditBug(
        pa_log2_near_one_shortcut, "pa_log2", ("fp32",), ("input:normal", "actual:+zero")
    ),
    "round half up": AuditBug(bdia_quantize_half_up, "bdia_quantize", ("fp32",), ("label:tie",)),
    "FMA-contracted y_k": AuditBug(
        bdia_forward_step_fma, "bdia_forward_step", ("fp32",), ("label:X_next differs", "label:s_prev agrees")
    ),
    "side bit from X_cur": AuditBug(
        bdia_forward_step_wrong_side_bit, "bdia_forward_step", ("fp32",), ("label:s_prev differs",)
    ),
    "inverse ignores the side bit": AuditBug(
        bdia_inverse_step_ignores_side_bit, "bdia_inverse_step", ("fp32",), ("label:s_prev=1",)
    ),
    "x through float64 (double rounding above 2^53)": AuditBug(
        bdia_forward_step_through_float64,
        "bdia_forward_step",
        ("fp32",),
        ("input:X_cur: |code| ≥ 2^53", "label:X_next differs"),
    ),
    "inference as R(x + h) (public BDIA ViT)": AuditBug(
        bdia_inference_step_rounds_sum, "bdia_inference_step", ("fp32",), ("label:X_next differs",)
    ),
    "pairwise summation order": AuditBug(pam_matmul_pairwise, "pam_matmul", ("fp32",), ("input:normal",)),
    "accumulator in the input dtype": AuditBug(
        pam_matmul_input_dtype_accumulator, "pam_matmul_any_order", ("bf16",), ("input:normal",)
    ),
    "PAM paper's CUDA matmul: inf ⊡ finite is NaN": AuditBug(
        pam_matmul_inf_times_finite_is_nan,
        "pam_matmul",
        ("fp32",),
        ("input:inf", "expected:inf", "actual:nan"),
    ),
    "split-K with bf16 partial sums (K > 32)": AuditBug(
        pam_matmul_split_k_low_precision, "pam_matmul_any_order", ("fp32",), ("input:normal",)
    ),
    "flushed subnormal products (fp32 only)": AuditBug(
        pam_matmul_flushes_subnormal_products, "pam_matmul", ("fp32",), ("input:products: underflow edge",)
    ),
    "gradient cast to the input dtype first": AuditBug(
        pam_matmul_backward_narrow_gradient, "pam_matmul_backward_approx", ("bf16",), ("label:dA",)
    ),
    "random summation order": AuditBug(
        pam_matmul_random_order,
        "pam_matmul_any_order",
        ("fp32",),
        ("label:nondeterministic",),
        determinism=True,
    ),
}


# ---- the records of the planted-bug harness --------------------------------------------------------


class FlaggedAsPlanted(AuditFailure):
    """The audit failed, and its counterexample has the class the planted bug declares."""


class WrongCounterexampleError(AssertionError):
    """The audit failed, but its counterexample does not show what must expose the planted bug."""


def meets(counterexample: Counterexample, condition: str) -> bool:
    """Whether the counterexample satisfies one ``kind:value`` condition of an :class:`AuditBug`."""
    kind, _, value = condition.partition(":")
    if kind == "input":
        return counterexample.involves(value)
    if kind == "label":
        return value in counterexample.labels
    observed = counterexample.expected_label if kind == "expected" else counterexample.actual_label
    return observed == value or observed.lstrip("+-") == value


def check_audit_flags_the_right_class(
    kernel: Any, *, op: str, formats: tuple[str, ...], expect: tuple[str, ...], determinism: bool
) -> None:
    """Audit ``kernel`` as ``op`` (default settings); :class:`FlaggedAsPlanted` if caught as declared.

    Passes when the audit passes; an audit that failed with another counterexample
    class raises :class:`WrongCounterexampleError`, one that did not check
    everything :class:`AuditFailure`: neither counts as a catch.
    """
    __tracebackhide__ = True
    from revcheck.audit import audit

    report = audit(kernel, op, formats=formats, determinism=determinism)
    if report.passed:
        return
    if report.verdict != "failed":
        raise AuditFailure(report)
    (failed,) = report.failures
    counterexample = failed.counterexample
    if counterexample is None:
        raise WrongCounterexampleError(f"the audit failed without a counterexample:\n{report}")
    unmet = [condition for condition in expect if not meets(counterexample, condition)]
    if unmet:
        raise WrongCounterexampleError(f"counterexample does not show {unmet}:\n{counterexample.text()}")
    raise FlaggedAsPlanted(report)


def _record(name: str, bug: AuditBug) -> PlantedBug:
    return PlantedBug(
        name,
        (bug.kernel.__doc__ or "").strip().splitlines()[0],
        check_with(
            check_audit_flags_the_right_class,
            inject="kernel",
            op=bug.op,
            formats=bug.formats,
            expect=bug.expect,
            determinism=bug.determinism,
        ),
        bug.kernel,
        CORRECT_KERNELS[bug.op],
        FlaggedAsPlanted,
        family="audit",
        hypothesis=False,
    )


PLANTED_BUGS: list[PlantedBug] = [_record(name, bug) for name, bug in AUDIT_BUGS.items()]
