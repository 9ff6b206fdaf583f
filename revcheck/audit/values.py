"""How an op's inputs and outputs are shown: :class:`~revcheck.audit.report.Value` text, classes, literals.

Shared by the op families (:mod:`revcheck.audit.ops_pam`, :mod:`revcheck.audit.ops_bdia`)
and the counterexample assembly.  Decimal text comes from :func:`revcheck.bits.describe`;
the NaN-class comparison from :func:`revcheck.testing.compare_bits`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from revcheck import bits as _bits
from revcheck.audit.report import Value
from revcheck.audit.spec import Case
from revcheck.formats import FloatFormat
from revcheck.testing import compare_bits

__all__ = [
    "MAGNITUDE_TAGS",
    "array_value",
    "case_from_literal",
    "case_values",
    "code_labels",
    "edge_labels",
    "first_float_mismatch",
    "float_value",
    "input_labels",
    "int_value",
    "is_finite_nonzero",
    "label",
    "literal",
    "ulp",
    "value_class",
]


#: The magnitude labels a counterexample can carry, each as ``"<value name>: <tag>"``, so that it points
#: at the cause (an overflow, a code a float cannot hold) and not only at the class of an input.
MAGNITUDE_TAGS = ("max finite", "overflow edge", "underflow edge", "|code| ≥ 2^24", "|code| ≥ 2^53")
# Integers above these are not all exact in fp32 (2^24) and fp64 (2^53): where codes stop converting exactly.
_CODE_THRESHOLDS = ((53, "|code| ≥ 2^53"), (24, "|code| ≥ 2^24"))


def input_labels(name: str, bits: int, fmt: FloatFormat) -> list[str]:
    """Magnitude labels of one input pattern: ``"<name>: max finite"`` for ±max finite."""
    return [f"{name}: max finite"] if int(bits) & fmt.magnitude_mask == fmt.max_finite else []


def edge_labels(
    name: str, bits: int, fmt: FloatFormat, *, from_finite: bool, from_nonzero: bool
) -> list[str]:
    """Whether a result lies at an edge of ``fmt``'s range: ``"<name>: overflow edge"`` / ``underflow edge``.

    Overflow edge: an infinity (or, in a saturating format, max finite) from finite inputs, or a
    value in the top binade.  Underflow edge: a subnormal, a value in the lowest normal binade, or
    a zero from nonzero finite inputs (``from_finite``, ``from_nonzero``: what the inputs were).
    """
    magnitude = int(bits) & fmt.magnitude_mask
    field = magnitude >> fmt.mantissa_bits
    if bool(_bits.is_nan(np.array([bits], dtype=fmt.uint_dtype), fmt)[0]):
        return []
    labels: list[str] = []
    overflowed = magnitude == fmt.overflow_magnitude and from_finite
    if overflowed or (magnitude != fmt.exponent_mask and field == fmt.emax + fmt.bias):
        labels.append(f"{name}: overflow edge")
    if (magnitude != 0 and field <= 1) or (magnitude == 0 and from_finite and from_nonzero):
        labels.append(f"{name}: underflow edge")
    return labels


def code_labels(name: str, code: int) -> list[str]:
    """``"<name>: |code| ≥ 2^53"`` (or ``2^24``) for codes beyond the exact integers of fp64 (fp32)."""
    for bits, tag in _CODE_THRESHOLDS:
        if abs(int(code)) >= 1 << bits:
            return [f"{name}: {tag}"]
    return []


def is_finite_nonzero(bits: int, fmt: FloatFormat) -> tuple[bool, bool]:
    """(finite, nonzero) of one pattern."""
    pattern = np.array([bits], dtype=fmt.uint_dtype)
    return bool(_bits.is_finite(pattern, fmt)[0]), not bool(_bits.is_zero(pattern, fmt)[0])


def label(bits: int, fmt: FloatFormat) -> str:
    """``"+normal"``, ``"-zero"``, ``"+nan"`` ...: sign and value class of one pattern."""
    pattern = np.array([bits], dtype=fmt.uint_dtype)
    sign = "-" if bool(_bits.sign_bit(pattern, fmt)[0]) else "+"
    return sign + str(_bits.classify(pattern, fmt)[0])


def value_class(bits: int, fmt: FloatFormat) -> str:
    return str(_bits.classify(np.array([bits], dtype=fmt.uint_dtype), fmt)[0])


def float_value(name: str, bits: int, fmt: FloatFormat) -> Value:
    return Value(name, _bits.describe(int(bits), fmt), int(bits), fmt.name)


def int_value(name: str, code: int, kind: str = "int64") -> Value:
    return Value(name, str(int(code)), int(code), kind)


def array_value(name: str, array: np.ndarray[Any, Any], fmt: FloatFormat | None) -> Value:
    """A whole (small) array as text; single elements use :func:`float_value` / :func:`int_value`."""
    if array.size == 1:
        element = int(array.reshape(-1)[0])
        return float_value(name, element, fmt) if fmt is not None else int_value(name, element)
    if fmt is None:
        return Value(name, f"int64{list(array.shape)} {array.tolist()}", None, "int64")
    rows = ", ".join(_bits.describe(int(b), fmt) for b in array.reshape(-1)[:16])
    more = ", ..." if array.size > 16 else ""
    return Value(name, f"{fmt.name}{list(array.shape)} [{rows}{more}]", None, fmt.name)


def case_values(case: Case, fmt: FloatFormat) -> tuple[Value, ...]:
    """Every input of a case as a :class:`Value` (bit patterns of ``fmt`` as floats, the rest as ints)."""
    values = []
    for name, value in case.items():
        if isinstance(value, np.ndarray):
            values.append(array_value(name, value, fmt if value.dtype == fmt.uint_dtype else None))
        else:
            values.append(int_value(name, value, "int"))
    return tuple(values)


def first_float_mismatch(
    expected: np.ndarray[Any, Any], actual: np.ndarray[Any, Any], fmt: FloatFormat
) -> tuple[int, ...] | None:
    """Index (C order) of the first element whose bits differ; all NaNs count as one class."""
    comparison = compare_bits(actual, expected, fmt=fmt, max_reported=1)
    if comparison.equal:
        return None
    if comparison.reason != "values":
        raise ValueError(f"outputs cannot be compared element by element: {comparison.message()}")
    return comparison.indices[0]


def ulp(expected: int, actual: int, fmt: FloatFormat) -> int | None:
    distance = int(_bits.ulp_distance(np.array([expected]), np.array([actual]), fmt)[0])
    return None if distance < 0 else distance


def literal(case: Case) -> str:
    """The case as a Python literal: hex for bit patterns, decimal for codes and ints."""
    parts = []
    for name, value in case.items():
        text = _array_literal(value) if isinstance(value, np.ndarray) else repr(value)
        parts.append(f"{name!r}: {text}")
    return "{" + ", ".join(parts) + "}"


def _array_literal(array: np.ndarray[Any, Any]) -> str:
    if array.dtype.kind == "u":
        digits = array.dtype.itemsize * 2

        def render(obj: Any) -> str:
            if isinstance(obj, list):
                return "[" + ", ".join(render(item) for item in obj) + "]"
            return f"0x{int(obj):0{digits}X}"

        return render(array.tolist())
    return repr(array.tolist())


def case_from_literal(case: dict[str, Any], template: Case) -> Case:
    """Turn a literal (lists of ints) back into arrays of the template's dtypes."""
    out: Case = {}
    for name, value in case.items():
        like = template.get(name)
        if isinstance(like, np.ndarray):
            out[name] = np.array(value, dtype=like.dtype)
        else:
            out[name] = value
    return out
