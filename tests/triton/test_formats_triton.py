"""Triton PAM kernels on the formats without a torch dtype (fp6, fp4): every input, both modes.

The 8-bit formats (fnuz included) are enumerated in ``test_triton_pam.py``
(``test_exhaustive_fp8_equals_oracle``); here the uint8 bit-pattern formats
(docs/spec.md D1.10), whose patterns the host sign-extends before a launch and
masks after it: elementwise ops on all 4096 / 256 pairs, broadcasting, and a
matrix product that sees every pattern.  CPU runs use Triton's interpreter.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

triton_pam = pytest.importorskip(
    "revcheck.kernels.triton_pam", reason="triton is not installed (pip install 'revcheck[triton]')"
)

from revcheck import bits, formats  # noqa: E402
from revcheck.modes import MODES  # noqa: E402
from revcheck.oracle import pam as oracle  # noqa: E402
from revcheck.testing import assert_bit_exact  # noqa: E402
from tests.test_formats_exhaustive import (  # noqa: E402
    BINARY_OPS,
    PATTERN_FORMATS,
    every_pair,
    every_pattern,
    kernels_agree_with_oracle,
)
from tests.test_formats_new import CASES, Case  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
by_pattern_format = pytest.mark.parametrize("fmt", PATTERN_FORMATS, ids=lambda f: f.name)


@pytest.fixture(autouse=True)
def _runnable(device: str) -> None:
    if device == "cpu" and not triton_pam.INTERPRETED:
        pytest.skip("Triton on the CPU needs TRITON_INTERPRET=1 set before triton is first imported")


@pytest.mark.parametrize("mode", MODES)
@by_pattern_format
def test_triton_kernels_equal_the_oracle_on_every_input(
    fmt: formats.FloatFormat, mode: str, device: str
) -> None:
    kernels_agree_with_oracle(triton_pam, fmt, mode, every_pair(fmt), every_pattern(fmt), device)


@pytest.mark.parametrize("op", BINARY_OPS)
@by_pattern_format
def test_triton_pattern_tensors_broadcast(op: str, fmt: formats.FloatFormat, device: str) -> None:
    column, row = every_pattern(fmt).reshape(-1, 1), every_pattern(fmt)[::5]
    actual = getattr(triton_pam, op)(
        bits.to_torch(column, fmt, device), bits.to_torch(row, fmt, device), fmt=fmt
    )
    assert actual.dtype == torch.uint8 and tuple(actual.shape) == (column.size, row.size)
    assert_bit_exact(actual, getattr(oracle, op)(column, row, fmt), fmt=fmt, nan="bits")


@pytest.mark.parametrize("mode", MODES)
@by_pattern_format
def test_triton_matmul_of_every_pattern(fmt: formats.FloatFormat, mode: str, device: str) -> None:
    rng = np.random.default_rng(6)
    patterns = every_pattern(fmt)
    A = np.stack([patterns, rng.permutation(patterns)])
    B = np.stack([rng.permutation(patterns) for _ in range(2)], axis=1)
    actual = triton_pam.pam_matmul(
        bits.to_torch(A, fmt, device), bits.to_torch(B, fmt, device), mode=mode, fmt=fmt
    )
    expected = oracle.pam_matmul(A, B, fmt, mode=mode)
    assert_bit_exact(actual, expected, fmt=formats.accumulator_format(fmt), nan="bits")


def test_triton_rejects_patterns_with_padding_bits(device: str) -> None:
    bad = torch.tensor([0x10], dtype=torch.uint8, device=device)  # bit 4 of a 4-bit pattern
    with pytest.raises(ValueError, match=r"a bit above bit 3 set.*docs/spec.md D1.9"):
        triton_pam.pam_mul(bad, bad, fmt="fp4_e2m1fn")
    with pytest.raises(TypeError, match=r"pass fmt=\.\.\."):
        triton_pam.pam_mul(bad, bad)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_triton_decision(case: Case, device: str) -> None:
    """Each special-case decision of tests/test_formats_new.py (D2.15 to D2.18), on the Triton kernels."""
    fmt = formats.get(case.fmt)
    tensors = [bits.to_torch(np.array([x], dtype=fmt.uint_dtype), fmt, device) for x in case.inputs]
    got = int(bits.to_bits(getattr(triton_pam, case.op)(*tensors, mode=case.mode, fmt=fmt), fmt)[0])
    assert got == case.expected, f"{case}: triton gave {bits.describe(got, fmt)}"
