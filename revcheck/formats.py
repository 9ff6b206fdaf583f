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

NanEncoding = Literal["ieee", "fn"]


class UnsupportedFormatError(ValueError):
    """Raised by :func:`get` for anything that is not one of :data:`FORMATS`."""


@dataclass(frozen=True)
class FloatFormat:
    """A binary floating-point format, described by its fields.

    ``nan_encoding`` is ``"ieee"`` when every all-ones exponent with a nonzero
    significand is NaN and the all-ones exponent with a zero significand is
    infinity; ``"fn"`` ("finite, NaN") when the format has no infinity and only
    the all-ones exponent *and* significand encode NaN (fp8_e4m3fn).  Overflow
    in an ``"fn"`` format saturates to the largest finite value.
    """

    name: str
    exponent_bits: int
    mantissa_bits: int
    bias: int
    nan_encoding: NanEncoding
    torch_dtype_name: str
    numpy_float_name: str | None
    aliases: tuple[str, ...] = ()

    # ---- widths and containers -------------------------------------------------
    @property
    def width(self) -> int:
        """Total number of bits of one value."""
        return 1 + self.exponent_bits + self.mantissa_bits

    @property
    def precision(self) -> int:
        """Significand precision p, counting the implicit bit."""
        return self.mantissa_bits + 1

    @cached_property
    def uint_dtype(self) -> np.dtype[Any]:
        """The unsigned NumPy integer dtype that holds one bit pattern."""
        return np.dtype(f"uint{self.width}")

    @cached_property
    def int_dtype(self) -> np.dtype[Any]:
        """The signed NumPy integer dtype of the same width (torch views use it)."""
        return np.dtype(f"int{self.width}")

    @cached_property
    def numpy_float(self) -> np.dtype[Any] | None:
        """The NumPy float dtype of this format, or None (bf16, fp8)."""
        return None if self.numpy_float_name is None else np.dtype(self.numpy_float_name)

    @property
    def has_inf(self) -> bool:
        return self.nan_encoding == "ieee"

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
        top = self.max_biased_exponent if self.nan_encoding == "fn" else self.max_biased_exponent - 1
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
        """The quiet NaN a computation returns: sign 0, top significand bit set."""
        if self.nan_encoding == "fn":
            return self.magnitude_mask
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
        per_sign = self.mantissa_mask if self.nan_encoding == "ieee" else 1
        return 2 * per_sign

    def __repr__(self) -> str:
        return f"revcheck.formats.get({self.name!r})"


FORMATS: dict[str, FloatFormat] = {
    fmt.name: fmt
    for fmt in (
        FloatFormat("fp64", 11, 52, 1023, "ieee", "float64", "float64", ("float64", "double")),
        FloatFormat("fp32", 8, 23, 127, "ieee", "float32", "float32", ("float32", "float")),
        FloatFormat("fp16", 5, 10, 15, "ieee", "float16", "float16", ("float16", "half")),
        FloatFormat("bf16", 8, 7, 127, "ieee", "bfloat16", None, ("bfloat16",)),
        FloatFormat("fp8_e5m2", 5, 2, 15, "ieee", "float8_e5m2", None, ("float8_e5m2", "e5m2")),
        FloatFormat("fp8_e4m3fn", 4, 3, 7, "fn", "float8_e4m3fn", None, ("float8_e4m3fn", "e4m3fn")),
    )
}

_BY_ALIAS: dict[str, FloatFormat] = {
    alias: fmt for fmt in FORMATS.values() for alias in (fmt.name, *fmt.aliases)
}


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
    """Look up a format by name (``"bf16"``), torch dtype, NumPy float dtype, or format.

    >>> get("bf16").mantissa_bits
    7
    >>> get("float16") is get("fp16")
    True
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
        if key in _BY_ALIAS:
            return _BY_ALIAS[key]
    else:
        try:
            np_dtype = np.dtype(spec)  # type: ignore[call-overload]
        except TypeError:
            np_dtype = None
        if np_dtype is not None and np_dtype.kind == "f" and np_dtype.name in _BY_ALIAS:
            return _BY_ALIAS[np_dtype.name]
        if np_dtype is not None and np_dtype.kind in "iu":
            raise UnsupportedFormatError(
                f"{spec!r} is an integer dtype, not a float format; to describe bit "
                f"patterns, pass the format they encode, one of {', '.join(FORMATS)}"
            )
    raise UnsupportedFormatError(
        f"unsupported float format {spec!r}; supported formats are "
        f"{', '.join(FORMATS)} (or their torch/NumPy dtypes)"
    )


def _is_torch_dtype(obj: object) -> bool:
    # Avoids importing torch: the oracle must stay torch-free.
    return type(obj).__module__ == "torch" and type(obj).__name__ == "dtype"
