"""Triton PAM kernels: exhaustive fp8 agreement with the oracle, fixed cases, errors, planted bugs.

On the CPU the kernels run in Triton's interpreter, which triton picks when a
kernel is defined: this module sets ``TRITON_INTERPRET=1`` (when CUDA is absent)
before anything imports :mod:`revcheck.kernels.triton_pam`.  Without triton the
whole module is skipped with the reason.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

triton_pam = pytest.importorskip(
    "revcheck.kernels.triton_pam", reason="triton is not installed (pip install 'revcheck[triton]')"
)


from revcheck import bits, formats  # noqa: E402
from revcheck.oracle import pam as oracle  # noqa: E402
from revcheck.testing import BitMismatchError, assert_bit_exact  # noqa: E402
from tests.mutation import gallery_module, property_module  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")

ROOT = Path(__file__).resolve().parents[2]
FP8 = [f.name for f in formats.FORMATS.values() if f.width == 8]
MODES = ("ieee", "ftz")
BINARY_OPS = ("pam_mul", "pam_div", "pam_mul_grad")
UNARY_OPS = ("pa_log2", "pa_exp2")


mutants = gallery_module("pam_triton_mutants")


@pytest.fixture(autouse=True)
def _runnable(device: str) -> None:
    if device == "cpu" and not triton_pam.INTERPRETED:
        pytest.skip("Triton on the CPU needs TRITON_INTERPRET=1 set before triton is first imported")


# ---- checks (used on the real kernels and on the mutants) ---------------------------------------


def check_exhaustive_fp8(impl: Callable[..., Any], op: str, fmt_name: str, mode: str, device: str) -> None:
    """impl(op) on every fp8 input (all 65 536 pairs for a binary op) equals the oracle, NaN bits too."""
    fmt = formats.get(fmt_name)
    everything = np.arange(256, dtype=np.uint8)
    operands = [np.repeat(everything, 256), np.tile(everything, 256)] if op in BINARY_OPS else [everything]
    actual = impl(*(bits.to_torch(x, fmt, device) for x in operands), mode=mode)
    expected = getattr(oracle, op)(*operands, fmt, mode=mode)
    assert_bit_exact(actual, expected, fmt=fmt, nan="bits", msg=f"{op} on all {fmt_name} inputs, mode={mode}")


def _fp32(values: list[list[float]], device: str) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32, device=device)


def check_matmul_order(impl: Callable[..., Any], device: str) -> None:
    """Products 2^24, 1, 1, -2^24 (each x ⊡ 1 = x) sum to 0 only in the sequential order."""
    A = _fp32([[2.0**24, 1.0, 1.0, -(2.0**24)]], device)
    B = torch.ones(4, 1, device=device)
    expected = oracle.pam_matmul(bits.to_bits(A), bits.to_bits(B), "fp32")
    assert_bit_exact(
        expected,
        np.array([[0.0]], dtype=np.float32).view(np.uint32),
        fmt="fp32",
        msg="oracle's sequential sum",
    )
    assert_bit_exact(impl(A, B), expected, fmt="fp32", msg="((0 + 2^24) + 1 + 1) - 2^24 in order")


def check_matmul_ftz_partial_sum(impl: Callable[..., Any], device: str) -> None:
    """1.5·2^-126 - 2^-126 is subnormal: kept in "ieee", flushed to +0 in "ftz"."""
    tiny = 2.0**-126
    A = _fp32([[1.5 * tiny, -tiny]], device)
    B = torch.ones(2, 1, device=device)
    for mode, value in (("ieee", 0.5 * tiny), ("ftz", 0.0)):
        expected = np.array([[value]], dtype=np.float32)
        assert_bit_exact(
            oracle.pam_matmul(bits.to_bits(A), bits.to_bits(B), "fp32", mode=mode).view(np.float32),
            expected,
            msg=f"oracle, mode={mode}",
        )
        assert_bit_exact(impl(A, B, mode=mode), expected, msg=f"partial sum, mode={mode}")


# ---- the real kernels ------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("fmt_name", FP8)
@pytest.mark.parametrize("op", BINARY_OPS + UNARY_OPS)
def test_exhaustive_fp8_equals_oracle(op: str, fmt_name: str, mode: str, device: str) -> None:
    check_exhaustive_fp8(getattr(triton_pam, op), op, fmt_name, mode, device)


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
    check_matmul_order(triton_pam.pam_matmul, device)


def test_matmul_ftz_flushes_partial_sums(device: str) -> None:
    check_matmul_ftz_partial_sum(triton_pam.pam_matmul, device)


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


# ---- the checks catch the planted bugs ---------------------------------------------------------------


PROPERTY_CASES = [
    pytest.param(mutant, test_name, kwargs, id=f"{mutant.name} / {test_name}")
    for mutant in mutants.MUTANTS
    for test_name, kwargs in mutant.caught_by
]


@pytest.mark.parametrize(("mutant", "test_name", "kwargs"), PROPERTY_CASES)
def test_property_catches_mutant(
    mutant: Any,
    test_name: str,
    kwargs: dict[str, object],
    device: str,
    monkeypatch: pytest.MonkeyPatch,
    hunting_profile: None,
) -> None:
    monkeypatch.setattr(triton_pam, mutant.attribute, mutant.replacement)
    module = property_module(mutants.PROPERTIES)
    with pytest.raises(AssertionError):
        getattr(module, test_name)(device=device, **kwargs)


ELEMENTWISE_MUTANTS = [m for m in mutants.MUTANTS if m.attribute != "pam_matmul"]


@pytest.mark.parametrize("mutant", ELEMENTWISE_MUTANTS, ids=lambda m: m.name)
def test_exhaustive_fp8_check_catches_mutant(mutant: Any, device: str) -> None:
    caught = any(
        _fails(
            functools.partial(
                check_exhaustive_fp8, mutant.replacement, mutant.attribute, fmt_name, mode, device
            )
        )
        for fmt_name in FP8
        for mode in MODES
    )
    assert caught, f"{mutant.name} passed the exhaustive fp8 check in every format and mode"


@pytest.mark.parametrize(
    ("mutant_name", "check"),
    [
        ("reversed_k_matmul", check_matmul_order),
        ("two_accumulator_matmul", check_matmul_order),
        ("matmul_ignores_ftz", check_matmul_ftz_partial_sum),
    ],
)
def test_matmul_checks_catch_mutant(mutant_name: str, check: Callable[..., None], device: str) -> None:
    with pytest.raises(BitMismatchError):
        check(getattr(mutants, mutant_name), device)


def _fails(check: Callable[[], None]) -> bool:
    try:
        check()
    except BitMismatchError:
        return True
    return False
