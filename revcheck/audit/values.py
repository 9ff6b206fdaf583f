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
    "array_value",
    "case_from_literal",
    "case_values",
    "first_float_mismatch",
    "float_value",
    "int_value",
    "label",
    "literal",
    "ulp",
    "value_class",
]


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
