"""Hypothesis settings profiles of the revcheck suites, under revcheck's own names.

``revcheck``
    What revcheck's suites use on a developer machine: Hypothesis' ``default``
    with no deadline (first calls compile kernels or start CUDA, which a
    deadline would misreport as flakiness) and 100 examples.
``revcheck-ci``
    ``revcheck`` made reproducible, as Hypothesis' own ``ci`` profile does it:
    derandomized, no example database, and a failure prints the
    ``@reproduce_failure`` blob.
``revcheck-thorough``
    ``revcheck`` with many more examples, for a nightly run or before a release:
    ``pytest properties --hypothesis-profile revcheck-thorough``.

Registering a profile under a new name changes nothing by itself, so importing
this module (the pytest plugin does, so that ``--hypothesis-profile
revcheck-thorough`` works in any project) leaves Hypothesis' ``default`` and
``ci`` profiles, and whichever of them is in force, exactly as they were.  Only
revcheck's own conftests (``tests/``, ``properties/``) and nox sessions *load*
a revcheck profile: :func:`load` chooses ``revcheck-ci`` on CI and
``revcheck`` elsewhere, unless ``--hypothesis-profile`` chose one.

Property tests never hard-code ``max_examples``: they scale from the profile in
force, and an expensive property takes a fraction of it with :func:`scaled`.
"""

from __future__ import annotations

import os

from hypothesis import settings

__all__ = [
    "CI_PROFILE",
    "DEFAULT_PROFILE",
    "PROFILES",
    "PROFILE_NAMES",
    "THOROUGH_PROFILE",
    "in_ci",
    "load",
    "profile_for_this_run",
    "register",
    "scaled",
]

DEFAULT_PROFILE = "revcheck"
CI_PROFILE = "revcheck-ci"
THOROUGH_PROFILE = "revcheck-thorough"
PROFILE_NAMES = (DEFAULT_PROFILE, CI_PROFILE, THOROUGH_PROFILE)
# The settings objects registered under those names (what settings.default is once one is loaded).
PROFILES: dict[str, settings] = {}

DEFAULT_MAX_EXAMPLES = 100
THOROUGH_MAX_EXAMPLES = 2500


# Hypothesis loads its built-in "ci" profile at import when it detects a CI service (CI,
# GITHUB_ACTIONS, GITLAB_CI, ...).  Reading the profile in force when this module is first imported
# (by the plugin, before any conftest loads a profile) asks for that verdict through public API only.
_HYPOTHESIS_CHOSE_CI = settings.get_current_profile_name() == "ci"


def in_ci() -> bool:
    """Whether this run is on CI: the ``CI`` variable is set, or Hypothesis itself detected a CI service."""
    return "CI" in os.environ or _HYPOTHESIS_CHOSE_CI


def register() -> None:
    """Register ``revcheck``, ``revcheck-ci`` and ``revcheck-thorough``; load nothing."""
    # An explicit parent: settings() without one inherits the profile in force, which on CI is
    # Hypothesis' derandomized "ci" -- "revcheck" and "revcheck-thorough" would silently become it.
    base = settings(
        settings.get_profile("default"),
        max_examples=DEFAULT_MAX_EXAMPLES,
        deadline=None,
    )
    settings.register_profile(DEFAULT_PROFILE, base)
    settings.register_profile(CI_PROFILE, base, derandomize=True, database=None, print_blob=True)
    settings.register_profile(THOROUGH_PROFILE, base, max_examples=THOROUGH_MAX_EXAMPLES)
    PROFILES.update({name: settings.get_profile(name) for name in PROFILE_NAMES})


def profile_for_this_run() -> str:
    """``revcheck-ci`` on CI (see :func:`in_ci`), ``revcheck`` elsewhere."""
    return CI_PROFILE if in_ci() else DEFAULT_PROFILE


def load(requested: str | None = None) -> str:
    """Load the revcheck profile for this run unless ``requested`` (a ``--hypothesis-profile``) is given.

    For revcheck's own conftests, from ``pytest_configure``: Hypothesis' plugin
    loads a profile named with ``--hypothesis-profile`` itself, and that choice
    is kept.  Returns the name of the profile in force.
    """
    if not requested:
        settings.load_profile(profile_for_this_run())
    return settings.get_current_profile_name()


register()


def scaled(fraction: float, *, minimum: int = 5) -> settings:
    """Settings with ``fraction`` of the active profile's examples (at least ``minimum``).

    For properties whose every example is expensive (a model built and trained):
    ``@scaled(0.4)`` above ``@given`` keeps them proportional to the profile, so
    ``--hypothesis-profile revcheck-thorough`` still scales them up.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction!r}")
    active = settings.default
    assert active is not None  # Hypothesis always has a profile loaded
    return settings(max_examples=max(minimum, int(active.max_examples * fraction)))
