"""The audit's entry points: :func:`audit` and :func:`reproduce`."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from revcheck.audit import arguments
from revcheck.audit import values as vl
from revcheck.audit.case import check_case
from revcheck.audit.check import run_check
from revcheck.audit.config import CheckConfig, TimeBudget
from revcheck.audit.report import AuditReport

__all__ = ["audit", "reproduce"]


def audit(
    candidate: Callable[..., Any] | str,
    op: str,
    *,
    formats: str | Iterable[object] | None = None,
    device: str = "cpu",
    mode: str | Sequence[str] | None = "ieee",
    max_examples: int | None = None,
    exhaustive: bool = False,
    seed: int | None = None,
    time_budget: float | None = None,
    determinism: bool = False,
) -> AuditReport:
    """Audit ``candidate`` against the oracle of ``op`` and return an :class:`AuditReport`.

    Parameters
    ----------
    candidate
        A callable taking and returning torch tensors on ``device`` (see
        ``revcheck.audit.registry.get(op).signature``), or a target text
        ``"module:function"`` / ``"path/file.py:function"``.
    op
        A registered op name (``revcheck ops`` lists them).
    formats
        A name, several, ``"all"`` or None (all formats the op supports).
    device
        torch device to run the candidate on.
    mode
        ``"ieee"``, ``"ftz"``, ``"all"`` or a list.  A candidate gets ``mode=`` as a
        keyword only if its signature has it; one without a ``mode`` keyword
        implements one mode, which ``mode`` declares (``mode="ftz"`` audits it as an
        ftz kernel; the report says so), so ``"all"`` is refused for it.  Ops
        without rounding modes (the BDIA ops) accept only ``"ieee"`` (the default),
        ``"all"`` or None; any other mode is a ``UsageError``.
    max_examples
        Hypothesis examples (batches) generated per check (default 100); shrinking
        a failure runs further cases, which the report counts too.
    exhaustive
        Also enumerate input spaces up to 2**32 (16-bit binary ops take minutes);
        small ones are enumerated anyway.
    seed
        None runs derandomized (the same examples every time); an int seeds Hypothesis.
    time_budget
        Seconds for the whole audit, a positive number (0 or less is a ``UsageError``).
        Checks not started in time are ``"skipped"``, checks cut short ``"incomplete"``;
        either makes the verdict ``"incomplete"`` (``"not checked"`` if nothing ran),
        and then ``report.passed`` is False.
    determinism
        Also check run-to-run bit equality.

    Raises
    ------
    revcheck.errors.UsageError
        For requests it cannot serve (unknown op, format, mode or device, a device
        without data such as ``"meta"``, a time budget of 0 or less, a bad target).

    Examples
    --------
    >>> from revcheck.kernels.pam import pam_mul
    >>> audit(pam_mul, "pam_mul", formats="fp8_e5m2", max_examples=5).passed
    True
    """
    config = arguments.resolve(
        candidate,
        op,
        formats=formats,
        device=device,
        mode=mode,
        max_examples=max_examples,
        exhaustive=exhaustive,
        seed=seed,
        time_budget=time_budget,
        determinism=determinism,
    )
    started = time.monotonic()
    budget = TimeBudget.starting_now(config.time_budget)
    results = [run_check(check, budget) for check in config.checks()]
    return AuditReport(
        config.candidate_ref, config.spec.name, results, seed, time.monotonic() - started, list(config.notes)
    )


def reproduce(
    candidate: Callable[..., Any] | str,
    op: str,
    format: str,
    case: dict[str, Any],
    *,
    mode: str | None = "ieee",
    device: str = "cpu",
) -> None:
    """Re-run one counterexample (the ``case`` literal a report prints); raise ``AssertionError`` if it fails.

    ``candidate`` is the kernel or its ``"module:function"`` / ``"file.py:function"`` text.

    Raises
    ------
    AssertionError
        When the candidate still differs from the oracle on ``case``.
    revcheck.errors.UsageError
        For requests it cannot serve (as :func:`audit`).
    """
    config = arguments.resolve(candidate, op, formats=format, device=device, mode=mode)
    check = CheckConfig(config, config.formats[0], config.modes[0])
    template = config.spec.sample(check.fmt, np.random.default_rng(0))
    finding = check_case(check, vl.case_from_literal(case, template))
    if finding is None:
        return
    lines = [f"{op} [{check.fmt.name}, {device}, mode={check.mode}] differs from the oracle"]
    if finding.note:
        lines.append(f"  note: {finding.note}")
    lines += [f"  input    {v.name} = {v.text}" for v in finding.inputs]
    lines += [f"  expected {v.name} = {v.text}" for v in finding.expected]
    lines += [f"  actual   {v.name} = {v.text}" for v in finding.actual]
    raise AssertionError("\n".join(lines))
