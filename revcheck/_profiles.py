"""Hypothesis settings profiles of the revcheck suites, registered on import.

``default``
    What ``pytest properties`` uses on a developer machine: 100 examples, no
    deadline (first calls compile kernels or start CUDA, which a deadline would
    misreport as flakiness).
``ci``
    ``default`` made reproducible: derandomized, no example database, and a
    failure prints the ``@reproduce_failure`` blob.
``thorough``
    Many more examples, for a nightly run or before a release:
    ``pytest properties --hypothesis-profile thorough``.

Which profile is in force: ``--hypothesis-profile NAME`` (or
:func:`hypothesis.settings.load_profile`) wins; otherwise ``ci`` when
Hypothesis detects a CI environment (the ``CI`` variable and vendor-specific
ones), else ``default``.

Hypothesis itself registers built-in ``default`` and ``ci`` profiles and, when
it detects CI, loads its ``ci`` while it is being imported.  Re-registering a
profile under the name that is currently loaded makes the new one take effect
at once, so our registrations replace the built-ins in place.  Versions of
Hypothesis without the automatic CI detection never load ``ci`` by themselves;
:func:`activate` does it for them.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

__all__ = ["PROFILES", "PROFILE_NAMES", "activate", "in_ci", "register"]

PROFILE_NAMES = ("default", "ci", "thorough")
# The settings objects we registered, by name: lets tests tell ours from Hypothesis' built-ins.
PROFILES: dict[str, settings] = {}

DEFAULT_MAX_EXAMPLES = 100
THOROUGH_MAX_EXAMPLES = 2500


def in_ci() -> bool:
    """Whether Hypothesis would consider this process to be running on CI."""
    try:
        from hypothesis._settings import is_in_ci
    except ImportError:  # older Hypothesis: it only ever looked at CI itself
        return "CI" in os.environ
    return bool(is_in_ci())


def register() -> None:
    """Register (or re-register) the ``default``, ``ci`` and ``thorough`` profiles."""
    # An explicit parent: settings() without one inherits the profile in force, which on CI is
    # Hypothesis' derandomized "ci" -- our "default" and "thorough" would silently become it.
    default = settings(
        settings.get_profile("default"),
        max_examples=DEFAULT_MAX_EXAMPLES,
        deadline=None,
        # Bit-pattern strategies and whole-array draws are legitimately slow to generate.
        suppress_health_check=[HealthCheck.too_slow],
    )
    settings.register_profile("default", default)
    settings.register_profile(
        "ci",
        default,
        derandomize=True,
        deadline=None,
        database=None,
        print_blob=True,
    )
    settings.register_profile("thorough", default, max_examples=THOROUGH_MAX_EXAMPLES)
    PROFILES.update({name: settings.get_profile(name) for name in PROFILE_NAMES})


def activate() -> str:
    """Load ``ci`` on CI unless someone already chose a profile; return the profile in force."""
    current = settings.get_current_profile_name()
    if current == "default" and in_ci():
        settings.load_profile("ci")
    return settings.get_current_profile_name()


register()
activate()
