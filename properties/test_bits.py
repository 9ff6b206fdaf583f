"""Properties of revcheck.bits over every format: exact round trips and ULP distance as an order metric."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes

from revcheck import bits, formats
from revcheck import strategies as rst
from revcheck.formats import FloatFormat

FINITE = ("zero", "subnormal", "normal")


def one(pattern: int, fmt: FloatFormat) -> np.ndarray:
    return np.array([pattern], dtype=fmt.uint_dtype)


def distance(a: int, b: int, fmt: FloatFormat) -> int:
    return int(bits.ulp_distance(one(a, fmt), one(b, fmt), fmt)[0])


def ordinal(pattern: int, fmt: FloatFormat) -> int:
    return int(bits.ordinal(one(pattern, fmt), fmt)[0])


def exact(pattern: int, fmt: FloatFormat) -> Fraction:
    return Fraction(bits.to_fraction(pattern, fmt))


@given(data=st.data())
def test_torch_round_trip_is_exact(data: st.DataObject) -> None:
    fmt = data.draw(rst.formats(), label="fmt")
    pattern = data.draw(
        rst.bit_arrays(fmt, array_shapes(min_dims=1, max_dims=3, max_side=4)), label="patterns"
    )
    tensor = bits.to_torch(pattern, fmt)
    back = bits.to_bits(tensor, fmt)  # fmt=: fp6 and fp4 tensors are uint8 bit patterns
    assert back.dtype == fmt.uint_dtype, f"to_bits gave {back.dtype}, expected {fmt.uint_dtype}"
    assert np.array_equal(back, pattern), f"{fmt.name}: {pattern!r} came back as {back!r}"
    step = data.draw(st.integers(1, 3), label="slice step")
    strided = bits.to_bits(tensor.movedim(0, -1)[::step], fmt)  # a view: works for every dtype, even fp8
    expected = np.moveaxis(pattern, 0, -1)[::step]
    assert np.array_equal(strided, expected), f"{fmt.name}: a permuted, strided view changed bits"


@given(data=st.data())
def test_numpy_round_trip_is_exact(data: st.DataObject) -> None:
    fmt = data.draw(rst.formats(names=["fp64", "fp32", "fp16"]), label="fmt")
    pattern = data.draw(rst.bit_arrays(fmt, array_shapes(max_dims=2, max_side=5)), label="patterns")
    back = bits.to_bits(bits.from_bits(pattern, fmt).T)
    assert np.array_equal(back, pattern.T), f"{fmt.name}: {pattern!r} came back as {back!r}"


@given(data=st.data())
def test_class_predicates_partition_the_patterns(data: st.DataObject) -> None:
    fmt = data.draw(rst.formats(), label="fmt")
    pattern = data.draw(rst.bit_arrays(fmt, 8), label="patterns")
    predicates = (bits.is_nan, bits.is_inf, bits.is_zero, bits.is_subnormal, bits.is_normal)
    counts = np.sum([predicate(pattern, fmt) for predicate in predicates], axis=0)
    assert (counts == 1).all(), f"{fmt.name}: patterns {pattern[counts != 1]!r} are in {counts} classes"


@given(data=st.data())
def test_ulp_distance_is_a_metric_on_the_order(data: st.DataObject) -> None:
    fmt = data.draw(rst.formats(), label="fmt")
    a, b, c = (
        data.draw(rst.bit_patterns(fmt, classes=FINITE + ("inf",) * fmt.has_inf), label=n) for n in "abc"
    )
    assert distance(a, b, fmt) == distance(b, a, fmt), "ulp_distance is not symmetric"
    assert (distance(a, b, fmt) == 0) == (a == b), f"distance 0 must mean the same pattern: {a:#x} {b:#x}"
    low, mid, high = sorted((a, b, c), key=lambda p: ordinal(p, fmt))
    assert distance(low, high, fmt) == distance(low, mid, fmt) + distance(mid, high, fmt), (
        f"distances along the order do not add up for {low:#x} <= {mid:#x} <= {high:#x}"
    )


@given(data=st.data())
def test_ordinal_order_is_value_order(data: st.DataObject) -> None:
    fmt = data.draw(rst.formats(), label="fmt")
    a = data.draw(rst.bit_patterns(fmt, classes=FINITE), label="a")
    b = data.draw(rst.bit_patterns(fmt, classes=FINITE), label="b")
    value_a, value_b = exact(a, fmt), exact(b, fmt)
    if value_a < value_b:
        assert ordinal(a, fmt) < ordinal(b, fmt), f"{bits.describe(a, fmt)} < {bits.describe(b, fmt)}"
    elif value_a == value_b and a != b:  # only +0 and -0 share a value
        assert {a, b} == {0, fmt.sign_mask} and abs(ordinal(a, fmt) - ordinal(b, fmt)) == 1


@given(data=st.data())
def test_ulp_distance_one_is_nextafter(data: st.DataObject) -> None:
    fmt = data.draw(rst.formats(names=["fp64", "fp32", "fp16"]), label="fmt")
    assert fmt.numpy_float is not None
    pattern = data.draw(rst.bit_patterns(fmt, classes=("subnormal", "normal")), label="start")
    value = bits.from_bits(one(pattern, fmt), fmt)
    with np.errstate(over="ignore"):  # max finite steps to inf, also one ULP
        up = np.nextafter(value, np.array([np.inf], dtype=fmt.numpy_float))
    up_pattern = int(bits.to_bits(up)[0])
    assert distance(pattern, up_pattern, fmt) == 1, (
        f"next after {bits.describe(pattern, fmt)} is not 1 ULP away"
    )


@given(data=st.data())
def test_nan_has_no_distance(data: st.DataObject) -> None:
    fmt = data.draw(rst.formats(names=[f for f in formats.names() if formats.get(f).has_nan]), label="fmt")
    nan = data.draw(rst.bit_patterns(fmt, classes=("nan",)), label="nan")
    other = data.draw(rst.bit_patterns(fmt), label="other")
    assert distance(nan, other, fmt) == -1 == distance(other, nan, fmt)
