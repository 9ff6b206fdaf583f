"""Properties of revcheck.nn.bdia.BDIAStack: bit-exact against the NumPy oracle, reversible == stored.

Each ``check_*`` body takes the stack class under test; tests/test_gallery.py
runs the same bodies against the planted bugs of tests/gallery/bdia_bugs.py.  Codes
that differ raise :class:`~properties.test_bdia_oracle.CodeMismatchError`, floats
:class:`~revcheck.testing.BitMismatchError`, RNG misuse :class:`RNGUseError`.
"""

# ruff: noqa: E741  (``l``, the grid exponent, is the name docs/spec.md §3 and the API contract use)
from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from properties.test_bdia_oracle import assert_codes_equal
from revcheck.nn.bdia import BDIAStack, Mode
from revcheck.oracle import bdia as oracle
from revcheck.testing import assert_bit_exact

_BLOCK_DTYPES = {"fp64": torch.float64, "fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
_COMPUTE_DTYPES = {"fp32": torch.float32, "fp64": torch.float64}
_NUMPY = {torch.float32: np.float32, torch.float64: np.float64}


class RNGUseError(AssertionError):
    """The stack used a random number generator it must not (the global one), or failed to restore it."""


class Scale(nn.Module):
    """Multiplies by a constant power of two (exact), so block outputs span many magnitudes."""

    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.factor


class TwoUseBlock(nn.Module):
    """``mlp(x) + tanh(x) * scale``: uses its input twice, so gradient summation order matters."""

    def __init__(self, mlp: nn.Module, scale: float) -> None:
        super().__init__()
        self.mlp = mlp
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x) + torch.tanh(x) * self.scale


def mlp_block(width: int, hidden: int, dropout: float, scale: float, *, two_uses: bool = False) -> nn.Module:
    """A tiny MLP block; with ``two_uses`` it also reads its input a second time."""
    mlp = nn.Sequential(
        nn.Linear(width, hidden), nn.Tanh(), nn.Dropout(dropout), nn.Linear(hidden, width), Scale(scale)
    )
    return TwoUseBlock(mlp, scale) if two_uses else mlp


@dataclass
class Case:
    """One drawn configuration: blocks (not yet in a stack), input, gammas and seeds."""

    blocks: list[nn.Module]
    l: int
    compute_dtype: torch.dtype
    x: torch.Tensor
    gamma_signs: torch.Tensor
    loss_weights: torch.Tensor
    rng_seed: int

    def stack(self, stack_class: type[BDIAStack], mode: Mode = "reversible", **kwargs: Any) -> BDIAStack:
        return stack_class(
            copy.deepcopy(self.blocks),
            l=self.l,
            mode=mode,
            compute_dtype=self.compute_dtype,
            seed=0,
            **kwargs,
        )


def input_values(data: st.DataObject, count: int, l: int, max_magnitude: float) -> list[float]:
    """Inputs on the grid, exactly on ties (round-half-even matters), and in between; many magnitudes."""
    max_bits = max(0, min(26, int(np.log2(max_magnitude)) + l))
    bits = data.draw(st.integers(0, max_bits), label="input code bit length")
    codes = data.draw(
        st.lists(st.integers(-(2**bits), 2**bits), min_size=count, max_size=count), label="input codes"
    )
    fractions = data.draw(
        st.lists(st.sampled_from([0.0, 0.5, -0.5, 0.25, 0.7109375]), min_size=count, max_size=count),
        label="input fractions of a grid step",
    )
    return [(c + f) * 2.0**-l for c, f in zip(codes, fractions, strict=True)]


def draw_case(
    data: st.DataObject,
    device: str,
    *,
    dropout: bool | None = None,
    block_dtypes: Sequence[str] | None = None,
    max_depth: int = 64,
) -> Case:
    block_name = data.draw(st.sampled_from(sorted(block_dtypes or _BLOCK_DTYPES)), label="block dtype")
    # Mostly shallow; about one example in eight goes deep.  bf16/fp16 matmuls are slow on CPUs
    # without native support, so low-precision blocks stay at depth <= 8.
    deepest = max_depth if block_name in ("fp32", "fp64") else min(max_depth, 8)
    depth = data.draw(st.one_of(*[st.integers(1, 6)] * 7, st.integers(1, deepest)), label="depth")
    batch = data.draw(st.integers(1, 3), label="batch")
    width = data.draw(st.integers(1, 5), label="width")
    hidden = data.draw(st.integers(1, 6), label="hidden width")
    l = data.draw(st.integers(0, 16), label="l")
    compute_name = data.draw(st.sampled_from(sorted(_COMPUTE_DTYPES)), label="compute dtype")
    if dropout is None:
        p = data.draw(st.sampled_from([0.0, 0.25, 0.5]), label="dropout")
    else:
        p = data.draw(st.sampled_from([0.25, 0.5]), label="dropout") if dropout else 0.0
    # fp16 blocks overflow at 65504: keep their inputs and outputs far below.  Otherwise include outputs
    # near 2**(23 - l), where one fp32 ulp of y_k is about one grid step (rounding mistakes show in codes).
    exponents = [-6, -2, 0, 3] if block_name == "fp16" else [-6, -2, 0, 3, 8, 14, 20, *range(20 - l, 26 - l)]
    scale = data.draw(st.sampled_from([2.0**e for e in exponents]), label="block output scale")
    seed = data.draw(st.integers(0, 2**31 - 1), label="weights seed")
    pattern = data.draw(st.sampled_from(["plus", "minus", "alternate", "random"]), label="gamma pattern")
    two_uses = data.draw(st.booleans(), label="blocks read their input twice")
    compute_dtype = _COMPUTE_DTYPES[compute_name]
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        blocks = [
            mlp_block(width, hidden, p, scale, two_uses=two_uses).to(
                device=device, dtype=_BLOCK_DTYPES[block_name]
            )
            for _ in range(depth)
        ]
    if depth >= 3 and data.draw(st.booleans(), label="the last block repeats the first (shared parameters)"):
        blocks[-1] = blocks[0]
    x = (
        torch.tensor(
            input_values(data, batch * width, l, 2.0**6 if block_name == "fp16" else 2.0**40),
            dtype=compute_dtype,
        )
        .reshape(batch, width)
        .to(device)
    )
    count = depth - 1
    if pattern == "plus":
        signs = torch.ones((count, batch), dtype=torch.int8)
    elif pattern == "minus":
        signs = -torch.ones((count, batch), dtype=torch.int8)
    elif pattern == "alternate":
        signs = (1 - 2 * ((torch.arange(count)[:, None] + torch.arange(batch)[None, :]) % 2)).to(torch.int8)
    else:
        signs = (torch.randint(0, 2, (count, batch), generator=generator) * 2 - 1).to(torch.int8)
    weights = torch.randn((batch, width), generator=generator, dtype=compute_dtype).to(device)
    return Case(blocks, l, compute_dtype, x, signs, weights, seed)


def _rng_devices(device: str) -> list[int]:
    return [torch.cuda.current_device()] if device == "cuda" else []


def run_training_step(stack: BDIAStack, case: Case, device: str, **kwargs: Any) -> tuple[torch.Tensor, ...]:
    """Forward + backward under a fixed global seed; returns (output, input grad, *parameter grads)."""
    x = case.x.clone().requires_grad_(True)
    with torch.random.fork_rng(devices=_rng_devices(device)):
        torch.manual_seed(case.rng_seed)
        out = stack(x, gamma_signs=case.gamma_signs, **kwargs)
        (out * case.loss_weights).sum().backward()
    return (out.detach(), x.grad, *[p.grad for p in stack.parameters()])


def assert_all_bit_exact(got: Sequence[Any], want: Sequence[Any], names: Sequence[str]) -> None:
    for name, a, b in zip(names, got, want, strict=True):
        if a is None or b is None:
            assert a is None and b is None, f"{name}: one side has no gradient ({a is None}, {b is None})"
            continue
        assert_bit_exact(a, b, msg=name)


def grad_names(stack: BDIAStack) -> list[str]:
    return ["output", "input grad", *[f"grad of {n}" for n, _ in stack.named_parameters()]]


# ----------------------------------------------------------------------------- property bodies


def check_forward_and_reconstruction_match_oracle(
    data: st.DataObject, device: str, stack_class: type[BDIAStack] = BDIAStack
) -> None:
    case = draw_case(data, device)
    stack = case.stack(stack_class)
    stack.record_reconstruction = True
    with torch.random.fork_rng(devices=_rng_devices(device)):
        torch.manual_seed(case.rng_seed)
        trace = stack.trace(case.x, gamma_signs=case.gamma_signs)
    out, *_ = run_training_step(stack, case, device)
    dtype = _NUMPY[case.compute_dtype]
    X0 = oracle.quantize(case.x.cpu().numpy(), case.l)
    outputs = [h.cpu().numpy() for h in trace.block_outputs]
    gammas = case.gamma_signs.numpy() * 0.5
    expected = oracle.forward(X0, outputs, gammas, case.l, compute_dtype=dtype)
    for k, (got, want) in enumerate(zip(trace.codes, expected.codes, strict=True)):
        assert_codes_equal(got.cpu().numpy(), want, f"X_{k}: torch vs oracle")
    for k, (got, want) in enumerate(zip(trace.side_bits, expected.side_bits, strict=True)):
        assert_codes_equal(got.cpu().numpy(), want, f"s_{k}: torch vs oracle")
    assert_bit_exact(
        out.cpu().numpy(), oracle.dequantize(expected.codes[-1], case.l, dtype), msg="output x_K"
    )
    rebuilt = oracle.inverse(
        expected.codes[-1],
        expected.codes[-2],
        outputs,
        gammas,
        expected.side_bits,
        case.l,
        compute_dtype=dtype,
    )
    assert stack.last_reconstruction is not None, "backward did not record its reconstruction"
    for k, (torch_codes, oracle_codes, want) in enumerate(
        zip(stack.last_reconstruction, rebuilt, expected.codes, strict=True)
    ):
        assert_codes_equal(oracle_codes, want, f"oracle inverse: X_{k} vs forward")
        assert_codes_equal(
            torch_codes.cpu().numpy(), want, f"reversible backward reconstructed X_{k} vs forward"
        )


def check_reversible_gradients_equal_stored(
    data: st.DataObject, device: str, stack_class: type[BDIAStack] = BDIAStack
) -> None:
    case = draw_case(data, device, dropout=data.draw(st.booleans(), label="with dropout") or None)
    reversible = case.stack(stack_class, "reversible")
    stored = case.stack(stack_class, "stored")
    assert_all_bit_exact(
        run_training_step(reversible, case, device),
        run_training_step(stored, case, device),
        grad_names(stored),
    )


class _StraightThrough(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, value: torch.Tensor, expression: torch.Tensor) -> torch.Tensor:
        ctx.dtype = expression.dtype
        return value.clone()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[None, torch.Tensor]:
        return None, grad.to(ctx.dtype)


def plain_loop(blocks: Sequence[nn.Module], x: torch.Tensor, case: Case) -> torch.Tensor:
    """The same quantized forward written as an ordinary loop; ordinary autograd, straight-through at R."""
    dtype, l = case.compute_dtype, case.l

    def R(v: torch.Tensor) -> torch.Tensor:
        return torch.round(v.detach() * 2.0**l).to(torch.int64)

    def value(codes: torch.Tensor) -> torch.Tensor:
        return codes.to(dtype) * 2.0**-l

    def h(k: int, state: torch.Tensor) -> torch.Tensor:
        block_dtype = next(iter(blocks[k].parameters())).dtype
        return blocks[k](state.to(block_dtype)).to(dtype)

    X_prev = R(x.to(torch.float64 if x.dtype == torch.float64 else torch.float32))
    x_prev = _StraightThrough.apply(value(X_prev), x)
    h0 = h(0, x_prev)
    X_cur = X_prev + R(h0)
    x_cur = _StraightThrough.apply(value(X_cur), x_prev + h0)
    for k in range(1, len(blocks)):
        gamma = (
            case.gamma_signs[k - 1].to(device=x.device, dtype=dtype).reshape(-1, *([1] * (x.dim() - 1))) * 0.5
        )
        hk = h(k, x_cur)
        y = (1 - gamma) * x_cur + (1 + gamma) * hk
        half = (X_prev + (X_prev & 1)) // 2
        X_next = torch.where(gamma > 0, half, -half) + R(y)
        x_next = _StraightThrough.apply(value(X_next), gamma * x_prev + y)
        X_prev, X_cur, x_prev, x_cur = X_cur, X_next, x_cur, x_next
    return x_cur


def check_gradients_equal_plain_autograd_loop(
    data: st.DataObject, device: str, stack_class: type[BDIAStack] = BDIAStack
) -> None:
    case = draw_case(data, device)
    stack = case.stack(stack_class)
    got = run_training_step(stack, case, device)
    blocks = copy.deepcopy(case.blocks)
    x = case.x.clone().requires_grad_(True)
    with torch.random.fork_rng(devices=_rng_devices(device)):
        torch.manual_seed(case.rng_seed)
        out = plain_loop(blocks, x, case)
        (out * case.loss_weights).sum().backward()
    want = (out.detach(), x.grad, *[p.grad for p in nn.ModuleList(blocks).parameters()])
    assert_all_bit_exact(got, want, grad_names(stack))


def check_eval_without_quantizer_is_plain_stack(
    data: st.DataObject, device: str, stack_class: type[BDIAStack] = BDIAStack
) -> None:
    case = draw_case(data, device, block_dtypes=["fp32", "fp64"])
    blocks = [b.to(case.compute_dtype) for b in copy.deepcopy(case.blocks)]
    stack = stack_class(
        copy.deepcopy(blocks), l=case.l, compute_dtype=case.compute_dtype, quantize=False
    ).eval()
    expected = case.x
    for block in blocks:
        block.eval()
        expected = expected + block(expected)
    with torch.no_grad():
        got = stack(case.x)
    assert_bit_exact(got, expected.detach(), msg="eval(quantize=False) vs x + h(x) loop")


def check_eval_matches_oracle_with_zero_gamma(
    data: st.DataObject, device: str, stack_class: type[BDIAStack] = BDIAStack
) -> None:
    case = draw_case(data, device)
    stack = case.stack(stack_class).eval()
    recorded: list[torch.Tensor] = []
    unique_blocks = list({id(b): b for b in stack.blocks}.values())  # a shared block gets one hook
    hooks = [b.register_forward_hook(lambda m, i, o: recorded.append(o.detach())) for b in unique_blocks]
    with torch.no_grad():
        got = stack(case.x)
    for hook in hooks:
        hook.remove()
    dtype = _NUMPY[case.compute_dtype]
    outputs = [o.to(case.compute_dtype).cpu().numpy() for o in recorded]
    zeros = np.zeros((len(outputs) - 1, case.x.shape[0]))
    expected = oracle.forward(
        oracle.quantize(case.x.cpu().numpy(), case.l), outputs, zeros, case.l, compute_dtype=dtype
    )
    assert_bit_exact(
        got.cpu().numpy(), oracle.dequantize(expected.codes[-1], case.l, dtype), msg="eval output"
    )


def check_backward_leaves_global_rng_unchanged(
    data: st.DataObject, device: str, stack_class: type[BDIAStack] = BDIAStack
) -> None:
    case = draw_case(data, device, dropout=True, max_depth=12)
    stack = case.stack(stack_class)
    x = case.x.clone().requires_grad_(True)
    torch.manual_seed(case.rng_seed)
    out = stack(x, gamma_signs=case.gamma_signs)
    before = torch.get_rng_state()
    cuda_before = torch.cuda.get_rng_state() if device == "cuda" else None
    (out * case.loss_weights).sum().backward()
    if not torch.equal(torch.get_rng_state(), before):
        raise RNGUseError("a reversible backward changed torch.get_rng_state()")
    if cuda_before is not None and not torch.equal(torch.cuda.get_rng_state(), cuda_before):
        raise RNGUseError("a reversible backward changed the CUDA RNG")


def check_gammas_come_from_the_stack_generator(
    data: st.DataObject, device: str, stack_class: type[BDIAStack] = BDIAStack
) -> None:
    case = draw_case(data, device, dropout=False, max_depth=12)
    seed = data.draw(st.integers(0, 2**31 - 1), label="stack seed")
    drawn = []
    for global_seed in (case.rng_seed, case.rng_seed + 1):
        stack = stack_class(copy.deepcopy(case.blocks), l=case.l, compute_dtype=case.compute_dtype, seed=seed)
        torch.manual_seed(global_seed)
        before = torch.get_rng_state()
        stack(case.x.clone().requires_grad_(True))
        if not torch.equal(torch.get_rng_state(), before):
            raise RNGUseError("a forward without dropout consumed the global RNG")
        drawn.append(stack.last_gamma_signs)
    assert drawn[0] is not None and drawn[1] is not None
    if not torch.equal(drawn[0], drawn[1]):
        raise RNGUseError("the gammas depend on the global RNG, not only on the stack's seed")


# ----------------------------------------------------------------------------- the tests


@given(data=st.data())
def test_forward_and_reconstruction_match_oracle(device: str, data: st.DataObject) -> None:
    check_forward_and_reconstruction_match_oracle(data, device)


@given(data=st.data())
def test_reversible_gradients_equal_stored(device: str, data: st.DataObject) -> None:
    check_reversible_gradients_equal_stored(data, device)


@given(data=st.data())
def test_gradients_equal_plain_autograd_loop(device: str, data: st.DataObject) -> None:
    check_gradients_equal_plain_autograd_loop(data, device)


@given(data=st.data())
def test_eval_without_quantizer_is_plain_residual_stack(device: str, data: st.DataObject) -> None:
    check_eval_without_quantizer_is_plain_stack(data, device)


@given(data=st.data())
def test_eval_matches_oracle_with_zero_gamma(device: str, data: st.DataObject) -> None:
    check_eval_matches_oracle_with_zero_gamma(data, device)


@given(data=st.data())
def test_backward_leaves_global_rng_unchanged(device: str, data: st.DataObject) -> None:
    check_backward_leaves_global_rng_unchanged(data, device)


@given(data=st.data())
def test_gammas_come_from_the_stack_generator(device: str, data: st.DataObject) -> None:
    check_gammas_come_from_the_stack_generator(data, device)
