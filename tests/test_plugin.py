"""revcheck's pytest plugin, run inside pytest: --device, the device fixture, the cuda marker, profiles."""

from __future__ import annotations

import re
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest
from hypothesis import settings

from revcheck import _profiles, pytest_plugin
from revcheck.pytest_plugin import NO_CUDA_REASON


def _plugin_args() -> list[str]:
    """How revcheck's plugin gets in: its pytest11 entry point where revcheck is installed, else ``-p``."""
    installed = any(ep.value == "revcheck.pytest_plugin" for ep in entry_points(group="pytest11"))
    return [] if installed else ["-p", "revcheck.pytest_plugin"]


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


@pytest.fixture
def without_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pytest_plugin, "cuda_available", lambda: False)


def test_device_cpu_is_the_default(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(DEVICE_TESTS)
    result = pytester.runpytest("-v", "-p", "no:cacheprovider", *_plugin_args())
    result.stdout.fnmatch_lines(["*test_takes_device?cpu? PASSED*"])
    assert "test_takes_device[cuda]" not in result.stdout.str()


def test_device_option_cpu(pytester: pytest.Pytester, without_cuda: None) -> None:
    pytester.makepyfile(DEVICE_TESTS)
    result = pytester.runpytest("--device", "cpu", "-rs", "-p", "no:cacheprovider", *_plugin_args())
    result.assert_outcomes(passed=2, skipped=1)
    result.stdout.fnmatch_lines([f"SKIPPED * {NO_CUDA_REASON}"])


def test_device_cuda_skips_with_the_reason_without_cuda(
    pytester: pytest.Pytester, without_cuda: None
) -> None:
    pytester.makepyfile(DEVICE_TESTS)
    result = pytester.runpytest("--device", "cuda", "-v", "-rs", "-p", "no:cacheprovider", *_plugin_args())
    result.assert_outcomes(passed=1, skipped=2)
    result.stdout.fnmatch_lines(["*test_takes_device?cuda? SKIPPED*", f"SKIPPED * {NO_CUDA_REASON}"])


def test_device_all_runs_cpu_and_skips_cuda_without_it(pytester: pytest.Pytester, without_cuda: None) -> None:
    pytester.makepyfile(DEVICE_TESTS)
    result = pytester.runpytest("--device", "all", "-v", "-p", "no:cacheprovider", *_plugin_args())
    result.assert_outcomes(passed=2, skipped=2)
    result.stdout.fnmatch_lines(["*test_takes_device?cpu? PASSED*", "*test_takes_device?cuda? SKIPPED*"])


def test_device_cuda_with_the_real_torch(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(DEVICE_TESTS)
    result = pytester.runpytest("--device", "cuda", "-rs", "-p", "no:cacheprovider", *_plugin_args())
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
    result = pytester.runpytest("--device", "all", "-p", "no:cacheprovider", *_plugin_args())
    result.assert_outcomes(passed=1)


def test_unknown_device_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(DEVICE_TESTS)
    result = pytester.runpytest("--device", "tpu", "-p", "no:cacheprovider", *_plugin_args())
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
    result = pytester.runpytest("-p", "no:cacheprovider", *_plugin_args())
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


# ---- Hypothesis profiles --------------------------------------------------------------------
#
# Profile state is process-wide, so each case runs pytest on a scratch project in a subprocess.  A
# project that merely has revcheck installed must keep Hypothesis' own behaviour: its `default`
# profile, or its `ci` profile on CI; revcheck's profiles are there by name, loaded only on request.

# Environment variables through which Hypothesis detects CI (its own list, hypothesis/_settings.py;
# copied rather than imported, as that module is private).  Cleared so that "no CI" means no CI.
CI_VARIABLES = (
    "CI",
    "__TOX_ENVIRONMENT_VARIABLE_ORIGINAL_CI",
    "TF_BUILD",
    "bamboo.buildKey",
    "BUILDKITE",
    "CIRCLECI",
    "CIRRUS_CI",
    "CODEBUILD_BUILD_ID",
    "GITHUB_ACTIONS",
    "GITLAB_CI",
    "HEROKU_TEST_RUN_ID",
    "TEAMCITY_VERSION",
)

SHOW_SETTINGS = """
from hypothesis import settings

print("PROFILE", settings.get_current_profile_name())
print("SETTINGS", repr(settings.default))
"""

# Takes the plugin's `device` fixture: the test errors (fixture not found) unless revcheck's plugin is active.
SCRATCH_TEST = """
from hypothesis import settings

def test_show_settings(device):
    print("PROFILE", settings.get_current_profile_name())
    print("SETTINGS", repr(settings.default))
"""

# What revcheck's own conftests (tests/, properties/) do.
REVCHECK_CONFTEST = """
import pytest

from revcheck.pytest_plugin import load_revcheck_profile

@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    load_revcheck_profile(config)
"""


def _shown(lines: list[str]) -> dict[str, str]:
    found = {}
    for line in lines:
        for key in ("PROFILE", "SETTINGS"):
            if f"{key} " in line:
                found[key] = line[line.index(f"{key} ") + len(key) + 1 :]
    assert set(found) == {"PROFILE", "SETTINGS"}, lines
    return found


def hypothesis_alone(pytester: pytest.Pytester) -> dict[str, str]:
    """Profile name and settings in a plain Python process that imports Hypothesis and nothing else."""
    script = pytester.makepyfile(show_settings=SHOW_SETTINGS)
    result = pytester.run(sys.executable, str(script))
    assert result.ret == 0, result.stderr.str()
    script.unlink()
    return _shown(result.outlines)


def scratch_project(pytester: pytest.Pytester, *args: str, conftest: str | None = None) -> dict[str, str]:
    """Profile name and settings inside ``pytest`` on a scratch project, revcheck's plugin active."""
    if conftest is not None:
        pytester.makeconftest(conftest)
    pytester.makepyfile(test_scratch=SCRATCH_TEST)
    result = pytester.runpytest_subprocess("-s", "-p", "no:cacheprovider", *_plugin_args(), *args)
    result.assert_outcomes(passed=1)
    return _shown(result.outlines)


@pytest.fixture
def no_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in CI_VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def ci(no_ci: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")


def test_installed_plugin_keeps_hypothesis_default(pytester: pytest.Pytester, no_ci: None) -> None:
    alone = hypothesis_alone(pytester)
    assert alone["PROFILE"] == "default"
    assert scratch_project(pytester) == alone


def test_installed_plugin_keeps_hypothesis_ci_profile(pytester: pytest.Pytester, ci: None) -> None:
    alone = hypothesis_alone(pytester)
    assert alone["PROFILE"] == "ci"
    assert "derandomize=True" in alone["SETTINGS"] and "database=None" in alone["SETTINGS"]
    assert scratch_project(pytester) == alone


def test_users_can_ask_for_revcheck_thorough(pytester: pytest.Pytester, no_ci: None) -> None:
    shown = scratch_project(pytester, "--hypothesis-profile", "revcheck-thorough")
    assert shown["PROFILE"] == "revcheck-thorough"
    assert f"max_examples={_profiles.THOROUGH_MAX_EXAMPLES}," in shown["SETTINGS"]
    assert "deadline=None" in shown["SETTINGS"] and "derandomize=False" in shown["SETTINGS"]


@pytest.mark.parametrize(
    ("ci_set", "args", "expected"),
    [
        (False, (), "revcheck"),
        (True, (), "revcheck-ci"),
        (True, ("--hypothesis-profile", "revcheck-thorough"), "revcheck-thorough"),
        (False, ("--hypothesis-profile", "default"), "default"),
    ],
    ids=["no-ci", "ci", "option-wins-on-ci", "option-default"],
)
def test_revcheck_conftest_loads_revcheck_profiles(
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    no_ci: None,
    ci_set: bool,
    args: tuple[str, ...],
    expected: str,
) -> None:
    if ci_set:
        monkeypatch.setenv("CI", "true")
    shown = scratch_project(pytester, *args, conftest=REVCHECK_CONFTEST)
    assert shown["PROFILE"] == expected
    if expected.startswith("revcheck"):
        assert _database_elided(shown["SETTINGS"]) == _database_elided(repr(_profiles.PROFILES[expected]))


def _database_elided(settings_repr: str) -> str:
    # The default example database is a directory under the working directory, which differs.
    return re.sub(
        r"DirectoryBasedExampleDatabase\(.*?'\)\)", "DirectoryBasedExampleDatabase(...)", settings_repr
    )


def test_revcheck_ci_is_reproducible() -> None:
    ci_profile = _profiles.PROFILES[_profiles.CI_PROFILE]
    assert ci_profile.derandomize is True
    assert ci_profile.database is None
    assert ci_profile.print_blob is True
    assert ci_profile.deadline is None
    assert _profiles.PROFILES[_profiles.DEFAULT_PROFILE].derandomize is False


def test_this_run_uses_a_revcheck_profile(pytestconfig: pytest.Config) -> None:
    requested = pytestconfig.getoption("hypothesis_profile", None)
    expected = requested or _profiles.profile_for_this_run()
    assert settings.get_current_profile_name() == expected


def test_plugin_registers_only_revcheck_names_and_imports_no_private_hypothesis() -> None:
    sources = [Path(_profiles.__file__).read_text(), Path(pytest_plugin.__file__).read_text()]
    assert not any("hypothesis._" in source for source in sources)
    for name in _profiles.PROFILE_NAMES:
        assert name.startswith("revcheck")
        assert settings.get_profile(name) is _profiles.PROFILES[name]


def test_property_suites_take_their_example_counts_from_the_profile() -> None:
    # A hard-coded max_examples would ignore --hypothesis-profile revcheck-thorough; expensive
    # properties take a fraction of the profile through revcheck._profiles.scaled.
    properties = Path(__file__).resolve().parents[1] / "properties"
    hard_coded = [
        str(path) for path in sorted(properties.rglob("*.py")) if "max_examples" in path.read_text()
    ]
    assert hard_coded == [], hard_coded


def test_scaled_takes_a_share_of_the_active_profile() -> None:
    from hypothesis import settings

    from revcheck._profiles import scaled

    active = settings.default
    assert active is not None
    assert scaled(0.5, minimum=3).max_examples == max(3, int(active.max_examples * 0.5))
    with pytest.raises(ValueError, match="fraction"):
        scaled(0.0)
