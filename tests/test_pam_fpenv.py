"""The host's flush-to-zero flag and the PAM kernels (docs/spec.md D2.14, N2.7): fixed cases, both states.

The flag is set with ``torch.set_flush_denormal`` and always restored (``flush_denormal``
of ``properties/test_pam_fpenv.py``, which also holds the randomized properties).
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from properties.test_pam_fpenv import FLAG_SUPPORTED, flush_denormal, needs_flag, thread_flushes_subnormals
from revcheck import bits, formats
from revcheck.errors import UsageError
from revcheck.kernels import pam as kernels
from revcheck.nn.pam import PAMMatmul
from revcheck.testing import assert_bit_exact

# docs/spec.md N2.7: the exact partial sum −2**−127 is subnormal in fp32.
A = torch.tensor([[2.0**-126, -1.5 * 2.0**-126]])
B = torch.tensor([[1.0], [1.0]])
MINUS_TWO_TO_MINUS_127 = 0x80400000


def fp32_bits(x: torch.Tensor) -> int:
    return int(x.reshape(-1)[0].view(torch.int32)) & 0xFFFFFFFF


def test_flush_denormal_restores_the_previous_state() -> None:
    assert not thread_flushes_subnormals()
    if FLAG_SUPPORTED:
        with flush_denormal(True):
            assert thread_flushes_subnormals()
            with flush_denormal(False):
                assert not thread_flushes_subnormals()
            assert thread_flushes_subnormals()
    assert not thread_flushes_subnormals()


@pytest.mark.parametrize("flag", [False, pytest.param(True, marks=needs_flag)])
@pytest.mark.parametrize("order", ["sequential", "pairwise"])
def test_ieee_matmul_keeps_the_subnormal_partial_sum_under_either_flag(flag: bool, order: str) -> None:
    # Before D2.14 the flag on gave −0 (0x80000000) here.
    with flush_denormal(flag):
        result = kernels.pam_matmul(A, B, order=order)
        ftz = kernels.pam_matmul(A, B, order=order, mode="ftz")
    assert fp32_bits(result) == MINUS_TWO_TO_MINUS_127
    # mode "ftz" flushes it, flag or not (docs/spec.md F2.9); pairwise then adds the −0 to +0 (D2.8)
    assert fp32_bits(ftz) == (0x80000000 if order == "sequential" else 0)


@needs_flag
@pytest.mark.parametrize("op", ["pam_mul", "pam_div", "pam_mul_grad"])
def test_elementwise_ops_ignore_the_flag(op: str) -> None:
    fmt = formats.get("fp32")
    a = bits.to_torch(np.array([0x00000001, 0x00400000, 0x80123456, 0x00800000, 0x3F800000], np.uint32), fmt)
    b = bits.to_torch(np.array([0x3F800000, 0x3FC00000, 0x40000000, 0x3F000000, 0x00000003], np.uint32), fmt)
    without = getattr(kernels, op)(a, b)
    with flush_denormal(True):
        with_flag = getattr(kernels, op)(a, b)
    assert_bit_exact(with_flag, without)


@needs_flag
@pytest.mark.parametrize("backward", ["approx", "exact"])
def test_pam_matmul_backward_ignores_the_flag(backward: str) -> None:
    a = (torch.tensor([[2.0**-100, -1.5 * 2.0**-100], [1.0, 2.0**-60]])).requires_grad_(True)
    b = torch.tensor([[2.0**-26, 1.0], [2.0**-26, -0.75]]).requires_grad_(True)
    g = torch.tensor([[1.0, 2.0**-40], [-1.0, 3.0]])
    results = []
    for flag in (False, True):
        a.grad = b.grad = None
        with flush_denormal(flag):
            PAMMatmul.apply(a, b, "ieee", backward).backward(g)
        results.append((a.grad, b.grad))
    for got, want in zip(results[1], results[0], strict=True):
        assert_bit_exact(got, want)


@needs_flag
def test_triton_interpreter_refuses_an_ieee_matmul_while_the_thread_flushes() -> None:
    if torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("the interpreter guard is checked with TRITON_INTERPRET=1 on the CPU")
    triton_pam = pytest.importorskip("revcheck.kernels.triton_pam")
    assert fp32_bits(triton_pam.pam_matmul(A, B)) == MINUS_TWO_TO_MINUS_127
    with flush_denormal(True):
        with pytest.raises(UsageError, match=r"set_flush_denormal\(False\)"):
            triton_pam.pam_matmul(A, B)
        assert fp32_bits(triton_pam.pam_matmul(A, B, mode="ftz")) == 0x80000000
