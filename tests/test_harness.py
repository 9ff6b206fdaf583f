"""The planted-bug harness itself: generic error types are refused, and a catch needs the declared type."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import strategies as st

from revcheck.testing import BitMismatchError, assert_bit_exact
from tests.harness import (
    PlantedBug,
    all_planted_bugs,
    check_with,
    examples_to_catch,
    flattened,
    gallery_modules,
    run_check,
)


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


def _check_with_offset(data: st.DataObject, negate: object, *, offset: int) -> None:
    value = np.float32(data.draw(st.integers(0, 10), label="value") + offset)
    assert_bit_exact(np.array([negate(value)], dtype=np.float32), np.array([-value], dtype=np.float32))  # type: ignore[operator]


def test_check_with_binds_parameters_names_the_check_and_is_shared() -> None:
    check = check_with(_check_with_offset, offset=0)
    assert check.__name__ == "_check_with_offset[offset=0]"
    assert check_with(_check_with_offset, offset=0) is check  # one real run per (check, implementation)
    bug = PlantedBug("zero minus x", "negation as 0 - x loses -0", check, _wrong, _real, BitMismatchError)
    with pytest.raises(BitMismatchError):
        run_check(bug, bug.wrong)
    run_check(bug, bug.right)


def test_check_with_injects_the_implementation_by_keyword() -> None:
    seen = []

    def plain(*, implementation: object, label: str) -> None:
        seen.append((implementation, label))

    check_with(plain, inject="implementation", label="x")("impl")
    assert seen == [("impl", "x")]


def test_examples_to_catch_counts_examples_until_the_first_failure() -> None:
    # Only value 0 exposes 0 - x: the first example Hypothesis tries is the simplest, 0.
    bug = PlantedBug(
        "zero minus x", "", check_with(_check_with_offset, offset=0), _wrong, _real, BitMismatchError
    )
    assert examples_to_catch(bug) == 1
    never = PlantedBug(
        "zero minus x", "", check_with(_check_with_offset, offset=1), _wrong, _real, BitMismatchError
    )
    assert examples_to_catch(never, limit=20) is None


def test_every_gallery_module_is_collected() -> None:
    # No gallery keeps a record type of its own: each module of tests/gallery is read by the harness,
    # and every family's records are there (audit_stacks holds stacks for `revcheck audit-stack`, no bugs).
    names = {name.rsplit(".", 1)[1] for name in gallery_modules()}
    expected = {"audit_kernels", "audit_stacks", "bdia_bugs", "expand_bugs", "memxl_bugs", "mulfree_bugs"}
    expected |= {"pam_oracle_mutants", "pam_torch_mutants", "pam_triton_mutants", "tying_bugs"}
    assert expected <= names
    families = {bug.family for bug in all_planted_bugs()}
    assert families >= {"audit", "bdia", "expand", "memxl", "mulfree", "pam_oracle", "pam_torch", "tying"}
    assert "pam_triton" in families  # its records import without triton and skip at run time
