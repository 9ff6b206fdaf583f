"""The oracle and the exact model never import torch, not even indirectly; the exact model never imports
the oracle (their arithmetic is independent on purpose).

Checked in a fresh interpreter: in this one torch is long imported.
"""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import revcheck

TORCH_FREE_PACKAGES = ("revcheck.oracle", "revcheck.exact")
# Modules the oracle builds on; they must stay torch-free for the oracle to be.
TORCH_FREE_MODULES = (
    "revcheck",
    "revcheck.formats",
    "revcheck.modes",
    "revcheck.bits",
    "revcheck.testing",
    "revcheck.strategies",
)

PROBE = """
import importlib, json, sys
watched = sys.argv[1]
results = {}
for name in sys.argv[2:]:
    importlib.import_module(name)
    results[name] = watched in sys.modules
print(json.dumps(results))
"""


def torch_free_modules() -> list[str]:
    """Every module of the torch-free packages that exists now (others are being written in parallel)."""
    found = list(TORCH_FREE_MODULES)
    for package in TORCH_FREE_PACKAGES:
        found.append(package)
        directory = Path(revcheck.__file__).parent / package.split(".")[1]
        found += [f"{package}.{info.name}" for info in pkgutil.iter_modules([str(directory)])]
    return found


def pulls_in(module: str, watched: str = "torch") -> bool:
    """Whether importing ``module`` (alone, in a fresh interpreter) pulls in torch (or ``watched``)."""
    completed = subprocess.run(
        [sys.executable, "-c", PROBE, watched, module],
        capture_output=True,
        text=True,
        check=False,
        cwd=Path(revcheck.__file__).parent.parent,
    )
    assert completed.returncode == 0, f"importing {module} failed:\n{completed.stderr}"
    return bool(json.loads(completed.stdout.strip().splitlines()[-1])[module])


@pytest.mark.parametrize("module", torch_free_modules())
def test_module_does_not_import_torch(module: str) -> None:
    assert not pulls_in(module), f"importing {module} imports torch; the oracle must stay torch-free"


def test_the_probe_sees_torch_when_it_is_imported() -> None:
    # The check must be able to fail: a module that imports torch is reported.
    assert pulls_in("torch.nn") is True


@pytest.mark.parametrize("module", ["revcheck.exact", "revcheck.exact.pam", "revcheck.exact.rounding"])
def test_exact_model_does_not_import_the_oracle(module: str) -> None:
    # The exact model checks the oracle's arithmetic, so it must not share it (docs: revcheck.exact.pam).
    assert not pulls_in(module, watched="revcheck.oracle"), f"{module} imports revcheck.oracle"


def test_the_probe_sees_the_oracle_when_it_is_imported() -> None:
    assert pulls_in("revcheck.oracle.pam", watched="revcheck.oracle") is True
