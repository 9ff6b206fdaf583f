"""Repository-wide pytest configuration: modules that need an optional dependency.

``pytest tests revcheck README.md`` runs with ``--doctest-modules``, which imports
every module of the package to find its doctests.  A module that needs an
optional dependency (today: :mod:`revcheck.kernels.triton_pam` needs triton)
raises :class:`ModuleNotFoundError` on import where the dependency is absent;
here its doctest collection becomes a skip with the reason (shown by ``-ra``)
instead of a collection error.  Its tests live in ``tests/triton/`` and
``properties/triton/``, which skip themselves the same way.

Single doctests that need an optional dependency (the ml_dtypes examples of
:mod:`revcheck.bits` and :mod:`revcheck.strategies`) are listed in
:data:`DOCTESTS_NEEDING` and skipped with the reason where it is absent.

This file is not part of the installed package: projects that install revcheck
never see it.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Generator, Iterator, Sequence
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent

# module path (relative to the repository) -> (the distribution it needs, the extra that installs it)
NEEDS_OPTIONAL = {
    Path("revcheck/kernels/triton_pam.py"): ("triton", "revcheck[triton]"),
}


# doctest name -> (the distribution it needs, the extra that installs it)
DOCTESTS_NEEDING = {
    "revcheck.bits.from_bits": ("ml_dtypes", "revcheck[ml_dtypes]"),
    "revcheck.bits.numpy_dtype": ("ml_dtypes", "revcheck[ml_dtypes]"),
    "revcheck.bits.to_bits": ("ml_dtypes", "revcheck[ml_dtypes]"),
    "revcheck.strategies.float_arrays": ("ml_dtypes", "revcheck[ml_dtypes]"),
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        needed = DOCTESTS_NEEDING.get(item.name) if type(item).__name__ == "DoctestItem" else None
        if needed is not None and importlib.util.find_spec(needed[0]) is None:
            module, extra = needed
            item.add_marker(pytest.mark.skip(reason=f"{module} is not installed (pip install '{extra}')"))


def missing_reason(path: Path) -> str | None:
    """Why the module at ``path`` cannot be imported here, or None when it can."""
    try:
        relative = path.resolve().relative_to(ROOT)
    except ValueError:
        return None
    if relative not in NEEDS_OPTIONAL:
        return None
    module, extra = NEEDS_OPTIONAL[relative]
    if importlib.util.find_spec(module) is not None:
        return None
    return f"{module} is not installed (pip install '{extra}')"


class NeedsOptionalDependency(pytest.File):
    """Stands in for a module whose optional dependency is missing: one item, skipped with the reason."""

    reason: str = ""

    def collect(self) -> Iterator[pytest.Item]:
        item = SkippedModule.from_parent(self, name=self.path.name)
        # A skip *mark*, so that -ra reports the module's path rather than this file's.
        item.add_marker(pytest.mark.skip(reason=self.reason))
        yield item


class SkippedModule(pytest.Item):
    def runtest(self) -> None:  # pragma: no cover - the skip mark stops it before it runs
        raise RuntimeError(f"{self.path} was to be skipped, not run")

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.path, 0, f"[needs an optional dependency] {self.name}"


@pytest.hookimpl(wrapper=True)
def pytest_collect_file(
    file_path: Path, parent: pytest.Collector
) -> Generator[None, Sequence[pytest.Collector], Sequence[pytest.Collector]]:
    collectors = yield
    reason = missing_reason(file_path)
    if reason is None or not collectors:
        return collectors
    stand_in = NeedsOptionalDependency.from_parent(parent, path=file_path)
    stand_in.reason = reason
    return [stand_in]
