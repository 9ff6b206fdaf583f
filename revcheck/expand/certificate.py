"""Growth certificates: what a transformation did to each parameter, and the level it is certified for.

A certificate is data (no torch): which blocks of the grown model were zeroed,
which were scaled (by what factor, whether a power of two, whether every
scaled entry is exact), which were drawn freely, which reductions grew, how
eps changed, and where every parameter of the old model lives in the new one
(:class:`ParameterMap`: index arrays and the factor its entries were multiplied by).
Certificates compose (:meth:`GrowthCertificate.then`), so a chain of growth
steps has one certificate from the first model to the last.

The level (docs/spec.md §0, §4) is **O** when every constraint is a zero block
or an exact power-of-two scaling and eps is rescaled exactly, else **R**: the
transformation is exact in real numbers with the exact factors, and the stored
model carries rounded factors (``reasons`` says which).  A certificate never
claims **K**: that is measured per kernel and shape.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np

from revcheck.levels import Level

__all__ = [
    "Block",
    "GrownReduction",
    "GrowthCertificate",
    "ParameterMap",
    "ScaledBlock",
    "is_power_of",
]


def is_power_of(ratio: Fraction, base: int) -> bool:
    """Whether ``ratio`` is ``base**m`` for an integer ``m >= 0``.

    >>> is_power_of(Fraction(16), 4), is_power_of(Fraction(3, 2), 4), is_power_of(Fraction(1), 16)
    (True, False, True)
    """
    if ratio.denominator != 1 or ratio.numerator < 1:
        return False
    n = ratio.numerator
    while n % base == 0:
        n //= base
    return n == 1


@dataclass(frozen=True)
class Block:
    """A region of one parameter of the grown model (zeroed or freely initialised)."""

    parameter: str
    region: str
    count: int

    def __str__(self) -> str:
        return f"{self.parameter} [{self.region}] ({self.count} entries)"


@dataclass(frozen=True)
class ScaledBlock:
    """Old entries of a parameter multiplied by ``factor = sqrt(factor_squared)``."""

    parameter: str
    region: str
    count: int
    factor_squared: Fraction
    factor: float
    power_of_two: bool
    exact: bool  # every scaled entry divides back to the old one (no rounding, overflow or underflow)

    def __str__(self) -> str:
        kind = "power of two" if self.power_of_two else "NOT a power of two"
        exact = "exact" if self.exact else "ROUNDED"
        return (
            f"{self.parameter} [{self.region}] x {self.factor!r} = sqrt({self.factor_squared}) ({kind}, "
            f"{exact}, "
            f"{self.count} entries)"
        )


@dataclass(frozen=True)
class GrownReduction:
    """A reduction (dot product or sum) whose length grew, and where its new terms stand."""

    where: str
    before: int
    after: int
    new_terms: str

    def __str__(self) -> str:
        return f"{self.where}: {self.before} -> {self.after} ({self.new_terms})"


@dataclass(frozen=True)
class ParameterMap:
    """Where an old parameter's entries sit in the grown model: ``new[np.ix_(*index)] = old * factor``."""

    parameter: str
    index: tuple[np.ndarray[Any, Any], ...]
    factor_squared: Fraction = Fraction(1)

    @property
    def factor(self) -> float:
        return float(self.factor_squared) ** 0.5

    def then(self, later: ParameterMap) -> ParameterMap:
        index = tuple(outer[inner] for outer, inner in zip(later.index, self.index, strict=True))
        return ParameterMap(later.parameter, index, self.factor_squared * later.factor_squared)


@dataclass(frozen=True)
class GrowthCertificate:
    """What one growth step (or a chain of them) did, and the level it is certified for."""

    transformation: str
    level: Level
    reasons: tuple[str, ...]
    zeroed: tuple[Block, ...]
    scaled: tuple[ScaledBlock, ...]
    free: tuple[Block, ...]
    grown_reductions: tuple[GrownReduction, ...]
    eps_before: float
    eps_after: float
    eps_factor: Fraction
    eps_rescaled: bool
    parameter_map: Mapping[str, ParameterMap]
    source: str
    target: str
    conditions: tuple[str, ...] = ()
    steps: tuple[GrowthCertificate, ...] = field(default=())

    @property
    def factors_are_powers_of_two(self) -> bool:
        return all(block.power_of_two for block in self.scaled)

    def then(self, later: GrowthCertificate) -> GrowthCertificate:
        """The certificate of this step followed by ``later`` (which must start where this one ends)."""
        if later.source != self.target:
            raise ValueError(
                "cannot compose certificates: the later step does not start from this step's result "
                f"(fingerprints {later.source[:12]} != {self.target[:12]})"
            )
        steps = (self.steps or (self,)) + (later.steps or (later,))
        mapping = {
            name: entry.then(later.parameter_map[entry.parameter])
            for name, entry in self.parameter_map.items()
        }
        level = Level.O if self.level == Level.O and later.level == Level.O else Level.R
        return GrowthCertificate(
            transformation=" then ".join(step.transformation for step in steps),
            level=level,
            reasons=self.reasons + later.reasons,
            zeroed=self.zeroed + later.zeroed,
            scaled=self.scaled + later.scaled,
            free=self.free + later.free,
            grown_reductions=self.grown_reductions + later.grown_reductions,
            eps_before=self.eps_before,
            eps_after=later.eps_after,
            eps_factor=self.eps_factor * later.eps_factor,
            eps_rescaled=self.eps_rescaled and later.eps_rescaled,
            parameter_map=mapping,
            source=self.source,
            target=later.target,
            conditions=tuple(dict.fromkeys(self.conditions + later.conditions)),
            steps=steps,
        )

    def summary(self) -> str:
        """A multi-line account of the certificate."""
        lines = [
            f"growth certificate: {self.transformation}",
            f"  certified level: {self.level} ({self.level.meaning})",
        ]
        lines += [f"  R only because: {reason}" for reason in self.reasons]
        sections = (
            ("zeroed", self.zeroed),
            ("scaled", self.scaled),
            ("free (initialiser)", self.free),
            ("grown reductions", self.grown_reductions),
        )
        for title, items in sections:
            lines.append(f"  {title}: {'none' if not items else ''}".rstrip())
            lines += [f"    {item}" for item in items]
        if self.eps_before or self.eps_after:
            state = "rescaled exactly" if self.eps_rescaled else "NOT rescaled exactly"
            lines.append(f"  eps: {self.eps_before!r} -> {self.eps_after!r} (x {self.eps_factor}, {state})")
        lines += [f"  holds for: {condition}" for condition in self.conditions]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()
