"""Unit tests of the torch PAM kernels: docs/spec.md §2 special cases, worked examples, bad input.

The exhaustive comparison with the oracle lives in ``properties/test_pam_kernels.py``;
here each sentence of docs/spec.md §2 gets a concrete, bit-level example.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pytest
import torch

from revcheck import bits, formats
from revcheck.errors import UsageError
from revcheck.kernels import pam as kernels
from revcheck.nn.pam import PAMMatmul
from revcheck.testing import assert_bit_exact

ALL_DTYPES = [getattr(torch, f.torch_dtype_name) for f in formats.FORMATS.values() if f.torch_dtype_name]
INF_DTYPES = [dtype for dtype in ALL_DTYPES if formats.get(dtype).has_inf]
NAN, INF = float("nan"), float("inf")


def t(values: list[Any], dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64).to(dtype)


def patterns(fmt: formats.FloatFormat, values: list[int]) -> torch.Tensor:
    return bits.to_torch(np.array(values, dtype=np.uint64).astype(fmt.uint_dtype), fmt)


# ---- pam_mul ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ALL_DTYPES)
def test_worst_case_product_is_one_and_a_half_squared_equals_two(dtype: torch.dtype) -> None:
    assert_bit_exact(kernels.pam_mul(t([1.5, -1.5], dtype), t([1.5, 1.5], dtype)), t([2.0, -2.0], dtype))


@pytest.mark.parametrize("dtype", ALL_DTYPES)
def test_product_with_power_of_two_is_exact(dtype: torch.dtype) -> None:
    a = t([1.25, -1.75, 0.375], dtype)
    assert_bit_exact(kernels.pam_mul(a, t([4.0, 0.5, -2.0], dtype)), t([5.0, -0.875, -0.75], dtype))


def test_product_is_integer_sum_of_patterns_minus_one() -> None:
    fmt = formats.get("fp32")
    a, b = t([1.3, 2.7, 1e-3]), t([3.1, 0.9, 7e5])
    expected = (bits.to_bits(a).astype(np.int64) + bits.to_bits(b).astype(np.int64) - fmt.one).astype(
        np.uint32
    )
    assert_bit_exact(kernels.pam_mul(a, b), expected, fmt=fmt)


@pytest.mark.parametrize("dtype", INF_DTYPES)
def test_product_special_cases(dtype: torch.dtype) -> None:
    a = t([NAN, INF, -INF, 0.0, -0.0, 2.0, INF, -0.0], dtype)
    b = t([1.0, 0.0, 3.0, -5.0, 5.0, -INF, -INF, -0.0], dtype)
    expected = t([NAN, NAN, -INF, -0.0, -0.0, -INF, -INF, 0.0], dtype)
    assert_bit_exact(kernels.pam_mul(a, b), expected, nan="bits" if dtype == torch.float32 else "class")


def test_nan_result_is_the_canonical_quiet_nan() -> None:
    fmt = formats.get("fp32")
    payload_nan = patterns(fmt, [0xFF800001])  # negative signalling NaN with a payload
    assert_bit_exact(
        kernels.pam_mul(payload_nan, t([1.0])),
        np.array([fmt.canonical_nan], dtype=np.uint32),
        fmt=fmt,
        nan="bits",
    )


def test_overflow_gives_inf_and_saturates_in_e4m3fn() -> None:
    assert_bit_exact(kernels.pam_mul(t([3e38, -3e38]), t([4.0, 4.0])), t([INF, -INF]))
    e4m3 = torch.float8_e4m3fn
    assert_bit_exact(kernels.pam_mul(t([448.0, -448.0], e4m3), t([2.0, 2.0], e4m3)), t([448.0, -448.0], e4m3))


def test_underflow_is_gradual_in_ieee_and_signed_zero_in_ftz() -> None:
    fmt = formats.get("fp32")
    smallest_normal = t([-(2.0**-126)])
    half = t([0.5])
    assert_bit_exact(kernels.pam_mul(smallest_normal, half), t([-(2.0**-127)]))
    assert_bit_exact(kernels.pam_mul(smallest_normal, half, mode="ftz"), t([-0.0]))
    subnormal = patterns(fmt, [0x00000003])
    assert_bit_exact(kernels.pam_mul(subnormal, t([1.0]), mode="ftz"), t([0.0]))
    assert_bit_exact(kernels.pam_mul(subnormal, t([1.0])), subnormal)


def test_subnormal_operand_uses_its_true_exponent_and_fraction() -> None:
    fmt = formats.get("fp16")
    # 3 · 2**-24 = 2**-23 · 1.5: E = -23, M = 1/2; with 1.5 (M = 1/2) the fractions carry: 2**(1-23) · 1.
    three_ulps = patterns(fmt, [0x0003])
    assert_bit_exact(kernels.pam_mul(three_ulps, t([1.5], torch.float16)), t([2.0**-22], torch.float16))


def test_result_rounds_to_nearest_even_in_the_subnormal_range() -> None:
    # 2**-149 · 1.5 ⊡ 0.5 (no carry) is 1.5 · 2**-150 = 0.75 of the smallest subnormal: rounds up to it.
    fmt = formats.get("fp32")
    tiny = patterns(fmt, [0x00000001])
    assert_bit_exact(kernels.pam_mul(tiny, t([0.75])), patterns(fmt, [0x00000001]))
    assert_bit_exact(kernels.pam_mul(tiny, t([0.5])), t([0.0]))  # exactly half: ties to even (0)


def test_binary_ops_broadcast() -> None:
    out = kernels.pam_mul(t([[1.0], [2.0]]), t([1.5, 3.0, -1.0]))
    assert_bit_exact(out, t([[1.5, 3.0, -1.0], [3.0, 6.0, -2.0]]))


# ---- pam_div ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", INF_DTYPES)
def test_quotient_special_cases(dtype: torch.dtype) -> None:
    a = t([1.0, -1.0, 0.0, INF, 3.0, -0.0, INF, NAN], dtype)
    b = t([0.0, 0.0, 0.0, INF, -INF, 2.0, -2.0, 1.0], dtype)
    expected = t([INF, -INF, NAN, NAN, -0.0, -0.0, -INF, NAN], dtype)
    assert_bit_exact(kernels.pam_div(a, b), expected)


def test_quotient_by_zero_saturates_in_e4m3fn() -> None:
    e4m3 = torch.float8_e4m3fn
    assert_bit_exact(kernels.pam_div(t([1.0, -1.0], e4m3), t([0.0, 0.0], e4m3)), t([448.0, -448.0], e4m3))


def test_quotient_both_pieces() -> None:
    # Ma >= Mb: 3 ⊘ 1.5 = 2**1 (1 + 1/2 - 1/2) = 2.  Ma < Mb: 2 ⊘ 1.5 = 2**0 (2 + 0 - 1/2) / 1 = 1.5,
    # 1 ⊘ 1.75 = 2**-1 (2 - 3/4) = 0.625.
    assert_bit_exact(kernels.pam_div(t([3.0, 2.0, 1.0]), t([1.5, 1.5, 1.75])), t([2.0, 1.5, 0.625]))


def test_quotient_undoes_product_absent_under_and_overflow() -> None:
    a, b = t([1.3, -2.7, 1e-3, 123.0]), t([3.1, 0.9, -7e5, 1.01])
    assert_bit_exact(kernels.pam_div(kernels.pam_mul(a, b), b), a)


# ---- pa_log2 / pa_exp2 / pam_mul_grad --------------------------------------------------------------------


def test_log2_special_cases_and_values() -> None:
    x = t([1.0, 3.0, -3.0, 0.375, 0.0, -0.0, INF, -INF, NAN])
    expected = t([0.0, 1.5, 1.5, -1.5, -INF, -INF, INF, INF, NAN])
    assert_bit_exact(kernels.pa_log2(x), expected)


def test_log2_of_zero_saturates_in_e4m3fn() -> None:
    e4m3 = torch.float8_e4m3fn
    assert_bit_exact(kernels.pa_log2(t([0.0, -0.0], e4m3)), t([-448.0, -448.0], e4m3))


def test_log2_rounds_once_in_fp64() -> None:
    # The smallest fp64 subnormal: E + M = -1074 exactly; the largest: E = 1023, M = 1 - 2**-52 needs 63 bits.
    fmt = formats.get("fp64")
    x = patterns(fmt, [0x1, 0x7FEFFFFFFFFFFFFF])
    assert_bit_exact(kernels.pa_log2(x), t([-1074.0, 1024.0], torch.float64))


def test_exp2_special_cases_and_values() -> None:
    y = t([0.0, -0.0, 1.5, -0.5, -1.75, 3.0, -INF, INF, NAN, 200.0, -200.0])
    expected = t([1.0, 1.0, 3.0, 0.75, 0.3125, 8.0, 0.0, INF, NAN, INF, 0.0])
    assert_bit_exact(kernels.pa_exp2(y), expected)


def test_exp2_of_tiny_negative_rounds_to_one() -> None:
    # 2**-1 · (2 - 2**-100) is within half an ulp of 1 in fp64.
    assert_bit_exact(kernels.pa_exp2(t([-(2.0**-100)], torch.float64)), t([1.0], torch.float64))


def test_exp2_inverts_log2_where_log2_is_exact() -> None:
    x = t([1.0, 1.5, 3.0, 0.375, 1234.5])  # E + M fits the significand for each
    assert_bit_exact(kernels.pa_exp2(kernels.pa_log2(x)), x)


def test_mul_grad_is_a_signed_power_of_two_with_carry() -> None:
    a = t([1.5, 1.25, -1.5, 1.0, 0.0, NAN, INF, 2.0])
    b = t([1.5, -1.5, 2.0, -0.0, 3.0, 1.0, 0.0, INF])
    expected = t([2.0, -1.0, 2.0, -0.0, 2.0, NAN, NAN, INF])
    assert_bit_exact(kernels.pam_mul_grad(a, b), expected)


# ---- pam_matmul ------------------------------------------------------------------------------------------


def test_matmul_accumulates_sequentially_from_plus_zero() -> None:
    # 2**24 + 1 + 1 + 1: sequentially each +1 is lost (ties to even); pairwise (1 + 1) survives.
    a = t([[2.0**24, 1.0, 1.0, 1.0]])
    b = t([[1.0], [1.0], [1.0], [1.0]])
    assert_bit_exact(kernels.pam_matmul(a, b), t([[2.0**24]]))
    assert_bit_exact(kernels.pam_matmul(a, b, order="pairwise"), t([[2.0**24 + 2.0]]))
    assert_bit_exact(kernels.pam_matmul(t([[-0.0]]), t([[1.0]])), t([[0.0]]))  # +0 + -0 = +0


def test_matmul_returns_accumulator_dtype_and_widens_exactly() -> None:
    a = t([[1.5, 2.0]], torch.bfloat16)
    b = t([[1.5], [0.5]], torch.bfloat16)
    out = kernels.pam_matmul(a, b)
    assert out.dtype == torch.float32
    assert_bit_exact(out, t([[3.0]]))
    assert kernels.pam_matmul(a.double(), b.double()).dtype == torch.float64


def test_matmul_broadcasts_batch_dimensions() -> None:
    a = torch.randn(2, 1, 3, 4)
    b = torch.randn(5, 4, 2)
    out = kernels.pam_matmul(a, b)
    assert out.shape == (2, 5, 3, 2)
    assert_bit_exact(out[1, 3], kernels.pam_matmul(a[1, 0], b[3]))


def test_matmul_ftz_flushes_partial_sums_keeping_the_sign() -> None:
    # -1.5·2**-126 + 2**-126 = -2**-127, a subnormal: ftz flushes it to a zero of its sign.
    a = t([[-(2.0**-126) * 1.5, 2.0**-126]])
    b = t([[1.0], [1.0]])
    assert_bit_exact(kernels.pam_matmul(a, b), t([[-(2.0**-127)]]))
    assert_bit_exact(kernels.pam_matmul(a, b, mode="ftz"), t([[-0.0]]))


def test_matmul_nan_is_canonical() -> None:
    out = kernels.pam_matmul(t([[INF, -INF]]), t([[1.0], [1.0]]))
    assert_bit_exact(
        out, np.array([[formats.get("fp32").canonical_nan]], dtype=np.uint32), fmt="fp32", nan="bits"
    )


def test_matmul_with_empty_inner_dimension_is_plus_zero() -> None:
    assert_bit_exact(kernels.pam_matmul(torch.ones(2, 0), torch.ones(0, 3)), torch.zeros(2, 3))


# ---- bad input -------------------------------------------------------------------------------------------


def test_mismatched_dtypes_are_rejected_not_upcast() -> None:
    with pytest.raises(TypeError, match=r"torch.float32 and torch.float16.*nothing is upcast"):
        kernels.pam_mul(torch.ones(2), torch.ones(2, dtype=torch.float16))


def test_integer_tensors_are_rejected() -> None:
    with pytest.raises(TypeError, match=r"integer/bool dtype torch.int32.*accept torch.float64"):
        kernels.pam_div(torch.ones(2, dtype=torch.int32), torch.ones(2, dtype=torch.int32))


def test_unsupported_float_dtype_is_rejected() -> None:
    with pytest.raises(TypeError, match=r"unsupported dtype torch.complex64"):
        kernels.pa_log2(torch.ones(2, dtype=torch.complex64))


def test_non_tensors_are_rejected() -> None:
    with pytest.raises(TypeError, match=r"must be a torch.Tensor.*got list"):
        kernels.pa_exp2([1.0])  # type: ignore[arg-type]


def test_shapes_that_do_not_broadcast_are_rejected() -> None:
    with pytest.raises(ValueError, match=r"shapes \(2,\) and \(3,\) do not broadcast"):
        kernels.pam_mul(torch.ones(2), torch.ones(3))


def test_unknown_mode_and_order_are_rejected() -> None:
    # the one message of revcheck.modes.check_mode, as in the oracle and the exact model
    with pytest.raises(ValueError, match=r"unknown mode 'daz'; use one of 'ieee', 'ftz'"):
        kernels.pam_mul(torch.ones(2), torch.ones(2), mode="daz")
    with pytest.raises(
        ValueError, match=r"unknown order 'random'; accepted orders are 'sequential', 'pairwise'"
    ):
        kernels.pam_matmul(torch.ones(2, 2), torch.ones(2, 2), order="random")


def test_matmul_shape_errors_say_what_is_needed() -> None:
    with pytest.raises(ValueError, match=r"inner dimensions differ.*K=3.*K=2"):
        kernels.pam_matmul(torch.ones(2, 3), torch.ones(2, 2))
    with pytest.raises(ValueError, match=r"at least 2 dimensions"):
        kernels.pam_matmul(torch.ones(3), torch.ones(3, 2))
    with pytest.raises(TypeError, match=r"A has dtype torch.float64 but B has torch.float32"):
        kernels.pam_matmul(torch.ones(2, 2, dtype=torch.float64), torch.ones(2, 2))


# ---- autograd (docs/spec.md D2.11 to D2.13) ----------------------------------------------------------------
# Bit-level comparisons over every class live in properties/test_pam_elementwise_autograd.py.


@pytest.mark.parametrize("op", ["pam_mul", "pam_div"])
@pytest.mark.parametrize("backward", ["approx", "exact"])
def test_a_binary_op_term_is_not_silently_missing_from_the_gradient(op: str, backward: str) -> None:
    # Field finding: the kernels returned detached results, so d/da of (a ⊡ b + a) was 1: the PAM term
    # was lost without a word.
    a = torch.tensor([1.5, -3.0], requires_grad=True)
    b = torch.tensor([1.5, 2.0], requires_grad=True)
    (getattr(kernels, op)(a, b, backward=backward) + a).sum().backward()
    assert a.grad is not None and b.grad is not None
    expected_a = {
        "pam_mul": {"approx": [2.5, 3.0], "exact": [3.0, 3.0]},
        "pam_div": {"approx": [1.75, 1.5], "exact": [2.0, 1.5]},
    }
    expected_b = {
        "pam_mul": {"approx": [1.5, -3.0], "exact": [2.0, -2.0]},
        "pam_div": {"approx": [-0.75, 0.75], "exact": [-0.5, 0.5]},
    }
    assert_bit_exact(a.grad, t(expected_a[op][backward]))
    assert_bit_exact(b.grad, t(expected_b[op][backward]))


@pytest.mark.parametrize("op", ["pa_log2", "pa_exp2"])
def test_a_unary_op_term_is_not_silently_missing_from_the_gradient(op: str) -> None:
    x = torch.tensor([3.0, -0.375, 1.0], requires_grad=True)
    (getattr(kernels, op)(x, backward="exact") + x).sum().backward()
    slopes = {"pa_log2": [0.5, -4.0, 1.0], "pa_exp2": [8.0, 0.5, 2.0]}[op]  # 2**−E; 2**floor(y)
    assert x.grad is not None
    assert_bit_exact(x.grad, t([1.0 + s for s in slopes]))


def test_exact_slopes_at_special_values() -> None:
    # docs/spec.md D2.12 and D2.5, one row each; g = 1 so the gradient is the slope itself.
    def grads(op: str, *values: list[float]) -> list[torch.Tensor]:
        inputs = [t(v).requires_grad_(True) for v in values]
        getattr(kernels, op)(*inputs, backward="exact").backward(torch.ones(len(values[0])))
        return [x.grad for x in inputs]  # type: ignore[misc]

    log2 = grads("pa_log2", [0.0, -0.0, INF, -INF, NAN, 2.0**-149])
    assert_bit_exact(log2[0], t([INF, -INF, 0.0, -0.0, NAN, INF]))  # 2**149 overflows fp32
    exp2 = grads("pa_exp2", [0.0, -0.0, -INF, INF, NAN, -(2.0**-149), 1e30, -1e30])
    assert_bit_exact(exp2[0], t([1.0, 1.0, 0.0, INF, NAN, 0.5, INF, 0.0]))
    div = grads("pam_div", [1.0, 0.0, INF, 0.0, 3.0], [0.0, 2.0, 2.0, 0.0, -INF])
    assert_bit_exact(div[0], t([INF, 0.5, 0.5, NAN, -0.0]))
    assert_bit_exact(div[1], t([-INF, -0.0, -INF, NAN, -0.0]))
    mul = grads("pam_mul", [0.0, INF, 1.5, 0.0], [-3.0, 2.0, -0.0, INF])
    assert_bit_exact(mul[0], t([-2.0, 2.0, -0.0, NAN]))


def test_exact_slope_is_never_rounded_on_its_own() -> None:
    # d(a ⊘ b)/db = −sign(a)·2**(Ea − 2Eb − c) = −2**−201 here (Ma = Mb = 0: c = 1), far below the
    # smallest fp32 subnormal, yet g·s = −2**−81 is normal: rounding s first would give −0.
    a = t([1.0]).requires_grad_(True)
    b = t([2.0**100]).requires_grad_(True)
    kernels.pam_div(a, b, backward="exact").backward(t([2.0**120]))
    assert b.grad is not None
    assert_bit_exact(b.grad, t([-(2.0**-81)]))


def test_broadcast_operand_gets_the_sum_over_the_broadcast_dimension() -> None:
    a = torch.tensor([[1.5], [2.0]], requires_grad=True)
    b = torch.tensor([[1.5, 1.25, 1.0]])
    kernels.pam_mul(a, b, backward="exact").sum().backward()
    assert_bit_exact(a.grad, t([[2.0 + 1.0 + 1.0], [1.0 + 1.0 + 1.0]]))


def test_the_gradient_of_an_fp8_operand_is_fp8() -> None:
    a = t([1.5, -3.0], torch.float8_e4m3fn).requires_grad_(True)
    kernels.pam_mul(a, t([1.5, 2.0], torch.float8_e4m3fn), backward="exact").backward(
        t([1.0, 1.0], torch.float8_e4m3fn)
    )
    assert a.grad is not None and a.grad.dtype == torch.float8_e4m3fn
    assert_bit_exact(a.grad, t([2.0, 2.0], torch.float8_e4m3fn))


def test_double_backward_approx_is_the_product_rule_again() -> None:
    # d²(a ⊡ b)/da db with the approximate backward: d(g ⊡ b)/db = g ⊡ 1 = g.
    a = torch.tensor([1.5, -0.75], requires_grad=True)
    b = torch.tensor([1.25, 3.0], requires_grad=True)
    (grad_a,) = torch.autograd.grad(kernels.pam_mul(a, b).sum(), a, create_graph=True)
    assert_bit_exact(grad_a, b.detach())
    (mixed,) = torch.autograd.grad(grad_a.sum(), b)
    assert_bit_exact(mixed, t([1.0, 1.0]))


def test_double_backward_exact_is_linear_in_the_upstream_gradient() -> None:
    a = torch.tensor([1.5, -0.75], requires_grad=True)
    b = torch.tensor([1.5, 3.0])
    g = torch.tensor([2.0, 0.5], requires_grad=True)
    (grad_a,) = torch.autograd.grad(
        kernels.pam_mul(a, b, backward="exact"), a, grad_outputs=g, create_graph=True
    )
    assert_bit_exact(grad_a.detach(), t([4.0, 2.0]))  # slopes 2 and 4
    (dg,) = torch.autograd.grad(grad_a.sum(), g)
    assert_bit_exact(dg, t([2.0, 4.0]))


def test_pam_mul_grad_refuses_inputs_that_require_grad() -> None:
    a = torch.tensor([1.5, 1.25], requires_grad=True)
    b = torch.tensor([1.5, -1.5])
    with pytest.raises(UsageError, match=r"no autograd.*detach.*backward='exact'"):
        kernels.pam_mul_grad(a, b)
    assert_bit_exact(kernels.pam_mul_grad(a.detach(), b), t([2.0, -1.0]))
    with torch.no_grad():
        assert_bit_exact(kernels.pam_mul_grad(a, b), t([2.0, -1.0]))


def test_pam_matmul_with_grad_is_pam_matmul_autograd_and_refuses_what_it_cannot_differentiate() -> None:
    generator = torch.Generator().manual_seed(5)
    a = torch.randn(3, 4, generator=generator, requires_grad=True)
    b = torch.randn(4, 2, generator=generator, requires_grad=True)
    g = torch.randn(3, 2, generator=generator)
    for backward in ("approx", "exact"):
        kernels.pam_matmul(a, b, backward=backward).backward(g)
        got = (a.grad, b.grad)
        a.grad = b.grad = None
        PAMMatmul.apply(a, b, "ieee", backward).backward(g)
        assert_bit_exact(got[0], a.grad)
        assert_bit_exact(got[1], b.grad)
        a.grad = b.grad = None
    with pytest.raises(UsageError, match="order='sequential' and a matrix B"):
        kernels.pam_matmul(a, b, order="pairwise")
    with pytest.raises(UsageError, match="order='sequential' and a matrix B"):
        kernels.pam_matmul(a, b.detach().expand(2, 4, 2))
    assert kernels.pam_matmul(a.detach(), b.detach(), order="pairwise").requires_grad is False


def test_unknown_backward_is_refused() -> None:
    with pytest.raises(ValueError, match=r"unknown backward 'fast'; accepted values are 'approx', 'exact'"):
        kernels.pam_mul(t([1.0]), t([1.0]), backward="fast")


def test_triton_kernels_refuse_inputs_that_require_grad() -> None:
    if not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("the Triton kernels run on the CPU only with TRITON_INTERPRET=1")
    triton_pam = pytest.importorskip("revcheck.kernels.triton_pam")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    a = torch.tensor([1.5, 2.0], device=device, requires_grad=True)
    b = torch.tensor([1.5, 3.0], device=device)
    for call in (
        lambda: triton_pam.pam_mul(a, b),
        lambda: triton_pam.pa_exp2(a),
        lambda: triton_pam.pam_matmul(a.reshape(1, 2), b.reshape(2, 1)),
    ):
        with pytest.raises(UsageError, match=r"no autograd.*revcheck\.kernels\.pam"):
            call()
    assert_bit_exact(triton_pam.pam_mul(a.detach(), b), kernels.pam_mul(a.detach(), b))
