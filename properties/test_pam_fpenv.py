"""The torch PAM kernels do not depend on the host's flush-to-zero flags (docs/spec.md D2.14).

``torch.set_flush_denormal(True)`` sets the calling thread's FTZ and DAZ bits (x86).
Every property here runs the same inputs with the flag off and on -- always restoring
it -- and requires the oracle's bits both times (level K on this CPU, against level O).
The inputs are drawn to make subnormal products and partial sums likely: exponents
near the bottom of the accumulator's range, and cancelling pairs.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from properties.pam_suite import TORCH, PamKernels
from revcheck import bits, formats
from revcheck import strategies as rst
from revcheck.kernels import pam as kernels
from revcheck.oracle import pam as oracle
from revcheck.oracle import rounding as oracle_rounding
from revcheck.testing import assert_bit_exact

FLAG_SUPPORTED = torch.set_flush_denormal(False)  # False where the CPU has no FTZ/DAZ (then nothing to test)
needs_flag = pytest.mark.skipif(not FLAG_SUPPORTED, reason="this CPU has no flush-to-zero flag")


def thread_flushes_subnormals() -> bool:
    """Whether this thread's float unit flushes a subnormal result (probed: torch has no getter)."""
    smallest_normal = torch.tensor([2.0**-126], dtype=torch.float32)
    return bool((smallest_normal * 0.5).item() == 0.0)


@contextmanager
def flush_denormal(enabled: bool) -> Iterator[None]:
    """Run the body with ``torch.set_flush_denormal(enabled)``; the previous state comes back afterwards."""
    previous = thread_flushes_subnormals()
    torch.set_flush_denormal(enabled)
    try:
        assert thread_flushes_subnormals() == enabled, "torch.set_flush_denormal had no effect"
        yield
    finally:
        torch.set_flush_denormal(previous)


def low_patterns(fmt: formats.FloatFormat) -> st.SearchStrategy[int]:
    """Values whose products land near the bottom of the fp32 accumulator: normal or subnormal, any sign."""
    top = {64: 520, 32: 66}.get(fmt.width, fmt.bias)  # |E| up to about half the accumulator's emin
    exponent = st.integers(max(1 - fmt.bias, -top), 0) if fmt.width >= 32 else st.integers(1 - fmt.bias, 0)
    normal = st.builds(
        lambda negative, e, significand: (
            (fmt.sign_mask if negative else 0) | (e + fmt.bias) << fmt.mantissa_bits | significand
        ),
        st.booleans(),
        exponent,
        st.integers(0, fmt.mantissa_mask),
    )
    return st.one_of(normal, rst.bit_patterns(fmt, classes=("subnormal", "zero")))


def check_matmul_is_the_same_with_and_without_the_flush_flag(
    data: st.DataObject, device: str = "cpu", implementation: PamKernels = TORCH
) -> None:
    if not FLAG_SUPPORTED:
        pytest.skip("this CPU has no flush-to-zero flag")
    if device != "cpu":
        pytest.skip("torch.set_flush_denormal is a CPU flag")
    fmt = data.draw(
        rst.formats(names=("fp64", "fp32", "bf16")), label="format"
    )  # their products can be subnormal
    order = data.draw(st.sampled_from(("sequential", "pairwise")), label="order")
    m, k, n = (data.draw(st.integers(1, 3), label=name) for name in "MKN")
    a_bits = np.array(data.draw(st.lists(low_patterns(fmt), min_size=m * k, max_size=m * k), label="A"))
    b_bits = np.array(data.draw(st.lists(low_patterns(fmt), min_size=k * n, max_size=k * n), label="B"))
    a_bits = a_bits.astype(np.uint64).astype(fmt.uint_dtype).reshape(m, k)
    b_bits = b_bits.astype(np.uint64).astype(fmt.uint_dtype).reshape(k, n)
    a, b = bits.to_torch(a_bits, fmt), bits.to_torch(b_bits, fmt)
    results = {}
    for enabled in (False, True):
        with flush_denormal(enabled):
            results[enabled] = implementation.matmul(a, b, mode="ieee", order=order)
    assert_bit_exact(results[True], results[False], msg=f"order={order!r}: the flush flag changed the result")
    if order == "sequential":
        acc = oracle.accumulator_format(fmt)
        assert_bit_exact(results[True], oracle.pam_matmul(a_bits, b_bits, fmt), fmt=acc, nan="bits")


@needs_flag
@given(data=st.data())
def test_matmul_is_the_same_with_and_without_the_flush_flag(data: st.DataObject, device: str) -> None:
    check_matmul_is_the_same_with_and_without_the_flush_flag(data, device)


@given(data=st.data())
def test_exact_addition_equals_the_oracle(data: st.DataObject, device: str) -> None:
    # The integer addition that replaces float addition where subnormals can occur (kernels._add_exact).
    fmt = data.draw(rst.formats(names=("fp64", "fp32")), label="accumulator format")
    mode = data.draw(st.sampled_from(("ieee", "ftz")), label="mode")
    size = data.draw(st.integers(1, 8), label="size")
    x_bits = data.draw(rst.bit_arrays(fmt, (size,)), label="x bits")
    y_bits = data.draw(rst.bit_arrays(fmt, (size,)), label="y bits")
    got = kernels._add_exact(
        bits.to_torch(x_bits, fmt, device), bits.to_torch(y_bits, fmt, device), fmt, mode
    )
    assert_bit_exact(got, oracle_rounding.add(x_bits, y_bits, fmt, mode), fmt=fmt, nan="bits")
