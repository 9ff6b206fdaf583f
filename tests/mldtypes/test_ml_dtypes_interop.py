"""ml_dtypes interop: its dtypes name formats, its arrays are bit views like tensors, its casts agree.

ml_dtypes is optional (``pip install 'revcheck[ml_dtypes]'``): without it this
module is skipped with the reason.  What is checked:

- ``formats.get`` takes ml_dtypes' dtypes and scalar types, and ml_dtypes'
  ``finfo`` agrees with every format's fields (the fnuz biases 8 and 16 included);
- ``bits.to_bits`` / ``from_bits`` / ``classify``, ``assert_bit_exact`` and the
  strategies take and give ml_dtypes arrays exactly as torch tensors;
- ml_dtypes' cast of every value on and between the grid points of each format
  of at most 16 bits (each pattern, the ties and quarter points around it, one
  float64 step beside each tie) agrees with revcheck's rounding, reconciled as
  docs/spec.md D1.13 says (``properties/mldtypes/`` draws the rest).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import find, given, settings
from hypothesis import strategies as st

ml_dtypes = pytest.importorskip(
    "ml_dtypes", reason="ml_dtypes is not installed (pip install 'revcheck[ml_dtypes]')"
)

from properties.mldtypes.test_ml_dtypes_rounding import reconciled, reference_cast  # noqa: E402
from revcheck import bits, formats  # noqa: E402
from revcheck import strategies as rst  # noqa: E402
from revcheck.exact import rounding as exact  # noqa: E402
from revcheck.formats import FloatFormat  # noqa: E402
from revcheck.oracle import rounding  # noqa: E402
from revcheck.testing import BitMismatchError, assert_bit_exact  # noqa: E402

ML_FORMATS = [f for f in map(formats.get, formats.names()) if f.ml_dtypes_name is not None]
by_ml_format = pytest.mark.parametrize("fmt", ML_FORMATS, ids=lambda f: f.name)
FP64 = formats.get("fp64")


def ml_dtype(fmt: FloatFormat) -> np.dtype[Any]:
    assert fmt.ml_dtypes_name is not None
    return np.dtype(getattr(ml_dtypes, fmt.ml_dtypes_name))


def every_pattern(fmt: FloatFormat) -> np.ndarray[Any, Any]:
    return np.arange(1 << min(fmt.width, 16), dtype=np.uint64).astype(fmt.uint_dtype)


@by_ml_format
def test_formats_get_takes_ml_dtypes_dtypes_and_types(fmt: FloatFormat) -> None:
    dtype = ml_dtype(fmt)
    assert formats.get(dtype) is fmt and formats.get(dtype.type) is fmt
    assert bits.numpy_dtype(fmt) == dtype and bits.format_of(np.zeros(2, dtype)) is fmt


def test_ml_dtypes_formats_revcheck_lacks_are_refused() -> None:
    with pytest.raises(formats.UnsupportedFormatError, match="supported formats are fp64"):
        formats.get(ml_dtypes.float8_e4m3b11fnuz)


@by_ml_format
def test_ml_dtypes_finfo_agrees_with_the_fields(fmt: FloatFormat) -> None:
    info = ml_dtypes.finfo(ml_dtype(fmt))
    assert (info.bits, info.nexp, info.nmant) == (fmt.width, fmt.exponent_bits, fmt.mantissa_bits)
    assert (info.minexp, info.maxexp - 1) == (fmt.emin, fmt.emax)  # the fnuz biases: emin -7 and -15
    assert float(info.max) == float(exact.value_of(fmt.max_finite, fmt))
    assert float(info.smallest_normal) == 2.0**fmt.emin
    assert float(info.smallest_subnormal) == float(exact.value_of(fmt.min_subnormal, fmt))
    assert float(info.eps) == 2.0**-fmt.mantissa_bits


@by_ml_format
def test_classification_and_values_agree_with_ml_dtypes_on_every_pattern(fmt: FloatFormat) -> None:
    patterns = every_pattern(fmt)
    with np.errstate(invalid="ignore"):
        values = patterns.view(ml_dtype(fmt)).astype(np.float64)
    np.testing.assert_array_equal(bits.is_nan(patterns, fmt), np.isnan(values))
    np.testing.assert_array_equal(bits.is_inf(patterns, fmt), np.isinf(values))
    np.testing.assert_array_equal(bits.is_zero(patterns, fmt), values == 0)
    np.testing.assert_array_equal(
        bits.sign_bit(patterns, fmt) & ~np.isnan(values), np.signbit(values) & ~np.isnan(values)
    )
    ours = [exact.value_of(int(p), fmt) for p in patterns.tolist()]
    assert all(
        (math.isnan(v) and isinstance(o, float) and math.isnan(o)) or float(o) == v
        for o, v in zip(ours, values.tolist(), strict=True)
    )


@by_ml_format
def test_bit_views_round_trip_through_ml_dtypes_arrays(fmt: FloatFormat) -> None:
    patterns = np.resize(every_pattern(fmt), 6 * 40)
    array = bits.from_bits(patterns, fmt)
    assert array.dtype == ml_dtype(fmt) and np.shares_memory(array, patterns)
    np.testing.assert_array_equal(bits.to_bits(array), patterns)
    strided = array.reshape(6, 40).T[::3]
    np.testing.assert_array_equal(bits.to_bits(strided), patterns.reshape(6, 40).T[::3])
    scalar = array[5]  # an ml_dtypes scalar
    assert bits.to_bits(scalar).shape == () and int(bits.to_bits(scalar)) == int(patterns[5])


def test_ml_dtypes_and_torch_bf16_with_the_same_bits_are_bit_exact() -> None:
    values = [1.0, -0.0, float("nan"), 3.5, float("-inf"), 1e-40]
    ml = np.array(values, dtype=ml_dtypes.bfloat16)
    tensor = torch.tensor(values, dtype=torch.bfloat16)
    assert_bit_exact(ml, tensor)
    assert_bit_exact(tensor, ml, nan="bits")
    assert_bit_exact(ml, bits.to_bits(tensor), fmt="bf16")
    with pytest.raises(BitMismatchError, match=r"1 / 6 elements differ[\s\S]*-0.0 \[0x8000"):
        assert_bit_exact(ml, tensor.abs().where(tensor == 0, tensor))
    with pytest.raises(BitMismatchError, match=r"formats \(dtypes\) differ"):
        assert_bit_exact(ml, tensor.to(torch.float16))


def test_fnuz_and_fp4_arrays_compare_with_kernels_outputs() -> None:
    fnuz = np.array([1.0, -2.0, 0.0], dtype=ml_dtypes.float8_e4m3fnuz)
    assert_bit_exact(fnuz, torch.tensor([1.0, -2.0, 0.0]).to(torch.float8_e4m3fnuz))
    fp4 = np.array([0.5, -6.0, -0.0], dtype=ml_dtypes.float4_e2m1fn)
    assert_bit_exact(fp4, torch.tensor([0x1, 0xF, 0x8], dtype=torch.uint8), fmt="fp4_e2m1fn")


def test_ml_dtypes_arrays_with_padding_bits_are_refused() -> None:
    # ml_dtypes reads 0x3F as fp4 -6 (it ignores the high nibble); revcheck does not guess (D1.9).
    array = np.array([0x3F], dtype=np.uint8).view(ml_dtypes.float4_e2m1fn)
    assert float(array.astype(np.float32)[0]) == -6.0
    with pytest.raises(ValueError, match=r"mask them with & 0xf"):
        bits.to_bits(array)


@settings(max_examples=60, database=None)
@given(data=st.data())
def test_float_arrays_strategy_gives_ml_dtypes_arrays_of_the_drawn_bits(data: st.DataObject) -> None:
    fmt = data.draw(rst.formats(names=[f.name for f in ML_FORMATS]), label="fmt")
    sign = data.draw(st.sampled_from(rst.SIGNS), label="sign")
    chosen = data.draw(st.sampled_from(rst.format_classes(fmt, sign)), label="class")
    array = data.draw(rst.float_arrays(fmt, (2, 3), classes=(chosen,), sign=sign), label="array")
    assert array.dtype == ml_dtype(fmt) and array.shape == (2, 3)
    assert (bits.classify(bits.to_bits(array), fmt) == chosen).all()


def test_float_arrays_reach_the_fnuz_nan_and_numpy_formats_get_numpy_dtypes() -> None:
    nan = find(rst.float_arrays("fp8_e5m2fnuz", 3), lambda a: bool(np.isnan(a.astype(np.float32)).any()))
    assert 0x80 in bits.to_bits(nan).tolist()
    assert find(rst.float_arrays("fp16", 2), lambda a: True).dtype == np.float16


def test_strategies_and_asserts_take_ml_dtypes_dtypes_as_formats() -> None:
    pattern = find(rst.bit_patterns(ml_dtypes.bfloat16, classes=("normal",)), lambda b: True)
    assert pattern == 0x3F80
    assert_bit_exact(np.array([1.0], ml_dtypes.bfloat16), [0x3F80], fmt=ml_dtypes.bfloat16)


# ---- ml_dtypes' casts on every grid point and tie (docs/spec.md D1.13) ---------------------------


def grid_and_ties(fmt: FloatFormat) -> np.ndarray[Any, Any]:
    """float64 bit patterns: every finite value of fmt, and k/4 ULP around it (k = ±1, ±2, ±3), and a float64
    step beside each tie.  Ties of fp32/fp16/bf16 and everything narrower are exact in float64."""
    patterns = every_pattern(fmt)
    patterns = patterns[~bits.is_nan(patterns, fmt) & ~bits.is_inf(patterns, fmt)]
    values = np.array([float(exact.value_of(int(p), fmt)) for p in patterns.tolist()])
    exponents = np.maximum(np.floor(np.log2(np.abs(np.where(values == 0, 1.0, values)))), fmt.emin)
    exponents = np.where(values == 0, fmt.emin, exponents)
    ulp = np.exp2(exponents - fmt.mantissa_bits)
    around = [values + k * ulp / 4 for k in (-3, -2, -1, 1, 2, 3)]
    ties = [values + ulp / 2, values - ulp / 2]
    beside = [np.nextafter(t, np.inf) for t in ties] + [np.nextafter(t, -np.inf) for t in ties]
    everything = np.concatenate([values, *around, *beside, [np.inf, -np.inf, 0.0, -0.0]])
    return bits.to_bits(everything)


@pytest.mark.parametrize("fmt", [f for f in ML_FORMATS if f.width <= 16], ids=lambda f: f.name)
def test_casts_agree_with_ml_dtypes_on_every_grid_point_and_tie(fmt: FloatFormat) -> None:
    x_bits = grid_and_ties(fmt)
    ours = rounding.convert(x_bits, FP64, fmt)
    expected = reconciled(x_bits.view(np.float64), reference_cast(x_bits, fmt), fmt)
    assert_bit_exact(ours, expected, fmt=fmt, nan="bits", msg=f"float64 -> {fmt.name} on grid and ties")


def test_measured_ml_dtypes_behaviour_recorded_in_the_spec() -> None:
    """docs/spec.md D1.13, measured with ml_dtypes 0.5+: where ml_dtypes' casts differ from revcheck's."""

    def cast(values: list[float], name: str) -> list[int]:
        with np.errstate(over="ignore", invalid="ignore"):
            return np.array(values, np.float64).astype(ml_dtype(formats.get(name))).view(np.uint8).tolist()

    assert cast([1e6, -1e6, np.inf, 465.0, 464.0], "fp8_e4m3fn") == [0x7F, 0xFF, 0x7F, 0x7F, 0x7E]
    assert cast([1e6, -np.inf, np.nan, -0.0, 248.0], "fp8_e4m3fnuz") == [0x80, 0x80, 0x80, 0x00, 0x80]
    assert cast([1e6, -np.inf, 7.0], "fp4_e2m1fn") == [0x7, 0xF, 0x7]
    assert cast([np.nan], "fp4_e2m1fn")[0] & 0x7 == 0  # a zero, of some sign
