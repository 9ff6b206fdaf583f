"""From the arguments of :func:`revcheck.audit.audit` to an :class:`~revcheck.audit.config.AuditConfig`.

Every request the audit cannot serve (unknown op, format, mode or device, a
target that names nothing callable, a mode the candidate cannot take) is a
:class:`~revcheck.errors.UsageError` here, before anything runs.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from revcheck import formats as _formats
from revcheck.audit import registry
from revcheck.audit.config import DEFAULT_MAX_EXAMPLES, AuditConfig
from revcheck.audit.spec import OpSpec
from revcheck.audit.target import load_target
from revcheck.errors import UsageError
from revcheck.formats import FloatFormat
from revcheck.modes import check_mode

__all__ = [
    "accepts_keyword",
    "accepts_mode",
    "check_device",
    "check_time_budget",
    "resolve",
    "resolve_formats",
    "resolve_modes",
]


def resolve(
    candidate: Callable[..., Any] | str,
    op: str,
    *,
    formats: str | Iterable[object] | None,
    device: str,
    mode: str | Sequence[str] | None,
    max_examples: int | None = None,
    exhaustive: bool = False,
    seed: int | None = None,
    time_budget: float | None = None,
    determinism: bool = False,
) -> AuditConfig:
    """The checked configuration of one audit; raises :class:`~revcheck.errors.UsageError`."""
    target = None
    if isinstance(candidate, str):
        target = candidate
        candidate = load_target(candidate)
    if not callable(candidate):
        raise UsageError(f"candidate {candidate!r} is not callable; pass the kernel function itself")
    spec = registry.get(op)
    chosen_formats = resolve_formats(spec, formats)
    modes = resolve_modes(spec, mode)
    device = check_device(device)
    pass_mode = bool(spec.modes) and accepts_mode(candidate)
    # Formats without a torch dtype (fp6, fp4) reach a candidate as uint8 bit patterns with fmt=
    # (docs/spec.md D1.10): one without that keyword is audited in the other formats only.
    pass_fmt = accepts_keyword(candidate, "fmt")
    needs_fmt = [f.name for f in chosen_formats if f.torch_dtype_name is None]
    if needs_fmt and not pass_fmt and formats not in (None, "all"):
        raise UsageError(
            f"{', '.join(needs_fmt)} reach a kernel as torch.uint8 bit patterns together with fmt=...; "
            "the candidate takes no `fmt` keyword: add one, or audit other formats"
        )
    notes: list[str] = []
    if spec.modes and not pass_mode:
        # A kernel without a `mode` keyword implements one mode; the user declares which.
        if len(modes) > 1:
            raise UsageError(
                "the candidate takes no `mode` keyword, so it implements one rounding mode; declare which "
                "with mode='ieee' or mode='ftz' (--mode ieee / --mode ftz), or give it a mode=... keyword "
                f"to audit {', '.join(str(m) for m in modes)}"
            )
        if modes[0] == "ieee":
            notes.append(
                "the candidate takes no `mode` keyword: audited as a kernel of mode 'ieee' (the default; "
                "declare another with mode='ftz' / --mode ftz)"
            )
        else:
            notes.append(
                f"the candidate takes no `mode` keyword: audited as a kernel of mode {modes[0]!r}, "
                f"as declared (mode={modes[0]!r})"
            )
    if max_examples is not None and (
        isinstance(max_examples, bool) or not isinstance(max_examples, int) or max_examples < 1
    ):
        raise UsageError(f"max_examples={max_examples!r} must be an int of at least 1")
    check_time_budget(time_budget)
    return AuditConfig(
        spec=spec,
        candidate=candidate,
        candidate_ref=_candidate_name(candidate, target),
        formats=tuple(chosen_formats),
        modes=tuple(modes),
        pass_mode=pass_mode,
        device=device,
        pass_fmt=pass_fmt,
        max_examples=DEFAULT_MAX_EXAMPLES if max_examples is None else max_examples,
        exhaustive=exhaustive,
        seed=seed,
        time_budget=time_budget,
        determinism=determinism,
        notes=tuple(notes),
    )


def resolve_formats(spec: OpSpec, formats: str | Iterable[object] | None) -> list[FloatFormat]:
    """The formats to audit: a name, several, ``"all"`` or None (every format the op supports)."""
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
            raise UsageError(
                f"unknown format {name!r}; {spec.name} supports {', '.join(spec.formats)} (or 'all')"
            ) from None
        if fmt.name not in spec.formats:
            raise UsageError(
                f"{spec.name} does not support format {fmt.name}; use one of {', '.join(spec.formats)}"
            )
        resolved.append(fmt)
    return list(dict.fromkeys(resolved))


def resolve_modes(spec: OpSpec, mode: str | Sequence[str] | None) -> list[str | None]:
    """The rounding modes to audit (checked by :func:`revcheck.modes.check_mode`); ``[None]`` if none."""
    if not spec.modes:
        if mode not in (None, "ieee", "all"):
            raise UsageError(f"{spec.name} has no rounding modes; leave mode out (got mode={mode!r})")
        return [None]
    if mode is None:
        return ["ieee"]
    requested = list(spec.modes) if mode == "all" else [mode] if isinstance(mode, str) else list(mode)
    for name in requested:
        try:
            check_mode(name)
        except ValueError as error:
            raise UsageError(f"{error} (or 'all')") from None
    return list(dict.fromkeys(requested))


def check_time_budget(seconds: object) -> float | None:
    """``seconds`` if it is None or a positive finite number, else :class:`~revcheck.errors.UsageError`.

    A budget of 0 (or less) would check nothing; the audit refuses it rather than report on nothing.
    """
    if seconds is None:
        return None
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not math.isfinite(seconds):
        raise UsageError(f"time budget {seconds!r} is not a number of seconds; give e.g. 60, or leave it out")
    if seconds <= 0:
        raise UsageError(
            f"time budget {seconds!r} s leaves no time to check anything; give a positive number of "
            "seconds, or leave it out for no limit"
        )
    return float(seconds)


def check_device(device: str) -> str:
    """The device name if torch can allocate on it, else :class:`~revcheck.errors.UsageError` saying why."""
    import torch

    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise UsageError(f"unknown device {device!r} ({error}); use 'cpu' or 'cuda'") from None
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"device {device!r} requested but CUDA is not available here; use --device cpu")
    if parsed.type == "meta":
        raise UsageError(
            f"device {device!r} holds no data (tensors there have shapes, not values), so no result can be "
            "checked; use 'cpu' or 'cuda'"
        )
    try:
        probe = torch.arange(4, dtype=torch.float32, device=parsed)
        readable = torch.equal(probe.cpu(), torch.arange(4, dtype=torch.float32))
    except Exception as error:  # any backend failure means the device cannot be audited
        raise UsageError(f"cannot use device {device!r}: {_one_line(error)}; use 'cpu'") from None
    if not readable:
        raise UsageError(f"device {device!r} does not give back the values written to it; use 'cpu'")
    return str(device)


def _one_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def accepts_mode(candidate: Callable[..., Any]) -> bool:
    """Whether the candidate's signature takes a ``mode`` keyword."""
    return accepts_keyword(candidate, "mode")


def accepts_keyword(candidate: Callable[..., Any], name: str) -> bool:
    """Whether the candidate's signature takes the keyword ``name`` (or ``**kwargs``)."""
    try:
        parameters = inspect.signature(candidate).parameters.values()
    except (TypeError, ValueError):
        return True  # builtins and compiled wrappers: assume the documented signature
    return any(p.name == name or p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)


def _candidate_name(candidate: Callable[..., Any], target: str | None) -> str:
    if target is not None:
        return target
    module = getattr(candidate, "__module__", None)
    qualname = getattr(candidate, "__qualname__", None) or getattr(candidate, "__name__", None)
    if module and qualname:
        return f"{module}:{qualname}"
    return repr(candidate)
