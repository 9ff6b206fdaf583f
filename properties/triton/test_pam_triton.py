"""Triton PAM kernels equal the NumPy oracle bit for bit (SPEC.md section 2).

Elementwise operations on every format and both modes, every input class; the
matmul in the canonical sequential order, on operands drawn to make the order of
the additions matter.  NaN bits are compared too (a computed NaN is canonical).
On the CPU the kernels run in Triton's interpreter, which must be chosen before
triton is imported: this module sets ``TRITON_INTERPRET=1`` when CUDA is absent.
Sizes stay small because the interpreter is slow.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

triton_pam = pytest.importorskip(
    "revcheck.kernels.triton_pam", reason="triton is not installed (pip install 'revcheck[triton]')"
)

from revcheck import bits, formats  # noqa: E402
from revcheck import strategies as rst  # noqa: E402
from revcheck.oracle import pam as oracle  # noqa: E402
from revcheck.testing import assert_bit_exact  # noqa: E402

# inf - inf in the interpreter's NumPy adds is expected (it must give the canonical NaN).
pytestmark = pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")

# Formats with a torch dtype; fp6 and fp4 (uint8 patterns with fmt=, docs/spec.md D1.10) are proven
# exhaustively in tests/triton/test_formats_exhaustive_triton.py.
TORCH_FORMATS = [name for name in formats.names() if formats.get(name).torch_dtype_name is not None]
BINARY_OPS = ("pam_mul", "pam_div", "pam_mul_grad")
UNARY_OPS = ("pa_log2", "pa_exp2")
MODES = ("ieee", "ftz")

shapes = hnp.array_shapes(min_dims=1, max_dims=2, min_side=1, max_side=6)


def _skip_unless_runnable(device: str) -> None:
    if device == "cpu" and not triton_pam.INTERPRETED:
        pytest.skip("Triton on the CPU needs TRITON_INTERPRET=1 set before triton is first imported")


def spread_patterns(fmt: formats.FloatFormat) -> st.SearchStrategy[int]:
    """Normal values of either sign, exponents up to ~2p apart: sums that round, so order matters."""
    spread = 2 * fmt.precision
    lowest, highest = max(fmt.emin, -spread), min(fmt.emax, spread)
    return st.builds(
        lambda negative, exponent, significand: (
            (fmt.sign_mask if negative else 0) | (exponent + fmt.bias) << fmt.mantissa_bits | significand
        ),
        st.booleans(),
        st.integers(lowest, highest),
        st.integers(0, fmt.mantissa_mask),
    )


@pytest.mark.parametrize("op", BINARY_OPS)
@given(data=st.data())
def test_triton_binary_op_equals_oracle(op: str, device: str, data: st.DataObject) -> None:
    _skip_unless_runnable(device)
    fmt = data.draw(rst.formats(names=TORCH_FORMATS), label="format")
    mode = data.draw(st.sampled_from(MODES), label="mode")
    shape = data.draw(shapes, label="shape")
    a_bits = data.draw(rst.bit_arrays(fmt, shape), label="a bits")
    b_bits = data.draw(rst.bit_arrays(fmt, shape), label="b bits")
    actual = getattr(triton_pam, op)(
        bits.to_torch(a_bits, fmt, device), bits.to_torch(b_bits, fmt, device), mode=mode
    )
    expected = getattr(oracle, op)(a_bits, b_bits, fmt, mode=mode)
    assert_bit_exact(
        actual, expected, fmt=fmt, nan="bits", msg=f"triton_pam.{op}(a, b, mode={mode!r}) vs oracle"
    )


def boundary_patterns(fmt: formats.FloatFormat) -> list[int]:
    """±0, ±smallest/largest subnormal and normal, ±1, ±1.5, ±inf (or ±max), NaN: where the cases split."""
    magnitudes = [
        0,
        fmt.min_subnormal,
        fmt.max_subnormal,
        fmt.min_normal,
        fmt.one,
        fmt.one | 1 << (fmt.mantissa_bits - 1),
        fmt.max_finite,
        fmt.overflow_magnitude,
    ]
    return sorted({m | s for m in magnitudes for s in (0, fmt.sign_mask)} | {fmt.canonical_nan})


@pytest.mark.parametrize("op", BINARY_OPS)
def test_triton_binary_op_on_boundary_values_equals_oracle(op: str, device: str) -> None:
    """Every pair of the boundary table, every format and mode: deterministic, so no draw can miss one."""
    _skip_unless_runnable(device)
    for fmt in (formats.get(name) for name in TORCH_FORMATS):
        table = np.array(boundary_patterns(fmt), dtype=fmt.uint_dtype)
        a_bits, b_bits = np.repeat(table, table.size), np.tile(table, table.size)
        for mode in MODES:
            actual = getattr(triton_pam, op)(
                bits.to_torch(a_bits, fmt, device), bits.to_torch(b_bits, fmt, device), mode=mode
            )
            expected = getattr(oracle, op)(a_bits, b_bits, fmt, mode=mode)
            assert_bit_exact(
                actual,
                expected,
                fmt=fmt,
                nan="bits",
                msg=f"triton_pam.{op}(a, b, mode={mode!r}) vs oracle on {fmt.name} boundary pairs",
            )


@pytest.mark.parametrize("op", UNARY_OPS)
@given(data=st.data())
def test_triton_unary_op_equals_oracle(op: str, device: str, data: st.DataObject) -> None:
    _skip_unless_runnable(device)
    fmt = data.draw(rst.formats(names=TORCH_FORMATS), label="format")
    mode = data.draw(st.sampled_from(MODES), label="mode")
    x_bits = data.draw(rst.bit_arrays(fmt, data.draw(shapes, label="shape")), label="x bits")
    actual = getattr(triton_pam, op)(bits.to_torch(x_bits, fmt, device), mode=mode)
    expected = getattr(oracle, op)(x_bits, fmt, mode=mode)
    assert_bit_exact(
        actual, expected, fmt=fmt, nan="bits", msg=f"triton_pam.{op}(x, mode={mode!r}) vs oracle"
    )


@given(data=st.data())
def test_triton_binary_op_broadcasts_like_oracle(device: str, data: st.DataObject) -> None:
    _skip_unless_runnable(device)
    op = data.draw(st.sampled_from(BINARY_OPS), label="op")
    fmt = data.draw(rst.formats(names=TORCH_FORMATS), label="format")
    a_bits = data.draw(rst.bit_arrays(fmt, (data.draw(st.integers(1, 4), label="rows"), 1)), label="a bits")
    b_bits = data.draw(rst.bit_arrays(fmt, (data.draw(st.integers(1, 4), label="cols"),)), label="b bits")
    actual = getattr(triton_pam, op)(bits.to_torch(a_bits, fmt, device), bits.to_torch(b_bits, fmt, device))
    expected = getattr(oracle, op)(a_bits, b_bits, fmt)
    assert_bit_exact(actual, expected, fmt=fmt, nan="bits", msg=f"broadcast triton_pam.{op} vs oracle")


@given(data=st.data())
def test_triton_matmul_sequential_equals_oracle(device: str, data: st.DataObject) -> None:
    """C[i, j] = ((0 + p_0) + p_1) + ... exactly as the oracle sums it, whatever the values."""
    _skip_unless_runnable(device)
    fmt = data.draw(rst.formats(names=TORCH_FORMATS), label="format")
    mode = data.draw(st.sampled_from(MODES), label="mode")
    m = data.draw(st.integers(1, 4), label="M")
    k = data.draw(st.integers(1, 6), label="K")
    n = data.draw(st.integers(1, 4), label="N")
    any_value = data.draw(st.booleans(), label="any value (else values that make the sum order matter)")
    if any_value:
        a_elements, b_elements = rst.bit_patterns(fmt), rst.bit_patterns(fmt)
    else:
        a_elements, b_elements = spread_patterns(fmt), spread_patterns(fmt)
    A_bits = data.draw(hnp.arrays(fmt.uint_dtype, (m, k), elements=a_elements), label="A bits")
    B_bits = data.draw(hnp.arrays(fmt.uint_dtype, (k, n), elements=b_elements), label="B bits")
    actual = triton_pam.pam_matmul(
        bits.to_torch(A_bits, fmt, device), bits.to_torch(B_bits, fmt, device), mode=mode
    )
    expected = oracle.pam_matmul(A_bits, B_bits, fmt, mode=mode)
    acc = oracle.accumulator_format(fmt)
    assert_bit_exact(
        actual,
        expected,
        fmt=acc,
        nan="bits",
        msg=f"triton_pam.pam_matmul({fmt.name}, mode={mode!r}) vs oracle",
    )


@given(data=st.data())
def test_triton_batched_matmul_equals_oracle(device: str, data: st.DataObject) -> None:
    """Broadcast batch dimensions: every batch is its own sequential matmul."""
    _skip_unless_runnable(device)
    fmt = data.draw(rst.formats(names=["fp32", "bf16"]), label="format")
    batch = data.draw(st.integers(1, 3), label="batch")
    k = data.draw(st.integers(1, 4), label="K")
    A_bits = data.draw(rst.bit_arrays(fmt, (batch, 2, k)), label="A bits (batched)")
    B_bits = data.draw(rst.bit_arrays(fmt, (k, 3)), label="B bits (shared)")
    actual = triton_pam.pam_matmul(bits.to_torch(A_bits, fmt, device), bits.to_torch(B_bits, fmt, device))
    expected = oracle.pam_matmul(A_bits, B_bits, fmt)
    assert_bit_exact(
        actual, expected, fmt=oracle.accumulator_format(fmt), nan="bits", msg="batched triton_pam.pam_matmul"
    )
