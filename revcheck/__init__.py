"""revcheck: prove or refute bit-exactness claims of efficient-training arithmetic."""

from __future__ import annotations

from typing import Any

from revcheck import formats
from revcheck.testing import BitMismatchError, assert_bit_exact

__all__ = [
    "BitMismatchError",
    "FunctionNotPreservedError",
    "assert_bit_exact",
    "assert_deterministic",
    "assert_function_preserved",
    "formats",
]
__version__ = "0.1.0"  # the one version string: pyproject.toml reads it (setuptools dynamic version)


def __getattr__(name: str) -> Any:
    # The audit pulls in Hypothesis and torch; `import revcheck` should not.
    if name == "assert_deterministic":
        import importlib

        return importlib.import_module("revcheck.audit.determinism").assert_deterministic
    if name in ("assert_function_preserved", "FunctionNotPreservedError"):  # torch: lazy too
        import importlib

        return getattr(importlib.import_module("revcheck.expand.checks"), name)
    raise AttributeError(f"module 'revcheck' has no attribute {name!r}")
