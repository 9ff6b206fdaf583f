"""Deliberately wrong Triton PAM kernels: realistic mistakes the Triton checks must catch.

Each mutant replaces one public function of :mod:`revcheck.kernels.triton_pam`
and names the property tests of ``properties/triton/test_pam_triton.py`` that must fail
with it in place (``tests/triton/test_triton_pam.py`` patches each in and runs them,
and also runs the exhaustive fp8 / fixed-case unit checks against it).  Mutants
reuse the real kernels' pieces for everything they do not break, so each has
exactly one bug.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch

# Same rule as the tests: this module may be the first to import the kernels (doctest collection).
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

triton = pytest.importorskip("triton", reason="triton is not installed (pip install 'revcheck[triton]')")
import triton.language as tl  # noqa: E402

from revcheck import formats  # noqa: E402
from revcheck.kernels import triton_pam  # noqa: E402
from revcheck.kernels.triton_pam import _pam_mul_fields  # noqa: E402

REAL: dict[str, Callable[..., Any]] = {
    name: getattr(triton_pam, name)
    for name in ("pam_mul", "pam_div", "pam_mul_grad", "pa_log2", "pa_exp2", "pam_matmul")
}

PROPERTIES = "triton.test_pam_triton"


@dataclass(frozen=True)
class Mutant:
    """One planted bug: which function it replaces and which properties must flag it."""

    name: str
    attribute: str
    replacement: Callable[..., Any]
    caught_by: tuple[tuple[str, dict[str, object]], ...] = field(default_factory=tuple)


def _signed(x: torch.Tensor) -> torch.Tensor:
    return x.view(getattr(torch, formats.get(x.dtype).int_dtype.name))


# ---- elementwise -------------------------------------------------------------------------


def ieee_flushes_subnormals(a: torch.Tensor, b: torch.Tensor, *, mode: str = "ieee") -> torch.Tensor:
    """pam_mul that runs the FTZ kernel whatever the mode: a mode-plumbing slip."""
    return REAL["pam_mul"](a, b, mode="ftz")


def nan_keeps_sign(a: torch.Tensor, b: torch.Tensor, *, mode: str = "ieee") -> torch.Tensor:
    """pam_div whose NaN gets the XOR of the operand signs, like every other result: not canonical."""
    out = REAL["pam_div"](a, b, mode=mode)
    fmt = formats.get(out.dtype)
    negative = (_signed(a) < 0) ^ (_signed(b) < 0)
    is_nan = _signed(out) == fmt.canonical_nan
    _signed(out)[is_nan & negative] = (fmt.canonical_nan | fmt.sign_mask) - (1 << fmt.width)
    return out


def saturating_divide_by_zero_gives_nan(
    a: torch.Tensor, b: torch.Tensor, *, mode: str = "ieee"
) -> torch.Tensor:
    """pam_div where x / ±0 in a format without infinity is NaN instead of ±max (e.g. ±448)."""
    out = REAL["pam_div"](a, b, mode=mode)
    fmt = formats.get(out.dtype)
    if fmt.saturates:
        a_int, b_int = torch.broadcast_tensors(_signed(a), _signed(b))
        divide_by_zero = ((b_int & fmt.magnitude_mask) == 0) & ((a_int & fmt.magnitude_mask) != 0)
        _signed(out)[divide_by_zero] = fmt.canonical_nan
    return out


def log2_of_one_is_negative_zero(x: torch.Tensor, *, mode: str = "ieee") -> torch.Tensor:
    """pa_log2 that gives -0 for E + M = 0 (the sign taken from E - 1 < 0 instead of the value)."""
    out = REAL["pa_log2"](x, mode=mode)
    fmt = formats.get(out.dtype)
    _signed(out)[(_signed(out) == 0) & ((_signed(x) & fmt.magnitude_mask) == fmt.one)] = -(
        1 << (fmt.width - 1)
    )
    return out


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


def matmul_ignores_ftz(A: torch.Tensor, B: torch.Tensor, *, mode: str = "ieee") -> torch.Tensor:
    """pam_matmul that always runs the IEEE kernel: subnormal inputs, products and sums survive FTZ."""
    return REAL["pam_matmul"](A, B, mode="ieee")


_BINARY = "test_triton_binary_op_equals_oracle"
_UNARY = "test_triton_unary_op_equals_oracle"
_BOUNDARY = "test_triton_binary_op_on_boundary_values_equals_oracle"
_MATMUL = "test_triton_matmul_sequential_equals_oracle"

MUTANTS: tuple[Mutant, ...] = (
    Mutant(
        "ieee_flushes_subnormals",
        "pam_mul",
        ieee_flushes_subnormals,
        ((_BINARY, {"op": "pam_mul"}), (_BOUNDARY, {"op": "pam_mul"})),
    ),
    Mutant(
        "nan_keeps_sign",
        "pam_div",
        nan_keeps_sign,
        ((_BINARY, {"op": "pam_div"}), (_BOUNDARY, {"op": "pam_div"})),
    ),
    Mutant(
        "saturating_divide_by_zero_gives_nan",
        "pam_div",
        saturating_divide_by_zero_gives_nan,
        ((_BOUNDARY, {"op": "pam_div"}),),
    ),
    Mutant(
        "log2_of_one_is_negative_zero",
        "pa_log2",
        log2_of_one_is_negative_zero,
        ((_UNARY, {"op": "pa_log2"}),),
    ),
    Mutant("reversed_k_matmul", "pam_matmul", reversed_k_matmul, ((_MATMUL, {}),)),
    Mutant("two_accumulator_matmul", "pam_matmul", two_accumulator_matmul, ((_MATMUL, {}),)),
    Mutant("matmul_ignores_ftz", "pam_matmul", matmul_ignores_ftz, ((_MATMUL, {}),)),
)
