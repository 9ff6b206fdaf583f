"""Configuration of the toolkit's unit tests."""

from __future__ import annotations

import pytest

from revcheck.pytest_plugin import ensure_registered

# pytester runs pytest inside tests, to test revcheck's pytest plugin.
pytest_plugins = ["pytester"]


def pytest_addoption(parser: pytest.Parser, pluginmanager: pytest.PytestPluginManager) -> None:
    # Registers revcheck's plugin (--device, the device fixture, profiles) when running from a checkout
    # where the pytest11 entry point is not installed.
    ensure_registered(pluginmanager)
