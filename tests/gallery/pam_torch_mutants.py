"""Deliberately wrong torch PAM kernels: each one is a realistic mistake the PAM properties must catch.

A kernel mutant replaces one op of the torch implementation
(:data:`properties.pam_suite.TORCH`, ``TORCH.replace(pam_mul=...)``) and is handed
to the suite's check bodies (properties/pam_suite.py); an autograd mutant is a
subclass of :class:`revcheck.nn.pam.PAMMatmul` with a wrong backward, handed to
the bodies of properties/test_pam_autograd.py (``matmul=``).  An internal
mutant replaces one piece of the kernels' arithmetic in its one home (the slope
``kernels._mul_slope``, the additions ``kernels._adder``, ...): the wrong
implementation is an :class:`InternalReplaced`, the real implementation with
that piece replaced for the duration of the check only, and the check bodies
(the suite's, properties/test_pam_autograd.py's,
properties/test_pam_elementwise_autograd.py's, properties/test_pam_fpenv.py's)
get it injected like every other.  Production code carries no hook for any of
this.  Mutants call the real kernels (:data:`REAL`) for everything they do not
break, so each has exactly one bug.  :data:`PLANTED_BUGS` holds one record per
mutant and check.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

from properties import pam_suite as suite
from properties import test_pam_autograd as autograd_properties
from properties import test_pam_elementwise_autograd as elementwise_autograd_properties
from properties import test_pam_fpenv as fpenv_properties
from properties.pam_suite import TORCH, BoundViolationError
from revcheck import formats
from revcheck.kernels import pam as kernels
from revcheck.nn import pam as nn_pam
from revcheck.nn.pam import PAMMatmul
from revcheck.testing import BitMismatchError
from tests.harness import PlantedBug, check_with

__all__ = ["PLANTED_BUGS"]

FAMILY = "pam_torch"

# The correct implementations, which the mutants call for what they do not break.
REAL: dict[str, Callable[..., Any]] = {
    name: getattr(kernels, name)
    for name in ("pam_mul", "pam_div", "pam_mul_grad", "pa_log2", "pa_exp2", "pam_matmul")
}
# The one home of each piece of the kernels' arithmetic, which an internal mutant replaces.
REAL_SEQUENTIAL_SUM = nn_pam._sequential_sum_of_scaled
REAL_MUL_SLOPE = kernels._mul_slope
REAL_ADDER = kernels._adder
REAL_DIV_SLOPES = kernels._div_slopes
REAL_DIV_APPROX = kernels._div_approx


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


def _fraction_cleared(x: torch.Tensor) -> torch.Tensor:
    """x with its fraction bits cleared (M = 0), NaNs kept."""
    fmt = formats.get(x.dtype)
    bits = _bits(x)
    return _with_bits(torch.where(torch.isnan(x.double()), bits, bits & ~fmt.mantissa_mask), x.dtype)


def grad_without_carry(a: torch.Tensor, b: torch.Tensor, *, mode: str = "ieee") -> torch.Tensor:
    """sign(b) · 2**Eb: forgets the piece where Ma + Mb >= 1 doubles the slope."""
    # Clearing a's fraction makes Ma = 0, so the carry never happens.
    return REAL["pam_mul_grad"](_fraction_cleared(a), b, mode=mode)


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


# ---- autograd: PAMMatmul subclasses with one wrong backward ------------------------------------------

ExactGrads = Callable[..., tuple[torch.Tensor, torch.Tensor]]


def _exact_backward_with(exact_grads: ExactGrads) -> Any:
    """PAMMatmul's backward (reshapes, rounding to the input dtype), exact gradients by ``exact_grads``."""

    def backward(ctx: Any, grad: torch.Tensor) -> tuple[Any, ...]:
        if ctx.backward != "exact":
            return PAMMatmul.backward(ctx, grad)
        a, b = ctx.saved_tensors
        a2 = a.reshape(-1, a.shape[-1])
        grad_a, grad_b = exact_grads(a2, b, grad.reshape(-1, grad.shape[-1]).contiguous(), mode=ctx.mode)
        return grad_a.to(a.dtype).reshape(a.shape), grad_b.to(b.dtype), None, None

    return staticmethod(backward)


def reversed_exact_grads(
    a: torch.Tensor, b: torch.Tensor, grad: torch.Tensor, *, mode: str = "ieee"
) -> tuple[torch.Tensor, torch.Tensor]:
    """The exact gradients summed from the last term to the first (n = N-1 … 0 for dA, m = M-1 … 0 for dB)."""
    # Flipping the summed axes makes the real sequential sums run backwards; flip the results back.
    grad_a, grad_b = nn_pam.pam_matmul_exact_grads(a.flip(0), b.flip(1), grad.flip(0).flip(1), mode=mode)
    return grad_a.flip(0), grad_b.flip(1)


def exact_grads_without_carry(
    a: torch.Tensor, b: torch.Tensor, grad: torch.Tensor, *, mode: str = "ieee"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact gradients with slopes sign(b)·2**Eb: the [Ma + Mb >= 1] piece forgotten (fractions cleared)."""
    return nn_pam.pam_matmul_exact_grads(_fraction_cleared(a), _fraction_cleared(b), grad, mode=mode)


class ReversedExactBackward(PAMMatmul):
    """The exact backward summed in reverse."""

    backward = _exact_backward_with(reversed_exact_grads)


class CarrylessSlopeBackward(PAMMatmul):
    """The exact backward with slopes that ignore the [Ma + Mb >= 1] piece."""

    backward = _exact_backward_with(exact_grads_without_carry)


class FloatMatmulApproxBackward(PAMMatmul):
    """The approx backward with ordinary matmuls (G @ Bᵀ, Aᵀ @ G) instead of PAM ones."""

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[Any, ...]:  # type: ignore[override]
        a, b = ctx.saved_tensors
        a2 = a.reshape(-1, a.shape[-1]).to(grad.dtype)
        g2 = grad.reshape(-1, grad.shape[-1])
        grad_a = (g2 @ b.to(grad.dtype).t()).to(a.dtype).reshape(a.shape)
        grad_b = (a2.t() @ g2).to(b.dtype)
        return grad_a, grad_b, None, None


# ---- internal mutants: one piece of the kernels' arithmetic replaced in its one home -----------------
#
# The slope of ⊡ lives in kernels._mul_slope, the accumulator's additions in kernels._adder, the
# backward's sums in nn_pam._sequential_sum_of_scaled, ...; the kernels look each up at call time, so
# a wrong piece planted there is what every public op using it computes (pam_mul_grad, the exact
# backward of pam_mul and that of PAMMatmul alike).  These pieces are not parameters of the public
# API, so the wrong implementation is the real one with the piece replaced while the check runs
# (:class:`InternalReplaced`, restored afterwards); the check itself still gets the implementation
# injected, as every other record's does.


@dataclass(frozen=True)
class InternalReplaced:
    """The implementation ``real``, with ``target.attribute`` replaced by ``replacement`` during a check."""

    real: Any
    target: object
    attribute: str
    replacement: Any

    @contextlib.contextmanager
    def installed(self) -> Iterator[Any]:
        original = getattr(self.target, self.attribute)
        setattr(self.target, self.attribute, self.replacement)
        try:
            yield self.real
        finally:
            setattr(self.target, self.attribute, original)

    def __repr__(self) -> str:
        name = getattr(self.target, "__name__", repr(self.target))
        return f"{self.real!r} with {name}.{self.attribute} = {self.replacement.__name__}"


@functools.cache
def _with_internals(check: Callable[..., None]) -> Callable[..., None]:
    """``check``; given an :class:`InternalReplaced`, run on its real one with the internal installed."""

    def run(*args: Any) -> None:
        __tracebackhide__ = True
        *leading, implementation = args
        if not isinstance(implementation, InternalReplaced):
            check(*leading, implementation)
            return
        with implementation.installed() as real:
            check(*leading, real)

    run.__name__ = run.__qualname__ = check.__name__
    run.__doc__ = check.__doc__
    return run


def slope_without_carry(da: Any, db: Any, fmt: formats.FloatFormat) -> Any:
    """sign(b) · 2**Eb: forgets the piece where Ma + Mb >= 1 doubles the slope.

    Planted in the one home of the slope (``kernels._mul_slope``), so ``pam_mul_grad``,
    the exact backward of ``pam_mul`` and that of ``PAMMatmul`` all inherit it.
    """
    cleared = dataclasses.replace(da, fraction=torch.zeros_like(da.fraction))  # Ma = 0: no carry
    return REAL_MUL_SLOPE(cleared, db, fmt)


def reversed_sum_of_scaled(count: int, term_operands: Callable[[int], Any], mode: str) -> torch.Tensor:
    """The exact backward summed from the last term to the first (``nn_pam._sequential_sum_of_scaled``)."""
    return REAL_SEQUENTIAL_SUM(count, lambda index: term_operands(count - 1 - index), mode)


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


# ---- the records ----------------------------------------------------------------------------------


def _suite_check(name: str, **params: str) -> Any:
    return check_with(getattr(suite, name), device="cpu", **params)


def _kernel_bug(
    mutant: Callable[..., Any],
    op: str,
    check: Any,
    max_examples: int,
    error: type[BaseException] = BitMismatchError,
) -> PlantedBug:
    counted = "counted" in check.__name__
    return PlantedBug(
        mutant.__name__,
        (mutant.__doc__ or "").strip().splitlines()[0],
        check,
        TORCH.replace(**{op: mutant}),
        TORCH,
        error,
        family=FAMILY,
        hypothesis=not counted,
        max_examples=max_examples,
    )


def _autograd_bug(matmul: type[PAMMatmul], check_name: str, max_examples: int) -> PlantedBug:
    check = _matmul_autograd(check_name)
    return PlantedBug(
        matmul.__name__,
        (matmul.__doc__ or "").strip(),
        check,
        matmul,
        PAMMatmul,
        BitMismatchError,
        family=FAMILY,
        max_examples=max_examples,
    )


def _internal_bug(
    replacement: Callable[..., Any],
    target: object,
    real: Any,
    check: Any,
    max_examples: int,
) -> PlantedBug:
    """``replacement`` planted as ``target.<its real name>`` (an :class:`InternalReplaced` of ``real``)."""
    attribute = {
        slope_without_carry: "_mul_slope",
        reversed_sum_of_scaled: "_sequential_sum_of_scaled",
        matmul_float_adds_always: "_adder",
        slope_rounded_first: "_times_slope",
        div_slope_left_piece: "_div_slopes",
        div_approx_float_reciprocal: "_div_approx",
    }[replacement]
    return PlantedBug(
        replacement.__name__,
        (replacement.__doc__ or "").strip().splitlines()[0],
        _with_internals(check),
        InternalReplaced(real, target, attribute, replacement),
        real,
        BitMismatchError,
        family=FAMILY,
        hypothesis="counted" not in check.__name__,
        max_examples=max_examples,
    )


def _elementwise_autograd(name: str) -> Any:
    return check_with(getattr(elementwise_autograd_properties, name), inject="implementation", device="cpu")


def _matmul_autograd(name: str) -> Any:
    return check_with(getattr(autograd_properties, name), inject="matmul", device="cpu")


def _binary(op: str) -> Any:
    return _suite_check("check_binary_op_equals_oracle", op=op)


def _counted_pairs(op: str) -> Any:
    return _suite_check("check_binary_op_on_counted_pairs", op=op)


def _regular(op: str) -> Any:
    return _suite_check("check_op_on_regular_operands_equals_oracle", op=op)


def _unary(op: str) -> Any:
    return _suite_check("check_unary_op_equals_oracle", op=op)


def _counted_cases(op: str) -> Any:
    return _suite_check("check_unary_op_on_counted_cases", op=op)


EXACT_BACKWARD = "check_exact_backward_is_the_slope_of_the_affine_piece"
ELEMENTWISE_EXACT = "check_exact_backward_is_g_times_the_slope_rounded_once"
ELEMENTWISE_APPROX = "check_approx_backward_is_the_pa_composition_it_claims"

PLANTED_BUGS: list[PlantedBug] = [
    _kernel_bug(float_multiply, "pam_mul", _binary("pam_mul"), 100),
    _kernel_bug(float_multiply, "pam_mul", _regular("pam_mul"), 100),
    _kernel_bug(float_multiply, "pam_mul", _counted_pairs("pam_mul"), 1),
    _kernel_bug(ftz_flush_drops_sign, "pam_mul", _binary("pam_mul"), 100),
    _kernel_bug(ftz_flush_drops_sign, "pam_mul", _counted_pairs("pam_mul"), 1),
    _kernel_bug(overflow_to_nan, "pam_mul", _binary("pam_mul"), 100),
    _kernel_bug(overflow_to_nan, "pam_mul", _counted_pairs("pam_mul"), 1),
    # Random arrays rarely pair two huge normals in one element (their first elements, a counted pair,
    # do it sooner: example 20 when measured); the counted pairs hold E=emax x E=emax and catch it at once.
    _kernel_bug(exponent_carry_wraps, "pam_mul", _binary("pam_mul"), 200),
    _kernel_bug(exponent_carry_wraps, "pam_mul", _counted_pairs("pam_mul"), 1),
    _kernel_bug(float_divide, "pam_div", _binary("pam_div"), 100),
    _kernel_bug(float_divide, "pam_div", _regular("pam_div"), 100),
    _kernel_bug(float_divide, "pam_div", _counted_pairs("pam_div"), 1),
    _kernel_bug(log2_of_signed_value, "pa_log2", _unary("pa_log2"), 100),
    _kernel_bug(log2_of_signed_value, "pa_log2", _counted_cases("pa_log2"), 1),
    _kernel_bug(exp2_true_exponential, "pa_exp2", _unary("pa_exp2"), 100),
    _kernel_bug(
        exp2_true_exponential,
        "pa_exp2",
        _suite_check("check_unary_op_near_one_equals_oracle", op="pa_exp2"),
        100,
    ),
    _kernel_bug(exp2_true_exponential, "pa_exp2", _counted_cases("pa_exp2"), 1),
    _kernel_bug(grad_without_carry, "pam_mul_grad", _binary("pam_mul_grad"), 100),
    _kernel_bug(grad_without_carry, "pam_mul_grad", _counted_pairs("pam_mul_grad"), 1),
    _kernel_bug(
        matmul_pairwise_always,
        "pam_matmul",
        _suite_check("check_sequential_order_is_kept_where_order_changes_the_result"),
        100,
    ),
    _kernel_bug(
        matmul_flushes_after_widening,
        "pam_matmul",
        _suite_check("check_ftz_flushes_subnormal_inputs_of_their_own_format"),
        100,
    ),
    _kernel_bug(
        pairwise_in_bf16,
        "pam_matmul",
        _suite_check("check_other_orders_stay_within_the_error_bound"),
        100,
        BoundViolationError,
    ),
    _autograd_bug(CarrylessSlopeBackward, EXACT_BACKWARD, 100),
    # Order shows only in sums of three or more terms (N or M = 3) that round: measured, example 5.
    _autograd_bug(ReversedExactBackward, EXACT_BACKWARD, 100),
    _autograd_bug(FloatMatmulApproxBackward, "check_approx_backward_is_the_pam_matmuls_it_claims", 100),
    # The internal mutants (main's field work, issue 9): each piece replaced where it lives.
    _internal_bug(slope_without_carry, kernels, TORCH, _binary("pam_mul_grad"), 100),
    _internal_bug(slope_without_carry, kernels, TORCH, _counted_pairs("pam_mul_grad"), 1),
    _internal_bug(slope_without_carry, kernels, PAMMatmul, _matmul_autograd(EXACT_BACKWARD), 100),
    _internal_bug(slope_without_carry, kernels, TORCH, _elementwise_autograd(ELEMENTWISE_EXACT), 100),
    _internal_bug(reversed_sum_of_scaled, nn_pam, PAMMatmul, _matmul_autograd(EXACT_BACKWARD), 100),
    _internal_bug(
        matmul_float_adds_always,
        kernels,
        TORCH,
        check_with(
            fpenv_properties.check_matmul_is_the_same_with_and_without_the_flush_flag,
            inject="implementation",
            device="cpu",
        ),
        100,
    ),
    _internal_bug(slope_rounded_first, kernels, TORCH, _elementwise_autograd(ELEMENTWISE_EXACT), 100),
    _internal_bug(div_slope_left_piece, kernels, TORCH, _elementwise_autograd(ELEMENTWISE_EXACT), 100),
    _internal_bug(
        div_approx_float_reciprocal, kernels, TORCH, _elementwise_autograd(ELEMENTWISE_APPROX), 100
    ),
]
