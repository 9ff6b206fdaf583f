"""Stage 1 of a check: Hypothesis on the op's TestFloat-style strategy, shrinking under a time limit.

First the op's counted cases (:attr:`~revcheck.audit.spec.OpSpec.examples`, Hypothesis'
explicit phase: the same under every seed, not shrunk), then ``max_examples`` generated
batches, derandomized unless a ``seed`` is given, no example database.
"Derandomized" is the fixed seed :data:`DERANDOMIZED_SEED`, not Hypothesis'
``derandomize=True``: that one seeds from a hash of the test
function's source text, so every edit of this module would change the examples
of every audit; a fixed seed makes them depend on the op's strategy and the
Hypothesis version only.  The failing batch Hypothesis shrinks to is kept (the counterexample
assembly then narrows it to its first wrong element).  Shrinking is cut off
:data:`SHRINK_SECONDS` after the first failure (:class:`ShrinkLimit`); the
``@reproduce_failure`` blob Hypothesis prints is kept where shrinking ran to
its end (:func:`reproduce_blob`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import seed as hypothesis_seed

from revcheck.audit.case import Failure, Tally, check_case, elements
from revcheck.audit.config import CheckConfig, TimeBudget
from revcheck.audit.report import Finding
from revcheck.audit.spec import Case

__all__ = ["DERANDOMIZED_SEED", "SHRINK_SECONDS", "ShrinkLimit", "reproduce_blob", "run"]

#: The seed of a run without ``seed=``: the same examples on every run and every machine.
DERANDOMIZED_SEED = 0

# Shrinking stops this many seconds after the first failure (the counterexample is then the
# smallest failing case found by that time, still narrowed to one element).
SHRINK_SECONDS = 3.0


class _Mismatch(Exception):
    """Raised inside the Hypothesis test body so that Hypothesis shrinks the failing case."""


@dataclass
class ShrinkLimit:
    """Starts at the first failure; once ``seconds`` have passed, shrinking is over (:attr:`cut`)."""

    seconds: float = SHRINK_SECONDS
    first_failure_at: float | None = None
    cut: bool = field(default=False)

    def failed(self) -> None:
        if self.first_failure_at is None:
            self.first_failure_at = time.monotonic()

    def over(self) -> bool:
        """True (and :attr:`cut` set) once the time after the first failure is spent."""
        if self.first_failure_at is not None and time.monotonic() - self.first_failure_at > self.seconds:
            self.cut = True
        return self.cut


def reproduce_blob(error: BaseException) -> str | None:
    """The ``@reproduce_failure(...)`` decorator text from the notes Hypothesis attached to ``error``."""
    for note in getattr(error, "__notes__", ()):
        start = note.find("@reproduce_failure(")
        if start >= 0:
            return note[start:].split(" as a decorator")[0].strip()
    return None


def run(check: CheckConfig, tally: Tally, budget: TimeBudget) -> Failure | None:
    """Run Hypothesis for one check; the shrunk failing case, or None when every example passed."""
    limit = ShrinkLimit()
    failing: list[tuple[Case, Finding]] = []

    def body(case: Case) -> None:
        if budget.spent() and not failing:
            tally.skipped_examples += 1
            return  # out of time: let Hypothesis run out its remaining examples without work
        if limit.over():
            # Shrinking has had its time: every further candidate "passes", so Hypothesis stops
            # quickly; the last failing case recorded is the smallest found so far.
            return
        tally.examples += 1
        tally.elements += elements(case)
        finding = check_case(check, case)
        if finding is not None:
            if tally.caught_after is None:
                tally.caught_after = tally.examples
                limit.failed()
            # Hypothesis replays the minimal example last, so the last one stored is the shrunk one.
            failing[:] = [(case, finding)]
            raise _Mismatch(finding.note or "mismatch")

    test = given(case=check.spec.strategy(check.fmt))(body)
    # Counted cases first (explicit phase, the same under every seed); decorators apply bottom-up,
    # so they are added in reverse to run in the op's order.
    for case in reversed(check.spec.examples(check.fmt)):
        test = example(case=case)(test)
    test = settings(
        max_examples=check.audit.max_examples,
        database=None,
        deadline=None,
        derandomize=False,  # the seed below decides the examples (see the module docstring)
        print_blob=True,
        report_multiple_bugs=False,
        suppress_health_check=list(HealthCheck),
        phases=(Phase.explicit, Phase.generate, Phase.shrink),
    )(test)
    test = hypothesis_seed(DERANDOMIZED_SEED if check.audit.seed is None else check.audit.seed)(test)
    try:
        test()
    except _Mismatch as error:
        if not failing:
            return None
        case, finding = failing[0]
        return Failure(case, finding, None if limit.cut else reproduce_blob(error))
    except Exception as error:  # e.g. Hypothesis' FlakyFailure for a kernel that fails only sometimes
        if not failing:
            raise
        case, finding = failing[0]
        if limit.cut:
            return Failure(case, finding)
        return Failure(case, _flaky(finding, error))
    return None


def _flaky(finding: Finding, error: BaseException) -> Finding:
    note = f"{finding.note}; " if finding.note else ""
    return Finding(
        finding.index,
        finding.inputs,
        finding.expected,
        finding.actual,
        finding.labels,
        finding.ulp_distance,
        f"{note}the failure did not reproduce on a re-run ({type(error).__name__}): "
        "the kernel is nondeterministic",
    )
