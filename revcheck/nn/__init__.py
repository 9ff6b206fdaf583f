"""torch layers: PAM linear layers and the reversible BDIA stack."""

from __future__ import annotations

from typing import Any

__all__ = [
    "BDIAStack",
    "MemTransformerXL",
    "PAMLinear",
    "PAMMatmul",
    "PreNormTransformerBlock",
    "ReferenceTransformer",
    "TinyGPT",
    "TwoPhaseTrainer",
    "TyingController",
]

_HOMES = {
    "PAMLinear": "revcheck.nn.pam",
    "PAMMatmul": "revcheck.nn.pam",
    "BDIAStack": "revcheck.nn.bdia",
    "PreNormTransformerBlock": "revcheck.nn.transformer",
    "TinyGPT": "revcheck.nn.transformer",
    "TyingController": "revcheck.nn.tying",
    "ReferenceTransformer": "revcheck.nn.expand",
    "MemTransformerXL": "revcheck.nn.memxl",
    "TwoPhaseTrainer": "revcheck.nn.memxl",
}


def __getattr__(name: str) -> Any:
    # Lazy so that importing one family does not pay for (or break on) another.
    if name in _HOMES:
        import importlib

        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'revcheck.nn' has no attribute {name!r}")
