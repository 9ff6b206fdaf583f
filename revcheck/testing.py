"""Bit-exact assertions: :func:`assert_bit_exact` and its non-raising core :func:`compare_bits`.

Two values are bit-exact when their bit patterns are equal: ``+0`` and ``-0``
differ, and all NaNs are one class unless ``nan="bits"`` asks for NaN bits to
be compared too.  No tolerance is ever applied.

torch is imported only when one side is a tensor, so the NumPy oracle's tests
can use this module without it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from revcheck import bits as _bits
from revcheck import formats
from revcheck.formats import FloatFormat

__all__ = ["NAN_MODES", "BitMismatchError", "Comparison", "assert_bit_exact", "compare_bits"]

Reason = Literal["values", "shape", "dtype", "device"]
NAN_MODES = ("class", "bits")
_WIDEST = formats.get("fp64")


@dataclass(frozen=True)
class Comparison:
    """Outcome of comparing two arrays bit by bit.

    ``reason`` is None when they are bit-exact; otherwise ``"shape"``,
    ``"dtype"`` or ``"device"`` when they could not be compared element-wise
    (then ``mismatch_count`` and ``total`` are 0 and ``actual_info`` /
    ``expected_info`` say what each side had), or ``"values"``.  ``indices``,
    ``actual_bits``, ``expected_bits`` and ``ulps`` describe the first
    mismatches in C order; ``ulps[i]`` is None where a NaN is involved.
    ``max_ulp`` is taken over *all* mismatches that have a distance, and is None
    when there are none (only NaN-vs-number or NaN-bits mismatches).
    """

    reason: Reason | None
    fmt: FloatFormat | None
    total: int = 0
    mismatch_count: int = 0
    indices: list[tuple[int, ...]] = field(default_factory=list)
    actual_bits: list[int] = field(default_factory=list)
    expected_bits: list[int] = field(default_factory=list)
    ulps: list[int | None] = field(default_factory=list)
    max_ulp: int | None = None
    actual_info: str = ""
    expected_info: str = ""
    nan: str = "class"

    @property
    def equal(self) -> bool:
        return self.reason is None

    def message(self, msg: str | None = None) -> str:
        """Text in the style of ``numpy.testing``: what differs, where, and by how much."""
        lines = [msg] if msg else []
        if self.reason is None:
            lines.append(f"bit-exact: {self.total} element(s) equal")
        elif self.reason != "values":
            lines.append(f"not bit-exact: {_REASON_TEXT[self.reason]} differ")
            lines.append(f" actual:   {self.actual_info}")
            lines.append(f" expected: {self.expected_info}")
        else:
            assert self.fmt is not None
            fraction = self.mismatch_count / self.total if self.total else 0.0
            lines.append(
                f"not bit-exact ({self.fmt.name}, nan={self.nan!r}): "
                f"{self.mismatch_count} / {self.total} elements differ ({fraction:.3%})"
            )
            shown = len(self.indices)
            if shown < self.mismatch_count:
                lines.append(f"first {shown} mismatches:")
            for index, a, e, ulp in zip(
                self.indices, self.actual_bits, self.expected_bits, self.ulps, strict=True
            ):
                lines.append(f" index {_index_text(index)}:")
                lines.append(f"   actual:   {_bits.describe(a, self.fmt)}")
                lines.append(f"   expected: {_bits.describe(e, self.fmt)}")
                lines.append(f"   distance: {_ulp_text(ulp, a, e, self.fmt)}")
            if self.max_ulp is None:
                lines.append("max ULP distance: none (every mismatch involves a NaN)")
            else:
                lines.append(f"max ULP distance: {self.max_ulp} ULP")
        return "\n".join(lines)


_REASON_TEXT = {"shape": "shapes", "dtype": "formats (dtypes)", "device": "devices"}


class BitMismatchError(AssertionError):
    """Raised by :func:`assert_bit_exact`; carries the numbers of its :class:`Comparison`."""

    def __init__(self, comparison: Comparison, msg: str | None = None) -> None:
        super().__init__(comparison.message(msg))
        self.comparison = comparison
        self.reason: Reason | None = comparison.reason
        self.mismatch_count = comparison.mismatch_count
        self.total = comparison.total
        self.indices = comparison.indices
        self.max_ulp = comparison.max_ulp
        self.fmt = comparison.fmt


@dataclass(frozen=True)
class _Side:
    bits: np.ndarray[Any, Any]
    fmt: FloatFormat
    device: str
    what: str


def compare_bits(
    actual: object,
    expected: object,
    *,
    nan: str = "class",
    check_dtype: bool = True,
    check_device: bool = False,
    fmt: object = None,
    max_reported: int = 5,
) -> Comparison:
    """Compare like :func:`assert_bit_exact` and return a :class:`Comparison` instead of raising.

    Bad arguments (unknown ``nan`` mode, values that are neither floats nor
    bit patterns) still raise ``ValueError`` / ``TypeError``.
    """
    if nan not in NAN_MODES:
        raise ValueError(f"nan={nan!r} is not accepted; use one of {NAN_MODES!r}")
    pattern_fmt = None if fmt is None else formats.get(fmt)
    left, right = _side(actual, pattern_fmt, "actual"), _side(expected, pattern_fmt, "expected")
    if left.device == right.device == "meta":
        raise ValueError(
            "both sides are meta tensors, which hold shapes but no values: there are no bits to compare; "
            "run the computations on a device with data (cpu, cuda)"
        )
    if left.bits.shape != right.bits.shape:
        return Comparison(
            "shape", None, actual_info=_shape_text(left), expected_info=_shape_text(right), nan=nan
        )
    common = left.fmt
    if left.fmt is not right.fmt:
        # With fmt= given, a float side of another format is wrong whatever check_dtype says.
        if check_dtype or pattern_fmt is not None:
            return Comparison(
                "dtype", None, actual_info=_format_text(left), expected_info=_format_text(right)
            )
        if nan == "bits":
            raise ValueError(
                f"nan='bits' compares NaN payloads, which {left.fmt.name} and {right.fmt.name} do not "
                "share; use check_dtype=True or nan='class'"
            )
        common = _WIDEST
        left = _Side(_widen(left.bits, left.fmt, common), common, left.device, left.what)
        right = _Side(_widen(right.bits, right.fmt, common), common, right.device, right.what)
    if left.device != right.device and "meta" in (left.device, right.device):
        # A meta tensor has no values: the only difference there is to report is the device.
        return Comparison(
            "device", common, actual_info=_device_text(left), expected_info=_device_text(right), nan=nan
        )
    if check_device and left.device != right.device:
        return Comparison("device", common, actual_info=left.device, expected_info=right.device, nan=nan)
    return _compare_values(left.bits, right.bits, common, nan=nan, max_reported=max_reported)


def assert_bit_exact(
    actual: object,
    expected: object,
    *,
    nan: str = "class",
    check_dtype: bool = True,
    check_device: bool = False,
    fmt: object = None,
    msg: str | None = None,
) -> None:
    """Assert that ``actual`` and ``expected`` have equal bit patterns, element by element.

    Each side may be a NumPy array or scalar (of NumPy's float dtypes or of
    ml_dtypes', such as ``ml_dtypes.bfloat16``), a torch tensor on any device, a
    Python float, or -- with ``fmt=`` -- bit patterns of ``fmt`` (the only torch
    form of the fp6 and fp4 formats: ``uint8`` tensors).  Formats
    (dtypes) are inferred as follows: a float array, scalar or tensor has the
    format of its dtype; a Python ``float`` (or list of floats) is fp64; with
    ``fmt`` given, unsigned-integer arrays/tensors, NumPy unsigned scalars and
    Python ``int`` s are bit patterns of ``fmt`` (this is how a tensor is checked
    against oracle bits: ``assert_bit_exact(t, oracle_bits, fmt="bf16")``), and
    a float side must then be of format ``fmt`` too.  Unsigned integers
    without ``fmt`` are a ``TypeError``: their format would be a guess.

    ``nan="class"``: every NaN equals every other NaN and nothing else;
    ``nan="bits"``: NaN sign and payload must match too.  ``+0`` and ``-0``
    always differ.  ``check_dtype=False`` compares sides of different formats
    by exact value (both widened exactly to fp64, ULPs then counted in fp64).
    ``check_device=True`` also requires equal devices (NumPy values are on
    ``"cpu"``).  Shapes must be equal; nothing is broadcast.

    Tensors must be dense: a sparse one (any layout but ``torch.strided``) is a
    ``TypeError`` that says to compare ``t.to_dense()``.  A tensor on the ``meta``
    device has no values: against a side with data it is reported as a device
    difference (``reason == "device"``, whatever ``check_device`` says), and two
    meta tensors are a ``ValueError`` (there are no bits to compare).

    Raises :class:`BitMismatchError` (an ``AssertionError``) whose message lists
    the mismatch count and fraction, the first mismatches with both values in
    decimal, hex and TestFloat hexfloat, and their ULP distances.

    >>> import numpy as np
    >>> assert_bit_exact(np.float32([1.0, np.nan]), np.float32([1.0, -np.nan]))
    >>> assert_bit_exact(np.float32(0.0), np.float32(-0.0))
    Traceback (most recent call last):
    ...
    revcheck.testing.BitMismatchError: not bit-exact (fp32, nan='class'): 1 / 1 elements differ (100.000%)
     index ():
       actual:   0.0 [0x00000000 +00.000000]
       expected: -0.0 [0x80000000 -00.000000]
       distance: 1 ULP
    max ULP distance: 1 ULP
    """
    __tracebackhide__ = True
    comparison = compare_bits(
        actual, expected, nan=nan, check_dtype=check_dtype, check_device=check_device, fmt=fmt
    )
    if not comparison.equal:
        raise BitMismatchError(comparison, msg)


# ---- turning inputs into bit patterns ------------------------------------------------


def _side(value: object, pattern_fmt: FloatFormat | None, role: str) -> _Side:
    if _bits._is_torch_tensor(value):
        return _tensor_side(value, pattern_fmt, role)
    is_python = isinstance(value, (int, float, list, tuple)) and not isinstance(value, bool)
    array = np.asarray(value)
    if _bits.is_float_array(array):  # NumPy's float dtypes and ml_dtypes' (bfloat16, float8_*, ...)
        fmt = formats.get(array.dtype)
        what = f"Python {type(value).__name__}" if is_python else f"{array.dtype} array"
        return _Side(_bits.to_bits(_c_order(array)), fmt, "cpu", what)
    if array.dtype.kind == "u" or (is_python and array.dtype.kind == "i"):
        return _pattern_side(array, pattern_fmt, "cpu", f"{array.dtype} bit patterns", role)
    raise TypeError(
        f"{role} is {type(value).__name__} of dtype {array.dtype}; pass a float array/tensor, a Python "
        "float, or unsigned-integer bit patterns together with fmt=..."
    )


def _tensor_side(tensor: Any, pattern_fmt: FloatFormat | None, role: str) -> _Side:
    import torch

    device = str(tensor.device)
    if tensor.layout != torch.strided:
        _bits.check_readable(tensor, role)  # raises the TypeError that says what to pass instead
    if tensor.device.type == "meta":
        return _meta_side(tensor, pattern_fmt, role)
    if tensor.dtype.is_floating_point:
        fmt = formats.get(tensor.dtype)
        return _Side(_bits.to_bits(tensor), fmt, device, f"{tensor.dtype} tensor")
    if str(tensor.dtype).removeprefix("torch.").startswith("uint"):
        array = tensor.detach().cpu().contiguous().numpy()
        return _pattern_side(array, pattern_fmt, device, f"{tensor.dtype} tensor of bit patterns", role)
    raise TypeError(
        f"{role} is a {tensor.dtype} tensor; pass a float tensor, or bit patterns as an unsigned tensor "
        f"(e.g. t.view(torch.uint16)) together with fmt=..."
    )


def _meta_side(tensor: Any, pattern_fmt: FloatFormat | None, role: str) -> _Side:
    """A meta tensor: shape and format, no values (a zero-strided placeholder, no memory)."""
    if tensor.dtype.is_floating_point:
        fmt = formats.get(tensor.dtype)
    elif pattern_fmt is not None and str(tensor.dtype).removeprefix("torch.").startswith("uint"):
        fmt = pattern_fmt
    else:
        raise TypeError(f"{role} is a {tensor.dtype} meta tensor; pass a float tensor")
    placeholder = np.broadcast_to(np.zeros((), dtype=fmt.uint_dtype), tuple(tensor.shape))
    return _Side(placeholder, fmt, "meta", f"{tensor.dtype} tensor on the meta device (no data)")


def _pattern_side(
    array: np.ndarray[Any, Any], pattern_fmt: FloatFormat | None, device: str, what: str, role: str
) -> _Side:
    if pattern_fmt is None:
        raise TypeError(
            f"{role} holds {what}; pass fmt=... to say which format they encode "
            "(e.g. assert_bit_exact(tensor, oracle_bits, fmt='bf16'))"
        )
    if array.dtype.kind == "u" and array.dtype != pattern_fmt.uint_dtype:
        raise TypeError(
            f"{role} holds {array.dtype} values but {pattern_fmt.name} bit patterns are "
            f"{pattern_fmt.uint_dtype}; convert them or pass the matching fmt="
        )
    return _Side(_bits._as_pattern_array(array, pattern_fmt), pattern_fmt, device, what)


def _widen(pattern: np.ndarray[Any, Any], fmt: FloatFormat, to: FloatFormat) -> np.ndarray[Any, Any]:
    """Exact widening of bit patterns to ``to`` (fp64 holds every supported format exactly)."""
    if fmt is to:
        return pattern
    assert to is _WIDEST
    magnitude = (pattern & fmt.uint_dtype.type(fmt.magnitude_mask)).astype(np.int64)
    exponent = magnitude >> fmt.mantissa_bits
    mantissa = magnitude & fmt.mantissa_mask
    normal = exponent != 0
    significand = np.where(normal, mantissa | (1 << fmt.mantissa_bits), mantissa)
    scale = np.where(normal, exponent - fmt.bias, fmt.emin) - fmt.mantissa_bits
    values = np.ldexp(significand.astype(np.float64), scale.astype(np.int32))
    values = np.where(_bits.is_inf(pattern, fmt), np.inf, values)
    values = np.where(_bits.is_nan(pattern, fmt), np.nan, values)
    values = np.where(_bits.sign_bit(pattern, fmt), -values, values)
    return _c_order(np.asarray(values, dtype=np.float64)).view(to.uint_dtype)


def _c_order(array: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    # Not np.ascontiguousarray: it turns 0-d arrays into 1-d ones.
    return array if array.flags.c_contiguous else array.copy(order="C")


# ---- comparing -----------------------------------------------------------------------


def _compare_values(
    a: np.ndarray[Any, Any], e: np.ndarray[Any, Any], fmt: FloatFormat, *, nan: str, max_reported: int
) -> Comparison:
    differ = a != e
    if nan == "class":
        differ &= ~(_bits.is_nan(a, fmt) & _bits.is_nan(e, fmt))
    total = int(a.size)
    count = int(np.count_nonzero(differ))
    if count == 0:
        return Comparison(None, fmt, total=total, nan=nan)
    # np.argwhere promotes 0-d input to 1-d; a scalar's only index is ().
    positions = np.argwhere(differ) if differ.ndim else np.zeros((1, 0), dtype=np.intp)
    a_diff, e_diff = a[differ], e[differ]
    distances = _bits.ulp_distance(a_diff, e_diff, fmt)
    measurable = distances[distances >= 0]
    shown = positions[:max_reported]
    return Comparison(
        "values",
        fmt,
        total=total,
        mismatch_count=count,
        indices=[tuple(int(i) for i in row) for row in shown],
        actual_bits=[int(x) for x in a_diff[:max_reported]],
        expected_bits=[int(x) for x in e_diff[:max_reported]],
        ulps=[None if d < 0 else int(d) for d in distances[:max_reported]],
        max_ulp=int(measurable.max()) if measurable.size else None,
        nan=nan,
    )


# ---- text ----------------------------------------------------------------------------


def _index_text(index: tuple[int, ...]) -> str:
    return "()" if not index else str(index) if len(index) > 1 else f"[{index[0]}]"


def _ulp_text(ulp: int | None, a: int, e: int, fmt: FloatFormat) -> str:
    if ulp is not None:
        return f"{ulp} ULP"
    a_nan = bool(_bits.is_nan(np.array([a], fmt.uint_dtype), fmt)[0])
    e_nan = bool(_bits.is_nan(np.array([e], fmt.uint_dtype), fmt)[0])
    if a_nan and e_nan:
        return "different NaN bits (no ULP distance)"
    return "NaN vs number (no ULP distance)"


def _device_text(side: _Side) -> str:
    return f"{side.device} ({side.what})"


def _shape_text(side: _Side) -> str:
    return f"shape {side.bits.shape} ({side.what})"


def _format_text(side: _Side) -> str:
    return f"{side.fmt.name} ({side.what})"
