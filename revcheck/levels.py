"""Levels of exactness (docs/spec.md §0): the one definition every claim, check and report names.

R  real       equal as real-number functions (the exact model: Fractions / mpmath, small shapes)
O  oracle     bit-equal when every reduction runs in a declared order (the NumPy oracle)
K  kernel     bit-equal with a real library kernel on a named device, dtype and shape
B  bound      every element within a rigorous bound derived from the exact result

K never follows from O: a K failure where O holds is a finding about the kernel.
This module imports neither torch nor NumPy.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["LEVELS", "Level", "check_level"]


class Level(StrEnum):
    """A level of exactness; compares equal to its one-letter name (``Level.O == "O"``)."""

    R = "R"
    O = "O"  # noqa: E741  (the level's name in docs/spec.md §0)
    K = "K"
    B = "B"

    @property
    def meaning(self) -> str:
        return _MEANINGS[self]

    def __str__(self) -> str:
        return self.value


_MEANINGS = {
    Level.R: "equal as real-number functions (exact model)",
    Level.O: "bit-equal under the declared reduction order (NumPy oracle)",
    Level.K: "bit-equal with the real kernel on a named device, dtype and shape",
    Level.B: "within a rigorous bound derived from the exact result",
}

LEVELS: tuple[Level, ...] = tuple(Level)


def check_level(level: object) -> Level:
    """Return ``level`` as a :class:`Level`; accept ``"R"``, ``"O"``, ``"K"``, ``"B"`` (any case).

    Examples
    --------
    >>> check_level("o")
    <Level.O: 'O'>
    >>> check_level("exact")
    Traceback (most recent call last):
      ...
    ValueError: unknown level 'exact'; use one of 'R', 'O', 'K', 'B' (docs/spec.md §0)
    """
    if isinstance(level, Level):
        return level
    if isinstance(level, str) and level.upper() in Level.__members__:
        return Level[level.upper()]
    names = ", ".join(repr(each.value) for each in Level)
    raise ValueError(f"unknown level {level!r}; use one of {names} (docs/spec.md §0)")
