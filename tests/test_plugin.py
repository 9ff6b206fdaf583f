"""revcheck's pytest plugin, run inside pytest: --device, the device fixture, the cuda marker, profiles."""

from __future__ import annotations

import os

import pytest

from revcheck import pytest_plugin
from revcheck.pytest_plugin import NO_CUDA_REASON

DEVICE_TESTS = """
import pytest

def test_takes_device(device):
    print("RAN ON", device)
    assert device in ("cpu", "cuda")

@pytest.mark.cuda
def test_needs_cuda():
    pass

def test_plain():
    pass
"""

PROFILE_TEST = """
from hypothesis import settings

from revcheck._profiles import PROFILES

def test_profile():
    name = settings.get_current_profile_name()
    current = settings()
    # Identity, not equal values: Hypothesis' built-in "ci" has the same values as ours, but it is
    # another object -- the one that stays in force if ours is not registered or not reloaded.
    in_force = settings.default is PROFILES[name]
    print("PROFILE", name, current.max_examples, current.derandomize, current.deadline,
          current.database is None, current.print_blob, in_force)
"""

# Environment variables through which Hypothesis detects CI (CI=true is set on our CI runners).
try:
    from hypothesis._settings import _CI_VARS

    CI_VARIABLES = tuple(_CI_VARS)
except ImportError:  # another Hypothesis version: the common ones
    CI_VARIABLES = ("CI", "GITHUB_ACTIONS", "GITLAB_CI", "TF_BUILD", "BUILDKITE", "CIRCLECI")


@pytest.fixture
def without_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pytest_plugin, "cuda_available", lambda: False)


def test_device_cpu_is_the_default(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(DEVICE_TESTS)
    result = pytester.runpytest("-v", "-p", "no:cacheprovider")
    result.stdout.fnmatch_lines(["*test_takes_device?cpu? PASSED*"])
    assert "test_takes_device[cuda]" not in result.stdout.str()


def test_device_option_cpu(pytester: pytest.Pytester, without_cuda: None) -> None:
    pytester.makepyfile(DEVICE_TESTS)
    result = pytester.runpytest("--device", "cpu", "-rs", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2, skipped=1)
    result.stdout.fnmatch_lines([f"SKIPPED * {NO_CUDA_REASON}"])


def test_device_cuda_skips_with_the_reason_without_cuda(
    pytester: pytest.Pytester, without_cuda: None
) -> None:
    pytester.makepyfile(DEVICE_TESTS)
    result = pytester.runpytest("--device", "cuda", "-v", "-rs", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, skipped=2)
    result.stdout.fnmatch_lines(["*test_takes_device?cuda? SKIPPED*", f"SKIPPED * {NO_CUDA_REASON}"])


def test_device_all_runs_cpu_and_skips_cuda_without_it(pytester: pytest.Pytester, without_cuda: None) -> None:
    pytester.makepyfile(DEVICE_TESTS)
    result = pytester.runpytest("--device", "all", "-v", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2, skipped=2)
    result.stdout.fnmatch_lines(["*test_takes_device?cpu? PASSED*", "*test_takes_device?cuda? SKIPPED*"])


def test_device_cuda_with_the_real_torch(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(DEVICE_TESTS)
    result = pytester.runpytest("--device", "cuda", "-rs", "-p", "no:cacheprovider")
    if pytest_plugin.cuda_available():
        result.assert_outcomes(passed=3)
    else:
        result.assert_outcomes(passed=1, skipped=2)
        result.stdout.fnmatch_lines([f"SKIPPED * {NO_CUDA_REASON}"])


def test_explicit_device_parametrization_is_kept(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.parametrize("device, n", [("meta", 1)])
        def test_own_devices(device, n):
            assert device == "meta"
        """
    )
    result = pytester.runpytest("--device", "all", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


def test_unknown_device_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(DEVICE_TESTS)
    result = pytester.runpytest("--device", "tpu", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--device: invalid choice: 'tpu' (choose from*cpu*cuda*all*"])


def test_device_fixture_works_in_hypothesis_tests(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        from hypothesis import given, strategies as st

        @given(st.integers())
        def test_with_device(device, n):
            assert device == "cpu"
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


def test_conftest_registers_the_plugin_when_the_entry_point_is_not_loaded(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    pytester.makeconftest(
        """
        from revcheck.pytest_plugin import ensure_registered

        def pytest_addoption(parser, pluginmanager):
            ensure_registered(pluginmanager)
        """
    )
    pytester.makepyfile(DEVICE_TESTS)
    result = pytester.runpytest("--device", "cpu", "-p", "no:cacheprovider")
    result.assert_outcomes(
        passed=2 + pytest_plugin.cuda_available(), skipped=1 - pytest_plugin.cuda_available()
    )


# ---- Hypothesis profiles: run in a subprocess, as profile state is process-wide ------


def run_profile_test(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, *args: str, ci: bool) -> str:
    for name in CI_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    if ci:
        monkeypatch.setenv("CI", "true")
    pytester.makepyfile(PROFILE_TEST)
    result = pytester.runpytest_subprocess("-s", "-p", "no:cacheprovider", *args)
    result.assert_outcomes(passed=1)
    (line,) = [line[line.index("PROFILE ") :] for line in result.outlines if "PROFILE " in line]
    return line


def test_default_profile_without_ci(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    line = run_profile_test(pytester, monkeypatch, ci=False)
    assert line == "PROFILE default 100 False None False False True", line


def test_our_ci_profile_is_in_force_with_ci_set(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    line = run_profile_test(pytester, monkeypatch, ci=True)
    assert line == "PROFILE ci 100 True None True True True", line


def test_thorough_profile_by_option(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    line = run_profile_test(pytester, monkeypatch, "--hypothesis-profile", "thorough", ci=True)
    assert line == "PROFILE thorough 2500 False None False False True", line


def test_ci_profile_by_option_without_ci(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    line = run_profile_test(pytester, monkeypatch, "--hypothesis-profile", "ci", ci=False)
    assert line == "PROFILE ci 100 True None True True True", line


def test_profiles_are_registered_in_this_process() -> None:
    from hypothesis import settings

    from revcheck import _profiles

    assert settings.get_profile("thorough").max_examples == _profiles.THOROUGH_MAX_EXAMPLES
    assert settings.get_profile("ci").derandomize is True
    assert settings.get_profile("default").deadline is None
    assert os.environ.get("CI") is None or settings.get_current_profile_name() in _profiles.PROFILE_NAMES


def test_activate_loads_ci_where_hypothesis_does_not_detect_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    # Older Hypothesis versions never load "ci" by themselves; activate() does.
    from hypothesis import settings

    from revcheck import _profiles

    before = settings.get_current_profile_name()
    monkeypatch.setattr(_profiles, "in_ci", lambda: True)
    try:
        settings.load_profile("default")
        assert _profiles.activate() == "ci"
        settings.load_profile("thorough")
        assert _profiles.activate() == "thorough", "an explicitly loaded profile must be kept"
    finally:
        settings.load_profile(before)
