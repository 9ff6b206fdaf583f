"""What an audit was asked to do, resolved and checked: :class:`AuditConfig` and its :class:`CheckConfig` s.

An :class:`AuditConfig` is built once from the user's arguments
(:func:`revcheck.audit.arguments.resolve`); it is frozen, and every stage of
the audit reads the settings it needs from the :class:`CheckConfig` of the one
(op, format, device, mode) it works on, instead of taking them one by one.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from revcheck.audit.spec import OpSpec
from revcheck.formats import FloatFormat

__all__ = ["DEFAULT_MAX_EXAMPLES", "AuditConfig", "CheckConfig", "TimeBudget"]

#: Hypothesis examples (batches of inputs) generated per check unless ``max_examples`` says otherwise.
DEFAULT_MAX_EXAMPLES = 100


@dataclass(frozen=True)
class AuditConfig:
    """One audit request: the op, the candidate, where and how hard to look.

    ``candidate_ref`` is the text a report and a reproduction snippet name the
    candidate by; ``pass_mode`` whether the candidate gets ``mode=`` (its
    signature takes it and the op has modes); ``pass_fmt`` whether its signature
    takes ``fmt=``, without which the formats that have no torch dtype (fp6,
    fp4: uint8 bit patterns) are skipped.
    """

    spec: OpSpec
    candidate: Callable[..., Any]
    candidate_ref: str
    formats: tuple[FloatFormat, ...]
    modes: tuple[str | None, ...]
    pass_mode: bool
    device: str
    max_examples: int = DEFAULT_MAX_EXAMPLES
    exhaustive: bool = False
    seed: int | None = None
    time_budget: float | None = None
    determinism: bool = False
    pass_fmt: bool = False
    #: What the report says about how the request was read (e.g. the mode a kernel without one implements).
    notes: tuple[str, ...] = ()

    def checks(self) -> Iterator[CheckConfig]:
        """The checks of this audit, format-major: every mode of the first format first."""
        for fmt in self.formats:
            for mode in self.modes:
                yield CheckConfig(self, fmt, mode)


@dataclass(frozen=True)
class CheckConfig:
    """One (op, format, device, mode) of an audit."""

    audit: AuditConfig
    fmt: FloatFormat
    mode: str | None

    @property
    def spec(self) -> OpSpec:
        return self.audit.spec

    @property
    def candidate(self) -> Callable[..., Any]:
        return self.audit.candidate

    @property
    def device(self) -> str:
        return self.audit.device

    @property
    def candidate_mode(self) -> str | None:
        """The ``mode=`` the candidate is called with: None for a candidate that takes none."""
        return self.mode if self.audit.pass_mode else None


@dataclass(frozen=True)
class TimeBudget:
    """The wall-clock deadline of one audit run (None: no limit)."""

    deadline: float | None

    @classmethod
    def starting_now(cls, seconds: float | None) -> TimeBudget:
        return cls(None if seconds is None else time.monotonic() + seconds)

    def spent(self) -> bool:
        return self.deadline is not None and time.monotonic() > self.deadline
