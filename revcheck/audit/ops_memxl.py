"""Audit of a memory transformer: every check of :mod:`revcheck.memxl` on one model, one report.

The op registry (:mod:`revcheck.audit.registry`) audits elementwise kernels against the oracle;
a memory transformer is audited as a whole model instead, so this module is not an op spec but one
function, :func:`audit_memory_transformer`, that runs each applicable check and collects verdicts
(never raising for a failed check; :meth:`MemXLAudit.raise_for_failures` does).  Usage errors
(bad arguments, a model without ``full_pass``) propagate: nothing was checked.

Examples
--------
>>> import torch
>>> from revcheck.nn.memxl import MemTransformerXL
>>> _ = torch.manual_seed(0)
>>> model = MemTransformerXL(n_token=16, n_layer=2, n_head=2, d_model=8, mem_len=3)
>>> report = audit_memory_transformer(model, torch.randint(0, 16, (1, 8)), 4)
>>> [(v.check, v.level, v.passed) for v in report.verdicts]  # doctest: +NORMALIZE_WHITESPACE
[('recurrence == full pass', 'O', True), ('recurrence == full pass', 'R', True),
 ('memory update', 'K', True), ('relative positions', 'K', True), ('cross-head reparametrisation', 'K', True),
 ('cross-head inactive', 'K', True), ('conformance to the oracle', 'R', True)]
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from revcheck import memxl as checks

__all__ = ["MemXLAudit", "Verdict", "audit_memory_transformer"]


@dataclass(frozen=True)
class Verdict:
    """One check's outcome: its name, the level it checks, pass/fail and the evidence on failure."""

    check: str
    level: str
    passed: bool
    evidence: str = ""


@dataclass
class MemXLAudit:
    """All verdicts of :func:`audit_memory_transformer`."""

    verdicts: list[Verdict] = field(default_factory=list)
    failures: list[AssertionError] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(v.passed for v in self.verdicts)

    def __str__(self) -> str:
        lines = [f"memory-transformer audit: {'passed' if self.passed else 'FAILED'}"]
        for v in self.verdicts:
            lines.append(f"  [{v.level}] {v.check}: {'ok' if v.passed else 'FAILED'}")
            if v.evidence:
                lines += ["      " + line for line in v.evidence.splitlines()[:6]]
        return "\n".join(lines)

    def raise_for_failures(self) -> None:
        """Raise the first failure (a :class:`revcheck.memxl.MemXLCheckError`), if any."""
        if self.failures:
            raise self.failures[0]


def audit_memory_transformer(model: Any, tokens: Tensor, segment_length: int, *, seed: int = 0) -> MemXLAudit:
    """Run the :mod:`revcheck.memxl` checks that apply to ``model`` on ``tokens``.

    Recurrence equivalence at O (when the model has ``to_oracle``) and R; with a revcheck
    :class:`~revcheck.nn.memxl.MemTransformerXL`-like model also the memory update, relative positions
    and cross-head checks of every layer, the skip-retain trace (when ``skip_retain`` is on) and
    conformance to the oracle.  Returns a :class:`MemXLAudit`; nothing is raised for a failed check.
    """
    report = MemXLAudit()

    def run(name: str, level: str, check: Callable[[], object]) -> None:
        try:
            check()
        except checks.MemXLCheckError as failure:
            report.verdicts.append(Verdict(name, level, False, str(failure)))
            report.failures.append(failure)
        else:
            report.verdicts.append(Verdict(name, level, True))

    mem_len = model.mem_len
    pieces = list(tokens.split(segment_length, dim=1))
    if callable(getattr(model, "to_oracle", None)):
        run(
            "recurrence == full pass",
            "O",
            lambda: checks.assert_recurrence_equivalent(model, tokens, segment_length, mem_len, level="O"),
        )
    run(
        "recurrence == full pass",
        "R",
        lambda: checks.assert_recurrence_equivalent(
            model, tokens, segment_length, mem_len, level="R", seed=seed
        ),
    )
    layers = getattr(model, "layers", None)
    if layers is None or not hasattr(model, "init_memory"):
        return report
    was_training = model.training
    model.eval()
    try:
        run("memory update", "K", lambda: checks.assert_memory_update(model, pieces))
    finally:
        model.train(was_training)
    run(
        "relative positions",
        "K",
        lambda: [checks.assert_relative(layer.attn, seed=seed) for layer in layers],
    )
    n_head = model.config.n_head
    reverse = tuple(range(n_head))[::-1]

    def reparametrisations() -> None:
        for layer in layers:
            checks.assert_cross_head_reparam(layer.attn, reverse, seed=seed)

    run("cross-head reparametrisation", "K", reparametrisations)
    run(
        "cross-head inactive",
        "K",
        lambda: checks.assert_cross_head_inactive(model, tokens, segment_length=segment_length),
    )
    if getattr(model, "skip_retain", False):
        run(
            "skip-retain trace",
            "K",
            lambda: checks.skip_retain_trace(copy.deepcopy(model), tokens, segment_length),
        )
    twin = copy.deepcopy(model).eval()
    run("conformance to the oracle", "R", lambda: checks.assert_conforms_to_oracle(twin, pieces))
    return report
