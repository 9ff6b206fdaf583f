"""Unit tests of ``PAMMatmul`` and ``PAMLinear``: drop-in behaviour and bit-level gradient claims."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from revcheck.kernels import pam as kernels
from revcheck.nn.pam import PAMLinear, PAMMatmul, pam_matmul_exact_grads
from revcheck.testing import assert_bit_exact


def powers_of_two(*shape: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    exponents = torch.randint(-3, 4, shape, generator=generator).double()
    signs = torch.randint(0, 2, shape, generator=generator).double() * 2 - 1
    return (signs * torch.exp2(exponents)).float()


# ---- PAMLinear as a drop-in for nn.Linear ----------------------------------------------------------------


def test_state_dict_round_trips_with_nn_linear() -> None:
    torch.manual_seed(0)
    reference = nn.Linear(5, 3)
    layer = PAMLinear(5, 3, backward="exact")
    layer.load_state_dict(reference.state_dict())
    assert set(layer.state_dict()) == {"weight", "bias"}
    back = nn.Linear(5, 3)
    back.load_state_dict(layer.state_dict())
    assert_bit_exact(back.weight, reference.weight)
    assert_bit_exact(back.bias, reference.bias)


def test_constructor_matches_nn_linear() -> None:
    layer = PAMLinear(4, 2, bias=False, device="cpu", dtype=torch.float64)
    assert layer.bias is None and layer.weight.shape == (2, 4) and layer.weight.dtype == torch.float64
    assert isinstance(layer, nn.Linear)
    assert "backward='approx', mode='ieee'" in repr(layer)


@pytest.mark.parametrize("shape", [(4,), (2, 4), (3, 2, 4)])
def test_forward_shapes_follow_nn_linear(shape: tuple[int, ...]) -> None:
    layer = PAMLinear(4, 6)
    x = torch.randn(shape)
    assert layer(x).shape == nn.Linear(4, 6)(x).shape


def test_forward_equals_linear_when_weights_are_powers_of_two() -> None:
    # PAM is exact when one operand is ±2**k, so with such weights the products equal the true ones.
    layer = PAMLinear(4, 3)
    with torch.no_grad():
        layer.weight.copy_(powers_of_two(3, 4))
        layer.bias.copy_(torch.tensor([0.5, -1.0, 2.0]))
    x = torch.randn(2, 4, dtype=torch.float64).float()
    expected = kernels.pam_matmul(x, layer.weight.t()) + layer.bias
    assert_bit_exact(layer(x), expected)
    torch.testing.assert_close(layer(x), nn.functional.linear(x, layer.weight, layer.bias))


def test_forward_is_the_sequential_pam_matmul_plus_bias() -> None:
    torch.manual_seed(1)
    layer = PAMLinear(7, 5)
    x = torch.randn(3, 7)
    assert_bit_exact(layer(x), kernels.pam_matmul(x, layer.weight.t()) + layer.bias)


@pytest.mark.parametrize("backward", ["approx", "exact"])
def test_gradients_flow_to_input_weight_and_bias(backward: str) -> None:
    torch.manual_seed(2)
    layer = PAMLinear(4, 3, backward=backward)
    x = torch.randn(5, 4, requires_grad=True)
    layer(x).square().sum().backward()
    for tensor in (x.grad, layer.weight.grad, layer.bias.grad):
        assert tensor is not None and bool(torch.isfinite(tensor).all()) and bool((tensor != 0).any())


def test_bf16_layer_returns_bf16_and_rounds_once_from_the_accumulator() -> None:
    torch.manual_seed(3)
    layer = PAMLinear(4, 3, dtype=torch.bfloat16)
    x = torch.randn(2, 4).bfloat16().requires_grad_(True)
    out = layer(x)
    assert out.dtype == torch.bfloat16
    accumulated = kernels.pam_matmul(x.detach(), layer.weight.detach().t()) + layer.bias.detach().float()
    assert_bit_exact(out, accumulated.to(torch.bfloat16))
    out.sum().backward()
    assert x.grad is not None and x.grad.dtype == torch.bfloat16


def test_linear_rejects_wrong_dtype_and_width() -> None:
    layer = PAMLinear(4, 3)
    with pytest.raises(TypeError, match=r"weight dtype torch.float32 but the input is torch.float64"):
        layer(torch.ones(2, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"expects inputs \(\.\.\., 4\), got shape \(2, 5\)"):
        layer(torch.ones(2, 5))


def test_unknown_backward_and_mode_are_rejected() -> None:
    with pytest.raises(ValueError, match=r"unknown backward 'fast'; accepted values are 'approx', 'exact'"):
        PAMLinear(2, 2, backward="fast")
    with pytest.raises(ValueError, match=r"unknown mode 'daz'"):
        PAMLinear(2, 2, mode="daz")


# ---- gradients at the bit level --------------------------------------------------------------------------


def test_approx_backward_is_pam_matmul_of_gradient_and_transposes() -> None:
    torch.manual_seed(4)
    a = torch.randn(3, 4, requires_grad=True)
    b = torch.randn(4, 2, requires_grad=True)
    g = torch.randn(3, 2)
    PAMMatmul.apply(a, b, "ieee", "approx").backward(g)
    assert_bit_exact(a.grad, kernels.pam_matmul(g, b.detach().t().contiguous()))
    assert_bit_exact(b.grad, kernels.pam_matmul(a.detach().t().contiguous(), g))


def test_exact_backward_slopes_on_one_element() -> None:
    # d(a ⊡ b)/da at a = 1.5, b = 1.5 is 2**(0 + 1) = 2 (Ma + Mb = 1); at a = 1.25, b = -1.5 it is -1.
    a = torch.tensor([[1.5, 1.25]], requires_grad=True)
    b = torch.tensor([[1.5], [-1.5]], requires_grad=True)
    PAMMatmul.apply(a, b, "ieee", "exact").backward(torch.tensor([[3.0]]))
    assert_bit_exact(a.grad, torch.tensor([[6.0, -3.0]]))
    # d/db: slope(b, a) = sign(a) · 2**(Ea + [Mb + Ma >= 1]): 2 for (1.5, 1.5), 1 for (-1.5, 1.25).
    assert_bit_exact(b.grad, torch.tensor([[6.0], [3.0]]))


def test_exact_backward_scaling_overflows_and_underflows_by_rounding_once() -> None:
    # G = 3e38 times slope 2 overflows to inf; G = 2**-149 times slope 2**-1 rounds to even (0).
    a = torch.tensor([[1.0], [1.0]])
    b = torch.tensor([[2.0]])
    g = torch.tensor([[3e38], [2.0**-149]])
    grad_a, _ = pam_matmul_exact_grads(a, b, g)
    assert_bit_exact(grad_a, torch.tensor([[float("inf")], [2.0**-148]]))
    grad_a, _ = pam_matmul_exact_grads(a, torch.tensor([[0.5]]), g)
    assert_bit_exact(grad_a, torch.tensor([[1.5e38], [0.0]]))


def test_exact_backward_sums_in_order_of_n() -> None:
    # G row [2**24, 1, 1] with slopes 1: sequentially 2**24 + 1 + 1 = 2**24 (each tie goes to even).
    a = torch.tensor([[1.0]], requires_grad=True)
    b = torch.tensor([[1.0, 1.0, 1.0]])
    PAMMatmul.apply(a, b, "ieee", "exact").backward(torch.tensor([[2.0**24, 1.0, 1.0]]))
    assert_bit_exact(a.grad, torch.tensor([[2.0**24]]))


def test_pam_matmul_rejects_batched_b_with_a_pointer_to_the_kernel() -> None:
    with pytest.raises(ValueError, match=r"B to be a matrix \(K, N\).*pam_matmul"):
        PAMMatmul.apply(torch.ones(2, 2, 3), torch.ones(2, 3, 4), "ieee", "approx")
