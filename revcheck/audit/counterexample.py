"""From a failing case to the reported :class:`~revcheck.audit.report.Counterexample`.

The failing batch is narrowed to its first wrong element where that element
still fails on its own; the value classes are named; and a one-line
reproduction (:func:`revcheck.audit.reproduce` on the case literal) is written.
"""

from __future__ import annotations

import numpy as np

from revcheck import formats as _formats
from revcheck.audit import values as vl
from revcheck.audit.case import Failure, check_case, elements
from revcheck.audit.config import CheckConfig
from revcheck.audit.report import Counterexample, Finding, Value
from revcheck.audit.spec import Case

__all__ = ["MAX_SNIPPET_ELEMENTS", "assemble"]

# A failing input larger than this is not printed as a literal: the snippet says to re-run the audit.
MAX_SNIPPET_ELEMENTS = 256


def assemble(check: CheckConfig, failure: Failure, stage: str) -> Counterexample:
    """The counterexample of ``failure``, found by ``stage`` (``"hypothesis"``, ``"exhaustive"`` ...)."""
    case, finding = failure.case, failure.finding
    if stage != "determinism":
        case, finding = _minimal_case(check, case, finding)
    return Counterexample(
        op=check.spec.name,
        format=check.fmt.name,
        device=check.device,
        mode=check.mode,
        stage=stage,
        index=finding.index,
        inputs=finding.inputs,
        expected=finding.expected,
        actual=finding.actual,
        labels=finding.labels,
        ulp_distance=finding.ulp_distance,
        expected_class=_value_label(finding.expected).lstrip("+-"),
        actual_class=_value_label(finding.actual).lstrip("+-"),
        expected_label=_value_label(finding.expected),
        actual_label=_value_label(finding.actual),
        note=finding.note,
        case={k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in case.items()},
        snippet=_snippet(check, case),
        seed=check.audit.seed,
        reproduce_blob=failure.blob,
    )


def _minimal_case(check: CheckConfig, case: Case, finding: Finding) -> tuple[Case, Finding]:
    """The failing element on its own, if it still fails alone; else the whole failing case."""
    if not finding.index:
        return case, finding
    narrowed = check.spec.narrow(case, finding.index)
    alone = check_case(check, narrowed)
    if alone is None:
        return case, finding
    return narrowed, Finding(
        alone.index, alone.inputs, alone.expected, alone.actual, alone.labels, alone.ulp_distance, alone.note
    )


def _value_label(values: tuple[Value, ...]) -> str:
    """Signed class (``"-zero"``) of the first value if it is a float pattern, else ``""``."""
    if not values or values[0].bits is None:
        return ""
    try:
        fmt = _formats.get(values[0].kind)
    except _formats.UnsupportedFormatError:
        return ""
    return vl.label(values[0].bits, fmt)


def _snippet(check: CheckConfig, case: Case) -> str:
    if elements(case) > MAX_SNIPPET_ELEMENTS:
        return f"re-run the same audit (same seed); the failing input has {elements(case)} elements"
    reference = check.audit.candidate_ref
    target = reference if ":" in reference and "<" not in reference else "YOUR_KERNEL"
    mode_text = "" if check.mode is None else f", mode={check.mode!r}"
    device_text = "" if check.device == "cpu" else f", device={check.device!r}"
    return (
        f"from revcheck.audit import reproduce; reproduce({target!r}, {check.spec.name!r}, "
        f"{check.fmt.name!r}, {vl.literal(case)}{mode_text}{device_text})"
    )
