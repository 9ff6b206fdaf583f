"""revcheck.bits: bit views round-trip exactly, classification agrees with torch, ULP distance is an order."""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
import pytest
import torch

from revcheck import bits, formats
from revcheck.formats import FloatFormat

ALL_FORMATS = [formats.get(name) for name in formats.names()]
NUMPY_FORMATS = [fmt for fmt in ALL_FORMATS if fmt.numpy_float is not None]
NAN_FORMATS = [fmt for fmt in ALL_FORMATS if fmt.has_nan]
by_name = pytest.mark.parametrize("fmt", ALL_FORMATS, ids=lambda f: f.name)


def patterns(fmt: FloatFormat) -> np.ndarray[Any, Any]:
    """Every pattern of a format of at most 16 bits; boundaries plus random bits of a wider one."""
    if fmt.width <= 16:
        return np.arange(1 << fmt.width, dtype=np.uint64).astype(fmt.uint_dtype)
    magnitudes = [0, 1, fmt.max_subnormal, fmt.min_normal, fmt.one - 1, fmt.one, fmt.one + 1, fmt.max_finite]
    magnitudes += [fmt.exponent_mask, fmt.canonical_nan, fmt.exponent_mask | 1, fmt.magnitude_mask]
    special = [m | sign for m in magnitudes for sign in (0, fmt.sign_mask)]
    generator = np.random.default_rng(20260101)
    random = generator.integers(
        0, np.iinfo(fmt.uint_dtype).max, size=4096, dtype=fmt.uint_dtype, endpoint=True
    )
    return np.concatenate([np.array(special, dtype=fmt.uint_dtype), random])


def as_float64(pattern: np.ndarray[Any, Any], fmt: FloatFormat) -> torch.Tensor:
    """The values as float64 through torch's own (exact, widening) conversion.

    Formats torch has no dtype of (fp6, fp4) are decoded by the exact model instead,
    which shares no code with revcheck.bits.
    """
    if fmt.torch_dtype_name is None:
        from revcheck.exact.rounding import value_of

        return torch.tensor([float(value_of(int(p), fmt)) for p in pattern.tolist()], dtype=torch.float64)
    return bits.to_torch(pattern, fmt).to(torch.float64)


# ---- round trips ---------------------------------------------------------------------


@by_name
def test_torch_round_trip_contiguous(fmt: FloatFormat) -> None:
    pattern = patterns(fmt)
    tensor = bits.to_torch(pattern, fmt)
    # Formats without a torch dtype travel as uint8 bit patterns (docs/spec.md D1.10).
    assert tensor.dtype == getattr(torch, fmt.torch_dtype_name or "uint8")
    back = bits.to_bits(tensor, None if fmt.torch_dtype_name else fmt)
    assert back.dtype == fmt.uint_dtype
    np.testing.assert_array_equal(back, pattern)


@by_name
def test_torch_round_trip_non_contiguous(fmt: FloatFormat) -> None:
    pattern = np.resize(patterns(fmt), 2 * 3 * 32).reshape(2, 3, 32)  # fp4 has only 16 patterns
    tensor = bits.to_torch(pattern, fmt)
    strided = tensor.transpose(0, 2)[::3]
    assert not strided.is_contiguous()
    pattern_fmt = None if fmt.torch_dtype_name else fmt
    np.testing.assert_array_equal(bits.to_bits(strided, pattern_fmt), pattern.transpose(2, 1, 0)[::3])


@pytest.mark.parametrize("fmt", NUMPY_FORMATS, ids=lambda f: f.name)
def test_numpy_round_trip_contiguous_and_not(fmt: FloatFormat) -> None:
    pattern = patterns(fmt)
    values = bits.from_bits(pattern, fmt)
    assert values.dtype == fmt.numpy_float
    np.testing.assert_array_equal(bits.to_bits(values), pattern)
    matrix = values[: 64 * 4].reshape(64, 4)
    np.testing.assert_array_equal(bits.to_bits(matrix.T[:, ::5]), pattern[: 64 * 4].reshape(64, 4).T[:, ::5])


@pytest.mark.parametrize("fmt", NUMPY_FORMATS, ids=lambda f: f.name)
def test_numpy_and_torch_agree_bit_for_bit(fmt: FloatFormat) -> None:
    pattern = patterns(fmt)
    np.testing.assert_array_equal(bits.to_bits(torch.from_numpy(bits.from_bits(pattern, fmt))), pattern)


@pytest.mark.parametrize("fmt", [f for f in ALL_FORMATS if f.numpy_float is None], ids=lambda f: f.name)
def test_from_bits_without_numpy_dtype_points_to_to_torch(fmt: FloatFormat, monkeypatch: Any) -> None:
    # With ml_dtypes, from_bits returns its dtype (tests/mldtypes/); without it, the error says what to do.
    monkeypatch.setitem(sys.modules, "ml_dtypes", None)
    with pytest.raises(
        TypeError, match=r"NumPy has no .*revcheck\[ml_dtypes\].* use revcheck\.bits\.to_torch"
    ):
        bits.from_bits(np.zeros(2, fmt.uint_dtype), fmt)


def test_to_bits_of_unsigned_needs_fmt() -> None:
    with pytest.raises(TypeError, match=r"pass fmt="):
        bits.to_bits(np.zeros(2, np.uint16))
    np.testing.assert_array_equal(bits.to_bits(np.array([0x3F80], np.uint16), "bf16"), [0x3F80])


def test_to_bits_rejects_a_contradicting_fmt() -> None:
    with pytest.raises(TypeError, match="fmt=fp16"):
        bits.to_bits(torch.zeros(2, dtype=torch.bfloat16), "fp16")
    with pytest.raises(TypeError, match="fmt=fp16"):
        bits.to_bits(np.zeros(2, np.float32), "fp16")


def test_python_int_patterns_are_range_checked() -> None:
    assert bits.to_torch([0x3F80], "bf16").item() == 1.0
    with pytest.raises(ValueError, match="out of range for 16-bit bf16"):
        bits.to_torch([0x1_0000], "bf16")


def test_to_bits_keeps_zero_dimensional_shape() -> None:
    assert bits.to_bits(np.float32(1.0)).shape == ()


# ---- classification agrees with torch -------------------------------------------------


@by_name
def test_classification_agrees_with_torch(fmt: FloatFormat) -> None:
    pattern = patterns(fmt)
    values = as_float64(pattern, fmt)  # fp8 has few torch ops; widening keeps every class
    smallest_normal = 2.0**fmt.emin  # torch.finfo(...).smallest_normal, also where torch has no dtype
    expected = {
        "nan": torch.isnan(values),
        "inf": torch.isinf(values),
        "finite": torch.isfinite(values),
        "zero": values == 0,
        "subnormal": (values != 0) & (values.abs() < smallest_normal),
        "normal": torch.isfinite(values) & (values.abs() >= smallest_normal),
        "sign": torch.signbit(values) & ~torch.isnan(values),
    }
    got = {
        "nan": bits.is_nan(pattern, fmt),
        "inf": bits.is_inf(pattern, fmt),
        "finite": bits.is_finite(pattern, fmt),
        "zero": bits.is_zero(pattern, fmt),
        "subnormal": bits.is_subnormal(pattern, fmt),
        "normal": bits.is_normal(pattern, fmt),
        "sign": bits.sign_bit(pattern, fmt) & ~bits.is_nan(pattern, fmt),
    }
    for name, torch_answer in expected.items():
        np.testing.assert_array_equal(got[name], torch_answer.numpy(), err_msg=f"{fmt.name}: {name}")


@by_name
def test_classify_names_one_class_per_pattern(fmt: FloatFormat) -> None:
    pattern = patterns(fmt)
    names = bits.classify(pattern, fmt)
    predicates = {
        "nan": bits.is_nan,
        "inf": bits.is_inf,
        "zero": bits.is_zero,
        "subnormal": bits.is_subnormal,
        "normal": bits.is_normal,
    }
    assert set(predicates) == set(bits.CLASSES)
    for name, predicate in predicates.items():
        np.testing.assert_array_equal(names == name, predicate(pattern, fmt), err_msg=name)


@pytest.mark.parametrize("fmt", NAN_FORMATS, ids=lambda f: f.name)
def test_sign_bit_of_nan_patterns_is_the_top_bit(fmt: FloatFormat) -> None:
    negative_nan = np.array([fmt.sign_mask | fmt.canonical_nan], fmt.uint_dtype)
    assert bits.sign_bit(negative_nan, fmt).all() and bits.is_nan(negative_nan, fmt).all()


# ---- order and ULP distance -----------------------------------------------------------


@by_name
def test_ordinal_is_monotone_in_value(fmt: FloatFormat) -> None:
    pattern = patterns(fmt)
    pattern = pattern[~bits.is_nan(pattern, fmt)]
    ordinals = bits.ordinal(pattern, fmt)
    order = np.array(sorted(range(len(pattern)), key=lambda i: ordinals[i]))  # Python ints: exact for fp64
    values = as_float64(pattern[order], fmt).numpy()
    steps = np.diff(values)
    assert (steps >= 0).all(), f"{fmt.name}: ordinal order is not value order"
    # Equal neighbouring values only at -0 -> +0 (and repeats of random patterns in wide formats);
    # in a format without -0 the negative values end at -1 (docs/spec.md D1.11).
    tied = np.flatnonzero(steps == 0)
    assert fmt.has_negative_zero or min(ordinals) == -fmt.max_finite
    ordinals = bits.ordinal(pattern[order], fmt)
    assert all(ordinals[i] == ordinals[i + 1] or (ordinals[i], ordinals[i + 1]) == (-1, 0) for i in tied)


@pytest.mark.parametrize("fmt", [f for f in ALL_FORMATS if f.width <= 16], ids=lambda f: f.name)
def test_neighbours_are_one_ulp_apart_exhaustively(fmt: FloatFormat) -> None:
    pattern = patterns(fmt)
    pattern = pattern[~bits.is_nan(pattern, fmt)]
    ordered = pattern[np.argsort(bits.ordinal(pattern, fmt).astype(np.int64))]
    distances = bits.ulp_distance(ordered[:-1], ordered[1:], fmt)
    assert (distances == 1).all()
    assert int(bits.ulp_distance(ordered[0], ordered[-1], fmt)) == len(ordered) - 1


@pytest.mark.parametrize("fmt", [f for f in ALL_FORMATS if f.has_negative_zero], ids=lambda f: f.name)
def test_signed_zeros_are_one_ulp_apart(fmt: FloatFormat) -> None:
    assert int(bits.ulp_distance(0, fmt.sign_mask, fmt)) == 1
    assert int(bits.ulp_distance(fmt.sign_mask | 1, 1, fmt)) == 3  # -tiny, -0, +0, +tiny


@pytest.mark.parametrize("fmt", [f for f in ALL_FORMATS if not f.has_negative_zero], ids=lambda f: f.name)
def test_without_negative_zero_the_tiniest_values_are_two_ulps_apart(fmt: FloatFormat) -> None:
    # docs/spec.md D1.11: -tiny, +0, +tiny; the pattern of -0 is the NaN, outside the order.
    assert int(bits.ulp_distance(fmt.sign_mask | 1, 1, fmt)) == 2
    assert int(bits.ulp_distance(fmt.sign_mask | 1, 0, fmt)) == int(bits.ulp_distance(0, 1, fmt)) == 1
    assert int(bits.ulp_distance(fmt.sign_mask, 0, fmt)) == -1


@by_name
def test_ulp_distance_landmarks(fmt: FloatFormat) -> None:
    assert int(bits.ulp_distance(fmt.one, fmt.one + 1, fmt)) == 1
    assert int(bits.ulp_distance(fmt.max_subnormal, fmt.min_normal, fmt)) == 1
    if fmt.inf is not None:
        assert int(bits.ulp_distance(fmt.max_finite, fmt.inf, fmt)) == 1
    if fmt.has_nan:
        assert int(bits.ulp_distance(fmt.canonical_nan, fmt.one, fmt)) == -1
        assert int(bits.ulp_distance(fmt.canonical_nan, fmt.canonical_nan, fmt)) == -1


def test_fp64_distances_do_not_wrap() -> None:
    fmt = formats.get("fp64")
    lowest = np.array([fmt.sign_mask | fmt.max_finite], fmt.uint_dtype)
    full_range = int(bits.ulp_distance(lowest, np.array([fmt.max_finite], fmt.uint_dtype), fmt)[0])
    assert full_range == 2 * fmt.max_finite + 1 > 2**63


def test_fp64_scalar_distances_do_not_wrap() -> None:
    fmt = formats.get("fp64")
    assert (
        int(bits.ulp_distance(fmt.sign_mask | fmt.max_finite, fmt.max_finite, fmt)) == 2 * fmt.max_finite + 1
    )


@pytest.mark.parametrize("fmt", NUMPY_FORMATS, ids=lambda f: f.name)
def test_ulp_distance_agrees_with_nextafter(fmt: FloatFormat) -> None:
    assert fmt.numpy_float is not None
    values = bits.from_bits(patterns(fmt), fmt)
    values = values[np.isfinite(values) & (np.abs(values) < np.finfo(fmt.numpy_float).max)]
    up = np.nextafter(values, np.array(np.inf, dtype=fmt.numpy_float))
    distances = bits.ulp_distance(bits.to_bits(values), bits.to_bits(up), fmt)
    # nextafter steps from -0 to +tiny, skipping +0, which our order counts as a value of its own.
    expected = np.where((values == 0) & np.signbit(values), 2, 1)
    np.testing.assert_array_equal(distances.astype(np.int64), expected)


# ---- text ----------------------------------------------------------------------------


def test_describe_shows_decimal_hex_and_hexfloat() -> None:
    assert bits.describe(0x3F81, "bf16") == "1.0078125 [0x3F81 +7F.01]"
    assert bits.describe(0x8000, "bf16") == "-0.0 [0x8000 -00.00]"
    assert bits.describe(0x7E, "fp8_e4m3fn") == "448.0 [0x7E +F.6]"


@by_name
def test_ulp_distance_across_the_whole_range_is_an_exact_python_int(fmt: FloatFormat) -> None:
    # Narrow formats take an int64 path, fp64 Python ints: both must give the exact count.
    top = fmt.inf if fmt.inf is not None else fmt.max_finite
    distance = bits.ulp_distance(
        np.array([fmt.sign_mask | top], fmt.uint_dtype), np.array([top], fmt.uint_dtype), fmt
    )
    assert distance.dtype == object and isinstance(distance[0], int)
    # -top ... -0, +0 ... +top; without -0 one fewer (docs/spec.md D1.11).
    assert distance[0] == 2 * top + (1 if fmt.has_negative_zero else 0)


def test_to_bits_refuses_sparse_and_meta_tensors_with_advice() -> None:
    with pytest.raises(TypeError, match=r"to_dense\(\)"):
        bits.to_bits(torch.tensor([1.0, 0.0]).to_sparse())
    with pytest.raises(ValueError, match="meta device"):
        bits.to_bits(torch.empty(2, device="meta"))
