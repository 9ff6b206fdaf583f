"""Configuration of the Hypothesis property suites.

Profiles (``default``, ``ci``, ``thorough``) come from :mod:`revcheck._profiles`,
loaded with revcheck's pytest plugin; choose one with
``pytest properties --hypothesis-profile thorough``.  Devices come from
``--device cpu|cuda|all`` through the plugin's ``device`` fixture.
"""

from __future__ import annotations

import pytest

from revcheck.pytest_plugin import ensure_registered


def pytest_addoption(parser: pytest.Parser, pluginmanager: pytest.PytestPluginManager) -> None:
    # Registers revcheck's plugin when running from a checkout where its entry point is not installed.
    ensure_registered(pluginmanager)
