"""Autograd for the PAM matrix product: :class:`PAMMatmul` and the drop-in layer :class:`PAMLinear`.

Forward: ``C = A ⊡@ B`` by :func:`revcheck.kernels.pam.pam_matmul` (products in
the accumulator format, sequential order), result in the accumulator dtype
(float64 for float64, float32 otherwise).

Backward, chosen per call (``backward=``):

``"approx"`` (the paper's choice)
    The gradients are PAM matrix products themselves: ``dA = G ⊡@ Bᵀ`` and
    ``dB = Aᵀ ⊡@ G``, sequential order (over N for dA, over the rows M for dB).
``"exact"``
    The derivative of the piecewise-affine function actually computed:
    ``dA[m, k] = Σ_n G[m, n] · slope(A[m, k], B[k, n])`` with the slope
    ``sign(b) · 2^(Eb + [Ma + Mb >= 1])`` (:func:`~revcheck.kernels.pam.pam_mul_grad`),
    and symmetrically ``dB[k, n] = Σ_m G[m, n] · slope(B[k, n], A[m, k])``.
    Each term ``G · slope`` scales by a signed power of two, computed as the PAM
    product ``G ⊡ slope`` with the slope held exactly (docs/spec.md D2.11): PAM is
    exact when one operand is ±2^j, and the kernel adds exponents as integers, so
    the term is the exact scaled value rounded once (it is exact unless it over- or
    underflows), also where the slope alone would overflow the format.
    ``torch.ldexp`` is not used because it multiplies by a materialised ``2.0**e``,
    which overflows for large ``e`` even when the scaled result is finite.  Terms
    are summed in the accumulator format sequentially: ``acc = +0.0;
    acc = fl(acc + t_n)`` for n = 0 … N−1 (dA) and m = 0 … M−1 (dB),
    round-to-nearest-even, with the kernels' flag-immune addition (docs/spec.md D2.14).

Both backwards are differentiable again (``create_graph=True``): ``"approx"`` through
PAM matrix products of the same kind, ``"exact"`` linearly in the upstream gradient
(the slopes are piecewise constant).

In both cases the gradient is computed in the accumulator dtype (operands are
widened exactly to it) and then rounded once (RNE, ``Tensor.to``) to the input's
dtype, which autograd requires, saturating to ±max finite in the formats without
infinity (:func:`revcheck.kernels.pam.round_to_dtype`, docs/spec.md D2.17: torch's
own cast gives NaN on overflow in the fnuz formats); for float32 and float64 that
rounding is the identity.  A has shape (..., M, K) (leading dimensions are flattened into rows,
in C order) and B is a matrix (K, N), which is what a linear layer needs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from revcheck import formats
from revcheck.kernels import pam as kernels
from revcheck.kernels.pam import BACKWARDS
from revcheck.kernels.pam import check_backward as _check_backward
from revcheck.modes import check_mode

__all__ = ["BACKWARDS", "PAMLinear", "PAMMatmul", "pam_matmul_exact_grads"]


def _sequential_sum_of_scaled(count: int, term: Callable[[int], torch.Tensor], mode: str) -> torch.Tensor:
    """Σ_i term(i), i = 0 … count−1 in order, from +0.0, RNE (partial sums flushed in ftz)."""
    total: torch.Tensor | None = None
    summation: kernels._SequentialSum | None = None
    for index in range(count):
        value = term(index)
        if summation is None:
            summation = kernels._SequentialSum(formats.get(value.dtype), mode)
        total = summation.add(value)
    assert total is not None
    return total


def pam_matmul_exact_grads(
    a: torch.Tensor, b: torch.Tensor, grad: torch.Tensor, *, mode: str = "ieee"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact gradients (dA, dB) of ``A ⊡@ B`` for an upstream gradient ``grad``, in the accumulator dtype.

    ``A`` is (M, K), ``B`` is (K, N), ``grad`` is (M, N) of the accumulator dtype.
    See the module docstring for the definition and the summation order.
    """
    acc_dtype = kernels.accumulator_dtype(a.dtype)
    if grad.dtype != acc_dtype:
        raise TypeError(f"grad has dtype {grad.dtype}; the accumulator dtype of {a.dtype} is {acc_dtype}")
    a_wide, b_wide = a.to(acc_dtype), b.to(acc_dtype)  # exact: the accumulator format is at least as wide
    rows, depth = a_wide.shape
    cols = b_wide.shape[1]
    if 0 in (rows, depth, cols):
        return torch.zeros_like(a_wide), torch.zeros_like(b_wide)
    # dA[m, k] = Σ_n G[m, n] · slope(A[m, k], B[k, n]);  slope over (M, K) for one n.
    grad_a = _sequential_sum_of_scaled(
        cols,
        lambda n: kernels._times_mul_grad(
            grad[:, n : n + 1].expand(rows, depth),
            a_wide,
            b_wide[:, n].unsqueeze(0).expand(rows, depth),
            mode,
        ),
        mode,
    )
    # dB[k, n] = Σ_m G[m, n] · slope(B[k, n], A[m, k]);  slope over (K, N) for one m.
    grad_b = _sequential_sum_of_scaled(
        rows,
        lambda m: kernels._times_mul_grad(
            grad[m : m + 1, :].expand(depth, cols),
            b_wide,
            a_wide[m, :].unsqueeze(1).expand(depth, cols),
            mode,
        ),
        mode,
    )
    return grad_a, grad_b


class PAMMatmul(torch.autograd.Function):
    """``C = A ⊡@ B`` with a PAM backward: ``PAMMatmul.apply(A, B, mode, backward)``.

    ``apply`` takes positional arguments only; ``mode`` defaults to ``"ieee"`` and
    ``backward`` to ``"approx"``.

    A is (..., M, K), B is (K, N), both of one supported dtype; C is (..., M, N)
    in the accumulator dtype.  See the module docstring for both backwards.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, a: torch.Tensor, b: torch.Tensor, mode: str = "ieee", backward: str = "approx"
    ) -> torch.Tensor:
        check_mode(mode)
        _check_backward(backward)
        if isinstance(b, torch.Tensor) and b.dim() != 2:
            raise ValueError(
                f"PAMMatmul needs B to be a matrix (K, N), got shape {tuple(b.shape)}; for batched B use "
                "revcheck.kernels.pam.pam_matmul (no autograd)"
            )
        out = kernels.pam_matmul(a, b, mode=mode)
        ctx.save_for_backward(a, b)
        ctx.mode, ctx.backward = mode, backward
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None, None, None]:
        a, b = ctx.saved_tensors
        lead_shape = a.shape[:-1]
        a2 = a.reshape(-1, a.shape[-1])
        g2 = grad.reshape(-1, grad.shape[-1]).contiguous()
        acc_dtype = g2.dtype
        if ctx.backward == "approx":
            # Exact widening to the gradient's (accumulator) dtype, so both operands share one format.
            a_wide, b_wide = a2.to(acc_dtype), b.to(acc_dtype)
            grad_a = kernels.pam_matmul(g2, b_wide.t().contiguous(), mode=ctx.mode)
            grad_b = kernels.pam_matmul(a_wide.t().contiguous(), g2, mode=ctx.mode)
        else:
            grad_a, grad_b = pam_matmul_exact_grads(a2, b, g2, mode=ctx.mode)
        # Rounded once to the inputs' dtype, saturating in the fnuz formats (docs/spec.md D2.17).
        grad_a = kernels.round_to_dtype(grad_a, a.dtype).reshape(*lead_shape, a.shape[-1])
        grad_b = kernels.round_to_dtype(grad_b, b.dtype)
        return (
            grad_a if ctx.needs_input_grad[0] else None,
            grad_b if ctx.needs_input_grad[1] else None,
            None,
            None,
        )


class PAMLinear(nn.Linear):
    """Drop-in for :class:`torch.nn.Linear` whose matrix product is PAM: ``y = x ⊡@ Wᵀ + b``.

    Same constructor and parameters (``weight`` (out, in), ``bias`` (out)), so
    state dicts load into and from ``nn.Linear``; extra keywords: ``backward``
    (``"approx"`` or ``"exact"``, see :mod:`revcheck.nn.pam`) and ``mode``
    (``"ieee"`` or ``"ftz"``).  The product is computed in the accumulator dtype,
    the bias is added there with one float addition (bias widened exactly), and
    the output is rounded once to the input's dtype (identity for float32/64).
    The bias gradient is torch's reduction of the output gradient.

    >>> import torch
    >>> layer = PAMLinear(3, 2)
    >>> layer(torch.ones(4, 3)).shape
    torch.Size([4, 2])
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        device: Any = None,
        dtype: Any = None,
        *,
        backward: str = "approx",
        mode: str = "ieee",
    ) -> None:
        self.backward = _check_backward(backward)
        self.mode = check_mode(mode)
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or x.dtype != self.weight.dtype:
            given = x.dtype if isinstance(x, torch.Tensor) else type(x).__name__
            raise TypeError(
                f"PAMLinear has weight dtype {self.weight.dtype} but the input is {given}; convert the input "
                f"with x.to({self.weight.dtype}) (nothing is upcast silently)"
            )
        if x.dim() == 0 or x.shape[-1] != self.in_features:
            raise ValueError(
                f"PAMLinear expects inputs (..., {self.in_features}), got shape {tuple(x.shape)}"
            )
        rows = x.unsqueeze(0) if x.dim() == 1 else x
        out = PAMMatmul.apply(rows, self.weight.t(), self.mode, self.backward)
        if self.bias is not None:
            out = out + self.bias.to(out.dtype)
        out = kernels.round_to_dtype(out, x.dtype)
        return out.squeeze(0) if x.dim() == 1 else out

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, backward={self.backward!r}, mode={self.mode!r}"
