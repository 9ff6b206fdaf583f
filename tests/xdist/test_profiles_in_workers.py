"""The property suites under pytest-xdist (``pytest -n 2 properties``): every worker loads revcheck's profile.

The properties' conftest loads the Hypothesis profile in ``pytest_configure``, which
xdist runs again in every worker process; these runs check that each worker gets
``revcheck`` (or the one ``--hypothesis-profile`` names) rather than Hypothesis' default.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytest.importorskip("xdist", reason="pytest-xdist is not installed (pip install pytest-xdist)")

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import os

import pytest
from hypothesis import given, settings, strategies as st


@pytest.mark.parametrize("n", range(4))
@given(st.integers())
def test_profile_in_this_worker(n, x):
    current = settings.default
    assert settings.get_current_profile_name() == os.environ["EXPECTED_PROFILE"], os.environ.get(
        "PYTEST_XDIST_WORKER"
    )
    assert current.deadline is None and current.max_examples == int(os.environ["EXPECTED_EXAMPLES"])
"""


@pytest.mark.parametrize(
    ("options", "profile", "examples"),
    [([], None, 100), (["--hypothesis-profile", "revcheck-thorough"], "revcheck-thorough", 2500)],
)
def test_every_worker_runs_under_the_revcheck_profile(
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    options: list[str],
    profile: str | None,
    examples: int,
) -> None:
    from revcheck import _profiles

    pytester.makeconftest((ROOT / "properties" / "conftest.py").read_text())
    pytester.makepyfile(test_probe=PROBE)
    expected = profile or _profiles.profile_for_this_run()
    monkeypatch.setenv("EXPECTED_PROFILE", expected)
    monkeypatch.setenv("EXPECTED_EXAMPLES", str(examples))
    # The workers import revcheck (the conftest does) from this checkout.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    result = pytester.runpytest_subprocess("-n", "2", "-p", "no:cacheprovider", *options)
    result.assert_outcomes(passed=4)
    assert "2 workers [4 items]" in result.stdout.str(), result.stdout.str()
