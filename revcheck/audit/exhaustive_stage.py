"""Stage 2 of a check: every input, chunk by chunk, where the op's input space is small enough.

The chunks come from the op's :class:`~revcheck.audit.spec.ExhaustivePlan`
(elementwise ops enumerate through :mod:`revcheck.enumeration`, as the sweep
does).  The stage stops between chunks when the time budget is spent and says
how far it got.  A stage that runs longer than :data:`PROGRESS_DELAY` seconds
(``exhaustive=True`` on a 16-bit binary op takes minutes) shows a tqdm bar on
stderr: redrawn in place on a terminal, a line every 30 s otherwise.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

import numpy as np

from revcheck.audit.case import Failure, Tally, check_case, elements, shape
from revcheck.audit.config import CheckConfig, TimeBudget
from revcheck.audit.spec import ExhaustivePlan

__all__ = ["PROGRESS_DELAY", "Stopped", "run"]

#: Seconds before the progress bar appears (a short stage prints nothing).
PROGRESS_DELAY = 2.0


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
    from tqdm import tqdm

    interactive = sys.stderr.isatty()
    bar = tqdm(
        total=plan.size,
        desc=f"exhaustive {check.spec.name} {check.fmt.name} {check.mode or ''}".rstrip(),
        unit=" inputs",
        unit_scale=True,
        file=sys.stderr,
        delay=PROGRESS_DELAY,
        mininterval=0.5 if interactive else 30.0,
        maxinterval=30.0,
        leave=False,
        dynamic_ncols=interactive,
    )
    with bar:
        return _run(check, plan, tally, budget, bar)


def _run(
    check: CheckConfig, plan: ExhaustivePlan, tally: Tally, budget: TimeBudget, bar: Any
) -> Failure | Stopped | None:
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
        bar.update(elements(chunk))
    tally.elements += checked
    return None
