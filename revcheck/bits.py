"""Exact bit views of float arrays, classification, ULP distance and text.

Functions here take NumPy arrays (of NumPy's float dtypes or of ml_dtypes'
``bfloat16``, ``float8_*``, ``float6_*``, ``float4_*``) or torch tensors and
never route values through another float type: a bit view is a
reinterpretation of memory.  torch and ml_dtypes are imported lazily, so the
NumPy oracle can use this module without either.

Formats narrower than a byte (fp6, fp4) keep one pattern in the low bits of a
``uint8``; a pattern with a high (padding) bit set is refused with a
``ValueError`` wherever patterns come in (docs/spec.md D1.9).  Formats without a
torch dtype travel in torch as ``uint8`` tensors of bit patterns (D1.10).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from revcheck import formats
from revcheck.formats import FloatFormat

if TYPE_CHECKING:
    import torch

__all__ = [
    "check_readable",
    "classify",
    "decimal_text",
    "describe",
    "format_of",
    "from_bits",
    "hexfloat",
    "is_finite",
    "is_inf",
    "is_nan",
    "is_normal",
    "is_subnormal",
    "is_zero",
    "numpy_dtype",
    "ordinal",
    "sign_bit",
    "to_bits",
    "to_fraction",
    "to_torch",
    "torch_dtype",
    "ulp_distance",
]

UIntArray = npt.NDArray[np.unsignedinteger[Any]]


def _is_torch_tensor(obj: object) -> bool:
    return type(obj).__module__.startswith("torch") and hasattr(obj, "untyped_storage")


def check_readable(tensor: Any, role: str = "the tensor") -> None:
    """Raise unless ``tensor``'s elements can be read as bit patterns: dense (strided) and holding data.

    A sparse tensor (or another layout) is a ``TypeError`` that says to densify it; a tensor
    on the ``meta`` device has a shape but no values, a ``ValueError``.
    """
    import torch

    if tensor.layout != torch.strided:
        raise TypeError(
            f"{role} has layout {tensor.layout}; bit patterns are read from dense tensors: pass "
            f"t.to_dense() (a sparse tensor's zeros are then compared too)"
        )
    if tensor.device.type == "meta":
        raise ValueError(
            f"{role} is on the meta device, which holds shapes but no values; run the computation on a "
            "device with data (cpu, cuda) to compare bits"
        )


def format_of(x: object) -> FloatFormat:
    """The format of a NumPy (or ml_dtypes) float array/scalar or a torch float tensor."""
    if _is_torch_tensor(x):
        return formats.get(x.dtype)  # type: ignore[attr-defined]
    return formats.get(np.asarray(x).dtype)


def is_float_array(array: np.ndarray[Any, Any]) -> bool:
    """Whether ``array`` holds float values: a NumPy float dtype or an ml_dtypes float dtype."""
    return array.dtype.kind == "f" or formats._is_ml_dtypes_dtype(array.dtype)


def numpy_dtype(fmt: object) -> np.dtype[Any]:
    """The NumPy dtype whose values are ``fmt``'s: NumPy's own (fp64, fp32, fp16), else ml_dtypes'.

    Raises
    ------
    TypeError
        If ml_dtypes has no such dtype, or is not installed (``pip install 'revcheck[ml_dtypes]'``).

    Examples
    --------
    >>> numpy_dtype("fp16"), numpy_dtype("bf16")
    (dtype('float16'), dtype(bfloat16))
    """
    fmt_ = formats.get(fmt)
    if fmt_.numpy_float is not None:
        return fmt_.numpy_float
    if fmt_.ml_dtypes_name is None:
        raise TypeError(f"neither NumPy nor ml_dtypes has a {fmt_.name} dtype; keep the bit patterns")
    try:
        import ml_dtypes
    except ModuleNotFoundError:
        raise TypeError(
            f"NumPy has no {fmt_.name} dtype and ml_dtypes, which has one, is not installed: "
            f"pip install 'revcheck[ml_dtypes]', keep the uint{fmt_.container_width} bit patterns, or "
            f"use revcheck.bits.to_torch(bits, {fmt_.name!r})"
        ) from None
    return np.dtype(getattr(ml_dtypes, fmt_.ml_dtypes_name))


def to_bits(x: object, fmt: object = None) -> UIntArray:
    """Bit patterns of ``x`` as a NumPy unsigned-integer array (a copy for tensors).

    ``x`` may be a NumPy float array or scalar (ml_dtypes' dtypes included), a
    torch tensor on any device (contiguous or not), or an unsigned array or
    tensor that already holds bit patterns of ``fmt``.  The result has ``x``'s
    shape and dtype ``fmt.uint_dtype`` (``uint8/16/32/64``).

    Raises
    ------
    TypeError
        For unsigned patterns without ``fmt``, or a float side whose format is not ``fmt``.
    ValueError
        For patterns of a format narrower than its container with a high bit set.

    Examples
    --------
    >>> import ml_dtypes, numpy as np
    >>> to_bits(np.array([1.0, -2.0], dtype=ml_dtypes.bfloat16))
    array([16256, 49152], dtype=uint16)
    """
    if _is_torch_tensor(x):
        tensor: torch.Tensor = x  # type: ignore[assignment]
        import torch

        check_readable(tensor)
        if not (tensor.is_floating_point() or tensor.is_complex()) and str(tensor.dtype).startswith(
            "torch.uint"
        ):
            return to_bits(tensor.detach().cpu().contiguous().numpy(), fmt)
        fmt_ = formats.get(tensor.dtype)
        if fmt is not None and formats.get(fmt) is not fmt_:
            raise TypeError(f"tensor has dtype {tensor.dtype} but fmt={formats.get(fmt).name} was given")
        int_view = tensor.detach().contiguous().view(getattr(torch, fmt_.int_dtype.name))
        return int_view.cpu().numpy().view(fmt_.uint_dtype)
    array = np.asarray(x)
    if array.dtype.kind == "u":
        if fmt is None:
            raise TypeError(
                "to_bits got unsigned integers without a format; pass fmt=... to say "
                "which format these bit patterns encode"
            )
        fmt_ = formats.get(fmt)
        if array.dtype != fmt_.uint_dtype:
            raise TypeError(f"{fmt_.name} bit patterns must be {fmt_.uint_dtype}, got {array.dtype}")
        return _as_pattern_array(array, fmt_)
    fmt_ = formats.get(array.dtype)
    if fmt is not None and formats.get(fmt) is not fmt_:
        raise TypeError(f"array has dtype {array.dtype} but fmt={formats.get(fmt).name} was given")
    # ascontiguousarray would turn a 0-d array into shape (1,); keep the shape.
    return _as_pattern_array(np.ascontiguousarray(array).view(fmt_.uint_dtype).reshape(array.shape), fmt_)


def from_bits(bits: npt.ArrayLike, fmt: object) -> np.ndarray[Any, Any]:
    """NumPy float array with the given bit patterns, of dtype :func:`numpy_dtype` ``(fmt)``.

    NumPy's own dtype for fp64, fp32 and fp16; ml_dtypes' for bf16, the fp8, fp6
    and fp4 formats (``pip install 'revcheck[ml_dtypes]'``).  No value is
    converted: the result's memory holds exactly ``bits``.

    Raises
    ------
    TypeError
        Where no NumPy dtype holds ``fmt`` (ml_dtypes missing): keep the bit
        patterns, or use :func:`to_torch`.

    Examples
    --------
    >>> values = from_bits([0x3F80, 0xC000], "bf16")
    >>> values.dtype.name, values.astype(float).tolist()
    ('bfloat16', [1.0, -2.0])
    >>> from_bits([0x7, 0xF], "fp4_e2m1fn").astype(float).tolist()
    [6.0, -6.0]
    """
    fmt_ = formats.get(fmt)
    array = _as_pattern_array(bits, fmt_)
    return array.view(numpy_dtype(fmt_))


def torch_dtype(fmt: object) -> torch.dtype:
    """The torch dtype of ``fmt``'s values.

    Raises
    ------
    TypeError
        For a format torch has no dtype of (fp6, fp4): torch code carries those as
        ``uint8`` bit patterns with ``fmt=`` (:func:`to_torch`, docs/spec.md D1.10).

    >>> torch_dtype("fp8_e4m3fnuz")
    torch.float8_e4m3fnuz
    """
    import torch

    fmt_ = formats.get(fmt)
    if fmt_.torch_dtype_name is None:
        raise TypeError(
            f"torch has no dtype of {fmt_.name}; carry it as torch.uint8 bit patterns with fmt= "
            f"(revcheck.bits.to_torch, docs/spec.md D1.10)"
        )
    dtype: torch.dtype = getattr(torch, fmt_.torch_dtype_name)
    return dtype


def to_torch(bits: npt.ArrayLike, fmt: object, device: object = "cpu") -> torch.Tensor:
    """torch tensor of ``fmt``'s dtype holding the given bit patterns, on ``device``.

    For a format torch has no dtype of (fp6, fp4: ``fmt.torch_dtype_name is
    None``) the tensor is ``uint8`` and holds the bit patterns themselves: the
    torch kernels take such tensors together with ``fmt=`` (docs/spec.md D1.10).
    """
    import torch

    fmt_ = formats.get(fmt)
    patterns = _as_pattern_array(bits, fmt_)
    if fmt_.torch_dtype_name is None:
        return torch.from_numpy(np.ascontiguousarray(patterns).copy()).to(device)  # type: ignore[arg-type,call-overload]
    array = np.ascontiguousarray(patterns.view(fmt_.int_dtype))
    tensor = torch.from_numpy(array.copy()).view(torch_dtype(fmt_))
    return tensor.to(device)  # type: ignore[arg-type,call-overload]


def _as_pattern_array(bits: npt.ArrayLike, fmt: FloatFormat) -> UIntArray:
    array = np.asarray(bits)
    if array.dtype == fmt.uint_dtype:
        if fmt.padding_bits and array.size and int(array.max()) >> fmt.width:
            raise ValueError(
                f"{fmt.name} patterns are {fmt.width} bits in the low bits of a {fmt.uint_dtype}; some "
                f"have a high bit set (largest {int(array.max()):#x}): mask them with "
                f"& {fmt.pattern_mask:#x} if those bits are padding (docs/spec.md D1.9)"
            )
        return array
    if array.dtype.kind in "iu":
        if array.size and (array.min() < 0 or array.max() >> (fmt.width - 1) >> 1):
            raise ValueError(f"values out of range for {fmt.width}-bit {fmt.name} bit patterns")
        return array.astype(fmt.uint_dtype)
    raise TypeError(
        f"expected {fmt.name} bit patterns as {fmt.uint_dtype} (or Python ints), got {array.dtype}; "
        "to get the bits of a float array use revcheck.bits.to_bits(x)"
    )


# ---- classification on bit patterns --------------------------------------------------


def _fields(bits: npt.ArrayLike, fmt: object) -> tuple[FloatFormat, UIntArray, UIntArray]:
    fmt_ = formats.get(fmt)
    array = _as_pattern_array(bits, fmt_)
    magnitude = array & fmt_.uint_dtype.type(fmt_.magnitude_mask)
    exponent = magnitude >> fmt_.uint_dtype.type(fmt_.mantissa_bits)
    return fmt_, magnitude, exponent


def is_nan(bits: npt.ArrayLike, fmt: object) -> npt.NDArray[np.bool_]:
    fmt_ = formats.get(fmt)
    array = _as_pattern_array(bits, fmt_)
    magnitude = array & fmt_.uint_dtype.type(fmt_.magnitude_mask)
    encoding = fmt_.nan_encoding
    if encoding == "fn":
        return np.asarray(magnitude == fmt_.magnitude_mask)
    if encoding == "fnuz":  # the pattern of -0 is the one NaN
        return np.asarray(array == fmt_.sign_mask)
    if encoding == "none":
        return np.zeros(array.shape, dtype=bool)
    return np.asarray(magnitude > fmt_.exponent_mask)


def is_inf(bits: npt.ArrayLike, fmt: object) -> npt.NDArray[np.bool_]:
    fmt_, magnitude, _ = _fields(bits, fmt)
    if not fmt_.has_inf:
        return np.zeros(magnitude.shape, dtype=bool)
    return magnitude == fmt_.exponent_mask


def is_zero(bits: npt.ArrayLike, fmt: object) -> npt.NDArray[np.bool_]:
    _, magnitude, _ = _fields(bits, fmt)
    return (magnitude == 0) & ~is_nan(bits, fmt)


def is_subnormal(bits: npt.ArrayLike, fmt: object) -> npt.NDArray[np.bool_]:
    _, magnitude, exponent = _fields(bits, fmt)
    return (exponent == 0) & (magnitude != 0)


def is_finite(bits: npt.ArrayLike, fmt: object) -> npt.NDArray[np.bool_]:
    return ~(is_nan(bits, fmt) | is_inf(bits, fmt))


def is_normal(bits: npt.ArrayLike, fmt: object) -> npt.NDArray[np.bool_]:
    _, _, exponent = _fields(bits, fmt)
    return (exponent != 0) & is_finite(bits, fmt)


def sign_bit(bits: npt.ArrayLike, fmt: object) -> npt.NDArray[np.bool_]:
    fmt_ = formats.get(fmt)
    array = _as_pattern_array(bits, fmt_)
    return (array >> fmt_.uint_dtype.type(fmt_.width - 1)).astype(bool)


CLASSES = ("nan", "inf", "zero", "subnormal", "normal")


def classify(bits: npt.ArrayLike, fmt: object) -> npt.NDArray[np.str_]:
    """Class name of every pattern: one of ``"nan" "inf" "zero" "subnormal" "normal"``."""
    conditions = [is_nan(bits, fmt), is_inf(bits, fmt), is_zero(bits, fmt), is_subnormal(bits, fmt)]
    return np.select(conditions, list(CLASSES[:4]), default="normal")


# ---- ordering and distance ---------------------------------------------------------


def ordinal(bits: npt.ArrayLike, fmt: object) -> npt.NDArray[np.object_]:
    """Monotone integer position of each value: +0 is 0, −0 is −1, next-up is +1.

    In a format without −0 (fnuz) the negative values sit symmetrically,
    ``ordinal(−x) = −ordinal(x)``: nothing lies between −min_subnormal and +0
    (docs/spec.md D1.11).  Returned as Python ints (object array) so 64-bit
    differences cannot wrap.  NaN patterns get positions beyond infinity (the
    fnuz NaN: one past the largest magnitude); callers exclude them first.
    """
    fmt_ = formats.get(fmt)
    array = _as_pattern_array(bits, fmt_)
    if fmt_.width <= _INT64_SAFE_WIDTH:
        return _as_objects(_ordinal_int64(array, fmt_))
    magnitude = np.asarray(array & fmt_.uint_dtype.type(fmt_.magnitude_mask)).astype(object)
    negative = sign_bit(array, fmt_)
    # np.where would turn 0-d object results back into int64 (and wrap for fp64): build in place.
    result = np.empty(magnitude.shape, dtype=object)
    result[...] = magnitude
    result[negative] = -magnitude[negative] - _negative_offset(fmt_)
    return result


# Positions of patterns up to this width, and their differences, fit in int64 without wrapping.
_INT64_SAFE_WIDTH = 32


def _negative_offset(fmt: FloatFormat) -> int:
    """Where −|x| sits below −0's slot: 1 with a −0 (it takes position −1), 0 without."""
    return 1 if fmt.has_negative_zero else 0


def _ordinal_int64(array: UIntArray, fmt: FloatFormat) -> npt.NDArray[np.int64]:
    magnitude = (array & fmt.uint_dtype.type(fmt.magnitude_mask)).astype(np.int64)
    position = np.where(sign_bit(array, fmt), -magnitude - _negative_offset(fmt), magnitude)
    if not fmt.has_negative_zero:  # the pattern of −0 is the NaN: beyond the largest value
        position = np.where(is_nan(array, fmt), np.int64(fmt.magnitude_mask + 1), position)
    return position


def _as_objects(values: npt.NDArray[Any]) -> npt.NDArray[np.object_]:
    result = np.empty(np.shape(values), dtype=object)
    result[...] = values.tolist() if np.ndim(values) else int(values)
    return result


def ulp_distance(a_bits: npt.ArrayLike, b_bits: npt.ArrayLike, fmt: object) -> npt.NDArray[np.object_]:
    """Number of representable values between a and b (+0 and −0 are one apart).

    Elements where either side is NaN get -1: NaNs have no place in the order.
    In a format without −0, ±min_subnormal are each one step from +0 and two
    apart (docs/spec.md D1.11).

    >>> int(ulp_distance(0x01, 0x81, "fp8_e4m3fnuz")[()]), int(ulp_distance(0x01, 0x81, "fp8_e4m3fn")[()])
    (2, 3)
    """
    fmt_ = formats.get(fmt)
    a = _as_pattern_array(a_bits, fmt_)
    b = _as_pattern_array(b_bits, fmt_)
    nan = np.asarray(is_nan(a, fmt_) | is_nan(b, fmt_))
    if fmt_.width <= _INT64_SAFE_WIDTH:
        # Same numbers as the Python-int path below, computed in int64 (millions of elements a second).
        fast = np.abs(_ordinal_int64(a, fmt_) - _ordinal_int64(b, fmt_))
        return _as_objects(np.where(nan, np.int64(-1), fast))
    distance = np.asarray(np.abs(ordinal(a, fmt_) - ordinal(b, fmt_)), dtype=object)
    result = np.empty(distance.shape, dtype=object)
    result[...] = distance
    result[nan] = -1
    return result


# ---- exact value and text ----------------------------------------------------------


def to_fraction(bits: int, fmt: object) -> Any:
    """Exact value of one pattern as :class:`fractions.Fraction`, or ``float`` inf/nan.

    −0 is returned as the float ``-0.0`` so that its sign survives.
    """
    from fractions import Fraction

    fmt_ = formats.get(fmt)
    bits = int(bits)
    negative = bool(bits >> (fmt_.width - 1))
    magnitude = bits & fmt_.magnitude_mask
    if bool(is_nan(np.array([bits]).astype(fmt_.uint_dtype), fmt_)[0]):  # before the zero test (fnuz)
        return float("nan")
    if fmt_.has_inf and magnitude == fmt_.exponent_mask:
        return float("-inf") if negative else float("inf")
    if magnitude == 0:
        return -0.0 if negative else 0.0
    exponent = magnitude >> fmt_.mantissa_bits
    mantissa = magnitude & fmt_.mantissa_mask
    if exponent == 0:
        significand, scale = mantissa, fmt_.emin - fmt_.mantissa_bits
    else:
        significand, scale = mantissa | (1 << fmt_.mantissa_bits), exponent - fmt_.bias - fmt_.mantissa_bits
    value = Fraction(significand) * (Fraction(2) ** scale)
    return -value if negative else value


def hexfloat(bits: int, fmt: object) -> str:
    """TestFloat-style text: sign, biased exponent in hex, significand field in hex.

    >>> hexfloat(0x3F80, "bf16")
    '+7F.00'
    """
    fmt_ = formats.get(fmt)
    bits = int(bits)
    sign = "-" if bits >> (fmt_.width - 1) else "+"
    exponent = (bits & fmt_.exponent_mask) >> fmt_.mantissa_bits
    mantissa = bits & fmt_.mantissa_mask
    exp_digits = (fmt_.exponent_bits + 3) // 4
    man_digits = (fmt_.mantissa_bits + 3) // 4
    return f"{sign}{exponent:0{exp_digits}X}.{mantissa:0{man_digits}X}"


def decimal_text(value: object, digits: int = 17) -> str:
    """An exact value as decimal text, rounded to ``digits`` significant digits: THE decimal printing.

    ``value`` is a :class:`fractions.Fraction`, an ``int``, a ``float`` (inf, nan
    and -0.0 print as ``repr`` does) or an mpmath number.  Every value text of
    revcheck (bit-exact assertion messages, audit reports, sweep summaries) goes
    through here.

    >>> from fractions import Fraction
    >>> decimal_text(Fraction(1, 3))
    '0.33333333333333333'
    >>> decimal_text(-0.0), decimal_text(Fraction(5, 2))
    ('-0.0', '2.5')
    """
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf")) or value == 0):
        return repr(value)
    from mpmath import mp, mpf

    with mp.workdps(max(40, 2 * digits)):
        if hasattr(value, "numerator") and hasattr(value, "denominator"):
            exact = mpf(value.numerator) / value.denominator  # type: ignore[attr-defined]
        else:
            exact = mpf(value)  # type: ignore[arg-type]
        return str(mp.nstr(exact, digits, strip_zeros=True))


def describe(bits: int, fmt: object) -> str:
    """One value as ``decimal [0xPATTERN +EXP.MANT]``, e.g. ``1.0 [0x3F80 +7F.00]``.

    The decimal is exact-then-rounded to 17 significant digits (:func:`decimal_text`).
    """
    fmt_ = formats.get(fmt)
    bits = int(bits)
    digits = (fmt_.width + 3) // 4
    return f"{decimal_text(to_fraction(bits, fmt_))} [0x{bits:0{digits}X} {hexfloat(bits, fmt_)}]"
