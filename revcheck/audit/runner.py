"""The audit: Hypothesis, then exhaustive inputs where feasible, then (optionally) determinism.

For every (format, device, mode) the runner

1. runs Hypothesis on the op's TestFloat-style strategy (``max_examples``
   batches; derandomized unless a ``seed`` is given; no example database), and
   keeps the shrunk minimal failing batch, narrowed to its first wrong element;
2. if that passed and the input space is small enough (8-bit binary ops, 16-bit
   unary ops; or ``exhaustive=True`` up to 2**32 inputs), checks every input;
3. if ``determinism=True``, runs one larger input several times and compares bits.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed

from revcheck import formats as _formats
from revcheck.audit import registry
from revcheck.audit import spec as sp
from revcheck.audit.determinism import first_difference
from revcheck.audit.report import AuditReport, CheckResult, Counterexample, Finding, Value
from revcheck.audit.spec import Case, OpSpec
from revcheck.audit.target import TargetError, load_target
from revcheck.formats import FloatFormat

__all__ = ["DEFAULT_MAX_EXAMPLES", "AuditUsageError", "audit", "reproduce"]

DEFAULT_MAX_EXAMPLES = 100
DETERMINISM_RUNS = 5
MAX_SNIPPET_ELEMENTS = 256
# Shrinking stops this many seconds after the first failure (the counterexample is then the
# smallest failing case found by that time, still narrowed to one element).
SHRINK_SECONDS = 3.0


class AuditUsageError(ValueError):
    """The audit was asked for something it cannot do (unknown op, format, device, mode, target)."""


class _Mismatch(Exception):
    """Raised inside the Hypothesis test body so that Hypothesis shrinks the failing case."""


class _CandidateRaised(Exception):
    def __init__(self, error: BaseException) -> None:
        super().__init__(f"{type(error).__name__}: {error}")
        self.error = error


# ---- argument checking -----------------------------------------------------------------------


def _resolve_formats(spec: OpSpec, formats: str | Iterable[object] | None) -> list[FloatFormat]:
    if formats is None or formats == "all":
        requested: list[object] = list(spec.formats)
    elif isinstance(formats, str) or not isinstance(formats, Iterable):
        requested = [formats]
    else:
        requested = list(formats)
    resolved = []
    for name in requested:
        if name == "all":
            resolved += [_formats.get(n) for n in spec.formats]
            continue
        try:
            fmt = _formats.get(name)
        except _formats.UnsupportedFormatError:
            raise AuditUsageError(
                f"unknown format {name!r}; {spec.name} supports {', '.join(spec.formats)} (or 'all')"
            ) from None
        if fmt.name not in spec.formats:
            raise AuditUsageError(
                f"{spec.name} does not support format {fmt.name}; use one of {', '.join(spec.formats)}"
            )
        resolved.append(fmt)
    return list(dict.fromkeys(resolved))


def _resolve_modes(spec: OpSpec, mode: str | Sequence[str] | None) -> list[str | None]:
    if not spec.modes:
        if mode not in (None, "ieee", "all"):
            raise AuditUsageError(f"{spec.name} has no rounding modes; leave mode out (got mode={mode!r})")
        return [None]
    if mode is None:
        return ["ieee"]
    requested = list(spec.modes) if mode == "all" else [mode] if isinstance(mode, str) else list(mode)
    for name in requested:
        if name not in spec.modes:
            raise AuditUsageError(
                f"unknown mode {name!r} for {spec.name}; use one of {', '.join(spec.modes)} or 'all'"
            )
    return list(dict.fromkeys(requested))


def check_device(device: str) -> str:
    """The device name if torch can allocate on it, else :class:`AuditUsageError` saying why."""
    import torch

    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise AuditUsageError(f"unknown device {device!r} ({error}); use 'cpu' or 'cuda'") from None
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise AuditUsageError(f"device {device!r} requested but CUDA is not available here; use --device cpu")
    try:
        torch.empty(1, device=parsed)
    except Exception as error:  # any backend failure means the device cannot be audited
        raise AuditUsageError(f"cannot allocate on device {device!r}: {error}; use 'cpu'") from None
    return str(device)


def _accepts_mode(candidate: Callable[..., Any]) -> bool:
    try:
        parameters = inspect.signature(candidate).parameters.values()
    except (TypeError, ValueError):
        return True  # builtins and compiled wrappers: assume the documented signature
    return any(p.name == "mode" or p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)


def _candidate_name(candidate: Callable[..., Any], target: str | None) -> str:
    if target is not None:
        return target
    module = getattr(candidate, "__module__", None)
    qualname = getattr(candidate, "__qualname__", None) or getattr(candidate, "__name__", None)
    if module and qualname:
        return f"{module}:{qualname}"
    return repr(candidate)


# ---- one case --------------------------------------------------------------------------------


def _guarded(candidate: Callable[..., Any]) -> Callable[..., Any]:
    def call(*args: Any, **kwargs: Any) -> Any:
        try:
            return candidate(*args, **kwargs)
        except Exception as error:  # whatever the user's kernel raises is a finding, not an audit crash
            raise _CandidateRaised(error) from error

    return call


def _case_values(case: Case, fmt: FloatFormat) -> tuple[Value, ...]:
    values = []
    for name, value in case.items():
        if isinstance(value, np.ndarray):
            values.append(sp.array_value(name, value, fmt if value.dtype == fmt.uint_dtype else None))
        else:
            values.append(sp.int_value(name, value, "int"))
    return tuple(values)


def check_case(
    spec: OpSpec,
    candidate: Callable[..., Any],
    case: Case,
    fmt: FloatFormat,
    mode: str | None,
    pass_mode: bool,
    device: str,
) -> Finding | None:
    """Run the candidate on one case and compare with the oracle; None when bit-exact."""
    try:
        actual = spec.call(_guarded(candidate), case, fmt, mode if pass_mode else None, device)
    except _CandidateRaised as raised:
        note = f"the candidate raised {raised}"
        return Finding((), _case_values(case, fmt), (), (), ("raised",), note=note)
    except sp.BadOutput as bad:
        return Finding((), _case_values(case, fmt), (), (), ("bad output",), note=str(bad))
    expected = spec.oracle(case, fmt, mode)
    return spec.compare(case, expected, actual, fmt, mode)


# ---- stages ----------------------------------------------------------------------------------


class _Check:
    """State of one (op, format, device, mode) check."""

    def __init__(
        self,
        spec: OpSpec,
        candidate: Callable[..., Any],
        fmt: FloatFormat,
        mode: str | None,
        pass_mode: bool,
        device: str,
    ) -> None:
        self.spec, self.candidate, self.fmt, self.mode, self.pass_mode, self.device = (
            spec,
            candidate,
            fmt,
            mode,
            pass_mode,
            device,
        )
        self.examples = 0
        self.elements = 0
        self.caught_after: int | None = None
        self.failing: tuple[Case, Finding] | None = None
        self.shrink_cut = False

    def run_case(self, case: Case) -> Finding | None:
        return check_case(self.spec, self.candidate, case, self.fmt, self.mode, self.pass_mode, self.device)


def _elements(case: Case) -> int:
    sizes = [value.size for value in case.values() if isinstance(value, np.ndarray)]
    return max(sizes, default=1)


def _hypothesis_stage(
    check: _Check, max_examples: int, seed: int | None, deadline: float | None
) -> tuple[Case, Finding, str | None] | None:
    first_failure_at: list[float] = []

    def body(case: Case) -> None:
        if deadline is not None and time.monotonic() > deadline and check.failing is None:
            return  # out of time: let Hypothesis run out its remaining examples without work
        if first_failure_at and time.monotonic() - first_failure_at[0] > SHRINK_SECONDS:
            # Shrinking has had its time: every further candidate "passes", so Hypothesis stops
            # quickly; the last failing case recorded is the smallest found so far.
            check.shrink_cut = True
            return
        check.examples += 1
        check.elements += _elements(case)
        finding = check.run_case(case)
        if finding is not None:
            if check.caught_after is None:
                check.caught_after = check.examples
                first_failure_at.append(time.monotonic())
            # Hypothesis replays the minimal example last, so the last one stored is the shrunk one.
            check.failing = (case, finding)
            raise _Mismatch(finding.note or "mismatch")

    test = given(case=check.spec.strategy(check.fmt))(body)
    test = settings(
        max_examples=max_examples,
        database=None,
        deadline=None,
        derandomize=seed is None,
        print_blob=True,
        report_multiple_bugs=False,
        suppress_health_check=list(HealthCheck),
        phases=(Phase.explicit, Phase.generate, Phase.shrink),
    )(test)
    if seed is not None:
        test = hypothesis_seed(seed)(test)
    try:
        test()
    except _Mismatch as error:
        if check.failing is None:
            return None
        return check.failing[0], check.failing[1], None if check.shrink_cut else _blob(error)
    except Exception as error:  # e.g. Hypothesis' FlakyFailure for a kernel that fails only sometimes
        if check.failing is None:
            raise
        case, finding = check.failing
        if check.shrink_cut:
            return case, finding, None
        note = f"{finding.note}; " if finding.note else ""
        flaky = Finding(
            finding.index,
            finding.inputs,
            finding.expected,
            finding.actual,
            finding.labels,
            finding.ulp_distance,
            f"{note}the failure did not reproduce on a re-run ({type(error).__name__}): "
            "the kernel is nondeterministic",
        )
        return case, flaky, None
    return None


def _blob(error: BaseException) -> str | None:
    for note in getattr(error, "__notes__", ()):
        start = note.find("@reproduce_failure(")
        if start >= 0:
            return note[start:].split(" as a decorator")[0].strip()
    return None


def _exhaustive_stage(
    check: _Check, plan: sp.ExhaustivePlan, deadline: float | None
) -> tuple[Case, Finding] | str | None:
    checked = 0
    for chunk in plan.chunks():
        if deadline is not None and time.monotonic() > deadline:
            check.elements += checked
            return f"exhaustive stage stopped by the time budget after {checked} of {plan.size} inputs"
        finding = check.run_case(chunk)
        if finding is not None:
            position = int(np.ravel_multi_index(finding.index, _shape(chunk))) + 1 if finding.index else 1
            check.elements += checked + position
            check.caught_after = checked + position
            return chunk, finding
        checked += _elements(chunk)
    check.elements += checked
    return None


def _shape(case: Case) -> tuple[int, ...]:
    return next(value.shape for value in case.values() if isinstance(value, np.ndarray))


def _as_floats(outputs: sp.Outputs, fmt: FloatFormat) -> dict[str, Any]:
    """Bit-pattern outputs as float arrays where NumPy has the format, so differences print as values."""
    shown: dict[str, Any] = {}
    for name, array in outputs.items():
        same_width = [
            f for f in (fmt, _formats.get("fp32"), _formats.get("fp64")) if f.uint_dtype == array.dtype
        ]
        if same_width and same_width[0].numpy_float is not None:
            shown[name] = array.view(same_width[0].numpy_float)
        else:
            shown[name] = array
    return shown


def _determinism_stage(check: _Check, seed: int | None, runs: int) -> tuple[Case, Finding] | None:
    rng = np.random.default_rng(0 if seed is None else seed)
    case = check.spec.sample(check.fmt, rng)
    call = _guarded(check.candidate)
    mode = check.mode if check.pass_mode else None
    try:
        reference = check.spec.call(call, case, check.fmt, mode, check.device)
        for run in range(1, runs):
            output = check.spec.call(call, case, check.fmt, mode, check.device)
            difference = first_difference(_as_floats(reference, check.fmt), _as_floats(output, check.fmt))
            if difference is not None:
                note = f"not deterministic: run {run} differs from run 0 in {difference.text()}"
                first = Value(f"output {difference.path} (run 0)", difference.first)
                other = Value(f"output {difference.path} (run {run})", difference.other)
                inputs = (
                    Value("inputs", f"the op's sample case ({_elements(case)} elements, seed {seed or 0})"),
                )
                return case, Finding(
                    difference.index, inputs, (first,), (other,), ("nondeterministic",), note=note
                )
    except (_CandidateRaised, sp.BadOutput) as error:
        return case, Finding((), (), (), (), ("raised",), note=f"during the determinism runs: {error}")
    return None


# ---- counterexamples -------------------------------------------------------------------------


def _minimal_case(check: _Check, case: Case, finding: Finding) -> tuple[Case, Finding]:
    """The failing element on its own, if it still fails alone; else the whole failing case."""
    if not finding.index:
        return case, finding
    narrowed = check.spec.narrow(case, finding.index)
    alone = check.run_case(narrowed)
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
    return sp.label(values[0].bits, fmt)


def _snippet(
    candidate_ref: str, spec: OpSpec, fmt: FloatFormat, case: Case, mode: str | None, device: str
) -> str:
    if _elements(case) > MAX_SNIPPET_ELEMENTS:
        return f"re-run the same audit (same seed); the failing input has {_elements(case)} elements"
    target = candidate_ref if ":" in candidate_ref and "<" not in candidate_ref else "YOUR_KERNEL"
    mode_text = "" if mode is None else f", mode={mode!r}"
    device_text = "" if device == "cpu" else f", device={device!r}"
    return (
        f"from revcheck.audit import reproduce; reproduce({target!r}, {spec.name!r}, {fmt.name!r}, "
        f"{sp.literal(case)}{mode_text}{device_text})"
    )


def _counterexample(
    check: _Check,
    case: Case,
    finding: Finding,
    stage: str,
    candidate_ref: str,
    seed: int | None,
    blob: str | None,
) -> Counterexample:
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
        snippet=_snippet(candidate_ref, check.spec, check.fmt, case, check.mode, check.device),
        seed=seed,
        reproduce_blob=blob,
    )


# ---- public API ------------------------------------------------------------------------------


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

    ``candidate`` is a callable taking and returning torch tensors on ``device``
    (see ``revcheck.audit.registry.get(op).signature``), or a target text
    ``"module:function"`` / ``"path/file.py:function"``.  ``formats``: a name,
    several, ``"all"`` or None (all formats the op supports).  ``mode``:
    ``"ieee"``, ``"ftz"``, ``"all"`` or a list (ignored by ops without modes); a
    candidate gets ``mode=`` as a keyword only if its signature has it.
    ``max_examples``: Hypothesis batches per check (default 100).
    ``exhaustive``: also enumerate input spaces up to 2**32 (16-bit binary ops
    take minutes); small ones are enumerated anyway.  ``seed``: None runs
    derandomized (the same examples every time); an int seeds Hypothesis.
    ``time_budget``: seconds for the whole audit; checks not started in time are
    reported as skipped.  ``determinism``: also check run-to-run bit equality.
    Raises :class:`AuditUsageError` for requests it cannot serve.
    """
    target = None
    if isinstance(candidate, str):
        target = candidate
        try:
            candidate = load_target(candidate)
        except TargetError as error:
            raise AuditUsageError(str(error)) from None
    if not callable(candidate):
        raise AuditUsageError(f"candidate {candidate!r} is not callable; pass the kernel function itself")
    try:
        spec = registry.get(op)
    except registry.UnknownOpError as error:
        raise AuditUsageError(str(error)) from None
    chosen_formats = _resolve_formats(spec, formats)
    modes = _resolve_modes(spec, mode)
    device = check_device(device)
    pass_mode = bool(spec.modes) and _accepts_mode(candidate)
    if spec.modes and not pass_mode and any(m != "ieee" for m in modes):
        raise AuditUsageError(
            f"the candidate takes no `mode` keyword, so it can only be audited in mode 'ieee'; "
            f"add a mode=... keyword argument to audit {', '.join(m for m in modes if m and m != 'ieee')}"
        )
    if max_examples is not None and max_examples < 1:
        raise AuditUsageError(f"max_examples={max_examples} must be at least 1")
    examples = DEFAULT_MAX_EXAMPLES if max_examples is None else max_examples
    candidate_ref = _candidate_name(candidate, target)

    started = time.monotonic()
    deadline = None if time_budget is None else started + time_budget
    results: list[CheckResult] = []
    for fmt in chosen_formats:
        for chosen_mode in modes:
            results.append(
                _run_check(
                    spec,
                    candidate,
                    fmt,
                    chosen_mode,
                    pass_mode,
                    device,
                    examples,
                    exhaustive,
                    seed,
                    deadline,
                    determinism,
                    candidate_ref,
                )
            )
    return AuditReport(candidate_ref, spec.name, results, seed, time.monotonic() - started)


def _run_check(
    spec: OpSpec,
    candidate: Callable[..., Any],
    fmt: FloatFormat,
    mode: str | None,
    pass_mode: bool,
    device: str,
    max_examples: int,
    exhaustive: bool,
    seed: int | None,
    deadline: float | None,
    determinism: bool,
    candidate_ref: str,
) -> CheckResult:
    result = CheckResult(spec.name, fmt.name, device, mode, "passed")
    if deadline is not None and time.monotonic() > deadline:
        result.status = "skipped"
        result.notes.append("not run: the time budget was spent")
        return result
    started = time.monotonic()
    check = _Check(spec, candidate, fmt, mode, pass_mode, device)
    counterexample = None
    found = _hypothesis_stage(check, max_examples, seed, deadline)
    if found is not None:
        case, finding, blob = found
        counterexample = _counterexample(check, case, finding, "hypothesis", candidate_ref, seed, blob)
    plan = spec.exhaustive(fmt)
    if counterexample is None and plan is not None and (plan.by_default or exhaustive):
        exhaustive_found = _exhaustive_stage(check, plan, deadline)
        if isinstance(exhaustive_found, str):
            result.notes.append(exhaustive_found)
        else:
            result.exhaustive = True
            if exhaustive_found is not None:
                case, finding = exhaustive_found
                counterexample = _counterexample(
                    check, case, finding, "exhaustive", candidate_ref, seed, None
                )
    elif counterexample is None and exhaustive and plan is None:
        result.notes.append(f"exhaustive checking is not feasible for {spec.name} in {fmt.name}")
    if counterexample is None and determinism:
        nondeterministic = _determinism_stage(check, seed, DETERMINISM_RUNS)
        if nondeterministic is not None:
            case, finding = nondeterministic
            counterexample = _counterexample(check, case, finding, "determinism", candidate_ref, seed, None)
    result.examples = check.examples
    result.elements = check.elements
    result.caught_after = check.caught_after if counterexample is not None else None
    if counterexample is not None:
        result.status = "failed"
        result.counterexample = counterexample
        if counterexample.stage == "determinism":
            result.caught_after = DETERMINISM_RUNS
    result.seconds = time.monotonic() - started
    return result


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
    """
    if isinstance(candidate, str):
        candidate = load_target(candidate)
    spec = registry.get(op)
    fmt = _resolve_formats(spec, format)[0]
    modes = _resolve_modes(spec, mode)
    template = spec.sample(fmt, np.random.default_rng(0))
    arrays = sp.case_from_literal(case, template)
    pass_mode = bool(spec.modes) and _accepts_mode(candidate)
    finding = check_case(spec, candidate, arrays, fmt, modes[0], pass_mode, check_device(device))
    if finding is None:
        return
    lines = [f"{op} [{fmt.name}, {device}, mode={modes[0]}] differs from the oracle"]
    if finding.note:
        lines.append(f"  note: {finding.note}")
    lines += [f"  input    {v.name} = {v.text}" for v in finding.inputs]
    lines += [f"  expected {v.name} = {v.text}" for v in finding.expected]
    lines += [f"  actual   {v.name} = {v.text}" for v in finding.actual]
    raise AssertionError("\n".join(lines))
