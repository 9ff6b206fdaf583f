"""The planted-bug harness itself: generic error types are refused, and a catch needs the declared type."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import strategies as st

from revcheck.testing import BitMismatchError, assert_bit_exact
from tests.harness import PlantedBug, flattened, run_check


def _check_negation(data: st.DataObject, negate: object) -> None:
    value = np.float32(data.draw(st.floats(-10, 10, width=32), label="value"))
    assert_bit_exact(np.array([negate(value)], dtype=np.float32), np.array([-value], dtype=np.float32))  # type: ignore[operator]


def _real(value: np.float32) -> np.float32:
    return -value


def _wrong(value: np.float32) -> np.float32:
    return np.float32(0.0) - value  # 0 - (+0) is +0, not -0


def _record(error: type[BaseException]) -> PlantedBug:
    return PlantedBug("zero minus x", "negation as 0 - x loses -0", _check_negation, _wrong, _real, error)


def test_catch_needs_the_declared_error_type() -> None:
    bug = _record(BitMismatchError)
    with pytest.raises(BitMismatchError):
        run_check(bug, bug.wrong)
    run_check(bug, bug.right)


def test_generic_error_types_are_refused() -> None:
    with pytest.raises(TypeError, match="specific error type"):
        _record(AssertionError)


class _Group(Exception):
    """Shaped like an ExceptionGroup (which Python 3.10 lacks): the leaves are in ``exceptions``."""

    def __init__(self, *exceptions: BaseException) -> None:
        super().__init__("group")
        self.exceptions = exceptions


def test_flattened_opens_exception_groups() -> None:
    group = _Group(ValueError("a"), _Group(KeyError("b")))
    assert [type(e) for e in flattened(group)] == [ValueError, KeyError]
