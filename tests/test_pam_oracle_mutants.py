"""The oracle properties catch every planted bug of ``tests/gallery/pam_oracle_mutants.py``.

Each mutant replaces its function in :mod:`revcheck.oracle.pam` and each
property named as its catcher is run (the profile's example count, no
shrinking, no example database): it must fail with an assertion.  The same
properties pass on the real oracle (``properties/test_pam_oracle.py``).
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from hypothesis import HealthCheck, Phase, settings

from revcheck.oracle import pam as oracle

ROOT = Path(__file__).resolve().parents[1]


def _load(path: Path, name: str) -> ModuleType:
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


mutants = _load(ROOT / "tests" / "gallery" / "pam_oracle_mutants.py", "revcheck_gallery_pam_oracle_mutants")
properties = _load(ROOT / "properties" / "test_pam_oracle.py", "revcheck_properties_test_pam_oracle")


@pytest.fixture
def hunting_profile() -> Iterator[None]:
    """The current profile without shrinking or database: a failure is all this test needs to see."""
    previous = settings.get_current_profile_name()
    settings.register_profile(
        "revcheck-oracle-mutant-hunt",
        settings.get_profile(previous),
        phases=[Phase.explicit, Phase.generate],
        database=None,
        report_multiple_bugs=False,
        suppress_health_check=list(HealthCheck),
    )
    settings.load_profile("revcheck-oracle-mutant-hunt")
    try:
        yield
    finally:
        settings.load_profile(previous)


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
