"""pytest plugin of revcheck: ``--device``, the ``device`` fixture, the ``cuda`` marker, profiles.

Installed through the ``pytest11`` entry point, so any project that installs
revcheck gets it::

    pytest --device cpu     # default: tests that take ``device`` run on the CPU
    pytest --device cuda    # only on CUDA; skipped with a reason where there is none
    pytest --device all     # on every device: cpu and cuda

A test asks for devices by taking the ``device`` fixture (a string such as
``"cpu"`` or ``"cuda"``); a test that needs CUDA whatever ``--device`` says is
marked ``@pytest.mark.cuda``.

Importing this module *registers* revcheck's Hypothesis profiles under
revcheck's own names (:mod:`revcheck._profiles`: ``revcheck``, ``revcheck-ci``,
``revcheck-thorough``), so ``--hypothesis-profile revcheck-thorough`` works in
any project; it loads none of them, so a project that merely has revcheck
installed keeps Hypothesis' own ``default`` and ``ci`` behaviour.  revcheck's
own conftests call :func:`load_revcheck_profile`.  torch is imported only when
CUDA has to be looked for.
"""

from __future__ import annotations

import functools
import sys

import pytest

from revcheck import _profiles  # registers (does not load) revcheck's Hypothesis profiles

__all__ = [
    "DEVICE_CHOICES",
    "NO_CUDA_REASON",
    "PLUGIN_NAME",
    "cuda_available",
    "device",
    "ensure_registered",
    "load_revcheck_profile",
    "selected_devices",
]

DEVICE_CHOICES = ("cpu", "cuda", "all")
NO_CUDA_REASON = "CUDA not available (torch.cuda.is_available() is False)"
PLUGIN_NAME = "revcheck"  # the pytest11 entry point's name


def ensure_registered(pluginmanager: pytest.PytestPluginManager) -> None:
    """Register this plugin unless the entry point already did (revcheck not installed, run from a checkout).

    Call from a conftest's ``pytest_addoption(parser, pluginmanager)``: the
    hook is historic, so the plugin's own ``pytest_addoption`` still runs.
    ``-p no:revcheck`` is respected.
    """
    if pluginmanager.get_plugin(PLUGIN_NAME) is None and not pluginmanager.is_blocked(PLUGIN_NAME):
        pluginmanager.register(sys.modules[__name__], PLUGIN_NAME)


def load_revcheck_profile(config: pytest.Config) -> str:
    """Load ``revcheck`` (``revcheck-ci`` on CI) unless ``--hypothesis-profile`` chose a profile.

    For a conftest's ``pytest_configure`` (mark it ``tryfirst=True`` so that
    Hypothesis' own ``--hypothesis-profile`` and ``--hypothesis-verbosity``
    handling comes after it).  Returns the name of the profile in force.
    """
    return _profiles.load(config.getoption("hypothesis_profile", None))


@functools.lru_cache(maxsize=1)
def cuda_available() -> bool:
    """Whether torch sees a CUDA device (imports torch)."""
    import torch

    return bool(torch.cuda.is_available())


def selected_devices(option: str) -> list[str]:
    """The devices a ``--device`` value stands for."""
    if option == "all":
        return ["cpu", "cuda"]
    if option in DEVICE_CHOICES:
        return [option]
    raise ValueError(f"--device {option!r} is not one of {', '.join(DEVICE_CHOICES)}")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("revcheck")
    group.addoption(
        "--device",
        action="store",
        default="cpu",
        choices=DEVICE_CHOICES,
        help="device(s) for tests that take the `device` fixture: cpu (default), cuda, or all",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "cuda: needs a CUDA device (skipped with a reason where there is none)"
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "device" in metafunc.fixturenames and not _parametrizes_device_itself(metafunc):
        devices = selected_devices(metafunc.config.getoption("--device"))
        metafunc.parametrize("device", devices, indirect=True, ids=devices, scope="session")


def _parametrizes_device_itself(metafunc: pytest.Metafunc) -> bool:
    """A test with its own ``@pytest.mark.parametrize("device", ...)`` keeps its devices."""
    for marker in metafunc.definition.iter_markers("parametrize"):
        argnames = marker.args[0] if marker.args else marker.kwargs.get("argnames", ())
        names = argnames.split(",") if isinstance(argnames, str) else argnames
        if "device" in (name.strip() for name in names):
            return True
    return False


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("cuda") is not None and not cuda_available():
        pytest.skip(NO_CUDA_REASON)


# Session scope: Hypothesis rejects function-scoped fixtures in @given tests, and a
# device name is the same for every example anyway.
@pytest.fixture(scope="session")
def device(request: pytest.FixtureRequest) -> str:
    """Name of the device under test, one per device selected by ``--device``."""
    name: str = getattr(request, "param", None) or selected_devices(request.config.getoption("--device"))[0]
    if name == "cuda" and not cuda_available():
        pytest.skip(NO_CUDA_REASON)
    return name
