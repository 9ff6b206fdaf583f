"""Every planted bug of every gallery module is caught by its check, with the declared error type,
and the same check passes on the real implementation (tests/harness.py)."""

from __future__ import annotations

import importlib.util

import pytest

from tests.harness import PlantedBug, all_planted_bugs, flattened, run_check

BUGS = all_planted_bugs()


def _skip_if_missing(bug: PlantedBug) -> None:
    missing = [name for name in bug.requires if importlib.util.find_spec(name) is None]
    if missing:
        pytest.skip(f"{bug.id} needs {', '.join(missing)} (not installed)")


@pytest.mark.parametrize("bug", BUGS, ids=[bug.id for bug in BUGS])
def test_check_catches_planted_bug(bug: PlantedBug) -> None:
    _skip_if_missing(bug)
    with pytest.raises(BaseException) as caught:
        run_check(bug, bug.wrong)
    leaves = list(flattened(caught.value))
    wrong_kind = [leaf for leaf in leaves if not isinstance(leaf, bug.error)]
    assert not wrong_kind, (
        f"{bug.id}: expected {bug.error.__name__}, but the check failed with {wrong_kind[0]!r}"
    )


_REAL = {(bug.check, id(bug.right)): bug for bug in BUGS}


@pytest.mark.parametrize("bug", list(_REAL.values()), ids=[bug.id for bug in _REAL.values()])
def test_check_passes_on_real_implementation(bug: PlantedBug) -> None:
    _skip_if_missing(bug)
    run_check(bug, bug.right)
