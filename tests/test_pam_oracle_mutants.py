"""The oracle properties catch every planted bug of ``tests/gallery/pam_oracle_mutants.py``.

Each mutant replaces its function in :mod:`revcheck.oracle.pam` and each
property named as its catcher is run (the profile's example count, no
shrinking, no example database): it must fail with an assertion.  The same
properties pass on the real oracle (``properties/test_pam_oracle.py``).
"""

from __future__ import annotations

import pytest

from revcheck.oracle import pam as oracle
from tests.mutation import gallery_module, property_module

mutants = gallery_module("pam_oracle_mutants")
properties = property_module("test_pam_oracle")


CASES = [
    pytest.param(name, test_name, params, id=f"{name}-{test_name}")
    for name, mutant in mutants.MUTANTS.items()
    for test_name, params in mutant.caught_by
]


@pytest.mark.parametrize(("mutant_name", "test_name", "params"), CASES)
def test_property_catches_mutant(
    mutant_name: str,
    test_name: str,
    params: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    hunting_profile: None,
) -> None:
    mutant = mutants.MUTANTS[mutant_name]
    monkeypatch.setattr(oracle, mutant.target, mutant.function)
    with pytest.raises(AssertionError):
        getattr(properties, test_name)(**params)


def test_every_mutant_is_wrong_somewhere_and_every_catcher_exists() -> None:
    for name, mutant in mutants.MUTANTS.items():
        assert hasattr(oracle, mutant.target), f"{name} replaces unknown oracle.{mutant.target}"
        assert mutant.caught_by, f"{name} has no property that catches it"
        for test_name, _ in mutant.caught_by:
            assert hasattr(properties, test_name), f"{name}: no property {test_name}"
