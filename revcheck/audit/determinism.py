"""Run-to-run determinism: the same inputs must give the same bits every time.

:func:`assert_deterministic` calls a function several times (on CUDA also on a
second stream) and compares every output bit for bit, NaN payloads and the
sign of zero included.  Outputs may be tensors, NumPy arrays, Python numbers,
or (nested) tuples, lists and dicts of them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from revcheck import bits as _bits
from revcheck import formats as _formats

__all__ = ["Difference", "NondeterminismError", "assert_deterministic", "first_difference"]


@dataclass(frozen=True)
class Difference:
    """Where two runs disagree: which output (path), which element, and both values as text."""

    path: str
    index: tuple[int, ...]
    first: str
    other: str
    reason: str = "values"

    def text(self) -> str:
        where = f"output {self.path or '<result>'}"
        if self.reason != "values":
            return f"{where}: {self.reason}: {self.first} vs {self.other}"
        return f"{where} at index {self.index}: {self.first} vs {self.other}"


class NondeterminismError(AssertionError):
    """Raised by :func:`assert_deterministic`; ``run`` is the run (0-based) that differed from run 0."""

    def __init__(self, message: str, run: int, difference: Difference, where: str) -> None:
        super().__init__(message)
        self.run = run
        self.difference = difference
        self.where = where


def _flatten(output: Any, path: str = "") -> list[tuple[str, Any]]:
    if isinstance(output, (tuple, list)):
        return [item for i, element in enumerate(output) for item in _flatten(element, f"{path}[{i}]")]
    if isinstance(output, dict):
        return [item for key, element in output.items() for item in _flatten(element, f"{path}[{key!r}]")]
    return [(path, output)]


def _as_array(value: Any) -> tuple[np.ndarray[Any, Any], str, Any]:
    """(raw bits or integer values as a NumPy array, dtype/device text, format or None)."""
    if type(value).__module__.startswith("torch") and hasattr(value, "untyped_storage"):
        device = str(value.device)
        if value.dtype.is_floating_point:
            fmt = _formats.get(value.dtype)
            return _bits.to_bits(value), f"{value.dtype} on {device}", fmt
        return np.asarray(value.detach().cpu().numpy()), f"{value.dtype} on {device}", None
    array = np.asarray(value)
    if array.dtype.kind == "f":
        fmt = _formats.get(array.dtype)
        return _bits.to_bits(array), str(array.dtype), fmt
    return array, str(array.dtype), None


def first_difference(reference: Any, other: Any) -> Difference | None:
    """The first place where two outputs differ bit for bit, or None when they are identical."""
    left, right = _flatten(reference), _flatten(other)
    if len(left) != len(right):
        return Difference("", (), f"{len(left)} outputs", f"{len(right)} outputs", "number of outputs")
    for (path, a), (_, b) in zip(left, right, strict=True):
        a_array, a_kind, fmt = _as_array(a)
        b_array, b_kind, _ = _as_array(b)
        if a_kind != b_kind:
            return Difference(path, (), a_kind, b_kind, "dtype/device")
        if a_array.shape != b_array.shape:
            return Difference(path, (), str(a_array.shape), str(b_array.shape), "shape")
        wrong = a_array != b_array
        if a_array.dtype.kind == "O":
            wrong = np.array(wrong, dtype=bool)
        if np.any(wrong):
            flat = int(np.argmax(np.asarray(wrong).reshape(-1)))
            index = tuple(int(i) for i in np.unravel_index(flat, a_array.shape)) if a_array.shape else ()
            x, y = a_array[index], b_array[index]
            if fmt is not None:
                return Difference(path, index, _bits.describe(int(x), fmt), _bits.describe(int(y), fmt))
            return Difference(
                path,
                index,
                repr(x.item() if hasattr(x, "item") else x),
                repr(y.item() if hasattr(y, "item") else y),
            )
    return None


def _on_cuda(args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    for value in [*args, *kwargs.values()]:
        for _, leaf in _flatten(value):
            if (
                type(leaf).__module__.startswith("torch")
                and getattr(getattr(leaf, "device", None), "type", "") == "cuda"
            ):
                return True
    return False


def assert_deterministic(fn: Callable[..., Any], *args: Any, runs: int = 5, **kwargs: Any) -> Any:
    """Call ``fn(*args, **kwargs)`` ``runs`` times and assert every run gives the same bits as the first.

    When an input lives on a CUDA device, one more run goes on a freshly created
    stream (kernels that depend on the stream, e.g. through workspace reuse,
    show up there).  Inputs are passed as they are, not copied: a function that
    mutates its inputs is itself nondeterministic under repetition.  Returns the
    output of the first run.  Raises :class:`NondeterminismError` naming the run,
    the output, the first differing element and both values (decimal and bits).
    """
    if runs < 2:
        raise ValueError(f"runs={runs} cannot show a difference; use runs >= 2")
    reference = fn(*args, **kwargs)
    schedules: list[str] = [f"run {i}" for i in range(1, runs)]
    if _on_cuda(args, kwargs):
        schedules.append("run on a second CUDA stream")
    for run, where in enumerate(schedules, start=1):
        if where.startswith("run on a second"):
            import torch

            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                output = fn(*args, **kwargs)
            stream.synchronize()
        else:
            output = fn(*args, **kwargs)
        difference = first_difference(reference, output)
        if difference is not None:
            name = getattr(fn, "__qualname__", repr(fn))
            message = (
                f"{name} is not deterministic: {where} differs from run 0 in {difference.text()} "
                f"(run 0 first, then {where})"
            )
            raise NondeterminismError(message, run, difference, where)
    return reference
