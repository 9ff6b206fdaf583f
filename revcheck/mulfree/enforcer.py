"""The runtime half of the certificate: a ``TorchDispatchMode`` that sees every aten op of a training step.

>>> import torch
>>> from revcheck.mulfree import MulFreeMode
>>> with MulFreeMode(record=True) as mode:
...     y = torch.ones(3) * 2.0
>>> mode.report.count(kind="multiply")
1

:class:`MulFreeMode` classifies every op that reaches the dispatcher below
autograd (:func:`revcheck.mulfree.allowlist.classify`): in forward, in backward
(the autograd engine runs its nodes under the same mode) and in the optimizer.
Strict mode (the default) raises :class:`FloatMultiplyError` at the first
float multiply, divide or transcendental and :class:`UnknownOpError` at the
first op the allowlist does not know; ``record=True`` counts everything by
phase and op instead (:class:`Report`).  Each entry carries the op, its dtypes
and a short user stack.

Phases: ``"backward"`` while the autograd engine runs a graph task
(``torch._C._current_graph_task_id() != -1``); ``"optimizer"`` between the
global optimizer step pre- and post-hooks (every ``torch.optim.Optimizer``
calls them); ``"forward"`` otherwise; :meth:`MulFreeMode.phase` names a phase
explicitly and wins over both.

The registered PA ops of :mod:`revcheck.nn.mulfree` are allowed by name; with
``descend=True`` (the default) the mode also runs their implementation under
itself, so every aten op INSIDE them is checked too.  What the mode cannot
see is listed in :data:`revcheck.mulfree.blind_spots.BLIND_SPOTS`.
"""

from __future__ import annotations

import contextlib
import os
import traceback
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook
from torch.utils._python_dispatch import TorchDispatchMode

from revcheck.levels import Level
from revcheck.mulfree.allowlist import Kind, Verdict, classify, op_name, tensor_dtypes

__all__ = [
    "PHASES",
    "FloatMultiplyError",
    "MulFreeMode",
    "MulFreeViolation",
    "OpRecord",
    "Report",
    "UnknownOpError",
    "certify",
]

PHASES = ("forward", "backward", "optimizer")

_TORCH_DIR = os.path.dirname(torch.__file__)
_THIS_PACKAGE = os.path.dirname(os.path.abspath(__file__))


@dataclass
class OpRecord:
    """Every call of one op, in one phase, with one verdict."""

    op: str
    phase: str
    kind: Kind
    reason: str
    count: int = 0
    dtypes: set[str] = field(default_factory=set)
    stack: list[str] = field(default_factory=list)

    def describe(self) -> str:
        where = "\n".join(f"    {line}" for line in self.stack) or "    (no user frame)"
        dtypes = ", ".join(sorted(self.dtypes)) or "no tensors"
        return f"{self.op} in {self.phase} ({dtypes}): {self.reason}\n  first called at:\n{where}"


class MulFreeViolation(AssertionError):
    """A step that should be multiplication-free ran an op that is not allowed; ``.record`` says which."""

    def __init__(self, record: OpRecord, heading: str) -> None:
        super().__init__(f"{heading}: {record.describe()}")
        self.record = record
        self.op = record.op
        self.phase = record.phase


class FloatMultiplyError(MulFreeViolation):
    """A floating-point multiply, divide or transcendental ran (possibly hidden in a harmless-looking op)."""


class UnknownOpError(MulFreeViolation):
    """An op the allowlist does not know ran: it is reported, never passed silently."""


class Report:
    """What ran under a :class:`MulFreeMode`: counts by phase, op and kind, and the first stack of each."""

    def __init__(self) -> None:
        self.records: dict[tuple[str, str, Kind], OpRecord] = {}

    def add(
        self,
        op: str,
        phase: str,
        verdict: Verdict,
        dtypes: Callable[[], tuple[str, ...]],
        stack: Callable[[], list[str]],
    ) -> OpRecord:
        """Count one call; the dtypes of allowed ops are taken from their first call only (speed)."""
        key = (phase, op, verdict.kind)
        record = self.records.get(key)
        if record is None:
            record = self.records[key] = OpRecord(op, phase, verdict.kind, verdict.reason, stack=stack())
            record.dtypes.update(dtypes())
        elif not verdict.allowed:
            record.dtypes.update(dtypes())
        record.count += 1
        return record

    def count(
        self, *, kind: Kind | str | None = None, phase: str | None = None, op: str | None = None
    ) -> int:
        """How many op calls matched (all kinds / phases / ops when not given)."""
        return sum(
            record.count
            for record in self.records.values()
            if (kind is None or record.kind == kind)
            and (phase is None or record.phase == phase)
            and (op is None or record.op == op)
        )

    def phases(self) -> list[str]:
        seen = {record.phase for record in self.records.values()}
        return [p for p in PHASES if p in seen] + sorted(seen - set(PHASES))

    def ops(self, *, kind: Kind | str, phase: str | None = None) -> Counter[str]:
        counts: Counter[str] = Counter()
        for record in self.records.values():
            if record.kind == kind and (phase is None or record.phase == phase):
                counts[record.op] += record.count
        return counts

    def violations(self) -> list[OpRecord]:
        """Records of float multiplies and unknown ops, most frequent first."""
        bad = [r for r in self.records.values() if r.kind in (Kind.MULTIPLY, Kind.UNKNOWN)]
        return sorted(bad, key=lambda r: (-r.count, r.phase, r.op))

    @property
    def escapes(self) -> int:
        """Values handed to the host (``.item()``): Python arithmetic on them is not seen."""
        return self.count(op="aten::_local_scalar_dense")

    def table(self, *, top: int = 4) -> str:
        """Per phase: ops seen, float multiplies (mul/div/transcendental), unknown ops, the top offenders."""
        header = (
            f"{'phase':<10} {'ops seen':>9} {'float mul/div/exp':>17} {'unknown':>8}  most frequent float ops"
        )
        lines = [header, "-" * len(header)]
        for phase in self.phases():
            multiplies = self.ops(kind=Kind.MULTIPLY, phase=phase)
            common = ", ".join(
                f"{name.removeprefix('aten::')} x{n}" for name, n in multiplies.most_common(top)
            )
            lines.append(
                f"{phase:<10} {self.count(phase=phase):>9} {sum(multiplies.values()):>17} "
                f"{self.count(kind=Kind.UNKNOWN, phase=phase):>8}  {common or '-'}"
            )
        return "\n".join(lines)

    def certificate(self) -> str:
        """A short statement of what was certified, at which level, and what was not seen."""
        per_phase = ", ".join(
            f"{phase} {self.count(kind=Kind.MULTIPLY, phase=phase)} of {self.count(phase=phase)}"
            for phase in self.phases()
        )
        pa = self.ops(kind=Kind.PA)
        pa_text = ", ".join(f"{name} x{n}" for name, n in sorted(pa.items())) or "none"
        verdict = "MULTIPLICATION-FREE" if not self.violations() else "NOT multiplication-free"
        return (
            f"{verdict} (level {Level.K}: the aten ops that ran here, these shapes and dtypes): "
            f"float multiply/divide/transcendental ops per phase: {per_phase}; "
            f"unknown ops: {self.count(kind=Kind.UNKNOWN)}; PA ops: {pa_text}; "
            "values sent to the host (.item()): "
            f"{self.escapes}.  Semantic, not instruction-level: PyTorch's CPU add kernel is an FMA with "
            "multiplier exactly 1 (exact).  Not seen: revcheck.mulfree.BLIND_SPOTS."
        )


_QUALIFIED: dict[int, tuple[Any, str]] = {}


def _qualified_name(func: Any) -> str:
    """``func._schema.name``, cached by id (the schema is a fresh Python object per access: slow per op)."""
    cached = _QUALIFIED.get(id(func))
    if cached is None:
        cached = _QUALIFIED[id(func)] = (func, func._schema.name)
    return cached[1]


def _user_stack(depth: int) -> list[str]:
    frames = [
        frame
        for frame in traceback.extract_stack()[:-3]
        if not frame.filename.startswith(_TORCH_DIR)
        and not frame.filename.startswith(_THIS_PACKAGE)
        and not frame.filename.startswith("<frozen")
    ]
    return [
        f"{os.path.relpath(f.filename) if not f.filename.startswith('<') else f.filename}:{f.lineno} "
        f"in {f.name}: {(f.line or '').strip()}"
        for f in frames[-depth:]
    ]


class MulFreeMode(TorchDispatchMode):
    """Raise on (or with ``record=True``, count) every float multiply, divide or transcendental.

    Parameters
    ----------
    record
        ``False`` (strict): raise :class:`FloatMultiplyError` / :class:`UnknownOpError`
        at the first offending op.  ``True``: count everything in :attr:`report`.
    descend
        Also check the aten ops inside revcheck's registered PA ops.
    declared
        ``{"ns::op": "why it is multiplication-free"}``: ops you certified
        yourself (e.g. a kernel checked with
        :func:`revcheck.mulfree.blind_spots.check_triton_kernels`); they count as ``pa``.
    stack_depth
        User frames kept per record.

    Examples
    --------
    >>> import torch
    >>> from revcheck.mulfree import MulFreeMode, FloatMultiplyError
    >>> x = torch.ones(3, requires_grad=True)
    >>> with MulFreeMode():
    ...     torch.lerp(x, x + 1, 0.5)
    Traceback (most recent call last):
      ...
    revcheck.mulfree.enforcer.FloatMultiplyError: float multiply in a multiplication-free step: ...
    ...
    """

    def __init__(
        self,
        *,
        record: bool = False,
        descend: bool = True,
        declared: Mapping[str, str] | None = None,
        stack_depth: int = 3,
    ) -> None:
        super().__init__()
        self.record = record
        self.descend = descend
        self.declared = dict(declared or {})
        self.stack_depth = stack_depth
        self.report = Report()
        self._explicit: list[str] = []
        self._optimizer_depth = 0
        self._hooks: list[Any] = []
        self._entered = 0
        from revcheck.nn.mulfree import PA_OPS

        self._pa_ops = PA_OPS

    # -- phases -------------------------------------------------------------------------------------------

    def current_phase(self) -> str:
        if self._explicit:
            return self._explicit[-1]
        if torch._C._current_graph_task_id() != -1:
            return "backward"
        if self._optimizer_depth:
            return "optimizer"
        return "forward"

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Attribute every op inside to phase ``name`` (e.g. ``"optimizer"`` for a hand-written update)."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"a phase is a non-empty name such as 'optimizer', got {name!r}")
        self._explicit.append(name)
        try:
            yield
        finally:
            self._explicit.pop()

    def _optimizer_pre(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        self._optimizer_depth += 1

    def _optimizer_post(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        self._optimizer_depth = max(0, self._optimizer_depth - 1)

    def __enter__(self) -> MulFreeMode:
        # Re-entered from __torch_dispatch__ when descending into a PA op: the hooks are already there.
        if self._entered == 0:
            self._hooks = [
                register_optimizer_step_pre_hook(self._optimizer_pre),
                register_optimizer_step_post_hook(self._optimizer_post),
            ]
        self._entered += 1
        return super().__enter__()  # type: ignore[no-any-return]

    def __exit__(self, *exc: Any) -> None:
        try:
            super().__exit__(*exc)
        finally:
            self._entered -= 1
            if self._entered == 0:
                for handle in self._hooks:
                    handle.remove()
                self._hooks = []
                self._optimizer_depth = 0

    # -- dispatch --------------------------------------------------------------------------------------------

    def _note(self, func: Any, verdict: Verdict, phase: str, args: Any, kwargs: Any, out: Any) -> None:
        record = self.report.add(
            op_name(func),
            phase,
            verdict,
            lambda: tensor_dtypes(args, kwargs, out),
            lambda: _user_stack(self.stack_depth),
        )
        if self.record:
            return
        if verdict.kind == Kind.MULTIPLY:
            raise FloatMultiplyError(record, "float multiply in a multiplication-free step")
        if verdict.kind == Kind.UNKNOWN:
            raise UnknownOpError(record, "unknown op (the allowlist cannot say whether it multiplies)")

    def __torch_dispatch__(
        self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None
    ) -> Any:
        kwargs = kwargs or {}
        phase = self.current_phase()
        qualified = _qualified_name(func)
        if self.descend and qualified in self._pa_ops and qualified not in self.declared:
            self._note(
                func,
                Verdict(Kind.PA, "a registered piecewise-affine op (checked inside too)"),
                phase,
                args,
                kwargs,
                None,
            )
            with self:
                return self._pa_ops[qualified](*args, **kwargs)
        out = func(*args, **kwargs)
        verdict = classify(func, args, kwargs, out, pa_ops=self._pa_ops, declared=self.declared)
        self._note(func, verdict, phase, args, kwargs, out)
        return out


def certify(step: Callable[..., Any], *args: Any, record: bool = False, **kwargs: Any) -> Report:
    """Run ``step(*args, **kwargs)`` under a :class:`MulFreeMode` and return its :class:`Report`.

    Strict by default (raises at the first float multiply); ``record=True`` counts.
    """
    with MulFreeMode(record=record) as mode:
        step(*args, **kwargs)
    return mode.report
