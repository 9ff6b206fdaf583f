"""The PAM property suites catch every planted bug of ``tests/gallery/pam_torch_mutants.py``.

Each mutant is patched in where the real code lives and each property that
claims to guard against it is run (default profile's example count, no
shrinking, no example database): it must fail with an assertion.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, settings

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


mutants = _load(ROOT / "tests" / "gallery" / "pam_torch_mutants.py", "revcheck_gallery_pam_torch_mutants")


def _property(module_name: str, test_name: str) -> object:
    module = _load(ROOT / "properties" / f"{module_name}.py", f"revcheck_properties_{module_name}")
    return getattr(module, test_name)


@pytest.fixture
def hunting_profile() -> Iterator[None]:
    """The current profile without shrinking or database: a failure is all this test needs to see."""
    previous = settings.get_current_profile_name()
    settings.register_profile(
        "revcheck-mutant-hunt",
        settings.get_profile(previous),
        phases=[Phase.explicit, Phase.generate],
        database=None,
        report_multiple_bugs=False,
        suppress_health_check=list(HealthCheck),
    )
    settings.load_profile("revcheck-mutant-hunt")
    try:
        yield
    finally:
        settings.load_profile(previous)


CASES = [
    pytest.param(mutant, module_name, test_name, kwargs, id=f"{mutant.name} / {test_name}")
    for mutant in mutants.MUTANTS
    for module_name, test_name, kwargs in mutant.caught_by
]


@pytest.mark.parametrize(("mutant", "module_name", "test_name", "kwargs"), CASES)
def test_property_catches_mutant(
    mutant: Any,
    module_name: str,
    test_name: str,
    kwargs: dict[str, object],
    monkeypatch: pytest.MonkeyPatch,
    hunting_profile: None,
) -> None:
    target, attribute = mutant.target
    monkeypatch.setattr(target, attribute, mutant.replacement)
    check = _property(module_name, test_name)
    with pytest.raises(AssertionError):
        check(device="cpu", **kwargs)  # type: ignore[operator]


def test_every_mutant_is_checked_by_some_property() -> None:
    unguarded = [mutant.name for mutant in mutants.MUTANTS if not mutant.caught_by]
    assert not unguarded, f"mutants without a property that must catch them: {unguarded}"


@pytest.mark.parametrize(
    ("module_name", "test_name", "kwargs"),
    sorted({(m, t, tuple(sorted(k.items()))) for mutant in mutants.MUTANTS for m, t, k in mutant.caught_by}),
)
def test_properties_pass_on_the_real_kernels(
    module_name: str, test_name: str, kwargs: tuple[tuple[str, object], ...], hunting_profile: None
) -> None:
    """The same calls without a mutant pass: the failures above are the mutants' doing."""
    check = _property(module_name, test_name)
    check(device="cpu", **dict(kwargs))  # type: ignore[operator]
