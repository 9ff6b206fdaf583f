"""The two ways a BDIA stack refuses to give a silently wrong answer."""

from __future__ import annotations

__all__ = ["BDIARangeError", "BDIAReconstructionError"]


class BDIARangeError(ValueError):
    """A value in the forward pass cannot be reconstructed (NaN/inf, or a code outside |X| < 2**62)."""


class BDIAReconstructionError(RuntimeError):
    """Backward reconstructed a state that differs from the forward's (a block is not deterministic)."""
