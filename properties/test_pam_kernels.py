"""Element-wise torch PAM kernels equal the NumPy oracle bit for bit (SPEC.md section 2).

Every format, both modes, every input class (NaN payloads, ±inf, ±0,
subnormals, normals at the exponent boundaries), on the `device` fixture's
device.  NaN bits are compared too: a computed NaN must be the canonical one.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from revcheck import bits, formats
from revcheck import strategies as rst
from revcheck.kernels import pam as kernels
from revcheck.oracle import pam as oracle
from revcheck.testing import assert_bit_exact

# Formats with a torch dtype; fp6 and fp4 travel as uint8 patterns with fmt= (docs/spec.md D1.10) and are
# proven exhaustively against the oracle in tests/test_formats_exhaustive.py.
TORCH_FORMATS = [name for name in formats.names() if formats.get(name).torch_dtype_name is not None]
BINARY_OPS = ("pam_mul", "pam_div", "pam_mul_grad")
UNARY_OPS = ("pa_log2", "pa_exp2")
MODES = ("ieee", "ftz")

shapes = hnp.array_shapes(min_dims=1, max_dims=2, min_side=1, max_side=6)


def near_one_patterns(fmt: formats.FloatFormat, spread: int = 3) -> st.SearchStrategy[int]:
    """Normal values within 2**±spread of 1 with any sign and significand: products stay normal."""
    return st.builds(
        lambda negative, exponent, significand: (
            (fmt.sign_mask if negative else 0) | (exponent + fmt.bias) << fmt.mantissa_bits | significand
        ),
        st.booleans(),
        st.integers(-spread, spread),
        st.integers(0, fmt.mantissa_mask),
    )


@pytest.mark.parametrize("op", BINARY_OPS)
@given(data=st.data())
def test_binary_kernel_equals_oracle(op: str, device: str, data: st.DataObject) -> None:
    fmt = data.draw(rst.formats(names=TORCH_FORMATS), label="format")
    mode = data.draw(st.sampled_from(MODES), label="mode")
    shape = data.draw(shapes, label="shape")
    a_bits = data.draw(rst.bit_arrays(fmt, shape), label="a bits")
    b_bits = data.draw(rst.bit_arrays(fmt, shape), label="b bits")
    actual = getattr(kernels, op)(
        bits.to_torch(a_bits, fmt, device), bits.to_torch(b_bits, fmt, device), mode=mode
    )
    expected = getattr(oracle, op)(a_bits, b_bits, fmt, mode=mode)
    assert_bit_exact(actual, expected, fmt=fmt, nan="bits", msg=f"kernels.{op}(a, b, {mode}) vs oracle")


@pytest.mark.parametrize("op", BINARY_OPS)
@given(data=st.data())
def test_binary_kernel_broadcasts_like_oracle(op: str, device: str, data: st.DataObject) -> None:
    fmt = data.draw(rst.formats(names=TORCH_FORMATS), label="format")
    mode = data.draw(st.sampled_from(MODES), label="mode")
    rows = data.draw(st.integers(1, 4), label="rows")
    cols = data.draw(st.integers(1, 4), label="cols")
    a_bits = data.draw(rst.bit_arrays(fmt, (rows, 1)), label="a bits (column)")
    b_bits = data.draw(rst.bit_arrays(fmt, (cols,)), label="b bits (row)")
    actual = getattr(kernels, op)(
        bits.to_torch(a_bits, fmt, device), bits.to_torch(b_bits, fmt, device), mode=mode
    )
    expected = getattr(oracle, op)(a_bits, b_bits, fmt, mode=mode)
    assert_bit_exact(actual, expected, fmt=fmt, nan="bits", msg=f"broadcast kernels.{op} vs oracle")


@pytest.mark.parametrize("op", ("pam_mul", "pam_div"))
@given(data=st.data())
def test_kernel_on_regular_operands_equals_oracle(op: str, device: str, data: st.DataObject) -> None:
    """Arrays of zeros and normal values near 1 take the kernels' integer fast path; it must agree too."""
    fmt = data.draw(rst.formats(names=TORCH_FORMATS), label="format")
    mode = data.draw(st.sampled_from(MODES), label="mode")
    size = data.draw(st.integers(1, 16), label="size")
    elements = st.one_of(near_one_patterns(fmt), st.sampled_from([0, fmt.sign_mask]))  # ±0 too
    a_bits = np.array(
        data.draw(st.lists(elements, min_size=size, max_size=size), label="a bits"), fmt.uint_dtype
    )
    b_bits = np.array(
        data.draw(st.lists(elements, min_size=size, max_size=size), label="b bits"), fmt.uint_dtype
    )
    actual = getattr(kernels, op)(
        bits.to_torch(a_bits, fmt, device), bits.to_torch(b_bits, fmt, device), mode=mode
    )
    expected = getattr(oracle, op)(a_bits, b_bits, fmt, mode=mode)
    assert_bit_exact(actual, expected, fmt=fmt, nan="bits", msg=f"kernels.{op} on normal operands vs oracle")


@pytest.mark.parametrize("op", UNARY_OPS)
@given(data=st.data())
def test_unary_kernel_equals_oracle(op: str, device: str, data: st.DataObject) -> None:
    fmt = data.draw(rst.formats(names=TORCH_FORMATS), label="format")
    mode = data.draw(st.sampled_from(MODES), label="mode")
    x_bits = data.draw(rst.bit_arrays(fmt, data.draw(shapes, label="shape")), label="x bits")
    actual = getattr(kernels, op)(bits.to_torch(x_bits, fmt, device), mode=mode)
    expected = getattr(oracle, op)(x_bits, fmt, mode=mode)
    assert_bit_exact(actual, expected, fmt=fmt, nan="bits", msg=f"kernels.{op}(x, mode={mode!r}) vs oracle")


@pytest.mark.parametrize("op", UNARY_OPS)
@given(data=st.data())
def test_unary_kernel_on_small_arguments_equals_oracle(op: str, device: str, data: st.DataObject) -> None:
    """Arguments near 1 (where pa_exp2/pa_log2 results carry every fraction bit) agree with the oracle."""
    fmt = data.draw(rst.formats(names=TORCH_FORMATS), label="format")
    mode = data.draw(st.sampled_from(MODES), label="mode")
    patterns = data.draw(st.lists(near_one_patterns(fmt, spread=6), min_size=1, max_size=16), label="x bits")
    x_bits = np.array(patterns, fmt.uint_dtype)
    actual = getattr(kernels, op)(bits.to_torch(x_bits, fmt, device), mode=mode)
    expected = getattr(oracle, op)(x_bits, fmt, mode=mode)
    assert_bit_exact(actual, expected, fmt=fmt, nan="bits", msg=f"kernels.{op} near 1 vs oracle")
