"""Stage 2 of a check: every input, chunk by chunk, where the op's input space is small enough.

The chunks come from the op's :class:`~revcheck.audit.spec.ExhaustivePlan`
(elementwise ops enumerate through :mod:`revcheck.enumeration`, as the sweep
does).  The stage stops between chunks when the time budget is spent and says
how far it got.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from revcheck.audit.case import Failure, Tally, check_case, elements, shape
from revcheck.audit.config import CheckConfig, TimeBudget
from revcheck.audit.spec import ExhaustivePlan

__all__ = ["Stopped", "run"]


@dataclass(frozen=True)
class Stopped:
    """The stage ran out of time before it had seen every input; ``note`` says how far it got."""

    note: str


def run(
    check: CheckConfig, plan: ExhaustivePlan, tally: Tally, budget: TimeBudget
) -> Failure | Stopped | None:
    """Check every input of ``plan``; the first failing chunk, :class:`Stopped`, or None when all passed.

    ``tally.caught_after`` becomes the 1-based position of the first wrong input in the enumeration.
    """
    checked = 0
    for chunk in plan.chunks():
        if budget.spent():
            tally.elements += checked
            return Stopped(
                f"exhaustive stage stopped by the time budget after {checked} of {plan.size} inputs"
            )
        finding = check_case(check, chunk)
        if finding is not None:
            position = int(np.ravel_multi_index(finding.index, shape(chunk))) + 1 if finding.index else 1
            tally.elements += checked + position
            tally.caught_after = checked + position
            return Failure(chunk, finding)
        checked += elements(chunk)
    tally.elements += checked
    return None
