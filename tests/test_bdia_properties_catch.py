"""Every planted BDIA bug in tests/gallery/bdia_bugs.py is flagged by the properties that claim it."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from properties import test_bdia_oracle as oracle_properties
from properties import test_bdia_stack as stack_properties
from revcheck.nn.bdia import BDIAReconstructionError
from tests.gallery.bdia_bugs import PLANTED_BUGS, PlantedBug

# A failure is an assertion (bit mismatch) or the stack's own reconstruction check firing.
_FLAGS = (AssertionError, BDIAReconstructionError)

# Enough examples to reach the bug-triggering inputs (ties, large magnitudes, dropout) on every seed;
# no shrinking: we only need to know that the property fails.
_SEARCH = settings(
    max_examples=300,
    derandomize=True,
    database=None,
    deadline=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)


def _property_body(bug: PlantedBug, check_name: str) -> Callable[[st.DataObject], None]:
    if bug.kind == "stack":
        check = getattr(stack_properties, check_name)
        return lambda data: check(data, "cpu", stack_class=bug.implementation)
    check = getattr(oracle_properties, check_name)
    return lambda data: check(data, oracle=bug.implementation)


def _is_flag(error: BaseException) -> bool:
    inner_errors = getattr(error, "exceptions", None)  # an ExceptionGroup of several distinct failures
    if isinstance(inner_errors, tuple):
        return all(_is_flag(inner) for inner in inner_errors)
    return isinstance(error, _FLAGS)


CASES = [(bug, check) for bug in PLANTED_BUGS for check in bug.caught_by]


@pytest.mark.parametrize(("bug", "check_name"), CASES, ids=[f"{b.name}-{c}" for b, c in CASES])
def test_property_flags_planted_bug(bug: PlantedBug, check_name: str) -> None:
    body = _property_body(bug, check_name)

    @_SEARCH
    @given(data=st.data())
    def property_under_bug(data: st.DataObject) -> None:
        body(data)

    with pytest.raises(BaseException) as caught:
        property_under_bug()
    assert _is_flag(caught.value), f"{bug.name}: {check_name} failed for another reason: {caught.value!r}"


@pytest.mark.parametrize(
    "check_name", sorted({c for b in PLANTED_BUGS if b.kind == "stack" for c in b.caught_by})
)
def test_property_passes_on_the_real_stack(check_name: str) -> None:
    """The same search settings find nothing on the real implementation (the catches are not noise)."""
    check = getattr(stack_properties, check_name)

    @settings(_SEARCH, max_examples=5)
    @given(data=st.data())
    def property_on_real_stack(data: st.DataObject) -> None:
        check(data, "cpu")

    property_on_real_stack()


def test_every_planted_bug_names_existing_properties() -> None:
    for bug in PLANTED_BUGS:
        module = stack_properties if bug.kind == "stack" else oracle_properties
        for check_name in bug.caught_by:
            assert callable(getattr(module, check_name, None)), f"{bug.name}: no property body {check_name}"
