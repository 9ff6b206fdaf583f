"""The PAM property suites catch every planted bug of ``tests/gallery/pam_torch_mutants.py``.

Each mutant is patched in where the real code lives and each property that
claims to guard against it is run (default profile's example count, no
shrinking, no example database): it must fail with an assertion.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.mutation import gallery_module, property_module

mutants = gallery_module("pam_torch_mutants")


def _property(module_name: str, test_name: str) -> object:
    return getattr(property_module(module_name), test_name)


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
