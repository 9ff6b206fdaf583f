"""Packaging facts that drift when nobody checks them: one version string, the licence, Python versions."""

from __future__ import annotations

import ast
import json
import re
import tomllib
from importlib import metadata
from pathlib import Path

import pytest

import revcheck

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PROJECT = PYPROJECT["project"]


def test_one_version_string() -> None:
    # setuptools reads revcheck.__version__ statically: it must be a plain string literal there.
    assert "version" not in PROJECT and "version" in PROJECT["dynamic"]
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "revcheck.__version__"}
    module = ast.parse((ROOT / "revcheck" / "__init__.py").read_text())
    literals = [
        node.value.value
        for node in module.body
        if isinstance(node, ast.Assign)
        and [getattr(target, "id", None) for target in node.targets] == ["__version__"]
        and isinstance(node.value, ast.Constant)
    ]
    assert literals == [revcheck.__version__], literals


def _installed_from_this_tree() -> list[metadata.Distribution]:
    """revcheck's installed metadata that was built from this checkout (editable or not)."""
    found = []
    for dist in metadata.distributions(name="revcheck"):
        url = json.loads(dist.read_text("direct_url.json") or "{}").get("url", "")
        # An editable install also leaves revcheck.egg-info in the checkout, found first from here.
        in_checkout = Path(str(dist.locate_file(""))).resolve() == ROOT
        if in_checkout or (url.startswith("file://") and Path(url.removeprefix("file://")).resolve() == ROOT):
            found.append(dist)
    return found


@pytest.mark.skipif(not _installed_from_this_tree(), reason="revcheck is not installed from this checkout")
def test_installed_metadata_has_that_version() -> None:
    assert {dist.version for dist in _installed_from_this_tree()} == {revcheck.__version__}


def test_the_changelog_has_the_version() -> None:
    assert f"## [{revcheck.__version__}]" in (ROOT / "CHANGELOG.md").read_text()


def test_licence_file_matches_the_declared_licence() -> None:
    assert PROJECT["license"] == "MIT"
    assert PROJECT["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License\n")
    assert "revcheck developers" in text


def test_python_versions_claimed_are_the_ones_ci_runs() -> None:
    noxfile = (ROOT / "noxfile.py").read_text()
    match = re.search(r'REVCHECK_PYTHON", "(\d+)\.(\d+)"', noxfile)
    assert match, "noxfile.py no longer names its default Python"
    tested = f"{match[1]}.{match[2]}"
    assert PROJECT["requires-python"] == f">={tested}"
    claimed = {c.rsplit(" :: ", 1)[1] for c in PROJECT["classifiers"] if re.fullmatch(r".*:: \d+\.\d+", c)}
    assert claimed == {tested}
    assert PYPROJECT["tool"]["mypy"]["python_version"] == tested
    assert PYPROJECT["tool"]["ruff"]["target-version"] == f"py{match[1]}{match[2]}"
