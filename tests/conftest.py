"""Configuration of the toolkit's unit tests.

Hypothesis profile: ``revcheck`` (``revcheck-ci`` on CI) unless
``--hypothesis-profile`` names another.  Tests that need triton live in
``tests/triton/`` and skip themselves without it.
"""

from __future__ import annotations

import pytest

from revcheck.pytest_plugin import ensure_registered, load_revcheck_profile

# pytester runs pytest inside tests, to test revcheck's pytest plugin.
pytest_plugins = ["pytester"]


def pytest_addoption(parser: pytest.Parser, pluginmanager: pytest.PytestPluginManager) -> None:
    # Registers revcheck's plugin (--device, the device fixture, profiles) when running from a checkout
    # where the pytest11 entry point is not installed.
    ensure_registered(pluginmanager)


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    load_revcheck_profile(config)
