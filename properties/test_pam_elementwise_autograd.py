"""Autograd of the elementwise PAM kernels (docs/spec.md D2.11, D2.12), checked bit for bit.

``"exact"``: the gradient is ``g · s`` rounded once, where the slope ``s`` is measured
here from first principles -- the difference quotient of the unrounded piecewise-affine
function (in ``Fraction`` s) over a step far too small to leave the affine piece, to the
right in the differentiated operand's magnitude (in ``y`` for ``pa_exp2``) -- and the
special values follow the rules of D2.12, restated below independently of the kernels.
The rounding of ``g · s`` is :func:`revcheck.exact.rounding.round_fraction`.  A second
property checks ``pam_mul``'s exact backward against the oracle's ``pam_mul_grad``
itself: ``oracle.pam_mul(g, oracle.pam_mul_grad(a, b))`` wherever that slope is
representable (level O).

``"approx"``: the gradient is the oracle's composition of PA operations that D2.11
names (``g ⊡ b``; ``g ⊡ (1 ⊘ b)``, ``g ⊡ ((−(a ⊘ b)) ⊘ b)``; ``g ⊡ (1 ⊘ (x ⊡ ln 2))``;
``g ⊡ (pa_exp2(y) ⊡ ln 2)``), level O.

Every format, both modes, every input class (``revcheck.strategies.bit_arrays``).
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import torch
from hypothesis import given
from hypothesis import strategies as st

from properties.pam_suite import TORCH, PamKernels
from revcheck import bits, formats
from revcheck import strategies as rst
from revcheck.exact import rounding as exact
from revcheck.exact.rounding import Exact
from revcheck.kernels import pam as kernels
from revcheck.oracle import pam as oracle
from revcheck.testing import assert_bit_exact

MODES = ("ieee", "ftz")
# Autograd needs float tensors: the formats with a torch dtype (fp6 and fp4 travel as uint8 bit patterns,
# docs/spec.md D1.10, which torch cannot differentiate).
TORCH_FORMATS = [name for name in formats.names() if formats.get(name).torch_dtype_name is not None]
UNARY = ("pa_log2", "pa_exp2")
BINARY = ("pam_mul", "pam_div")

EXP2_FLOOR_CAP = 4096
# A slope: ("nan",), ("inf", negative), ("zero", negative) or ("finite", signed Fraction).
Slope = tuple


def split(magnitude: Fraction) -> tuple[int, Fraction]:
    """``(E, M)`` with ``magnitude = 2**E (1 + M)``."""
    exponent = exact.floor_log2(magnitude)
    return exponent, magnitude / Fraction(2) ** exponent - 1


def pa_value(op: str, *args: Fraction) -> Fraction:
    """The unrounded PA function (docs/spec.md §2) of finite arguments (nonzero for ⊡, ⊘, log2)."""
    if op == "pa_exp2":
        (y,) = args
        whole = math.floor(y)
        return Fraction(2) ** whole * (1 + y - whole)
    if op == "pa_log2":
        exponent, fraction = split(abs(args[0]))
        return exponent + fraction
    a, b = args
    ea, ma = split(abs(a))
    eb, mb = split(abs(b))
    if op == "pam_mul":
        magnitude = (
            Fraction(2) ** (ea + eb) * (1 + ma + mb)
            if ma + mb < 1
            else Fraction(2) ** (ea + eb + 1) * (ma + mb)
        )
    else:
        magnitude = (
            Fraction(2) ** (ea - eb) * (1 + ma - mb)
            if ma >= mb
            else Fraction(2) ** (ea - eb - 1) * (2 + ma - mb)
        )
    return magnitude if (a < 0) == (b < 0) else -magnitude


def measured(op: str, args: list[Fraction], wrt: int) -> Fraction:
    """Difference quotient of ``op`` in argument ``wrt``, stepping to the right (in |x|, in y for exp2)."""
    x = args[wrt]
    exponent = exact.floor_log2(abs(x)) if x != 0 else -2000
    step = Fraction(2) ** (exponent - 200)
    if op != "pa_exp2" and x < 0:
        step = -step
    moved = list(args)
    moved[wrt] = x + step
    return (pa_value(op, *moved) - pa_value(op, *args)) / step


def power_of_two(value: Fraction) -> bool:
    n, d = abs(value.numerator), value.denominator
    return n & (n - 1) == 0 and d & (d - 1) == 0


def exact_slope(op: str, args: list[Exact], wrt: int) -> Slope:
    """The slope of D2.5 / D2.12: special values by rule, the rest measured."""
    kinds = [x.kind for x in args]
    if "nan" in kinds:
        return ("nan",)
    if op == "pa_exp2":
        (y,) = args
        if y.kind == "inf":
            return ("zero", False) if y.negative else ("inf", False)
        if y.kind == "zero":
            return ("finite", Fraction(1))
        if abs(y.signed) >= EXP2_FLOOR_CAP:
            # 2**floor(y) then overflows (underflows) g · s for every finite nonzero g of every format
            # (|g| lies in [2**-1074, 2**1024)); a capped exponent rounds the same and keeps Fractions small.
            cap = Fraction(2) ** (EXP2_FLOOR_CAP if y.signed > 0 else -EXP2_FLOOR_CAP)
            return ("finite", cap)
    elif op == "pa_log2":
        (x,) = args
        if x.kind == "zero":
            return ("inf", x.negative)
        if x.kind == "inf":
            return ("zero", x.negative)
    else:
        a, b = args
        if op == "pam_mul":
            if {a.kind, b.kind} == {"inf", "zero"}:
                return ("nan",)
            x, other = (a, b) if wrt == 0 else (b, a)
            if other.kind == "zero":
                return ("zero", other.negative)
            if other.kind == "inf":
                return ("inf", other.negative)
            if x.kind in ("zero", "inf"):  # M = 0: the piece Mx + M_other < 1, slope ±2**E_other
                exponent, _ = split(other.magnitude)
                return ("finite", Fraction(2) ** exponent * (-1 if other.negative else 1))
        else:
            if (a.kind == b.kind == "zero") or (a.kind == b.kind == "inf"):
                return ("nan",)
            if wrt == 0:
                if b.kind == "zero":
                    return ("inf", b.negative)
                if b.kind == "inf":
                    return ("zero", b.negative)
                if a.kind in ("zero", "inf"):  # M_a = 0
                    eb, mb = split(b.magnitude)
                    magnitude = Fraction(2) ** (-eb - (1 if mb > 0 else 0))
                    return ("finite", -magnitude if b.negative else magnitude)
            else:
                if a.kind == "zero" or b.kind == "inf":
                    return ("zero", not a.negative)
                if a.kind == "inf" or b.kind == "zero":
                    return ("inf", not a.negative)
    slope = measured(op, [x.signed for x in args], wrt)
    assert power_of_two(slope), f"{op}: measured slope {slope} is not a power of two"
    return ("finite", slope)


def times(g: Exact, slope: Slope, fmt: formats.FloatFormat, mode: str) -> int:
    """The bits of ``g · s`` rounded once, IEEE rules for the special values."""
    if g.kind == "nan" or slope[0] == "nan":
        return exact.encode_special("nan", False, fmt)
    s_negative = slope[1] < 0 if slope[0] == "finite" else slope[1]
    negative = g.negative != s_negative
    if slope[0] == "inf":
        return exact.encode_special("nan" if g.kind == "zero" else "inf", negative and g.kind != "zero", fmt)
    if slope[0] == "zero":
        return exact.encode_special("nan" if g.kind == "inf" else "zero", negative and g.kind != "inf", fmt)
    if g.kind == "inf":
        return exact.encode_special("inf", negative, fmt)
    if g.kind == "zero":
        return exact.encode_special("zero", negative, fmt)
    return exact.round_fraction(negative, g.magnitude * abs(slope[1]), fmt, mode)


def operands(data: st.DataObject, fmt: formats.FloatFormat, arity: int) -> list[np.ndarray]:
    shape = (data.draw(st.integers(1, 6), label="size"),)
    names = ("a", "b") if arity == 2 else ("x",)
    arrays = [data.draw(rst.bit_arrays(fmt, shape), label=f"{name} bits") for name in names]
    # The breakpoints of ⊘'s pieces (Ma = Mb) and of ⊡'s (Ma + Mb = 1) are a corner random fractions
    # almost never meet: put b's fractions there often.
    if arity == 2 and data.draw(st.booleans(), label="b's fractions at a's breakpoint"):
        a, b = arrays
        mask = fmt.uint_dtype.type(fmt.mantissa_mask)
        target = data.draw(st.sampled_from(("Ma = Mb", "Ma + Mb = 1")), label="breakpoint")
        fraction = (
            a & mask if target == "Ma = Mb" else (-(a & mask).astype(np.int64) % (1 << fmt.mantissa_bits))
        )
        arrays[1] = ((b & ~mask) | fraction.astype(fmt.uint_dtype)).astype(fmt.uint_dtype)
    return arrays


def kernel_gradients(
    op: str,
    arrays: list[np.ndarray],
    g_bits: np.ndarray,
    fmt: formats.FloatFormat,
    mode: str,
    backward: str,
    device: str,
    implementation: PamKernels = TORCH,
) -> list[torch.Tensor]:
    inputs = [bits.to_torch(array, fmt, device).requires_grad_(True) for array in arrays]
    out = implementation.function(op)(*inputs, mode=mode, backward=backward)
    out.backward(bits.to_torch(g_bits, fmt, device))
    assert all(x.grad is not None for x in inputs), f"{op}: a gradient is missing"
    return [x.grad for x in inputs]  # type: ignore[misc]


def check_exact_backward_is_g_times_the_slope_rounded_once(
    data: st.DataObject, device: str = "cpu", implementation: PamKernels = TORCH
) -> None:
    fmt = data.draw(rst.formats(names=TORCH_FORMATS), label="format")
    mode = data.draw(st.sampled_from(MODES), label="mode")
    op = data.draw(st.sampled_from(BINARY + UNARY), label="op")
    arrays = operands(data, fmt, 2 if op in BINARY else 1)
    g_bits = data.draw(rst.bit_arrays(fmt, arrays[0].shape), label="upstream gradient g bits")
    grads = kernel_gradients(op, arrays, g_bits, fmt, mode, "exact", device, implementation)
    for wrt, grad in enumerate(grads):
        expected = []
        for i in range(arrays[0].size):
            args = [exact.decode(int(array[i]), fmt, mode) for array in arrays]
            slope = exact_slope(op, args, wrt)
            expected.append(times(exact.decode(int(g_bits[i]), fmt, mode), slope, fmt, mode))
        assert_bit_exact(
            grad,
            np.array(expected, dtype=np.uint64).astype(fmt.uint_dtype),
            fmt=fmt,
            nan="bits",
            msg=f"d {op} / d operand {wrt} (exact, mode={mode!r}) vs g · measured slope",
        )


def check_exact_pam_mul_backward_is_g_times_the_oracle_pam_mul_grad(
    data: st.DataObject, device: str = "cpu", implementation: PamKernels = TORCH
) -> None:
    # Where the oracle's pam_mul_grad holds the slope exactly, the gradient is g ⊡ pam_mul_grad(a, b).
    fmt = data.draw(rst.formats(names=TORCH_FORMATS), label="format")
    mode = data.draw(st.sampled_from(MODES), label="mode")
    a_bits, b_bits = operands(data, fmt, 2)
    g_bits = data.draw(rst.bit_arrays(fmt, a_bits.shape), label="upstream gradient g bits")
    grad_a, grad_b = kernel_gradients(
        "pam_mul", [a_bits, b_bits], g_bits, fmt, mode, "exact", device, implementation
    )
    for grad, (x, y) in ((grad_a, (a_bits, b_bits)), (grad_b, (b_bits, a_bits))):
        slope = oracle.pam_mul_grad(x, y, fmt, mode=mode)
        held = np.array(
            [
                exact.decode(int(s), fmt).kind != "finite"
                or power_of_two(exact.decode(int(s), fmt).magnitude)
                for s in slope
            ]
        )
        overflowed = held & np.array(
            [
                exact.decode(int(s), fmt).kind == "inf" and exact.decode(int(v), fmt, mode).kind == "finite"
                for s, v in zip(slope, y, strict=True)
            ]
        )
        keep = held & ~overflowed
        expected = oracle.pam_mul(g_bits, slope, fmt, mode=mode)
        got = bits.to_bits(grad.detach(), fmt)
        assert_bit_exact(
            got[keep],
            expected[keep],
            fmt=fmt,
            nan="bits",
            msg=f"exact backward vs g ⊡ oracle.pam_mul_grad ({mode})",
        )


def _neg(x_bits: np.ndarray, fmt: formats.FloatFormat) -> np.ndarray:
    flipped = (x_bits ^ fmt.uint_dtype.type(fmt.sign_mask)).astype(fmt.uint_dtype)
    if fmt.has_negative_zero:
        return flipped
    # fnuz: -(+0) is +0 (docs/spec.md D2.15) and the NaN, the pattern of -0, stays the NaN.
    return np.where((x_bits & fmt.uint_dtype.type(fmt.magnitude_mask)) == 0, x_bits, flipped)


def _ln2_bits(fmt: formats.FloatFormat, shape: tuple[int, ...]) -> np.ndarray:
    return np.full(shape, exact.round_fraction(False, LN2, fmt), dtype=np.uint64).astype(fmt.uint_dtype)


# ln 2 truncated to 80 bits (0.B17217F7D1CF79ABC9E3...): every format's rounding of it is decided long
# before the dropped tail, so rounding this once is rounding ln 2 once.
LN2 = Fraction(0xB17217F7D1CF79ABC9E3, 2**80)


def approx_derivatives(
    op: str, arrays: list[np.ndarray], fmt: formats.FloatFormat, mode: str
) -> list[np.ndarray]:
    """D2.11's ``D`` for each operand, with the oracle's PA operations."""
    one = np.full(arrays[0].shape, fmt.one, dtype=np.uint64).astype(fmt.uint_dtype)
    if op == "pam_mul":
        a, b = arrays
        return [b, a]
    if op == "pam_div":
        a, b = arrays
        quotient = oracle.pam_div(a, b, fmt, mode=mode)
        return [
            oracle.pam_div(one, b, fmt, mode=mode),
            oracle.pam_div(_neg(quotient, fmt), b, fmt, mode=mode),
        ]
    (x,) = arrays
    ln2 = _ln2_bits(fmt, x.shape)
    if op == "pa_log2":
        return [oracle.pam_div(one, oracle.pam_mul(x, ln2, fmt, mode=mode), fmt, mode=mode)]
    return [oracle.pam_mul(oracle.pa_exp2(x, fmt, mode=mode), ln2, fmt, mode=mode)]


def check_approx_backward_is_the_pa_composition_it_claims(
    data: st.DataObject, device: str = "cpu", implementation: PamKernels = TORCH
) -> None:
    fmt = data.draw(rst.formats(names=TORCH_FORMATS), label="format")
    mode = data.draw(st.sampled_from(MODES), label="mode")
    op = data.draw(st.sampled_from(BINARY + UNARY), label="op")
    arrays = operands(data, fmt, 2 if op in BINARY else 1)
    g_bits = data.draw(rst.bit_arrays(fmt, arrays[0].shape), label="upstream gradient g bits")
    grads = kernel_gradients(op, arrays, g_bits, fmt, mode, "approx", device, implementation)
    for wrt, (grad, derivative) in enumerate(
        zip(grads, approx_derivatives(op, arrays, fmt, mode), strict=True)
    ):
        assert_bit_exact(
            grad,
            oracle.pam_mul(g_bits, derivative, fmt, mode=mode),
            fmt=fmt,
            nan="bits",
            msg=f"d {op} / d operand {wrt} (approx, mode={mode!r}) vs the oracle's g ⊡ D",
        )


# The tests: the check bodies on the torch kernels (the planted-bug gallery,
# tests/gallery/pam_torch_mutants.py, runs the same bodies on wrong ones).


@given(data=st.data())
def test_exact_backward_is_g_times_the_slope_rounded_once(data: st.DataObject, device: str) -> None:
    check_exact_backward_is_g_times_the_slope_rounded_once(data, device)


@given(data=st.data())
def test_exact_pam_mul_backward_is_g_times_the_oracle_pam_mul_grad(data: st.DataObject, device: str) -> None:
    check_exact_pam_mul_backward_is_g_times_the_oracle_pam_mul_grad(data, device)


@given(data=st.data())
def test_approx_backward_is_the_pa_composition_it_claims(data: st.DataObject, device: str) -> None:
    check_approx_backward_is_the_pa_composition_it_claims(data, device)


def test_ln2_constant_is_ln_2_rounded_once() -> None:
    # The kernels' ln 2 (torch.full_like(x, math.log(2))) against ln 2 to 80 bits, rounded once.
    assert abs(LN2 - Fraction(math.log(2))) < Fraction(1, 2**53)
    for fmt in map(formats.get, TORCH_FORMATS):
        dtype = bits.torch_dtype(fmt)
        got = bits.to_bits(kernels._ln2(torch.zeros(1, dtype=dtype)), fmt)
        assert int(got[0]) == exact.round_fraction(False, LN2, fmt), fmt.name
