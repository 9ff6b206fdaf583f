"""Floating-point formats as data: one :class:`FloatFormat` per format.

Every other module asks a format for its widths, masks and special encodings;
none of them branches on a format's name.  Adding a format means adding one
entry to :data:`FORMATS` (see docs/spec.md §1).  Policies that follow from a
format's fields live here too, so that every layer answers them alike: the
accumulator format of a PAM matrix product (:func:`accumulator_format`,
docs/spec.md §2).

This module imports neither torch nor anything that needs it: the NumPy oracle
uses it too.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal

import numpy as np

__all__ = [
    "ACCUMULATOR_FORMATS",
    "FORMATS",
    "FloatFormat",
    "UnsupportedFormatError",
    "accumulator_format",
    "get",
    "names",
]

NanEncoding = Literal["ieee", "fn", "fnuz", "none"]
"""How a format encodes its special values (docs/spec.md §1, D1.6):

- ``"ieee"``: the all-ones exponent is infinity (zero significand) or NaN (any other);
- ``"fn"``: no infinity; only the all-ones exponent *and* significand is NaN, of either sign;
- ``"fnuz"``: no infinity and no −0; the one NaN is the pattern of −0 (sign bit alone);
- ``"none"``: no infinity and no NaN: every pattern is a finite number (the OCP MX elements).
"""


class UnsupportedFormatError(ValueError):
    """Raised by :func:`get` for anything that is not one of :data:`FORMATS`."""


_CONTAINER_WIDTHS = (8, 16, 32, 64)


@dataclass(frozen=True)
class FloatFormat:
    """A binary floating-point format, described by its fields.

    ``nan_encoding`` (:data:`NanEncoding`) is ``"ieee"`` when every all-ones
    exponent with a nonzero significand is NaN and the all-ones exponent with a
    zero significand is infinity; ``"fn"`` ("finite, NaN") when the format has
    no infinity and only the all-ones exponent *and* significand encode NaN
    (fp8_e4m3fn); ``"fnuz"`` ("finite, NaN, unsigned zero") when the one NaN is
    the pattern that would be −0 and there is no −0 (fp8_e4m3fnuz,
    fp8_e5m2fnuz); ``"none"`` when every pattern is a finite number (fp6, fp4).
    Overflow in a format without infinity saturates to the largest finite value.

    ``torch_dtype_name`` is None for a format torch has no (unpacked) dtype of:
    torch code then carries its values as ``uint8`` tensors of bit patterns
    (docs/spec.md D1.10).  ``ml_dtypes_name`` names the format's dtype in the
    ``ml_dtypes`` package, where it has one.  Patterns narrower than a byte sit
    in the low bits of a ``uint8`` (:attr:`uint_dtype`), the high bits zero.
    """

    name: str
    exponent_bits: int
    mantissa_bits: int
    bias: int
    nan_encoding: NanEncoding
    torch_dtype_name: str | None
    numpy_float_name: str | None
    aliases: tuple[str, ...] = ()
    ml_dtypes_name: str | None = None

    # ---- widths and containers -------------------------------------------------
    @property
    def width(self) -> int:
        """Total number of bits of one value."""
        return 1 + self.exponent_bits + self.mantissa_bits

    @property
    def precision(self) -> int:
        """Significand precision p, counting the implicit bit."""
        return self.mantissa_bits + 1

    @property
    def container_width(self) -> int:
        """Bits of the integer that holds one pattern: the narrowest of 8, 16, 32, 64 that fits."""
        return next(bits for bits in _CONTAINER_WIDTHS if bits >= self.width)

    @property
    def padding_bits(self) -> int:
        """High bits of the container above the pattern (fp6: 2, fp4: 4); they must be zero."""
        return self.container_width - self.width

    @property
    def pattern_mask(self) -> int:
        """All ``width`` bits of a pattern set."""
        return (1 << self.width) - 1

    @cached_property
    def uint_dtype(self) -> np.dtype[Any]:
        """The unsigned NumPy integer dtype that holds one bit pattern (``uint8`` for fp6 and fp4)."""
        return np.dtype(f"uint{self.container_width}")

    @cached_property
    def int_dtype(self) -> np.dtype[Any]:
        """The signed NumPy integer dtype of the container's width (torch views use it)."""
        return np.dtype(f"int{self.container_width}")

    @cached_property
    def numpy_float(self) -> np.dtype[Any] | None:
        """The NumPy float dtype of this format, or None (bf16, fp8)."""
        return None if self.numpy_float_name is None else np.dtype(self.numpy_float_name)

    @property
    def has_inf(self) -> bool:
        return self.nan_encoding == "ieee"

    @property
    def has_nan(self) -> bool:
        """Whether some pattern is NaN (not in the OCP MX element formats fp6 and fp4)."""
        return self.nan_encoding != "none"

    @property
    def has_negative_zero(self) -> bool:
        """Whether −0 exists; in ``"fnuz"`` formats its pattern is the NaN, and every zero is +0."""
        return self.nan_encoding != "fnuz"

    @property
    def saturates(self) -> bool:
        """Whether overflow gives the largest finite value instead of infinity."""
        return not self.has_inf

    # ---- masks ---------------------------------------------------------------------
    @property
    def sign_mask(self) -> int:
        return 1 << (self.width - 1)

    @property
    def magnitude_mask(self) -> int:
        return self.sign_mask - 1

    @property
    def exponent_mask(self) -> int:
        return ((1 << self.exponent_bits) - 1) << self.mantissa_bits

    @property
    def mantissa_mask(self) -> int:
        return (1 << self.mantissa_bits) - 1

    @property
    def max_biased_exponent(self) -> int:
        """All-ones exponent field."""
        return (1 << self.exponent_bits) - 1

    # ---- exponent range -----------------------------------------------------------
    @property
    def emin(self) -> int:
        """Unbiased exponent of the smallest normal number."""
        return 1 - self.bias

    @property
    def emax(self) -> int:
        """Unbiased exponent of the largest finite number."""
        top = self.max_biased_exponent - 1 if self.has_inf else self.max_biased_exponent
        return top - self.bias

    # ---- special encodings (as Python ints) -----------------------------------------
    @property
    def one(self) -> int:
        """Encoding of +1.0."""
        return self.bias << self.mantissa_bits

    @property
    def max_finite(self) -> int:
        """Encoding of the largest finite positive value."""
        if self.nan_encoding == "fn":
            return self.magnitude_mask - 1
        if not self.has_inf:  # fnuz and none: the all-ones magnitude is a number
            return self.magnitude_mask
        return (self.max_biased_exponent - 1) << self.mantissa_bits | self.mantissa_mask

    @property
    def min_normal(self) -> int:
        return 1 << self.mantissa_bits

    @property
    def min_subnormal(self) -> int:
        return 1

    @property
    def max_subnormal(self) -> int:
        return self.mantissa_mask

    @property
    def inf(self) -> int | None:
        """Encoding of +inf, or None when the format has no infinity."""
        return self.exponent_mask if self.has_inf else None

    @property
    def canonical_nan(self) -> int:
        """The NaN a computation returns: sign 0, top significand bit set (fn: ``S.1111.111``
        with sign 0; fnuz: the sign bit alone, its only NaN).

        Raises
        ------
        UnsupportedFormatError
            For a format without NaN (``nan_encoding="none"``): ask :attr:`has_nan` first.
        """
        if self.nan_encoding == "fn":
            return self.magnitude_mask
        if self.nan_encoding == "fnuz":
            return self.sign_mask
        if self.nan_encoding == "none":
            raise UnsupportedFormatError(
                f"{self.name} has no NaN; a result that would be NaN follows docs/spec.md D2.16 instead"
            )
        return self.exponent_mask | (1 << (self.mantissa_bits - 1))

    @property
    def overflow_magnitude(self) -> int:
        """What an overflowing result's magnitude becomes: +inf, or max finite if saturating."""
        return self.max_finite if self.saturates else self.exponent_mask

    def holds_exactly(self, other: FloatFormat) -> bool:
        """Whether every value of ``other`` is also a value of this format (converting never rounds).

        True when this format has at least ``other``'s significand bits, reaches at
        least its largest exponent, has a quantum no coarser than ``other``'s
        smallest subnormal, and has infinities if ``other`` has them.

        >>> get("fp32").holds_exactly(get("bf16")), get("fp32").holds_exactly(get("fp64"))
        (True, False)
        """
        return (
            self.mantissa_bits >= other.mantissa_bits
            and self.emax >= other.emax
            and self.emin - self.mantissa_bits <= other.emin - other.mantissa_bits
            and (self.has_inf or not other.has_inf)
        )

    def nan_patterns_count(self) -> int:
        """How many bit patterns are NaN."""
        return {"ieee": 2 * self.mantissa_mask, "fn": 2, "fnuz": 1, "none": 0}[self.nan_encoding]

    def __repr__(self) -> str:
        return f"revcheck.formats.get({self.name!r})"


FORMATS: dict[str, FloatFormat] = {
    fmt.name: fmt
    for fmt in (
        FloatFormat("fp64", 11, 52, 1023, "ieee", "float64", "float64", ("float64", "double")),
        FloatFormat("fp32", 8, 23, 127, "ieee", "float32", "float32", ("float32", "float")),
        FloatFormat("fp16", 5, 10, 15, "ieee", "float16", "float16", ("float16", "half")),
        FloatFormat("bf16", 8, 7, 127, "ieee", "bfloat16", None, ("bfloat16",), "bfloat16"),
        FloatFormat(
            "fp8_e5m2", 5, 2, 15, "ieee", "float8_e5m2", None, ("float8_e5m2", "e5m2"), "float8_e5m2"
        ),
        FloatFormat(
            "fp8_e4m3fn", 4, 3, 7, "fn", "float8_e4m3fn", None, ("float8_e4m3fn", "e4m3fn"), "float8_e4m3fn"
        ),
        # AMD/Graphcore fp8: one NaN at 0x80, no -0, no inf; the bias is one more than OCP's.
        FloatFormat(
            "fp8_e5m2fnuz",
            5,
            2,
            16,
            "fnuz",
            "float8_e5m2fnuz",
            None,
            ("float8_e5m2fnuz", "e5m2fnuz"),
            "float8_e5m2fnuz",
        ),
        FloatFormat(
            "fp8_e4m3fnuz",
            4,
            3,
            8,
            "fnuz",
            "float8_e4m3fnuz",
            None,
            ("float8_e4m3fnuz", "e4m3fnuz"),
            "float8_e4m3fnuz",
        ),
        # OCP MX element formats: no inf, no NaN; no torch dtype (fp4 only packed, two per byte).
        FloatFormat("fp6_e3m2fn", 3, 2, 3, "none", None, None, ("float6_e3m2fn", "e3m2fn"), "float6_e3m2fn"),
        FloatFormat("fp6_e2m3fn", 2, 3, 1, "none", None, None, ("float6_e2m3fn", "e2m3fn"), "float6_e2m3fn"),
        FloatFormat("fp4_e2m1fn", 2, 1, 1, "none", None, None, ("float4_e2m1fn", "e2m1fn"), "float4_e2m1fn"),
    )
}

_BY_ALIAS: dict[str, FloatFormat] = {
    alias: fmt for fmt in FORMATS.values() for alias in (fmt.name, *fmt.aliases)
}
_BY_TORCH_NAME: dict[str, FloatFormat] = {
    fmt.torch_dtype_name: fmt for fmt in FORMATS.values() if fmt.torch_dtype_name is not None
}
_BY_ML_DTYPES_NAME: dict[str, FloatFormat] = {
    fmt.ml_dtypes_name: fmt for fmt in FORMATS.values() if fmt.ml_dtypes_name is not None
}
# torch dtypes that pack several values of a format into one element: (format, values per element).
_PACKED_TORCH_DTYPES: dict[str, tuple[str, int]] = {"float4_e2m1fn_x2": ("fp4_e2m1fn", 2)}


ACCUMULATOR_FORMATS: tuple[str, ...] = ("fp32", "fp64")
"""Formats a PAM matrix product may accumulate in, narrowest first (docs/spec.md §2)."""


def accumulator_format(spec: object) -> FloatFormat:
    """The format PAM products are formed and summed in: the narrowest of :data:`ACCUMULATOR_FORMATS`
    that holds every value of ``spec`` exactly (so the inputs are widened without rounding).

    That is fp32 for fp32, fp16, bf16 and the fp8 formats and fp64 for fp64
    (docs/spec.md §2); a new format gets its accumulator from its fields.  The
    oracle, the exact model, the torch and the Triton kernels all ask here.

    Raises
    ------
    UnsupportedFormatError
        If ``spec`` is not a format, or no accumulator format holds all its values.

    Examples
    --------
    >>> accumulator_format("bf16").name, accumulator_format("fp64").name
    ('fp32', 'fp64')
    """
    fmt = get(spec)
    for name in ACCUMULATOR_FORMATS:
        candidate = FORMATS[name]
        if candidate.holds_exactly(fmt):
            return candidate
    raise UnsupportedFormatError(
        f"no accumulator format holds every {fmt.name} value exactly; add a wider format to "
        f"ACCUMULATOR_FORMATS (now {', '.join(ACCUMULATOR_FORMATS)})"
    )


def names() -> tuple[str, ...]:
    """Canonical names of all supported formats, widest first."""
    return tuple(FORMATS)


def get(spec: object) -> FloatFormat:
    """Look up a format by name (``"bf16"``), torch dtype, NumPy float dtype, ml_dtypes dtype, or format.

    ml_dtypes dtypes (``ml_dtypes.bfloat16``, ``np.dtype(ml_dtypes.float8_e4m3fnuz)``, ...)
    are recognised without importing ml_dtypes: whoever holds one has imported it.

    >>> get("bf16").mantissa_bits
    7
    >>> get("float16") is get("fp16")
    True
    >>> get("e2m1fn").name, get("e2m1fn").uint_dtype
    ('fp4_e2m1fn', dtype('uint8'))
    """
    if isinstance(spec, FloatFormat):
        return spec
    if spec is None:
        # np.dtype(None) is float64; a missing format must not silently mean fp64.
        pass
    elif isinstance(spec, str):
        key = spec.removeprefix("torch.")
        if key in _BY_ALIAS:
            return _BY_ALIAS[key]
    elif _is_torch_dtype(spec):
        key = str(spec).removeprefix("torch.")
        if key in _BY_TORCH_NAME:
            return _BY_TORCH_NAME[key]
        if key in _PACKED_TORCH_DTYPES:
            unpacked, count = _PACKED_TORCH_DTYPES[key]
            raise UnsupportedFormatError(
                f"torch.{key} packs {count} {unpacked} values into each element; revcheck holds one "
                f"value per byte: unpack them into uint8 bit patterns and pass "
                f"fmt={unpacked!r} (docs/spec.md D1.10)"
            )
    else:
        try:
            np_dtype = np.dtype(spec)  # type: ignore[call-overload]
        except TypeError:
            np_dtype = None
        if np_dtype is not None and _is_ml_dtypes_dtype(np_dtype):
            if np_dtype.name in _BY_ML_DTYPES_NAME:
                return _BY_ML_DTYPES_NAME[np_dtype.name]
        elif np_dtype is not None and np_dtype.kind == "f" and np_dtype.name in _BY_ALIAS:
            return _BY_ALIAS[np_dtype.name]
        if np_dtype is not None and np_dtype.kind in "iu":
            raise UnsupportedFormatError(
                f"{spec!r} is an integer dtype, not a float format; to describe bit "
                f"patterns, pass the format they encode, one of {', '.join(FORMATS)}"
            )
    raise UnsupportedFormatError(
        f"unsupported float format {spec!r}; supported formats are "
        f"{', '.join(FORMATS)} (or their torch, NumPy or ml_dtypes dtypes)"
    )


def _is_torch_dtype(obj: object) -> bool:
    # Avoids importing torch: the oracle must stay torch-free.
    return type(obj).__module__ == "torch" and type(obj).__name__ == "dtype"


def _is_ml_dtypes_dtype(dtype: np.dtype[Any]) -> bool:
    """Whether ``dtype`` is one of ml_dtypes' (its scalar type lives in that package); never imports it."""
    return str(getattr(dtype.type, "__module__", "")).split(".")[0] == "ml_dtypes"
