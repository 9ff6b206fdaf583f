"""Triton matmul kernels with a wrong summation order: planted bugs of tests/gallery/pam_triton_mutants.py.

They need triton, so they live here (tests/triton/) and the gallery refers to
them by name (``"tests.triton.pam_mutant_kernels:reversed_k_matmul"``), imported
only when a record that needs triton runs.  Each reuses the real kernels'
product (``_pam_mul_fields``) and launcher, so each has exactly one bug.
"""

from __future__ import annotations

import os

import pytest
import torch

# Same rule as the tests: the interpreter must be chosen before triton is first imported.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

triton = pytest.importorskip("triton", reason="triton is not installed (pip install 'revcheck[triton]')")
import triton.language as tl  # noqa: E402

from revcheck.kernels import triton_pam  # noqa: E402
from revcheck.kernels.triton_pam import _pam_mul_fields  # noqa: E402

__all__ = ["reversed_k_matmul", "two_accumulator_matmul"]


# ---- matmul with another summation order -------------------------------------------------------


@triton.jit
def _reversed_k_matmul_kernel(
    a_ptr,
    b_ptr,
    c_ptr,
    M,
    N,
    K,
    stride_ab,
    stride_am,
    stride_ak,
    stride_bb,
    stride_bk,
    stride_bn,
    stride_cb,
    stride_cm,
    stride_cn,
    IN_MB: tl.constexpr,
    IN_BIAS: tl.constexpr,
    IN_EXP_MAX: tl.constexpr,
    IN_FN: tl.constexpr,
    ACC_MB: tl.constexpr,
    ACC_BIAS: tl.constexpr,
    ACC_EXP_MAX: tl.constexpr,
    ACC_MAX_FINITE: tl.constexpr,
    ACC_OVERFLOW: tl.constexpr,
    ACC_SIGN_MIN: tl.constexpr,
    ACC_NAN: tl.constexpr,
    ACC_INT: tl.constexpr,
    ACC_FLOAT: tl.constexpr,
    FTZ: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    """Adds p_{K-1} first: correct products, wrong order (and no FTZ of partial sums)."""
    batch = tl.program_id(2)
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    a_row_ptrs = a_ptr + batch * stride_ab + rows * stride_am
    b_col_ptrs = b_ptr + batch * stride_bb + cols * stride_bn
    accumulator = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC_FLOAT)
    for step in range(0, K):
        k = K - 1 - step
        a = tl.load(a_row_ptrs + k * stride_ak, mask=rows < M, other=0)
        b = tl.load(b_col_ptrs + k * stride_bk, mask=cols < N, other=0)
        product = _pam_mul_fields(
            a[:, None],
            b[None, :],
            IN_MB,
            IN_BIAS,
            IN_EXP_MAX,
            IN_FN,
            ACC_MB,
            ACC_BIAS,
            ACC_EXP_MAX,
            ACC_MAX_FINITE,
            ACC_OVERFLOW,
            ACC_SIGN_MIN,
            ACC_NAN,
            FTZ,
        )
        accumulator = accumulator + product.to(ACC_INT).to(ACC_FLOAT, bitcast=True)
    c_ptrs = c_ptr + batch * stride_cb + rows[:, None] * stride_cm + cols[None, :] * stride_cn
    tl.store(c_ptrs, accumulator, mask=(rows < M)[:, None] & (cols < N)[None, :])


@triton.jit
def _two_accumulator_matmul_kernel(
    a_ptr,
    b_ptr,
    c_ptr,
    M,
    N,
    K,
    stride_ab,
    stride_am,
    stride_ak,
    stride_bb,
    stride_bk,
    stride_bn,
    stride_cb,
    stride_cm,
    stride_cn,
    IN_MB: tl.constexpr,
    IN_BIAS: tl.constexpr,
    IN_EXP_MAX: tl.constexpr,
    IN_FN: tl.constexpr,
    ACC_MB: tl.constexpr,
    ACC_BIAS: tl.constexpr,
    ACC_EXP_MAX: tl.constexpr,
    ACC_MAX_FINITE: tl.constexpr,
    ACC_OVERFLOW: tl.constexpr,
    ACC_SIGN_MIN: tl.constexpr,
    ACC_NAN: tl.constexpr,
    ACC_INT: tl.constexpr,
    ACC_FLOAT: tl.constexpr,
    FTZ: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    """Even and odd k in two accumulators, added at the end: the classic unroll-by-two speed-up."""
    batch = tl.program_id(2)
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    a_row_ptrs = a_ptr + batch * stride_ab + rows * stride_am
    b_col_ptrs = b_ptr + batch * stride_bb + cols * stride_bn
    even = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC_FLOAT)
    odd = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC_FLOAT)
    for k in range(0, K):
        a = tl.load(a_row_ptrs + k * stride_ak, mask=rows < M, other=0)
        b = tl.load(b_col_ptrs + k * stride_bk, mask=cols < N, other=0)
        product = _pam_mul_fields(
            a[:, None],
            b[None, :],
            IN_MB,
            IN_BIAS,
            IN_EXP_MAX,
            IN_FN,
            ACC_MB,
            ACC_BIAS,
            ACC_EXP_MAX,
            ACC_MAX_FINITE,
            ACC_OVERFLOW,
            ACC_SIGN_MIN,
            ACC_NAN,
            FTZ,
        )
        value = product.to(ACC_INT).to(ACC_FLOAT, bitcast=True)
        is_even = (k % 2) == 0
        even = tl.where(is_even, even + value, even)
        odd = tl.where(is_even, odd, odd + value)
    c_ptrs = c_ptr + batch * stride_cb + rows[:, None] * stride_cm + cols[None, :] * stride_cn
    tl.store(c_ptrs, even + odd, mask=(rows < M)[:, None] & (cols < N)[None, :])


def reversed_k_matmul(A: torch.Tensor, B: torch.Tensor, *, mode: str = "ieee") -> torch.Tensor:
    """pam_matmul summing k = K-1 ... 0."""
    return triton_pam._launch_matmul(_reversed_k_matmul_kernel, A, B, mode)


def two_accumulator_matmul(A: torch.Tensor, B: torch.Tensor, *, mode: str = "ieee") -> torch.Tensor:
    """pam_matmul with separate even-k and odd-k partial sums."""
    return triton_pam._launch_matmul(_two_accumulator_matmul_kernel, A, B, mode)
