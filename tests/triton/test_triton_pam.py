"""Triton PAM kernels: exhaustive fp8 agreement with the oracle, fixed cases, errors.

The checks shared with the property suite (every fp8 input, the matmul's fixed
cases) are the suite's own (properties/pam_suite.py); the planted Triton bugs
they catch are in tests/gallery/pam_triton_mutants.py (run by tests/test_gallery.py).

On the CPU the kernels run in Triton's interpreter, which triton picks when a
kernel is defined: this module sets ``TRITON_INTERPRET=1`` (when CUDA is absent)
before anything imports :mod:`revcheck.kernels.triton_pam`.  Without triton the
whole module is skipped with the reason.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

triton_pam = pytest.importorskip(
    "revcheck.kernels.triton_pam", reason="triton is not installed (pip install 'revcheck[triton]')"
)


from properties import pam_suite  # noqa: E402
from revcheck import bits, formats  # noqa: E402
from revcheck.oracle import pam as oracle  # noqa: E402
from revcheck.testing import assert_bit_exact  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")

ROOT = Path(__file__).resolve().parents[2]
TRITON = pam_suite.TRITON


@pytest.fixture(autouse=True)
def _runnable(device: str) -> None:
    if device == "cpu" and not triton_pam.INTERPRETED:
        pytest.skip("Triton on the CPU needs TRITON_INTERPRET=1 set before triton is first imported")


def _fp32(values: list[list[float]], device: str) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32, device=device)


# ---- the real kernels ------------------------------------------------------------------------------


@pytest.mark.parametrize("op", pam_suite.BINARY_OPS + pam_suite.UNARY_OPS)
def test_exhaustive_fp8_equals_oracle(op: str, device: str) -> None:
    """Every input of every 8-bit format (all 65 536 pairs for a binary op), both modes, NaN bits too."""
    pam_suite.check_exhaustive_fp8(TRITON, op=op, device=device)


@pytest.mark.parametrize("fmt_name", formats.names())
def test_pam_mul_worst_case_and_identity(fmt_name: str, device: str) -> None:
    """1.5 ⊡ 1.5 = 2 (the -1/9 worst case) and x ⊡ 1 = x, in every format."""
    fmt = formats.get(fmt_name)
    one_and_half = fmt.one | 1 << (fmt.mantissa_bits - 1)
    two = fmt.one + (1 << fmt.mantissa_bits)
    a = bits.to_torch(
        np.array([one_and_half, one_and_half | fmt.sign_mask], dtype=fmt.uint_dtype), fmt, device
    )
    b = bits.to_torch(np.array([one_and_half, fmt.one], dtype=fmt.uint_dtype), fmt, device)
    expected = np.array([two, one_and_half | fmt.sign_mask], dtype=fmt.uint_dtype)
    # fmt=: fp6 and fp4 operands are uint8 bit patterns (docs/spec.md D1.10).
    assert_bit_exact(triton_pam.pam_mul(a, b, fmt=fmt), expected, fmt=fmt, msg="[1.5 ⊡ 1.5, -1.5 ⊡ 1]")


def test_saturating_format_divides_by_zero_to_max(device: str) -> None:
    fmt = formats.get("fp8_e4m3fn")
    a = bits.to_torch([fmt.one, fmt.one | fmt.sign_mask, 0], fmt, device)
    b = bits.to_torch([0, 0, 0], fmt, device)
    expected = [fmt.max_finite, fmt.max_finite | fmt.sign_mask, fmt.canonical_nan]
    assert_bit_exact(
        triton_pam.pam_div(a, b), expected, fmt=fmt, nan="bits", msg="[1/0, -1/0, 0/0] in e4m3fn"
    )


def test_matmul_sums_in_sequential_order(device: str) -> None:
    pam_suite.check_matmul_sums_in_order(TRITON, device=device)


def test_matmul_ftz_flushes_partial_sums(device: str) -> None:
    pam_suite.check_matmul_ftz_flushes_partial_sums(TRITON, device=device)


def test_matmul_canonicalizes_nan_from_inf_minus_inf(device: str) -> None:
    A = _fp32([[float("inf"), float("-inf")]], device)
    B = torch.ones(2, 1, device=device)
    result = bits.to_bits(triton_pam.pam_matmul(A, B))
    assert int(result[0, 0]) == formats.get("fp32").canonical_nan, f"inf - inf gave {result[0, 0]:#x}"


@pytest.mark.parametrize("fmt_name", ["fp64", "bf16", "fp8_e5m2"])
def test_matmul_batched_noncontiguous_equals_oracle(fmt_name: str, device: str) -> None:
    fmt = formats.get(fmt_name)
    rng = np.random.default_rng(7)
    A_bits = rng.integers(0, 1 << min(fmt.width, 63), (2, 3, 4), dtype=np.uint64).astype(fmt.uint_dtype)
    Bt_bits = rng.integers(0, 1 << min(fmt.width, 63), (5, 4), dtype=np.uint64).astype(fmt.uint_dtype)
    B = bits.to_torch(Bt_bits, fmt, device).T  # (4, 5), not contiguous
    actual = triton_pam.pam_matmul(bits.to_torch(A_bits, fmt, device), B)
    expected = oracle.pam_matmul(A_bits, Bt_bits.T, fmt)
    assert actual.dtype == bits.torch_dtype(oracle.accumulator_format(fmt))
    assert_bit_exact(actual, expected, fmt=oracle.accumulator_format(fmt), nan="bits")


def test_matmul_with_empty_k_is_positive_zero(device: str) -> None:
    C = triton_pam.pam_matmul(torch.ones(2, 0, device=device), torch.ones(0, 3, device=device))
    assert_bit_exact(C, torch.zeros(2, 3, device=device))


def test_bad_arguments_say_what_to_use(device: str) -> None:
    x = torch.ones(3, device=device)
    with pytest.raises(ValueError, match="use one of 'ieee', 'ftz'"):
        triton_pam.pam_mul(x, x, mode="nearest")
    with pytest.raises(TypeError, match="convert them to one dtype"):
        triton_pam.pam_div(x, x.double())
    with pytest.raises(ValueError, match="inner dimensions differ"):
        triton_pam.pam_matmul(torch.ones(2, 3, device=device), torch.ones(2, 3, device=device))
    with pytest.raises(ValueError, match="unsqueeze"):
        triton_pam.pam_matmul(x, x)


def _run_python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, **env},
        timeout=300,
    )


@pytest.mark.skipif(torch.cuda.is_available(), reason="with CUDA, CPU tensors are simply not used")
def test_cpu_tensor_without_interpreter_is_a_clear_error() -> None:
    code = "import torch, revcheck.kernels.triton_pam as t; t.pam_mul(torch.ones(2), torch.ones(2))"
    result = _run_python(code, TRITON_INTERPRET="0")
    assert result.returncode != 0
    assert "set TRITON_INTERPRET=1" in result.stderr, result.stderr[-2000:]
