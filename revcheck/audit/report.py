"""What an audit found: :class:`Counterexample`, :class:`CheckResult` and :class:`AuditReport`.

A report holds one :class:`CheckResult` per (op, format, device, mode).  A failed
check carries the minimal counterexample: the inputs, the expected and the
actual outputs in decimal and bit form, the ULP distance, the class of the
inputs (``"+subnormal"``, ``"-zero"``, ``"tie"`` ...) and how to reproduce it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

__all__ = ["AuditFailure", "AuditReport", "CheckResult", "Counterexample", "Value", "Verdict"]

Status = Literal["passed", "failed", "incomplete", "skipped"]
Verdict = Literal["passed", "failed", "incomplete", "not checked"]


@dataclass(frozen=True)
class Value:
    """One named input or output of a counterexample.

    ``text`` is the human form (``revcheck.bits.describe`` for floats: decimal
    and ``[0xPATTERN +EXP.MANT]``); ``bits`` the bit pattern or integer code
    when the value is a single element, else None; ``kind`` the format name
    (``"bf16"``), ``"int64"`` for BDIA codes, or ``"int"`` for plain integers.
    """

    name: str
    text: str
    bits: int | None = None
    kind: str = ""


@dataclass(frozen=True)
class Finding:
    """The first wrong element of one input case (before reproduction details are added)."""

    index: tuple[int, ...]
    inputs: tuple[Value, ...]
    expected: tuple[Value, ...]
    actual: tuple[Value, ...]
    labels: tuple[str, ...]
    ulp_distance: int | None = None
    note: str = ""


@dataclass(frozen=True)
class Counterexample:
    """A minimal input on which the candidate disagrees with the oracle.

    ``labels`` name the class of the inputs, one per input for elementwise ops
    (``("+subnormal", "-normal")``), plus op-specific ones (``"tie"`` for a
    quantizer input halfway between two codes, ``"X_prev odd"`` ...).
    ``expected_class`` / ``actual_class`` are the value classes of the first
    output (``"inf"``, ``"nan"`` ...) where it is a float, else ``""``;
    ``expected_label`` / ``actual_label`` the same with the sign (``"-zero"``).
    ``stage`` is how it was found: ``"counted"`` (one of the op's counted
    cases, run first under every seed), ``"hypothesis"``, ``"exhaustive"`` or
    ``"determinism"``.  ``snippet`` is one line of Python that re-runs the
    candidate on exactly these inputs (it raises ``AssertionError`` while the
    bug is there).
    """

    op: str
    format: str
    device: str
    mode: str | None
    stage: str
    index: tuple[int, ...]
    inputs: tuple[Value, ...]
    expected: tuple[Value, ...]
    actual: tuple[Value, ...]
    labels: tuple[str, ...]
    ulp_distance: int | None
    expected_class: str
    actual_class: str
    expected_label: str
    actual_label: str
    note: str
    case: dict[str, Any]
    snippet: str
    seed: int | None = None
    reproduce_blob: str | None = None

    @property
    def input_classes(self) -> frozenset[str]:
        """Value classes of the inputs without their signs, e.g. ``{"subnormal", "normal"}``."""
        return frozenset(label.lstrip("+-") for label in self.labels)

    def involves(self, label: str) -> bool:
        """Whether ``label`` describes the counterexample.

        ``label`` is a class (``"subnormal"``, ``"-zero"``), an op label (``"tie"``) or a
        magnitude label (``"max finite"``, ``"overflow edge"``, ``"|code| ≥ 2^53"``), which
        matches with or without the name of the value it is about (``"b: max finite"``).
        """
        return (
            label in self.labels
            or label in self.input_classes
            or any(text.partition(": ")[2] == label for text in self.labels)
        )

    def text(self) -> str:
        """Several lines: inputs, expected, actual, distance, class and how to reproduce."""
        lines = [
            f"counterexample ({self.stage}) for {self.op} [{self.format}, {self.device}, mode={self.mode}]"
        ]
        if self.note:
            lines.append(f"  note:     {self.note}")
        if self.index:
            lines.append(f"  at index {self.index} of the failing batch")
        lines += [f"  input    {v.name} = {v.text}" for v in self.inputs]
        lines += [f"  expected {v.name} = {v.text}" for v in self.expected]
        lines += [f"  actual   {v.name} = {v.text}" for v in self.actual]
        if self.ulp_distance is not None:
            lines.append(f"  distance: {self.ulp_distance} ULP")
        lines.append(f"  class:    {', '.join(self.labels) or '-'}")
        if self.seed is not None:
            lines.append(f"  seed:     {self.seed}")
        if self.reproduce_blob:
            lines.append(f"  hypothesis: {self.reproduce_blob}")
        lines.append(f"  reproduce: {self.snippet}")
        return "\n".join(lines)


@dataclass
class CheckResult:
    """The verdict for one (op, format, device, mode).

    ``status``: ``"passed"`` (every stage ran to its end and found nothing),
    ``"failed"`` (a counterexample), ``"incomplete"`` (the time budget stopped
    a stage after some cases, none failing) or ``"skipped"`` (the budget was
    spent before any case ran: nothing was checked).  Only ``"passed"`` passes.
    ``examples`` counts the Hypothesis test cases run: the op's counted cases
    (run first, :attr:`revcheck.audit.OpSpec.examples`), the generated examples
    (at most ``max_examples``) plus, after a failure, those tried while
    shrinking it (the table's "cases run" column).  ``elements`` counts the input
    elements checked in all stages, ``caught_after`` the number of Hypothesis
    test cases, counted cases first (or, for the exhaustive stage, inputs; for
    the determinism stage, runs) until the first failure, None when nothing failed.
    """

    op: str
    format: str
    device: str
    mode: str | None
    status: Status
    examples: int = 0
    elements: int = 0
    exhaustive: bool = False
    seconds: float = 0.0
    caught_after: int | None = None
    counterexample: Counterexample | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.status == "passed"


class AuditFailure(AssertionError):
    """Raised by :meth:`AuditReport.raise_for_failures`; ``report`` is the whole report.

    Raised for a failed audit and for one that did not check everything it was
    asked to (verdict ``"not checked"`` or ``"incomplete"``): neither is a pass.
    """

    def __init__(self, report: AuditReport) -> None:
        super().__init__(report.failure_text())
        self.report = report


@dataclass
class AuditReport:
    """All verdicts of one :func:`revcheck.audit.audit` call.

    ``str(report)`` is a table, one row per check, followed by the
    counterexamples; :meth:`to_json` is the machine form.
    """

    candidate: str
    op: str
    results: list[CheckResult]
    seed: int | None
    seconds: float
    notes: list[str] = field(default_factory=list)

    @property
    def verdict(self) -> Verdict:
        """``"failed"`` if any check failed; else ``"not checked"`` if every check was skipped
        (nothing ran), ``"incomplete"`` if some check was skipped or cut short by the time
        budget, ``"passed"`` only when every check ran to its end."""
        if self.failures:
            return "failed"
        if all(result.status == "skipped" for result in self.results):
            return "not checked"
        if any(result.status != "passed" for result in self.results):
            return "incomplete"
        return "passed"

    @property
    def passed(self) -> bool:
        """True only when every check ran to its end and none failed (:attr:`verdict` ``"passed"``).

        An audit the time budget cut short, or that checked nothing, does not pass.
        """
        return self.verdict == "passed"

    @property
    def failures(self) -> list[CheckResult]:
        return [result for result in self.results if result.status == "failed"]

    @property
    def counterexamples(self) -> list[Counterexample]:
        return [r.counterexample for r in self.results if r.counterexample is not None]

    def result(self, format: str, mode: str | None = None, device: str | None = None) -> CheckResult:
        """The check of ``format`` (and ``mode``/``device`` where several were audited)."""
        for candidate in self.results:
            if (
                candidate.format == format
                and mode in (None, candidate.mode)
                and device in (None, candidate.device)
            ):
                return candidate
        audited = ", ".join(f"{r.format}/{r.mode}/{r.device}" for r in self.results)
        raise KeyError(f"no check of format={format!r} mode={mode!r} device={device!r}; audited: {audited}")

    def raise_for_failures(self) -> None:
        """Raise :class:`AuditFailure` (an ``AssertionError``) unless the audit passed.

        A check that failed, or one that was skipped or cut short (the time budget), raises.
        """
        if not self.passed:
            raise AuditFailure(self)

    def table(self) -> str:
        # "cases run": Hypothesis test cases, shrinking included (more than max_examples after a failure).
        header = (
            "op",
            "format",
            "device",
            "mode",
            "verdict",
            "cases run",
            "elements",
            "caught after",
            "time",
        )
        rows = [
            (
                r.op,
                r.format,
                r.device,
                r.mode or "-",
                r.status.upper() if r.status in ("failed", "skipped", "incomplete") else r.status,
                str(r.examples),
                str(r.elements) + (" (exhaustive)" if r.exhaustive else ""),
                _caught_text(r),
                f"{r.seconds:.2f}s",
            )
            for r in self.results
        ]
        widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
        lines = [
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
            for row in [header, *rows]
        ]
        lines.insert(1, "  ".join("-" * width for width in widths))
        return "\n".join(lines)

    def failure_text(self) -> str:
        failed = self.failures
        head = f"audit of {self.candidate} as {self.op}: {len(failed)} of {len(self.results)} checks failed"
        unfinished = [r for r in self.results if r.status in ("skipped", "incomplete")]
        if unfinished:
            which = ", ".join(f"{r.format}/{r.mode or '-'} {r.status}" for r in unfinished)
            head += (
                f"; {len(unfinished)} not checked to the end ({which}: the time budget; "
                "raise --time-budget or leave it out)"
            )
        return "\n\n".join([head, *(r.counterexample.text() for r in failed if r.counterexample)])

    def __str__(self) -> str:
        verdict = self.verdict.upper()
        seed = "derandomized" if self.seed is None else str(self.seed)
        counts = f"{len(self.failures)} of {len(self.results)} checks failed"
        unfinished = sum(result.status in ("skipped", "incomplete") for result in self.results)
        if unfinished:
            counts += f", {unfinished} not checked to the end"
        lines = [
            f"revcheck audit of {self.candidate} as {self.op}: {verdict} ({counts}; seed {seed}; "
            f"{self.seconds:.2f}s)",
        ]
        lines += [f"  note: {note}" for note in self.notes]
        lines += ["", self.table()]
        for result in self.results:
            lines += [f"  note [{result.format}/{result.mode or '-'}]: {note}" for note in result.notes]
        for counterexample in self.counterexamples:
            lines += ["", counterexample.text()]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "candidate": self.candidate,
            "op": self.op,
            "passed": self.passed,
            "verdict": self.verdict,
            "notes": list(self.notes),
            "seed": self.seed,
            "seconds": self.seconds,
            "results": [asdict(result) for result in self.results],
        }

    def to_json(self, **dump_options: Any) -> str:
        """The report as JSON (inputs and outputs with their bit patterns as integers)."""
        dump_options.setdefault("indent", 2)
        return json.dumps(self.to_dict(), default=_jsonable, **dump_options)


def _caught_text(result: CheckResult) -> str:
    if result.caught_after is None or result.counterexample is None:
        return "-"
    stage = result.counterexample.stage
    unit = CAUGHT_UNITS.get(stage, "")
    if result.caught_after == 1:
        unit = unit.removesuffix("s")
    return f"{result.caught_after} {unit} ({stage})"


#: What "caught after" counts, per stage: the counted cases come first, then the generated examples.
CAUGHT_UNITS = {"counted": "cases", "hypothesis": "examples", "exhaustive": "inputs", "determinism": "runs"}


def _jsonable(obj: object) -> object:
    if isinstance(obj, (frozenset, set, tuple)):
        return list(obj)
    if hasattr(obj, "tolist"):
        return obj.tolist()
    return str(obj)
