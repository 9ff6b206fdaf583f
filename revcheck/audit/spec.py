"""The description of one auditable operation (:class:`OpSpec`) and helpers the op families share.

An :class:`OpSpec` is data: how to draw inputs, how to call the candidate, what
the oracle says, how to compare, and how to enumerate every input where that is
feasible.  The runner (:mod:`revcheck.audit.runner`) knows nothing op-specific.

A *case* is a dict of named inputs: NumPy bit-pattern arrays (``fmt.uint_dtype``),
int64 code arrays, or plain ints (such as the BDIA grid exponent ``l``).
*Outputs* are a dict of named NumPy arrays (bit patterns or codes).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from hypothesis import strategies as st

from revcheck import bits as _bits
from revcheck.audit.report import Finding, Value
from revcheck.formats import FloatFormat

__all__ = ["BadOutput", "ExhaustivePlan", "OpSpec"]

Case = dict[str, Any]
Outputs = dict[str, np.ndarray[Any, Any]]
Candidate = Callable[..., Any]


class BadOutput(Exception):
    """The candidate returned something that cannot be compared (wrong type, dtype, shape, device)."""


@dataclass(frozen=True)
class ExhaustivePlan:
    """Every input of an op in one format, in chunks.

    ``size`` is the number of input elements; ``by_default`` whether the audit
    runs it without ``exhaustive=True`` (8-bit formats, 16-bit unary ops).
    """

    size: int
    by_default: bool
    chunks: Callable[[], Iterator[Case]]


@dataclass(frozen=True)
class OpSpec:
    """One auditable operation.

    ``signature`` documents what a candidate must look like.  ``modes`` are the
    PAM rounding modes the op has (empty for ops without a mode); a candidate
    that accepts a ``mode`` keyword gets it, one that does not can only be
    audited in mode ``"ieee"``.
    """

    name: str
    signature: str
    summary: str
    formats: tuple[str, ...]
    modes: tuple[str, ...]
    strategy: Callable[[FloatFormat], st.SearchStrategy[Case]]
    call: Callable[[Candidate, Case, FloatFormat, str | None, str], Outputs]
    oracle: Callable[[Case, FloatFormat, str | None], Outputs]
    compare: Callable[[Case, Outputs, Outputs, FloatFormat, str | None], Finding | None]
    narrow: Callable[[Case, tuple[int, ...]], Case]
    sample: Callable[[FloatFormat, np.random.Generator], Case]
    exhaustive: Callable[[FloatFormat], ExhaustivePlan | None]

    def describe(self) -> str:
        return f"{self.name}: {self.signature}\n    {self.summary}\n    formats: {', '.join(self.formats)}"


# ---- helpers shared by the op families -------------------------------------------------


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


def to_tensor(bits: np.ndarray[Any, Any], fmt: FloatFormat, device: str) -> Any:
    return _bits.to_torch(np.ascontiguousarray(bits), fmt, device)


def codes_to_tensor(codes: np.ndarray[Any, Any], device: str) -> Any:
    import torch

    return torch.from_numpy(np.ascontiguousarray(codes, dtype=np.int64).copy()).to(device)


def output_bits(result: object, fmt: FloatFormat, shape: tuple[int, ...], what: str) -> np.ndarray[Any, Any]:
    """Bit patterns of a candidate's float output, after checking type, dtype and shape."""
    import torch

    if not isinstance(result, torch.Tensor):
        raise BadOutput(
            f"{what} is a {type(result).__name__}, expected a torch.Tensor of {fmt.torch_dtype_name}"
        )
    expected_dtype = getattr(torch, fmt.torch_dtype_name)
    if result.dtype != expected_dtype:
        raise BadOutput(f"{what} has dtype {result.dtype}, expected {expected_dtype}")
    if tuple(result.shape) != tuple(shape):
        raise BadOutput(f"{what} has shape {tuple(result.shape)}, expected {tuple(shape)}")
    return _bits.to_bits(result)


def output_codes(
    result: object, shape: tuple[int, ...], what: str, dtype: str = "int64"
) -> np.ndarray[Any, Any]:
    """A candidate's integer output as a NumPy array, after checking type, dtype and shape."""
    import torch

    if not isinstance(result, torch.Tensor):
        raise BadOutput(f"{what} is a {type(result).__name__}, expected a torch.Tensor of {dtype}")
    if result.dtype != getattr(torch, dtype):
        raise BadOutput(f"{what} has dtype {result.dtype}, expected torch.{dtype}")
    if tuple(result.shape) != tuple(shape):
        raise BadOutput(f"{what} has shape {tuple(result.shape)}, expected {tuple(shape)}")
    return np.asarray(result.detach().cpu().numpy())


def first_float_mismatch(
    expected: np.ndarray[Any, Any], actual: np.ndarray[Any, Any], fmt: FloatFormat
) -> tuple[int, ...] | None:
    """Index (C order) of the first element whose bits differ; all NaNs count as one class."""
    nan_both = _bits.is_nan(expected, fmt) & _bits.is_nan(actual, fmt)
    wrong = (expected != actual) & ~nan_both
    if not wrong.any():
        return None
    return tuple(int(i) for i in np.unravel_index(int(np.argmax(wrong)), wrong.shape))


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
    if array.dtype.kind == "f":
        return repr(array.tolist())
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
