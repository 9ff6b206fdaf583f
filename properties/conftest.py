"""Configuration of the Hypothesis property suites.

Hypothesis profile: ``revcheck`` (``revcheck-ci`` on CI), loaded here from
:mod:`revcheck._profiles`; choose another with
``pytest properties --hypothesis-profile revcheck-thorough``.  Devices come from
``--device cpu|cuda|all`` through the plugin's ``device`` fixture.  Suites that
need triton live in ``properties/triton/`` and skip themselves without it.
"""

from __future__ import annotations

import pytest

from revcheck.pytest_plugin import ensure_registered, load_revcheck_profile


def pytest_addoption(parser: pytest.Parser, pluginmanager: pytest.PytestPluginManager) -> None:
    # Registers revcheck's plugin when running from a checkout where its entry point is not installed.
    ensure_registered(pluginmanager)


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    load_revcheck_profile(config)
