"""The ways a BDIA stack refuses to give a silently wrong answer."""

from __future__ import annotations

from revcheck.errors import UsageError

__all__ = ["BDIADoubleBackwardError", "BDIARangeError", "BDIAReconstructionError"]


class BDIARangeError(ValueError):
    """A value in the forward pass cannot be reconstructed (NaN/inf, or a code outside |X| < 2**62)."""


class BDIAReconstructionError(RuntimeError):
    """Backward reconstructed a state that differs from the forward's (a block is not deterministic)."""


class BDIADoubleBackwardError(UsageError):
    """A reversible backward was asked to build a graph (``create_graph=True``): use ``mode="stored"``."""
