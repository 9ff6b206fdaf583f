"""One (op, format, device, mode) check: its stages in order, and its :class:`~.report.CheckResult`.

1. Hypothesis (:mod:`revcheck.audit.hypothesis_stage`);
2. if that passed and the input space is small enough (8-bit binary ops, 16-bit
   unary ops; or ``exhaustive=True`` up to 2**32 inputs), every input
   (:mod:`revcheck.audit.exhaustive_stage`);
3. if ``determinism=True`` and nothing failed yet, repeated runs
   (:mod:`revcheck.audit.determinism_stage`).
"""

from __future__ import annotations

import time

from revcheck.audit import determinism_stage, exhaustive_stage, hypothesis_stage
from revcheck.audit.case import Tally
from revcheck.audit.config import CheckConfig, TimeBudget
from revcheck.audit.counterexample import assemble
from revcheck.audit.report import CheckResult, Counterexample

__all__ = ["run_check"]


def run_check(check: CheckConfig, budget: TimeBudget) -> CheckResult:
    """Run every stage of one check that the configuration asks for, within the time budget."""
    spec, fmt = check.spec, check.fmt
    result = CheckResult(spec.name, fmt.name, check.device, check.mode, "passed")
    if budget.spent():
        result.status = "skipped"
        result.notes.append("not checked: the time budget was spent before this check started")
        return result
    if fmt.torch_dtype_name is None and not check.audit.pass_fmt:
        result.status = "skipped"
        result.notes.append(
            f"not run: {fmt.name} has no torch dtype; its uint8 bit patterns need a candidate that takes fmt="
        )
        return result
    started = time.monotonic()
    tally = Tally()
    stopped = False  # a stage the time budget cut short
    counterexample: Counterexample | None = None
    found = hypothesis_stage.run(check, tally, budget)
    if found is not None:
        # A failure among the op's counted cases (run first, not shrunk) is told apart from a drawn one.
        counted = tally.caught_after is not None and tally.caught_after <= len(spec.examples(fmt))
        counterexample = assemble(check, found, "counted" if counted else "hypothesis")
    plan = spec.exhaustive(fmt)
    if counterexample is None and plan is not None and (plan.by_default or check.audit.exhaustive):
        enumerated = exhaustive_stage.run(check, plan, tally, budget)
        if isinstance(enumerated, exhaustive_stage.Stopped):
            result.notes.append(enumerated.note)
            stopped = True
        else:
            result.exhaustive = True
            if enumerated is not None:
                counterexample = assemble(check, enumerated, "exhaustive")
    elif counterexample is None and check.audit.exhaustive and plan is None:
        result.notes.append(f"exhaustive checking is not feasible for {spec.name} in {fmt.name}")
    if counterexample is None and check.audit.determinism:
        nondeterministic = determinism_stage.run(check)
        if nondeterministic is not None:
            counterexample = assemble(check, nondeterministic, "determinism")
    result.examples = tally.examples
    result.elements = tally.elements
    if tally.skipped_examples:
        stopped = True
        result.notes.append(
            f"hypothesis stage stopped by the time budget: {tally.skipped_examples} generated "
            f"examples were not checked"
        )
    if counterexample is None and stopped:
        result.status = "skipped" if tally.elements == 0 else "incomplete"
    if counterexample is not None:
        result.status = "failed"
        result.counterexample = counterexample
        result.caught_after = (
            determinism_stage.RUNS if counterexample.stage == "determinism" else tally.caught_after
        )
    result.seconds = time.monotonic() - started
    return result
