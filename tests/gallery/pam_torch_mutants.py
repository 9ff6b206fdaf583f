"""Deliberately wrong torch PAM kernels: each one is a realistic mistake the PAM properties must catch.

Every mutant replaces one attribute (a kernel in :mod:`revcheck.kernels.pam`,
or a piece of :mod:`revcheck.nn.pam`) and names the property tests that must
fail with it in place; ``tests/test_pam_kernel_properties_catch.py`` patches
each in and runs those properties.  Mutants call the real kernels
(:data:`REAL`) for everything they do not break, so each has exactly one bug.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from revcheck import formats
from revcheck.kernels import pam as kernels
from revcheck.nn import pam as nn_pam

# The correct implementations, captured before any patching.
REAL: dict[str, Callable[..., Any]] = {
    name: getattr(kernels, name)
    for name in ("pam_mul", "pam_div", "pam_mul_grad", "pa_log2", "pa_exp2", "pam_matmul")
}
REAL_SEQUENTIAL_SUM = nn_pam._sequential_sum_of_scaled
REAL_MUL_SLOPE = kernels._mul_slope


def _int_dtype(fmt: formats.FloatFormat) -> torch.dtype:
    return getattr(torch, fmt.int_dtype.name)


def _bits(x: torch.Tensor) -> torch.Tensor:
    """Bit patterns as int64 (sign-extended); works for every dtype, fp8 included."""
    return x.contiguous().view(_int_dtype(formats.get(x.dtype))).to(torch.int64)


def _with_bits(bits: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    fmt = formats.get(dtype)
    signed = (
        torch.where(bits >= 1 << (fmt.width - 1), bits - (1 << fmt.width), bits) if fmt.width < 64 else bits
    )
    return signed.to(_int_dtype(fmt)).view(dtype)


def float_multiply(a: torch.Tensor, b: torch.Tensor, *, mode: str = "ieee") -> torch.Tensor:
    """The ordinary product rounded to the format: what PAM replaces, not PAM."""
    return (a.double() * b.double()).to(a.dtype)


def ftz_flush_drops_sign(a: torch.Tensor, b: torch.Tensor, *, mode: str = "ieee") -> torch.Tensor:
    """Flushing to +0 instead of a zero of the result's sign (e.g. ``x & magnitude_mask``)."""
    result = REAL["pam_mul"](a, b, mode=mode)
    if mode != "ftz":
        return result
    fmt = formats.get(result.dtype)
    bits = _bits(result)
    return _with_bits(torch.where((bits & fmt.magnitude_mask) == 0, 0, bits), result.dtype)


def overflow_to_nan(a: torch.Tensor, b: torch.Tensor, *, mode: str = "ieee") -> torch.Tensor:
    """An overflow check that writes the all-ones exponent with a nonzero significand (NaN, not inf)."""
    result = REAL["pam_mul"](a, b, mode=mode)
    fmt = formats.get(result.dtype)
    bits = _bits(result)
    overflowed = (bits & fmt.magnitude_mask) == fmt.overflow_magnitude
    return _with_bits(torch.where(overflowed, fmt.canonical_nan, bits), result.dtype)


def exponent_carry_wraps(a: torch.Tensor, b: torch.Tensor, *, mode: str = "ieee") -> torch.Tensor:
    """I(|a|) + I(|b|) − I(1) summed in the format's own signed width: a carry out of the top wraps.

    Correct wherever that sum fits; where it overflows the container (huge
    normal operands, e.g. fp16/bf16 values near max) the wrapped bits are
    returned instead of ±inf.
    """
    fmt = formats.get(a.dtype)
    result = REAL["pam_mul"](a, b, mode=mode)
    if fmt.width >= 64:  # the int64 container of fp64 is not modelled here
        return result
    a_bits, b_bits = torch.broadcast_tensors(_bits(a), _bits(b))
    a_mag, b_mag = a_bits & fmt.magnitude_mask, b_bits & fmt.magnitude_mask
    true_sum = a_mag + b_mag - fmt.one
    normal = (a_mag >= fmt.min_normal) & (b_mag >= fmt.min_normal)
    normal &= (a_mag <= fmt.max_finite) & (b_mag <= fmt.max_finite)
    wraps = normal & (true_sum > fmt.magnitude_mask)
    sign = (a_bits ^ b_bits) & fmt.sign_mask
    wrapped = (true_sum + sign) % (1 << fmt.width)
    return torch.where(wraps, _with_bits(wrapped, a.dtype), result)


def float_divide(a: torch.Tensor, b: torch.Tensor, *, mode: str = "ieee") -> torch.Tensor:
    """The ordinary quotient instead of ⊘."""
    return (a.double() / b.double()).to(a.dtype)


def log2_of_signed_value(x: torch.Tensor, *, mode: str = "ieee") -> torch.Tensor:
    """pa_log2 that does not ignore the sign: negative inputs give NaN like the real logarithm."""
    result = REAL["pa_log2"](x, mode=mode)
    fmt = formats.get(x.dtype)
    bits = _bits(x)
    negative_nonzero = (bits < 0) & ((bits & fmt.magnitude_mask) != 0)
    return _with_bits(torch.where(negative_nonzero, fmt.canonical_nan, _bits(result)), x.dtype)


def exp2_true_exponential(y: torch.Tensor, *, mode: str = "ieee") -> torch.Tensor:
    """The transcendental 2**y instead of its piecewise-affine version."""
    return torch.exp2(y.double()).to(y.dtype)


def slope_without_carry(da: Any, db: Any, fmt: formats.FloatFormat) -> Any:
    """sign(b) · 2**Eb: forgets the piece where Ma + Mb >= 1 doubles the slope.

    Patched into the one home of the slope (``kernels._mul_slope``), so ``pam_mul_grad``,
    the exact backward of ``pam_mul`` and that of ``PAMMatmul`` all inherit it.
    """
    cleared = dataclasses.replace(da, fraction=torch.zeros_like(da.fraction))  # Ma = 0: no carry
    return REAL_MUL_SLOPE(cleared, db, fmt)


def matmul_pairwise_always(
    a: torch.Tensor, b: torch.Tensor, *, order: str = "sequential", mode: str = "ieee"
) -> torch.Tensor:
    """Sums by a tree whatever order was asked for (a reduction kernel's natural order)."""
    return REAL["pam_matmul"](a, b, order="pairwise", mode=mode)


def matmul_flushes_after_widening(
    a: torch.Tensor, b: torch.Tensor, *, order: str = "sequential", mode: str = "ieee"
) -> torch.Tensor:
    """In ftz, flushes subnormals of the ACCUMULATOR format: fp16/bf16/fp8 subnormals survive widening."""
    acc = kernels.accumulator_dtype(a.dtype)
    return REAL["pam_matmul"](a.to(acc), b.to(acc), order=order, mode=mode)


def pairwise_in_bf16(
    a: torch.Tensor, b: torch.Tensor, *, order: str = "sequential", mode: str = "ieee"
) -> torch.Tensor:
    """A tree reduction whose partial sums are stored in bf16: errors far beyond the fp32 bound."""
    if order == "sequential":
        return REAL["pam_matmul"](a, b, order=order, mode=mode)
    depth = a.shape[-1]
    level = [REAL["pam_matmul"](a[..., k : k + 1], b[..., k : k + 1, :], mode=mode) for k in range(depth)]
    if not level:
        return REAL["pam_matmul"](a, b, order=order, mode=mode)
    while len(level) > 1:
        pairs = [
            (level[i] + level[i + 1]).to(torch.bfloat16).to(level[i].dtype)
            for i in range(0, len(level) - 1, 2)
        ]
        level = pairs + level[len(level) - len(level) % 2 :]
    return level[0]


def reversed_sum_of_scaled(count: int, term_operands: Callable[[int], Any], mode: str) -> torch.Tensor:
    """The exact backward summed from the last term to the first."""
    return REAL_SEQUENTIAL_SUM(count, lambda index: term_operands(count - 1 - index), mode)


def approx_backward_float_matmul(ctx: Any, grad: torch.Tensor) -> tuple[Any, ...]:
    """The approx backward with ordinary matmuls (G @ Bᵀ, Aᵀ @ G) instead of PAM ones."""
    a, b = ctx.saved_tensors
    a2 = a.reshape(-1, a.shape[-1]).to(grad.dtype)
    g2 = grad.reshape(-1, grad.shape[-1])
    grad_a = (g2 @ b.to(grad.dtype).t()).to(a.dtype).reshape(a.shape)
    grad_b = (a2.t() @ g2).to(b.dtype)
    return grad_a, grad_b, None, None


REAL_ADDER = kernels._adder
REAL_DIV_SLOPES = kernels._div_slopes
REAL_DIV_APPROX = kernels._div_approx


def matmul_float_adds_always(acc: formats.FloatFormat, mode: str, sums_stay_normal: bool) -> Any:
    """Plain float additions in "ieee" even where subnormals occur: right until the host flushes them."""
    return torch.add if mode == "ieee" else REAL_ADDER(acc, mode, sums_stay_normal)


def slope_rounded_first(g: torch.Tensor, slope: Any, fmt: formats.FloatFormat, mode: str) -> torch.Tensor:
    """``g ⊡ fl(s)``: the slope rounded to the format before scaling (loses what overflows alone)."""
    return REAL["pam_mul"](g, kernels._round_slope(slope, fmt, mode), mode=mode)


def div_slope_left_piece(da: Any, db: Any, fmt: formats.FloatFormat) -> Any:
    """d(a ⊘ b)/db with the piece to the left in |b| at the breakpoint Ma = Mb."""
    slope_a, slope_b = REAL_DIV_SLOPES(da, db, fmt)
    at_breakpoint = (kernels._fraction_or_zero(da) == db.fraction).to(torch.int64)
    return slope_a, dataclasses.replace(slope_b, exponent=slope_b.exponent + at_breakpoint)


def div_approx_float_reciprocal(inputs: Any, out: torch.Tensor, mode: str) -> tuple[torch.Tensor, ...]:
    """The approximate d(a ⊘ b)/da as the float reciprocal 1/b instead of 1 ⊘ b."""
    b = inputs[1]
    return ((1.0 / b.double()).to(b.dtype), REAL_DIV_APPROX(inputs, out, mode)[1])


@dataclass(frozen=True)
class Mutant:
    """A wrong implementation, where it goes, and the properties (module, test, kwargs) that must fail."""

    name: str
    target: tuple[object, str]
    replacement: Any
    caught_by: tuple[tuple[str, str, dict[str, Any]], ...] = field(default_factory=tuple)


KERNELS = "test_pam_kernels"
MATMUL = "test_pam_matmul"
AUTOGRAD = "test_pam_autograd"
ELEMENTWISE_AUTOGRAD = "test_pam_elementwise_autograd"
FPENV = "test_pam_fpenv"

MUTANTS: tuple[Mutant, ...] = (
    Mutant(
        "fp32 multiply instead of PAM",
        (kernels, "pam_mul"),
        float_multiply,
        (
            (KERNELS, "test_binary_kernel_equals_oracle", {"op": "pam_mul"}),
            (KERNELS, "test_kernel_on_regular_operands_equals_oracle", {"op": "pam_mul"}),
        ),
    ),
    Mutant(
        "ftz flush loses the sign of zero",
        (kernels, "pam_mul"),
        ftz_flush_drops_sign,
        ((KERNELS, "test_binary_kernel_equals_oracle", {"op": "pam_mul"}),),
    ),
    Mutant(
        "overflow gives NaN instead of inf",
        (kernels, "pam_mul"),
        overflow_to_nan,
        ((KERNELS, "test_binary_kernel_equals_oracle", {"op": "pam_mul"}),),
    ),
    Mutant(
        "exponent carry wraps around the integer width",
        (kernels, "pam_mul"),
        exponent_carry_wraps,
        ((KERNELS, "test_binary_kernel_equals_oracle", {"op": "pam_mul"}),),
    ),
    Mutant(
        "float division instead of PAM",
        (kernels, "pam_div"),
        float_divide,
        (
            (KERNELS, "test_binary_kernel_equals_oracle", {"op": "pam_div"}),
            (KERNELS, "test_kernel_on_regular_operands_equals_oracle", {"op": "pam_div"}),
        ),
    ),
    Mutant(
        "pa_log2 does not ignore the sign",
        (kernels, "pa_log2"),
        log2_of_signed_value,
        ((KERNELS, "test_unary_kernel_equals_oracle", {"op": "pa_log2"}),),
    ),
    Mutant(
        "pa_exp2 is the true exponential",
        (kernels, "pa_exp2"),
        exp2_true_exponential,
        (
            (KERNELS, "test_unary_kernel_equals_oracle", {"op": "pa_exp2"}),
            (KERNELS, "test_unary_kernel_on_small_arguments_equals_oracle", {"op": "pa_exp2"}),
        ),
    ),
    Mutant(
        "slope ignores the [Ma + Mb >= 1] piece",
        (kernels, "_mul_slope"),
        slope_without_carry,
        (
            (KERNELS, "test_binary_kernel_equals_oracle", {"op": "pam_mul_grad"}),
            (AUTOGRAD, "test_exact_backward_is_the_slope_of_the_affine_piece", {}),
        ),
    ),
    Mutant(
        "pairwise instead of sequential accumulation",
        (kernels, "pam_matmul"),
        matmul_pairwise_always,
        ((MATMUL, "test_sequential_order_is_kept_where_order_changes_the_result", {}),),
    ),
    Mutant(
        "ftz flushes inputs after widening",
        (kernels, "pam_matmul"),
        matmul_flushes_after_widening,
        ((MATMUL, "test_ftz_flushes_subnormal_inputs_of_their_own_format", {}),),
    ),
    Mutant(
        "pairwise partial sums kept in bf16",
        (kernels, "pam_matmul"),
        pairwise_in_bf16,
        ((MATMUL, "test_other_orders_stay_within_the_error_bound", {}),),
    ),
    Mutant(
        "exact backward summed in reverse",
        (nn_pam, "_sequential_sum_of_scaled"),
        reversed_sum_of_scaled,
        ((AUTOGRAD, "test_exact_backward_is_the_slope_of_the_affine_piece", {}),),
    ),
    Mutant(
        "approx backward with float matmuls",
        (nn_pam.PAMMatmul, "backward"),
        staticmethod(approx_backward_float_matmul),
        ((AUTOGRAD, "test_approx_backward_is_the_pam_matmuls_it_claims", {}),),
    ),
    Mutant(
        "matmul adds subnormals with the host's float unit",
        (kernels, "_adder"),
        matmul_float_adds_always,
        ((FPENV, "test_matmul_is_the_same_with_and_without_the_flush_flag", {}),),
    ),
    Mutant(
        "exact backward rounds the slope before scaling",
        (kernels, "_times_slope"),
        slope_rounded_first,
        ((ELEMENTWISE_AUTOGRAD, "test_exact_backward_is_g_times_the_slope_rounded_once", {}),),
    ),
    Mutant(
        "d(a ⊘ b)/db takes the left piece at Ma = Mb",
        (kernels, "_div_slopes"),
        div_slope_left_piece,
        ((ELEMENTWISE_AUTOGRAD, "test_exact_backward_is_g_times_the_slope_rounded_once", {}),),
    ),
    Mutant(
        "approx d(a ⊘ b)/da is the float reciprocal",
        (kernels, "_div_approx"),
        div_approx_float_reciprocal,
        ((ELEMENTWISE_AUTOGRAD, "test_approx_backward_is_the_pa_composition_it_claims", {}),),
    ),
)
