"""torch ``pam_matmul`` against the oracle: sequential order bit for bit, other orders within the bound.

All formats, both modes, batched shapes whose batch dimensions broadcast.
Operands are drawn either from every value class or as normal values of spread
exponents, where products are all finite and summation order shows in the last bits.
"""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from revcheck import bits, formats
from revcheck import strategies as rst
from revcheck.kernels import pam as kernels
from revcheck.oracle import pam as oracle
from revcheck.testing import assert_bit_exact

MODES = ("ieee", "ftz")
OTHER_ORDERS = tuple(order for order in kernels.ORDERS if order != "sequential")
# Formats with a torch dtype; fp6, fp4 (uint8 patterns, fmt=) are checked in tests/test_formats_exhaustive.py.
TORCH_FORMATS = [name for name in formats.names() if formats.get(name).torch_dtype_name is not None]


def spread_normal_arrays(fmt: formats.FloatFormat, shape: tuple[int, ...]) -> st.SearchStrategy[np.ndarray]:
    """Normal values within 2**±12 of 1 (narrower where the format is), random sign and significand.

    Products are finite and their exponents differ, so partial sums need rounding
    even for fp8/fp16 inputs: the summation order shows in the last bits.  The
    significands come from a seeded generator: Hypothesis' own integers favour
    boundary values (0, all ones), whose short sums are exact in any order.
    """
    spread = min(12, fmt.emax - 1, -fmt.emin)

    def generate(seed: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        size = int(np.prod(shape))
        negative = rng.integers(0, 2, size, dtype=np.uint64) << np.uint64(fmt.width - 1)
        exponent = rng.integers(fmt.bias - spread, fmt.bias + spread + 1, size).astype(np.uint64)
        significand = rng.integers(0, fmt.mantissa_mask, size, dtype=np.uint64, endpoint=True)
        patterns = negative | exponent << np.uint64(fmt.mantissa_bits) | significand
        return patterns.astype(fmt.uint_dtype).reshape(shape)

    return st.integers(0, 2**32 - 1).map(generate)


@st.composite
def matmul_operands(draw: st.DrawFn) -> tuple[formats.FloatFormat, np.ndarray, np.ndarray]:
    fmt = draw(rst.formats(names=TORCH_FORMATS), label="format")
    batch = draw(st.sampled_from([(), (2,), (1, 2), (2, 1)]), label="batch shape of A")
    b_batch = draw(st.sampled_from([(), batch[-1:]]), label="batch shape of B (broadcast against A's)")
    m = draw(st.integers(1, 4), label="M")
    k = draw(st.integers(0, 8), label="K")
    n = draw(st.integers(1, 4), label="N")
    regular = draw(st.booleans(), label="normal values of spread exponents (else every class)")
    arrays = (
        (lambda shape: spread_normal_arrays(fmt, shape))
        if regular
        else (lambda shape: rst.bit_arrays(fmt, shape))
    )
    a_bits = draw(arrays((*batch, m, k)), label="A bits")
    b_bits = draw(arrays((*b_batch, k, n)), label="B bits")
    return fmt, a_bits, b_bits


@given(operands=matmul_operands(), mode=st.sampled_from(MODES))
def test_sequential_pam_matmul_equals_oracle(operands, mode: str, device: str) -> None:
    fmt, a_bits, b_bits = operands
    actual = kernels.pam_matmul(
        bits.to_torch(a_bits, fmt, device), bits.to_torch(b_bits, fmt, device), mode=mode
    )
    expected = oracle.pam_matmul(a_bits, b_bits, fmt, mode=mode)
    assert_bit_exact(
        actual,
        expected,
        fmt=oracle.accumulator_format(fmt),
        nan="bits",
        msg=f"kernels.pam_matmul(A, B, mode={mode!r}) vs oracle (sequential order)",
    )


@given(operands=matmul_operands(), mode=st.sampled_from(MODES), order=st.sampled_from(OTHER_ORDERS))
def test_other_orders_stay_within_the_error_bound(operands, mode: str, order: str, device: str) -> None:
    fmt, a_bits, b_bits = operands
    result = kernels.pam_matmul(
        bits.to_torch(a_bits, fmt, device), bits.to_torch(b_bits, fmt, device), order=order, mode=mode
    )
    result_bits = bits.to_bits(result)
    inside = oracle.within_bound(result_bits, a_bits, b_bits, fmt, mode=mode)
    outside = [
        f"C{index} = {bits.describe(result_bits[index], oracle.accumulator_format(fmt))}"
        for index in zip(*np.nonzero(~inside), strict=True)
    ]
    assert inside.all(), (
        f"order={order!r} ({mode}) outside the oracle's error bound: {'; '.join(outside[:5])}"
    )


@given(data=st.data())
def test_sequential_order_is_kept_where_order_changes_the_result(data: st.DataObject, device: str) -> None:
    """Sums of 4 to 12 products of spread exponents: here another order differs in most draws."""
    fmt = data.draw(rst.formats(names=TORCH_FORMATS), label="format")
    mode = data.draw(st.sampled_from(MODES), label="mode")
    m = data.draw(st.integers(1, 3), label="M")
    k = data.draw(st.integers(4, 12), label="K")
    n = data.draw(st.integers(1, 3), label="N")
    a_bits = data.draw(spread_normal_arrays(fmt, (m, k)), label="A bits")
    b_bits = data.draw(spread_normal_arrays(fmt, (k, n)), label="B bits")
    actual = kernels.pam_matmul(
        bits.to_torch(a_bits, fmt, device), bits.to_torch(b_bits, fmt, device), mode=mode
    )
    assert_bit_exact(
        actual,
        oracle.pam_matmul(a_bits, b_bits, fmt, mode=mode),
        fmt=oracle.accumulator_format(fmt),
        msg=f"kernels.pam_matmul(A, B, mode={mode!r}) vs oracle: the summation order is not k = 0 … K−1",
    )


NARROW_FORMATS = [fmt for fmt in map(formats.get, TORCH_FORMATS) if oracle.accumulator_format(fmt) is not fmt]


@given(data=st.data())
def test_ftz_flushes_subnormal_inputs_of_their_own_format(data: st.DataObject, device: str) -> None:
    """fp16/bf16/fp8 subnormals are normal once widened to fp32; ftz must flush them before that."""
    fmt = data.draw(st.sampled_from(NARROW_FORMATS), label="format (narrower than its accumulator)")
    m, k, n = (data.draw(st.integers(1, 3), label=name) for name in "MKN")
    a_bits = data.draw(rst.bit_arrays(fmt, (m, k), classes=("subnormal", "zero")), label="A bits (tiny)")
    b_bits = data.draw(rst.bit_arrays(fmt, (k, n), classes=("normal",)), label="B bits")
    actual = kernels.pam_matmul(
        bits.to_torch(a_bits, fmt, device), bits.to_torch(b_bits, fmt, device), mode="ftz"
    )
    assert_bit_exact(
        actual,
        oracle.pam_matmul(a_bits, b_bits, fmt, mode="ftz"),
        fmt=oracle.accumulator_format(fmt),
        msg=f"kernels.pam_matmul(A, B, mode='ftz') on {fmt.name} subnormals vs oracle",
    )
