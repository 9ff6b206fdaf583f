"""The opt-in ``torch.compile`` path of ``revcheck.kernels.pam.pam_mul(..., compiled=True)``.

Compiling takes a few seconds per dtype (about 8 s for this module on 2 cores, warm compiler cache).
"""

from __future__ import annotations

import numpy as np
import pytest

from revcheck import bits, formats
from revcheck.kernels import pam as kernels
from revcheck.oracle import pam as oracle


def _boundary_heavy_regular_pairs(fmt_name: str, count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Normal operands whose PAM products are normal, with many products ON the normal range's edges."""
    fmt = formats.get(fmt_name)
    rng = np.random.default_rng(seed)
    a_magnitude = rng.integers(fmt.min_normal, fmt.max_finite + 1, size=8 * count, dtype=np.int64)
    edges = np.array([fmt.min_normal, fmt.min_normal + 1, fmt.max_finite - 1, fmt.max_finite, fmt.one])
    anywhere = rng.integers(fmt.min_normal, fmt.max_finite + 1, size=a_magnitude.size, dtype=np.int64)
    target = np.where(rng.random(a_magnitude.size) < 0.7, rng.choice(edges, a_magnitude.size), anywhere)
    b_magnitude = target - a_magnitude + fmt.one
    keep = (b_magnitude >= fmt.min_normal) & (b_magnitude <= fmt.max_finite)
    a_magnitude, b_magnitude = a_magnitude[keep][:count], b_magnitude[keep][:count]
    assert a_magnitude.size == count, "too few regular pairs drawn; raise the oversampling"
    signs = rng.integers(0, 2, size=(2, count), dtype=np.int64) << (fmt.width - 1)
    dtype = fmt.uint_dtype
    return (a_magnitude | signs[0]).astype(dtype), (b_magnitude | signs[1]).astype(dtype)


@pytest.mark.parametrize("fmt_name", ["fp32", "bf16"])
def test_compiled_product_is_bit_exact_on_the_edges_of_the_normal_range(fmt_name: str) -> None:
    a_bits, b_bits = _boundary_heavy_regular_pairs(fmt_name, 4096, seed=7)
    a, b = bits.to_torch(a_bits, fmt_name), bits.to_torch(b_bits, fmt_name)
    fmt = formats.get(fmt_name)
    fused = kernels._pam_mul_compiled(a, b, fmt)
    assert fused is not None, "the compiled path rejected operands whose products are all normal"
    expected = oracle.pam_mul(a_bits, b_bits, fmt_name)
    np.testing.assert_array_equal(bits.to_bits(fused, fmt_name), expected, err_msg="compiled fast path")
    np.testing.assert_array_equal(
        bits.to_bits(kernels.pam_mul(a, b, compiled=True), fmt_name),
        expected,
        err_msg="pam_mul(compiled=True)",
    )


IRREGULAR_PAIRS = {
    # Irregular operands whose integer sum still looks like a normal code.
    "subnormal second operand": lambda fmt: (fmt.max_finite, fmt.min_normal - 1),
    "subnormal first operand": lambda fmt: (fmt.min_normal - 1, fmt.max_finite),
    "zero operand": lambda fmt: (fmt.max_finite, 0),
    "infinite operand": lambda fmt: (fmt.exponent_mask, fmt.min_normal),
    # Normal operands, product one code below the smallest normal: the integer identity is wrong there
    # (the exact value is a tie that rounds up to the smallest normal).
    "product just below normal": lambda fmt: (fmt.min_normal, fmt.one - 1),
    "product just above max_finite": lambda fmt: (fmt.max_finite, fmt.one + 1),
}


@pytest.mark.parametrize("case", sorted(IRREGULAR_PAIRS))
@pytest.mark.parametrize("fmt_name", ["fp32", "bf16"])
def test_compiled_path_hands_irregular_elements_to_the_eager_path(fmt_name: str, case: str) -> None:
    fmt = formats.get(fmt_name)
    a_bits, b_bits = _boundary_heavy_regular_pairs(fmt_name, 4096, seed=8)
    a_bits[17], b_bits[17] = IRREGULAR_PAIRS[case](fmt)
    a, b = bits.to_torch(a_bits, fmt_name), bits.to_torch(b_bits, fmt_name)
    assert kernels._pam_mul_compiled(a, b, fmt) is None, f"the compiled path accepted a {case}"
    np.testing.assert_array_equal(
        bits.to_bits(kernels.pam_mul(a, b, compiled=True), fmt_name),
        oracle.pam_mul(a_bits, b_bits, fmt_name),
        err_msg=f"pam_mul(compiled=True) with a {case}",
    )
