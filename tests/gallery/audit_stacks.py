"""Whole BDIA stacks for :func:`revcheck.audit.audit_stack`: a correct one and realistic wrong ones.

Each stack is three functions with the audit's protocol (``forward``, ``reconstruct``,
``backward``; see :mod:`revcheck.audit.stack`), written here independently of
:class:`revcheck.nn.BDIAStack`:

* ``code_*``: states as int64 codes, the arithmetic of docs/spec.md §3 (correct);
* ``grid_*``: states kept as fp32 values on the grid, all arithmetic in fp32, as the public
  quantized BDIA ViT does.  Exact while every code is below 2**24 (fp32 holds every integer
  up to there), wrong above: the stack audit has to find that band on its own;
* ``code_reconstruct_without_replay``: the correct inverse, but dropout is not replayed.

The backward of each is a stored-activation autograd run with straight-through gradients
at the quantizer, summed as ordinary autograd sums them (the reference the audit compares with).
"""

# ruff: noqa: E741  (``l``, the grid exponent, is the name docs/spec.md §3 uses)
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn


class _StraightThrough(torch.autograd.Function):
    """Value ``value``; gradient straight to ``expression`` (the unquantized state)."""

    @staticmethod
    def forward(ctx: Any, expression: Tensor, value: Tensor) -> Tensor:
        return value.clone()

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        return grad, None


def _block(block: nn.Module, x: Tensor, compute_dtype: torch.dtype) -> Tensor:
    return block(x).to(compute_dtype)


def _column(gamma_row: Tensor) -> Tensor:
    return gamma_row[:, None]


# ---- int64 codes (correct) --------------------------------------------------------------------


def _quantize(values: Tensor, l: int) -> Tensor:
    return torch.round(values.double() * 2.0**l).to(torch.int64)


def _value(codes: Tensor, l: int, compute_dtype: torch.dtype) -> Tensor:
    return codes.to(compute_dtype) * 2.0**-l


def _mix(x: Tensor, h: Tensor, gamma: Tensor) -> Tensor:
    return (1 - gamma) * x + (1 + gamma) * h  # two rounded products, one rounded sum: no FMA on CPU


def code_forward(
    x0: Tensor, blocks: Sequence[nn.Module], gammas: Tensor, l: int, *, compute_dtype: torch.dtype
) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
    """Correct BDIA forward on int64 codes; saves the RNG state before each block for the inverse."""
    rng = [torch.get_rng_state()]
    X_prev = _quantize(x0, l)
    X_cur = X_prev + _quantize(_block(blocks[0], _value(X_prev, l, compute_dtype), compute_dtype), l)
    states, side_bits = [X_prev, X_cur], []
    for k in range(1, len(blocks)):
        rng.append(torch.get_rng_state())
        gamma = _column(gammas[k - 1])
        x = _value(X_cur, l, compute_dtype)
        h = _block(blocks[k], x, compute_dtype)
        side = X_prev & 1
        half = (X_prev + side) >> 1
        trained = torch.where(gamma > 0, half, -half) + _quantize(_mix(x, h, gamma), l)
        X_next = torch.where(gamma == 0, X_cur + _quantize(h, l), trained)
        states.append(X_next)
        side_bits.append(side)
        X_prev, X_cur = X_cur, X_next
    return states, side_bits, rng


def code_reconstruct(
    top: Tensor,
    below: Tensor,
    blocks: Sequence[nn.Module],
    gammas: Tensor,
    side_bits: Sequence[Tensor],
    l: int,
    *,
    compute_dtype: torch.dtype,
    saved: list[Tensor] | None = None,
    replay: bool = True,
) -> list[Tensor]:
    """Correct inverse: X_{k-1} = ±2 (X_{k+1} - R(y_k)) - s_{k-1}, block k's dropout replayed."""
    X_next, X_cur = top, below
    states = [X_next, X_cur]
    for k in range(len(blocks) - 1, 0, -1):
        if replay and saved is not None:
            torch.set_rng_state(saved[k])
        gamma = _column(gammas[k - 1])
        x = _value(X_cur, l, compute_dtype)
        difference = X_next - _quantize(_mix(x, _block(blocks[k], x, compute_dtype), gamma), l)
        X_prev = torch.where(gamma > 0, 2 * difference, -2 * difference) - side_bits[k - 1]
        states.append(X_prev)
        X_next, X_cur = X_cur, X_prev
    return states[::-1]


def code_reconstruct_without_replay(
    top: Tensor,
    below: Tensor,
    blocks: Sequence[nn.Module],
    gammas: Tensor,
    side_bits: Sequence[Tensor],
    l: int,
    *,
    compute_dtype: torch.dtype,
    saved: list[Tensor] | None = None,
) -> list[Tensor]:
    """WRONG with dropout: the inverse recomputes y_k with fresh dropout masks."""
    return code_reconstruct(
        top, below, blocks, gammas, side_bits, l, compute_dtype=compute_dtype, saved=saved, replay=False
    )


def code_backward(
    x0: Tensor,
    blocks: Sequence[nn.Module],
    gammas: Tensor,
    l: int,
    *,
    compute_dtype: torch.dtype,
    gamma_term: bool = True,
) -> Tensor:
    """x_K of a stored-activation run, straight-through at R (docs/spec.md D3.10)."""
    X_prev = _quantize(x0, l)
    x_prev = _StraightThrough.apply(x0, _value(X_prev, l, compute_dtype))
    h = _block(blocks[0], x_prev, compute_dtype)
    X_cur = X_prev + _quantize(h, l)
    x_cur = _StraightThrough.apply(x_prev + h, _value(X_cur, l, compute_dtype))
    inference = bool((gammas == 0).all())  # (vacuous for one block, where both rules agree)
    for k in range(1, len(blocks)):
        h = _block(blocks[k], x_cur, compute_dtype)
        if inference:
            X_next = X_cur + _quantize(h, l)
            x_next = _StraightThrough.apply(x_cur + h, _value(X_next, l, compute_dtype))
        else:
            gamma = _column(gammas[k - 1])
            y = _mix(x_cur, h, gamma)
            side = X_prev & 1
            half = (X_prev + side) >> 1
            X_next = torch.where(gamma > 0, half, -half) + _quantize(y, l)
            target = gamma * x_prev + y if gamma_term else y
            x_next = _StraightThrough.apply(target, _value(X_next, l, compute_dtype))
        X_prev, X_cur, x_prev, x_cur = X_cur, X_next, x_cur, x_next
    return x_cur


def code_backward_without_gamma_term(
    x0: Tensor, blocks: Sequence[nn.Module], gammas: Tensor, l: int, *, compute_dtype: torch.dtype
) -> Tensor:
    """WRONG: the straight-through gradient goes to y_k only, so x_{k-1} misses gamma_k dL/dx_{k+1}."""
    return code_backward(x0, blocks, gammas, l, compute_dtype=compute_dtype, gamma_term=False)


# ---- fp32 grid values (the public BDIA ViT's way) ---------------------------------------------


def _grid(values: Tensor, l: int) -> Tensor:
    """R(values) · 2**-l as an fp32 value: the quantizer of a stack that keeps its states as floats."""
    return torch.round(values * 2.0**l) * 2.0**-l


def grid_forward(
    x0: Tensor, blocks: Sequence[nn.Module], gammas: Tensor, l: int, *, compute_dtype: torch.dtype
) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
    """BDIA with every state an fp32 grid value and all arithmetic in fp32 (exact below 2**24 codes)."""
    rng = [torch.get_rng_state()]
    x_prev = _grid(x0, l)
    x_cur = x_prev + _grid(_block(blocks[0], x_prev, compute_dtype), l)
    states, side_bits = [x_prev, x_cur], []
    for k in range(1, len(blocks)):
        rng.append(torch.get_rng_state())
        gamma = _column(gammas[k - 1])
        h = _block(blocks[k], x_cur, compute_dtype)
        side = torch.remainder(torch.round(x_prev * 2.0**l), 2)
        trained = gamma * (x_prev + side * 2.0**-l) + _grid(_mix(x_cur, h, gamma), l)
        x_next = torch.where(gamma == 0, x_cur + _grid(h, l), trained)
        states.append(x_next)
        side_bits.append(side.to(torch.int64))
        x_prev, x_cur = x_cur, x_next
    return states, side_bits, rng


def grid_reconstruct(
    top: Tensor,
    below: Tensor,
    blocks: Sequence[nn.Module],
    gammas: Tensor,
    side_bits: Sequence[Tensor],
    l: int,
    *,
    compute_dtype: torch.dtype,
    saved: list[Tensor] | None = None,
) -> list[Tensor]:
    """The inverse in fp32: x_{k-1} = (x_{k+1} - R(y_k)) / gamma - s_{k-1} · 2**-l."""
    x_next, x_cur = top, below
    states = [x_next, x_cur]
    for k in range(len(blocks) - 1, 0, -1):
        if saved is not None:
            torch.set_rng_state(saved[k])
        gamma = _column(gammas[k - 1])
        y = _mix(x_cur, _block(blocks[k], x_cur, compute_dtype), gamma)
        x_prev = (x_next - _grid(y, l)) / gamma - side_bits[k - 1].to(compute_dtype) * 2.0**-l
        states.append(x_prev)
        x_next, x_cur = x_cur, x_prev
    return states[::-1]


def grid_backward(
    x0: Tensor, blocks: Sequence[nn.Module], gammas: Tensor, l: int, *, compute_dtype: torch.dtype
) -> Tensor:
    """x_K of the fp32 grid stack under autograd, straight-through at the quantizer."""
    x_prev = _StraightThrough.apply(x0, _grid(x0, l))
    h = _block(blocks[0], x_prev, compute_dtype)
    x_cur = _StraightThrough.apply(x_prev + h, (x_prev + _grid(h, l)).detach())
    inference = bool((gammas == 0).all())
    for k in range(1, len(blocks)):
        h = _block(blocks[k], x_cur, compute_dtype)
        if inference:
            x_next = _StraightThrough.apply(x_cur + h, (x_cur + _grid(h, l)).detach())
        else:
            gamma = _column(gammas[k - 1])
            y = _mix(x_cur, h, gamma)
            side = torch.remainder(torch.round(x_prev.detach() * 2.0**l), 2)
            value = gamma * (x_prev.detach() + side * 2.0**-l) + _grid(y.detach(), l)
            x_next = _StraightThrough.apply(gamma * x_prev + y, value)
        x_prev, x_cur = x_cur, x_next
    return x_cur


# ---- revcheck's own BDIAStack as a candidate backward ------------------------------------------


def bdia_stack_backward(
    x0: Tensor, blocks: Sequence[nn.Module], gammas: Tensor, l: int, *, compute_dtype: torch.dtype
) -> Tensor:
    """x_K of ``BDIAStack(mode="reversible")``: its backward reconstructs instead of storing."""
    from revcheck.nn import BDIAStack

    stack = BDIAStack(blocks, l=l, mode="reversible", compute_dtype=compute_dtype, seed=0)
    if not any(block.training for block in blocks):  # inference (the model's mode): eval() uses gamma = 0
        return stack.eval()(x0)
    return stack.train()(x0, gamma_signs=torch.sign(gammas).to(torch.int8))
