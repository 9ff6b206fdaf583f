"""revcheck.formats: lookups, errors, and the encodings derived from fields, checked against torch/NumPy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from revcheck import bits, formats
from revcheck.formats import FloatFormat, UnsupportedFormatError

ALL_FORMATS = [formats.get(name) for name in formats.names()]
by_name = pytest.mark.parametrize("fmt", ALL_FORMATS, ids=lambda f: f.name)
# The formats torch has a dtype of; the others (fp6, fp4) are checked against ml_dtypes in tests/mldtypes/.
TORCH_FORMATS = [fmt for fmt in ALL_FORMATS if fmt.torch_dtype_name is not None]
by_torch_format = pytest.mark.parametrize("fmt", TORCH_FORMATS, ids=lambda f: f.name)

# docs/spec.md §1, copied by hand: the table is the authority, the fields must reproduce it.
SPEC_TABLE = {
    "fp64": ("float64", 11, 52, 1023, 0x3FF0000000000000, True),
    "fp32": ("float32", 8, 23, 127, 0x3F800000, True),
    "fp16": ("float16", 5, 10, 15, 0x3C00, True),
    "bf16": ("bfloat16", 8, 7, 127, 0x3F80, True),
    "fp8_e5m2": ("float8_e5m2", 5, 2, 15, 0x3C, True),
    "fp8_e4m3fn": ("float8_e4m3fn", 4, 3, 7, 0x38, False),
    "fp8_e5m2fnuz": ("float8_e5m2fnuz", 5, 2, 16, 0x40, False),
    "fp8_e4m3fnuz": ("float8_e4m3fnuz", 4, 3, 8, 0x40, False),
    "fp6_e3m2fn": (None, 3, 2, 3, 0x0C, False),
    "fp6_e2m3fn": (None, 2, 3, 1, 0x08, False),
    "fp4_e2m1fn": (None, 2, 1, 1, 0x2, False),
}


def torch_dtype(fmt: FloatFormat) -> torch.dtype:
    assert fmt.torch_dtype_name is not None, f"{fmt.name} has no torch dtype"
    return bits.torch_dtype(fmt)


def torch_bits(value: float, fmt: FloatFormat) -> int:
    """The pattern torch stores for ``value`` in ``fmt`` (exact for the values used here)."""
    int_view = torch.tensor([value], dtype=torch_dtype(fmt)).view(getattr(torch, fmt.int_dtype.name))
    return int(int_view.item()) & ((1 << fmt.width) - 1)


def torch_value(pattern: int, fmt: FloatFormat) -> float:
    signed = pattern - (1 << fmt.width) if pattern >> (fmt.width - 1) else pattern
    as_int = torch.tensor([signed], dtype=getattr(torch, fmt.int_dtype.name))
    return float(as_int.view(torch_dtype(fmt)).to(torch.float64).item())


def test_spec_table_covers_exactly_the_supported_formats() -> None:
    assert set(SPEC_TABLE) == set(formats.names())


@by_name
def test_fields_match_the_spec_table(fmt: FloatFormat) -> None:
    dtype_name, exponent_bits, mantissa_bits, bias, one, has_inf = SPEC_TABLE[fmt.name]
    assert (fmt.torch_dtype_name, fmt.exponent_bits, fmt.mantissa_bits, fmt.bias) == (
        dtype_name,
        exponent_bits,
        mantissa_bits,
        bias,
    )
    assert fmt.one == one, f"{fmt.name}: 1.0 is {fmt.one:#x}, docs/spec.md §1 says {one:#x}"
    assert fmt.has_inf == has_inf and fmt.saturates == (not has_inf)


# ---- lookups ---------------------------------------------------------------------------


@by_name
def test_lookup_by_name_aliases_and_dtypes(fmt: FloatFormat) -> None:
    assert formats.get(fmt.name) is fmt
    assert formats.get(fmt) is fmt
    for alias in fmt.aliases:
        assert formats.get(alias) is fmt, alias
    if fmt.torch_dtype_name is None:
        return
    assert formats.get(torch_dtype(fmt)) is fmt
    assert formats.get(f"torch.{fmt.torch_dtype_name}") is fmt
    if fmt.numpy_float is not None:
        assert formats.get(fmt.numpy_float) is fmt
        assert formats.get(fmt.numpy_float.type) is fmt  # np.float32 the type, not the dtype


def test_names_are_widest_first() -> None:
    widths = [formats.get(name).width for name in formats.names()]
    assert widths == sorted(widths, reverse=True)


@pytest.mark.parametrize("bad", ["bf8", "float128", "", 3.0, torch.int16, torch.complex64])
def test_unsupported_format_names_the_supported_ones(bad: object) -> None:
    with pytest.raises(UnsupportedFormatError, match="supported formats are fp64, fp32, fp16, bf16"):
        formats.get(bad)


@pytest.mark.parametrize("integer_dtype", [np.uint16, np.dtype("int32")])
def test_integer_dtype_is_explained(integer_dtype: object) -> None:
    with pytest.raises(UnsupportedFormatError, match=r"integer dtype, not a float format.*pass the format"):
        formats.get(integer_dtype)


def test_unsupported_format_error_is_a_value_error() -> None:
    assert issubclass(UnsupportedFormatError, ValueError)


# ---- derived encodings agree with torch and NumPy ----------------------------------


@by_torch_format
def test_widths_and_containers(fmt: FloatFormat) -> None:
    assert fmt.width == torch.finfo(torch_dtype(fmt)).bits
    assert fmt.uint_dtype.itemsize * 8 == fmt.width and fmt.uint_dtype.kind == "u"
    assert fmt.int_dtype.itemsize * 8 == fmt.width and fmt.int_dtype.kind == "i"
    assert fmt.sign_mask | fmt.exponent_mask | fmt.mantissa_mask == (1 << fmt.width) - 1


@pytest.mark.parametrize("fmt", [f for f in ALL_FORMATS if f.padding_bits], ids=lambda f: f.name)
def test_sub_byte_formats_sit_in_the_low_bits_of_a_uint8(fmt: FloatFormat) -> None:
    assert fmt.uint_dtype == np.uint8 and fmt.int_dtype == np.int8 and fmt.container_width == 8
    assert fmt.padding_bits == 8 - fmt.width and fmt.pattern_mask == (1 << fmt.width) - 1
    assert fmt.sign_mask | fmt.exponent_mask | fmt.mantissa_mask == fmt.pattern_mask


# torch.finfo facts that are wrong (torch 2.13.0+cpu, docs/spec.md D1.7): (field, torch's value).
TORCH_FINFO_ERRORS = {"fp8_e5m2fnuz": ("eps", 0.125)}


@by_torch_format
def test_encodings_match_torch_finfo(fmt: FloatFormat) -> None:
    info = torch.finfo(torch_dtype(fmt))
    assert torch_bits(info.max, fmt) == fmt.max_finite
    assert torch_bits(-info.max, fmt) == fmt.sign_mask | fmt.max_finite
    assert torch_bits(info.smallest_normal, fmt) == fmt.min_normal
    assert torch_bits(info.tiny, fmt) == fmt.min_normal
    assert torch_bits(1.0, fmt) == fmt.one
    eps = torch_value(fmt.one + 1, fmt) - 1.0
    assert eps == 2.0**-fmt.mantissa_bits
    field, wrong = TORCH_FINFO_ERRORS.get(fmt.name, ("eps", eps))
    assert getattr(info, field) == wrong, (
        f"torch.finfo({fmt.name}).{field} changed: update TORCH_FINFO_ERRORS"
    )


@by_torch_format
def test_exponent_range_and_subnormals_match_torch(fmt: FloatFormat) -> None:
    info = torch.finfo(torch_dtype(fmt))
    assert torch_value(fmt.min_normal, fmt) == 2.0**fmt.emin == info.smallest_normal
    assert torch_value(fmt.min_subnormal, fmt) == 2.0 ** (fmt.emin - fmt.mantissa_bits)
    assert torch_value(fmt.max_subnormal, fmt) == info.smallest_normal - 2.0 ** (fmt.emin - fmt.mantissa_bits)
    assert 2**fmt.emax <= int(info.max) < 2 ** (fmt.emax + 1)


@by_torch_format
def test_specials_match_torch(fmt: FloatFormat) -> None:
    # torch's own NaN is a positive NaN of the format, but not always the canonical one of docs/spec.md §1
    # (float -> float8_e5m2 gives 0x7F, the spec says 0x7E): compare NaN classes, not NaN bits.
    assert np.isnan(torch_value(fmt.canonical_nan, fmt))
    assert np.isnan(torch_value(torch_bits(float("nan"), fmt), fmt))
    # fnuz: the one NaN is 0x80, the pattern of -0 (docs/spec.md D1.7); -0.0 becomes +0.
    assert torch_bits(float("nan"), fmt) >> (fmt.width - 1) == (0 if fmt.has_negative_zero else 1)
    assert torch_bits(0.0, fmt) == 0
    assert torch_bits(-0.0, fmt) == (fmt.sign_mask if fmt.has_negative_zero else 0)
    if fmt.has_inf:
        assert fmt.inf is not None
        assert torch_bits(float("inf"), fmt) == fmt.inf == fmt.overflow_magnitude
        assert torch_bits(float("-inf"), fmt) == fmt.sign_mask | fmt.inf
    else:
        assert fmt.inf is None and fmt.overflow_magnitude == fmt.max_finite


@by_torch_format
def test_nan_pattern_count_matches_torch_isnan(fmt: FloatFormat) -> None:
    if fmt.width > 16:
        pytest.skip("counted exhaustively only for formats of at most 16 bits")
    signed = torch.arange(
        -(1 << (fmt.width - 1)), 1 << (fmt.width - 1), dtype=getattr(torch, fmt.int_dtype.name)
    )
    assert int(torch.isnan(signed.view(torch_dtype(fmt))).sum()) == fmt.nan_patterns_count()


@pytest.mark.parametrize("fmt", [f for f in ALL_FORMATS if f.numpy_float is not None], ids=lambda f: f.name)
def test_encodings_match_numpy_finfo(fmt: FloatFormat) -> None:
    assert fmt.numpy_float is not None
    info = np.finfo(fmt.numpy_float)
    as_bits = np.array([info.max, info.smallest_normal, info.smallest_subnormal], dtype=fmt.numpy_float)
    assert [int(b) for b in as_bits.view(fmt.uint_dtype)] == [
        fmt.max_finite,
        fmt.min_normal,
        fmt.min_subnormal,
    ]
    assert (fmt.mantissa_bits, fmt.emin, fmt.emax) == (info.nmant, info.minexp, info.maxexp - 1)


@pytest.mark.parametrize("fmt", [f for f in ALL_FORMATS if f.has_inf], ids=lambda f: f.name)
def test_canonical_nan_is_the_quiet_nan_of_the_spec(fmt: FloatFormat) -> None:
    quiet_bit = 1 << (fmt.mantissa_bits - 1)
    assert fmt.canonical_nan == fmt.exponent_mask | quiet_bit


def test_e4m3fn_saturating_format() -> None:
    fmt = formats.get("fp8_e4m3fn")
    assert (fmt.max_finite, fmt.canonical_nan, fmt.emax) == (0x7E, 0x7F, 8)
    assert torch_value(fmt.max_finite, fmt) == 448.0
    assert fmt.nan_patterns_count() == 2


# ---- the accumulator format (docs/spec.md §2): one definition, derived from the fields ----------------


def test_accumulator_formats_are_those_of_the_spec() -> None:
    expected = {"fp64": "fp64", "fp32": "fp32", "fp16": "fp32", "bf16": "fp32"}
    expected |= {"fp8_e5m2": "fp32", "fp8_e4m3fn": "fp32", "fp8_e5m2fnuz": "fp32", "fp8_e4m3fnuz": "fp32"}
    expected |= {"fp6_e3m2fn": "fp32", "fp6_e2m3fn": "fp32", "fp4_e2m1fn": "fp32"}
    assert {name: formats.accumulator_format(name).name for name in formats.names()} == expected


@by_torch_format
def test_accumulator_holds_every_value_exactly(fmt: FloatFormat) -> None:
    accumulator = formats.accumulator_format(fmt)
    assert accumulator.holds_exactly(fmt) and accumulator.holds_exactly(accumulator)
    finfo, acc_finfo = (
        torch.finfo(bits.torch_dtype(fmt)),
        torch.finfo(bits.torch_dtype(accumulator)),
    )
    assert acc_finfo.max >= finfo.max and acc_finfo.smallest_normal * acc_finfo.eps <= finfo.tiny * finfo.eps


def test_holds_exactly_needs_precision_range_and_infinities() -> None:
    fp32, fp16, bf16, e4m3 = (formats.get(n) for n in ("fp32", "fp16", "bf16", "fp8_e4m3fn"))
    assert not fp16.holds_exactly(bf16)  # too few exponent bits
    assert not bf16.holds_exactly(fp16)  # too few significand bits
    assert not e4m3.holds_exactly(formats.get("fp8_e5m2"))  # no infinity, smaller range
    assert fp32.holds_exactly(e4m3)
    # Same fields as fp8_e5m2 but no infinity (a larger range instead): it cannot hold e5m2's inf.
    e5m2fn = FloatFormat("e5m2fn", 5, 2, 15, "fn", "float8_e5m2fnuz", None)
    assert e5m2fn.emax > formats.get("fp8_e5m2").emax and not e5m2fn.holds_exactly(formats.get("fp8_e5m2"))


def test_a_new_format_gets_its_accumulator_from_its_fields() -> None:
    # A 40-bit format (8 exponent bits, 31 significand bits) does not fit fp32: fp64 everywhere.
    fp40 = FloatFormat("fp40", 8, 31, 127, "ieee", "float40", None)
    assert formats.accumulator_format(fp40).name == "fp64"
    wide = FloatFormat("fp80", 15, 64, 16383, "ieee", "float80", None)
    with pytest.raises(UnsupportedFormatError, match="add a wider format to ACCUMULATOR_FORMATS"):
        formats.accumulator_format(wide)


def test_every_layer_uses_the_one_accumulator_definition() -> None:
    from revcheck.exact import pam as exact
    from revcheck.kernels import pam as kernels
    from revcheck.oracle import pam as oracle

    assert oracle.accumulator_format is formats.accumulator_format
    assert exact.accumulator_format is formats.accumulator_format
    for fmt in TORCH_FORMATS:
        dtype = torch_dtype(fmt)
        assert formats.get(kernels.accumulator_dtype(dtype)) is formats.accumulator_format(fmt)
