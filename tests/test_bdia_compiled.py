"""``BDIAStack(compiled=True)``: the torch.compile-fused code update gives the eager bits, or falls back.

Level K on this CPU (inductor's C++ kernels against torch's eager kernels).  Compiling
takes seconds per graph, so the default run compiles one small fp32 stack; the slow
run covers fp64, codes near 2**62, dropout and autocast.
"""

from __future__ import annotations

import copy
import warnings
from typing import Any

import pytest
import torch
from torch import nn

from revcheck.nn.bdia import BDIAStack
from revcheck.testing import assert_bit_exact


def blocks(
    width: int, depth: int, *, dropout: float = 0.0, dtype: torch.dtype = torch.float32
) -> list[nn.Module]:
    torch.manual_seed(0)
    return [
        nn.Sequential(
            nn.Linear(width, 2 * width), nn.GELU(), nn.Dropout(dropout), nn.Linear(2 * width, width)
        ).to(dtype)
        for _ in range(depth)
    ]


def run(stack: BDIAStack, x: torch.Tensor, **kwargs: Any) -> list[torch.Tensor]:
    stack.record_reconstruction = True
    inputs = x.clone().requires_grad_(True)
    torch.manual_seed(5)
    out = stack(inputs, **kwargs)
    out.square().sum().backward()
    assert stack.last_reconstruction is not None
    return [out.detach(), inputs.grad, *[p.grad for p in stack.parameters()], *stack.last_reconstruction]  # type: ignore[list-item]


def assert_same(compiled: list[torch.Tensor], eager: list[torch.Tensor]) -> None:
    assert len(compiled) == len(eager)
    for index, (a, b) in enumerate(zip(compiled, eager, strict=True)):
        if a.is_floating_point():
            assert_bit_exact(a, b, msg=f"entry {index}: compiled vs eager")
        else:
            assert torch.equal(a, b), f"entry {index} (codes): compiled vs eager"


def test_compiled_code_update_gives_the_eager_bits() -> None:
    x = torch.randn(3, 8) * 4
    chosen = blocks(8, 4)
    eager = run(BDIAStack(copy.deepcopy(chosen), seed=1), x)
    compiled_stack = BDIAStack(copy.deepcopy(chosen), seed=1, compiled=True)
    assert_same(run(compiled_stack, x), eager)
    assert not compiled_stack._compile_failed, (
        "torch.compile fell back to eager: nothing compiled was checked"
    )


def test_compile_failure_falls_back_to_eager_with_a_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    def failing_compile(function: Any, **kwargs: Any) -> Any:
        def compiled(*args: Any, **kwargs: Any) -> Any:
            raise torch._dynamo.exc.Unsupported("no compiler here")  # type: ignore[call-arg]

        return compiled

    monkeypatch.setattr(torch, "compile", failing_compile)
    x = torch.randn(2, 4)
    chosen = blocks(4, 3)
    eager = run(BDIAStack(copy.deepcopy(chosen), seed=2), x)
    stack = BDIAStack(copy.deepcopy(chosen), seed=2, compiled=True)
    with pytest.warns(RuntimeWarning, match=r"torch.compile failed .*running the eager code update"):
        got = run(stack, x)
    assert stack._compile_failed
    assert_same(got, eager)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once; from now on eager without trying
        run(stack, x)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_compiled_equals_eager_with_huge_codes_dropout_and_autocast(dtype: torch.dtype) -> None:
    # |x| ~ 2**40 at l = 9: codes ~ 2**49 (and 2**52 for fp64 with l = 12), ties after the first rounding.
    scale = 2.0**40
    x = (torch.randn(4, 16, dtype=torch.float64) * scale).round().to(dtype) + 0.5
    for grid, dropout in ((9, 0.3), (12, 0.0)):
        chosen = blocks(16, 5, dropout=dropout, dtype=dtype)
        for autocast in (False, True):
            torch._dynamo.reset()  # every configuration compiles afresh (Dynamo allows 8 per function)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                eager = run(BDIAStack(copy.deepcopy(chosen), l=grid, seed=3, compute_dtype=dtype), x)
                stack = BDIAStack(copy.deepcopy(chosen), l=grid, seed=3, compute_dtype=dtype, compiled=True)
                assert_same(run(stack, x), eager)
            assert not stack._compile_failed
