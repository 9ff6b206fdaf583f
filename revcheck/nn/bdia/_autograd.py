"""The autograd functions of :class:`~revcheck.nn.BDIAStack`.

:class:`Input` and :class:`StraightThrough` give a quantized state ``X * 2**-l``
its straight-through gradient; :class:`Inject` orders gradient summation in a
recomputed block like ordinary autograd; :class:`ReversibleBDIA` is the
reversible mode: a forward that keeps only the top two states, the side bits,
the gamma signs, checksums and RNG states, and a backward that reconstructs every
state below from them (docs/spec.md §3).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from revcheck.nn.bdia._checksums import raise_mismatch
from revcheck.nn.bdia._errors import BDIADoubleBackwardError
from revcheck.nn.bdia._recompute import RNGStates, autocast_state

if TYPE_CHECKING:
    from revcheck.nn.bdia._stack import BDIAStack, Step

__all__ = ["Inject", "Input", "ReversibleBDIA", "StraightThrough"]


class Input(torch.autograd.Function):
    """``x_0 = X_0 * 2**-l``; straight-through gradient to the (possibly other-dtype) input."""

    @staticmethod
    def forward(ctx: Any, x_in: Tensor, codes: Tensor, stack: BDIAStack) -> Tensor:
        ctx.in_dtype = x_in.dtype
        return stack._dequantize(codes)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None]:
        return grad.to(ctx.in_dtype), None, None


class StraightThrough(torch.autograd.Function):
    """Value ``X * 2**-l`` from the codes; the gradient goes unchanged to the unquantized expression."""

    @staticmethod
    def forward(ctx: Any, expression: Tensor, codes: Tensor, stack: BDIAStack) -> Tensor:
        return stack._dequantize(codes)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None]:
        return grad, None, None


class Inject(torch.autograd.Function):
    """Identity on ``root`` whose backward first hands ``extras[i]`` to ``targets[i]``.

    A recomputed block's local graph is rooted here, so these gradients (from the
    blocks above) reach each target's buffer before any local one: the same
    order of summation as ordinary autograd through the whole stack.
    """

    @staticmethod
    def forward(ctx: Any, root: Tensor, extras: list[Tensor | None], *targets: Tensor) -> Tensor:
        ctx.extras = extras
        return root.view_as(root)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        return (grad, None, *ctx.extras)


class ReversibleBDIA(torch.autograd.Function):
    """``BDIAStack(mode="reversible")`` in training: ``ReversibleBDIA.apply(stack, signs, x, *params)``."""

    @staticmethod
    def forward(ctx: Any, stack: BDIAStack, signs: Tensor, x: Tensor, *params: Tensor) -> Tensor:
        depth = len(stack.blocks)
        rng = RNGStates(x.device)
        ctx.autocast = autocast_state(x.device.type)
        # Looked up once per call: walking every block's parameters per step costs more than the
        # integer arithmetic of a small block.
        dtypes = [stack._block_dtype(block) for block in stack.blocks]
        table = stack._coefficient_table(signs, x.dim(), x.device)
        packed = torch.empty((depth - 1, (x.numel() + 7) // 8), dtype=torch.uint8, device=x.device)
        verify = stack.verify_reconstruction
        checks = torch.empty((depth - 1 if verify else 0,), dtype=torch.int64, device=x.device)

        def before_block(index: int) -> None:
            if stack.preserve_rng_state:
                rng.capture()

        def keep(index: int, X_prev: Tensor, X_cur: Tensor, step: Step) -> None:
            if step.packed is not None:  # blocks 1 .. K-1
                packed[index - 1] = step.packed
                if step.checksum is not None:
                    checks[index - 1] = step.checksum

        x_top, X_top, X_below = stack._run_blocks(
            x, table, dtypes=dtypes, before_block=before_block, after_step=keep, keep=True
        )
        ctx.stack = stack
        ctx.rng = rng
        ctx.shape = X_top.shape
        ctx.in_dtype = x.dtype
        ctx.dtypes = dtypes
        ctx.block_params = [[p for p in block.parameters() if p.requires_grad] for block in stack.blocks]
        ctx.save_for_backward(X_top, X_below, packed, signs, checks, *rng.states)
        return x_top

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        if torch.is_grad_enabled():
            # Autograd runs a backward with grad enabled exactly when create_graph=True.  The
            # gradients below come from per-block recomputations whose graphs start at fresh
            # leaves, so a graph built from them would lack every second-order term that passes
            # through the states: refuse rather than return a silently different gradient.
            raise BDIADoubleBackwardError(
                "BDIAStack(mode='reversible') cannot differentiate its backward (create_graph=True, "
                "e.g. a gradient penalty): it reconstructs activations instead of keeping a graph, so "
                "second-order terms would be missing. Use BDIAStack(..., mode='stored') for double "
                "backward (same forward and first-order gradients, bit for bit, with activations kept)"
            )
        stack: BDIAStack = ctx.stack
        X_top, X_cur, packed, signs, checks, *rng_states = ctx.saved_tensors
        # rebuilt from the saved signs (a few tiny ops) so that everything kept is in saved_tensors
        table = stack._coefficient_table(signs, X_cur.dim(), X_cur.device)
        params = [p for p in stack.parameters() if p.requires_grad]
        slot = {id(p): i for i, p in enumerate(params)}
        param_grads: list[Tensor | None] = [None] * len(params)
        depth = len(stack.blocks)
        verify = checks.numel() > 0
        reconstructed_sums: list[Tensor] = []  # checksums of X_{K-2} .. X_0, compared once at the end
        reconstructed = [X_top, X_cur] if stack.record_reconstruction else None
        g_top: Tensor = grad_out  # dL/dx_{k+1}, complete
        g_below: Tensor | None = None  # the part of dL/dx_k that comes from above block k (gamma path)
        g_input: Tensor | None = None
        first_block_differs: Tensor | None = None
        replay = stack.preserve_rng_state
        previous_codes = stack._fused("previous", stack._previous_codes)
        x_cur = stack._dequantize(X_cur)
        with torch.random.fork_rng(devices=ctx.rng.devices(), enabled=replay), torch.autocast(**ctx.autocast):
            for index in range(depth - 1, -1, -1):
                block_params = ctx.block_params[index]
                if replay:
                    ctx.rng.restore(index, rng_states)
                with torch.enable_grad():
                    x_leaf = x_cur.requires_grad_(True)
                    h = stack._block_output(index, x_leaf, ctx.dtypes[index])
                    quantized = stack._residual_value(index, x_leaf, h, table)  # y_k, or h_0 for block 0
                    # block 0's state is x_0 + h_0(x_0); above it, the gamma path is handed on by hand
                    expression = quantized if index > 0 else x_leaf + quantized
                    targets = [x_leaf, *block_params]
                    extras = [g_below, *[param_grads[slot[id(p)]] for p in block_params]]
                    if any(extra is not None for extra in extras):
                        expression = Inject.apply(expression, extras, *targets)
                with torch.no_grad():
                    # R(.) again (the forward already checked its range), then the inverse step
                    if index > 0:
                        X_prev, x_cur, check = previous_codes(
                            quantized.detach(), X_top, packed[index - 1], table.twice_sign[index - 1], verify
                        )
                        if check is not None:
                            reconstructed_sums.append(check)
                    else:
                        code = stack._rounded_codes(quantized.detach()).to(torch.int64)
                        first_block_differs = (X_top - X_cur != code).any()
                grads = torch.autograd.grad(expression, targets, grad_outputs=g_top, allow_unused=True)
                for p, g in zip(block_params, grads[1:], strict=True):
                    param_grads[slot[id(p)]] = g  # includes what the blocks above contributed
                if index > 0:
                    assert grads[0] is not None  # x_leaf enters y_k through (1 - gamma) x_k
                    g_top, g_below = grads[0], table.gamma[index - 1] * g_top
                    X_top, X_cur = X_cur, X_prev
                    if reconstructed is not None:
                        reconstructed.append(X_prev)
                else:
                    g_input = grads[0]
        raise_mismatch(checks, reconstructed_sums, first_block_differs)
        if reconstructed is not None:
            reconstructed.reverse()
            stack.last_reconstruction = reconstructed
        grad_x = None if g_input is None else g_input.to(ctx.in_dtype)
        return (None, None, grad_x, *param_grads)
