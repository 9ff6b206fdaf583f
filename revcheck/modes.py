"""Rounding modes of the PA operations: the one definition every layer imports.

``"ieee"``: gradual underflow, results rounded once to nearest even.
``"ftz"``: subnormal inputs are read as zero of their sign, and a result whose
exact value lies below the smallest normal (tininess before rounding) is
flushed to zero of its sign (docs/spec.md, PA arithmetic).

This module imports neither torch nor NumPy: the oracle, the exact model, the
kernels, the audit and the sweep all validate modes here, with one message.
"""

from __future__ import annotations

from typing import Literal

__all__ = ["MODES", "Mode", "check_mode"]

Mode = Literal["ieee", "ftz"]

MODES: tuple[Mode, ...] = ("ieee", "ftz")


def check_mode(mode: object) -> Mode:
    """Return ``mode`` if it is one of :data:`MODES`, else raise ``ValueError`` naming them.

    Examples
    --------
    >>> check_mode("ftz")
    'ftz'
    >>> check_mode("daz")
    Traceback (most recent call last):
      ...
    ValueError: unknown mode 'daz'; use one of 'ieee', 'ftz'
    """
    if isinstance(mode, str) and mode in MODES:
        return mode  # type: ignore[return-value]
    raise ValueError(f"unknown mode {mode!r}; use one of {', '.join(map(repr, MODES))}")
