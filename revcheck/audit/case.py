"""Running cases: one case through the candidate and the oracle, the counts, the failing case.

Whatever the candidate raises, or returns that cannot be compared, is a
:class:`~revcheck.audit.report.Finding` (the audit reports it), never a crash of
the audit itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from revcheck.audit import values as vl
from revcheck.audit.config import CheckConfig
from revcheck.audit.report import Finding
from revcheck.audit.spec import Case
from revcheck.audit.tensors import BadOutput

__all__ = ["CandidateRaised", "Failure", "Tally", "check_case", "elements", "guarded", "shape"]


class CandidateRaised(Exception):
    """What the candidate raised, wrapped so that it is told apart from errors of the audit."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(f"{type(error).__name__}: {error}")
        self.error = error


@dataclass(frozen=True)
class Failure:
    """A failing case a stage found, with the finding and (Hypothesis only) the reproduce blob."""

    case: Case
    finding: Finding
    blob: str | None = None


@dataclass
class Tally:
    """Counts of one check across its stages (see :class:`~revcheck.audit.report.CheckResult`)."""

    examples: int = 0
    elements: int = 0
    caught_after: int | None = None
    #: Generated examples the time budget skipped (the Hypothesis stage let them pass without work).
    skipped_examples: int = 0


def guarded(candidate: Callable[..., Any]) -> Callable[..., Any]:
    """The candidate, with whatever it raises wrapped in :class:`CandidateRaised`."""

    def call(*args: Any, **kwargs: Any) -> Any:
        try:
            return candidate(*args, **kwargs)
        except (Exception, SystemExit) as error:  # what the user's kernel raises is a finding, not a crash
            raise CandidateRaised(error) from error

    return call


def check_case(check: CheckConfig, case: Case) -> Finding | None:
    """Run the candidate on one case and compare with the oracle; None when bit-exact."""
    spec, fmt = check.spec, check.fmt
    try:
        actual = spec.call(guarded(check.candidate), case, fmt, check.candidate_mode, check.device)
    except CandidateRaised as raised:
        note = f"the candidate raised {raised}"
        return Finding((), vl.case_values(case, fmt), (), (), ("raised",), note=note)
    except BadOutput as bad:
        return Finding((), vl.case_values(case, fmt), (), (), ("bad output",), note=str(bad))
    expected = spec.oracle(case, fmt, check.mode)
    return spec.compare(case, expected, actual, fmt, check.mode)


def elements(case: Case) -> int:
    """Input elements in a case (the largest of its arrays)."""
    sizes = [value.size for value in case.values() if isinstance(value, np.ndarray)]
    return max(sizes, default=1)


def shape(case: Case) -> tuple[int, ...]:
    """Shape of the case's first array."""
    return next(value.shape for value in case.values() if isinstance(value, np.ndarray))
