"""Shared machinery for the "the suite flags this planted bug" tests.

The planted bugs live in ``tests/gallery/``; each test module monkeypatches one
into place and calls the property test functions from ``properties/`` directly,
expecting an AssertionError.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType

from hypothesis import HealthCheck, Phase, settings


def property_module(name: str) -> ModuleType:
    """``properties/<name>.py``, imported as a module (e.g. ``"test_pam_oracle"``)."""
    return importlib.import_module(f"properties.{name}")


def gallery_module(name: str) -> ModuleType:
    """``tests/gallery/<name>.py`` (e.g. ``"pam_oracle_mutants"``)."""
    return importlib.import_module(f"tests.gallery.{name}")


@contextmanager
def hunting_profile() -> Iterator[None]:
    """The current profile without shrinking or database: a failure is all a mutant test needs to see."""
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
