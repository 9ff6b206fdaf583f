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
    # A check that cannot run here (e.g. Triton on a CPU without its interpreter) skips, with its reason.
    skips = [leaf for leaf in leaves if isinstance(leaf, pytest.skip.Exception)]
    if skips:
        raise skips[0]
    wrong_kind = [leaf for leaf in leaves if not isinstance(leaf, bug.error)]
    assert not wrong_kind, (
        f"{bug.id}: expected {bug.error.__name__}, but the check failed with {wrong_kind[0]!r}"
    )


# One run per (check, real implementation), with the largest max_examples any of its records asks for.
_REAL: dict[tuple[object, int], PlantedBug] = {}
for _bug in BUGS:
    _key = (_bug.check, id(_bug.right))
    if _key not in _REAL or _bug.max_examples > _REAL[_key].max_examples:
        _REAL[_key] = _bug


def _real_id(bug: PlantedBug) -> str:
    check_name = getattr(bug.check, "__name__", repr(bug.check))
    return f"{bug.family}:{check_name}" if bug.family else check_name


@pytest.mark.parametrize("bug", list(_REAL.values()), ids=[_real_id(bug) for bug in _REAL.values()])
def test_check_passes_on_real_implementation(bug: PlantedBug) -> None:
    _skip_if_missing(bug)
    run_check(bug, bug.right)
