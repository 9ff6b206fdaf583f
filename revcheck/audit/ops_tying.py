"""Storage audit of a model and its optimizer, and training memory counted honestly (docs/spec.md §5).

:func:`audit_storage` answers, for any model and ``torch.optim`` optimizer(s):

* which storages are **aliased** (viewed by more than one Parameter object) and by which names;
* which storages are **updated more than once per step**: one ``optimizer.step()`` is run under
  a ``TorchDispatchMode`` that records every in-place write to a parameter's storage and the
  tensor object it went through; a storage is updated once for every optimizer entry on it
  that was written.  Model, gradients and optimizer state are restored afterwards, byte for
  byte (nothing is deep-copied: a deep copy would clone aliases apart and hide them);
* which trainable storages the step **did not update** (a parameter the optimizer lacks);
* **optimizer state without a live parameter**: state of a Parameter that is not in the model,
  not in any parameter group, or frozen (``requires_grad=False``: the state can never be used
  again), and storages with **more than one state**;
* the **trainable-parameter count per storage**, next to the per-Parameter-object count the
  public code uses (``sum(p.numel() for p in model.parameters() if p.requires_grad)``);
* the **per-layer tie structure** read from the weights (same object = share, same storage
  through another object = alias).

:func:`assert_storage_consistent` is its assert form; the specific :class:`StorageAuditError`
subclasses say what is wrong.  What it proves: facts about the real objects and one real
optimizer step on the device they live on (level K in the sense of docs/spec.md §0: measured
with the real kernels; no numerical equality is claimed).

:func:`measure_training_step` reports memory in two separate parts: **persistent** training
state (parameters, gradients, optimizer state; every storage counted once) and **activation**
memory (bytes autograd saves for backward, recorded with ``saved_tensors_hooks``).  Tying can
only reduce the first.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode

from revcheck.errors import UsageError
from revcheck.levels import Level
from revcheck.storage import StorageKey, count_bytes, count_elements, storage_key

__all__ = [
    "DoubleUpdateError",
    "DuplicateStateError",
    "LayerTies",
    "MemoryReport",
    "NotUpdatedError",
    "OrphanedState",
    "OrphanedStateError",
    "ParameterCountError",
    "PersistentMemory",
    "StorageAuditError",
    "StorageAuditUsageError",
    "StorageEntry",
    "StorageReport",
    "assert_each_storage_updated_once",
    "assert_no_orphaned_state",
    "assert_one_state_per_storage",
    "assert_storage_consistent",
    "audit_storage",
    "count_parameters",
    "count_parameters_per_object",
    "measure_training_step",
    "persistent_memory",
]

GRADIENT_SOURCES = ("synthetic", "present", "none")
SHOWN = 2  # findings of each kind printed in full by StorageReport.__str__


class StorageAuditError(AssertionError):
    """The storage audit found a problem; the subclass says which, the message shows the evidence."""

    def __init__(self, message: str, report: StorageReport | None = None) -> None:
        super().__init__(message)
        self.report = report


class DoubleUpdateError(StorageAuditError):
    """A storage was updated more than once by one optimizer step (two entries on one storage)."""


class NotUpdatedError(StorageAuditError):
    """A trainable storage with a gradient was not updated by the step (not in the optimizer)."""


class DuplicateStateError(StorageAuditError):
    """A storage has more than one optimizer state (one per aliasing Parameter object)."""


class OrphanedStateError(StorageAuditError):
    """Optimizer state (or an entry) of a Parameter that is not live: not in the model, group, or frozen."""


class ParameterCountError(StorageAuditError):
    """A parameter count that is not the count per storage (e.g. per Parameter object)."""


class StorageAuditUsageError(UsageError):
    """The audit was called with something it cannot audit; the message says what to pass."""


@dataclass(frozen=True)
class StorageEntry:
    """One storage viewed by parameters of the model or entries of the optimizer."""

    key: StorageKey
    elements: int  # covered by parameters, counted once
    nbytes: int
    names: tuple[str, ...]  # every model position using it ("<unnamed>" for optimizer-only tensors)
    objects: int  # distinct Parameter objects viewing it
    trainable_objects: int
    optimizer_entries: int
    state_entries: int
    updates: int | None  # entries written by the instrumented step; None when no step ran
    foreign_writes: int  # writes through tensors that are not optimizer entries (e.g. ``p.data``)
    expected_update: bool  # trainable and had a gradient at the step

    @property
    def aliased(self) -> bool:
        return self.objects > 1


@dataclass(frozen=True)
class OrphanedState:
    """Optimizer state or an optimizer entry whose Parameter is not live."""

    names: tuple[str, ...]
    shape: tuple[int, ...]
    reason: str
    has_state: bool

    def __str__(self) -> str:
        what = "state" if self.has_state else "entry (no state)"
        where = " = ".join(self.names) if self.names else f"a {list(self.shape)} tensor"
        return f"{what} of {where}: {self.reason}"


@dataclass(frozen=True)
class LayerTies:
    """How layer ``layer`` relates to earlier layers, read from its weights.

    ``kind``: ``"own"``; ``"share"`` (the same Parameter objects as layer ``target``);
    ``"alias"`` (other objects viewing ``target``'s storage; ``trainable`` says whether they
    require grad); ``"mixed"`` (its parameters disagree; ``detail`` lists them).
    """

    layer: int
    kind: str
    target: int | None
    trainable: bool
    detail: tuple[str, ...] = ()

    def __str__(self) -> str:
        if self.kind == "own":
            return f"layer {self.layer}: own storage"
        if self.kind == "share":
            return f"layer {self.layer}: shares layer {self.target}'s Parameters"
        if self.kind == "alias":
            how = "TRAINABLE, a second writer" if self.trainable else "frozen"
            return f"layer {self.layer}: aliases layer {self.target}'s storage through other objects ({how})"
        return f"layer {self.layer}: mixed ({'; '.join(self.detail)})"


@dataclass
class StorageReport:
    """What :func:`audit_storage` found.  ``problems()`` lists what is wrong; ``ok`` if nothing."""

    device: str
    storages: list[StorageEntry]
    orphaned: list[OrphanedState]
    layers: list[LayerTies]
    trainable_per_storage: int
    trainable_per_object: int
    parameters_per_storage: int
    parameters_per_object: int
    step: str  # how updates were measured: "synthetic gradients", "present gradients", "not run"
    level: Level = Level.K
    notes: list[str] = field(default_factory=list)

    @property
    def aliased(self) -> list[StorageEntry]:
        return [s for s in self.storages if s.aliased]

    @property
    def double_updated(self) -> list[StorageEntry]:
        """Storages updated more than once by the step (without a step: more than one trainable entry)."""
        if self.step == "not run":
            return [s for s in self.storages if s.optimizer_entries > 1 and s.trainable_objects > 0]
        return [s for s in self.storages if (s.updates or 0) > 1]

    @property
    def not_updated(self) -> list[StorageEntry]:
        """Trainable storages with a gradient that were not updated (without a step: not in the optimizer)."""
        if self.step == "not run":
            return [s for s in self.storages if s.trainable_objects > 0 and s.optimizer_entries == 0]
        return [s for s in self.storages if s.expected_update and not s.updates]

    @property
    def duplicate_state(self) -> list[StorageEntry]:
        return [s for s in self.storages if s.state_entries > 1]

    def problems(self) -> list[str]:
        found = []
        for s in self.double_updated:
            count = s.updates if s.updates is not None else s.optimizer_entries
            found.append(
                f"double update: {_names(s)} updated {count} times per step "
                f"({s.optimizer_entries} optimizer entries, {s.state_entries} states on one storage)"
            )
        for s in self.not_updated:
            found.append(f"not updated: {_names(s)} is trainable but no optimizer entry updates it")
        for s in self.duplicate_state:
            found.append(
                f"duplicate state: {_names(s)} has {s.state_entries} optimizer states on one storage"
            )
        for orphan in self.orphaned:
            found.append(f"orphaned optimizer state: {orphan}")
        return found

    @property
    def ok(self) -> bool:
        return not self.problems()

    def __str__(self) -> str:
        objects = len({n for s in self.storages for n in s.names})
        lines = [
            f"storage audit (level {self.level.value}: real objects and one real optimizer step "
            f"on {self.device}; "
            f"step: {self.step})",
            f"  storages {len(self.storages)}, parameter positions {objects}, "
            f"aliased storages {len(self.aliased)}",
            f"  trainable elements: {self.trainable_per_storage} per storage, "
            f"{self.trainable_per_object} per Parameter object",
            f"  all parameter elements: {self.parameters_per_storage} per storage, "
            f"{self.parameters_per_object} per Parameter object",
        ]
        for s in self.aliased[:SHOWN]:
            updates = "not measured" if s.updates is None else f"{s.updates} update(s) per step"
            lines.append(
                f"  aliased: {_names(s)}: {s.objects} objects ({s.trainable_objects} trainable), "
                f"{s.optimizer_entries} optimizer entries, {s.state_entries} states, {updates}"
            )
        if len(self.aliased) > SHOWN:
            lines.append(f"  aliased: ... {len(self.aliased) - SHOWN} more")
        problems = self.problems()
        lines.append(f"  problems: {len(problems)}")
        by_kind: dict[str, list[str]] = {}
        for problem in problems:
            by_kind.setdefault(problem.split(":", 1)[0], []).append(problem)
        for kind, found in by_kind.items():
            lines.extend(f"    {p}" for p in found[:SHOWN])
            if len(found) > SHOWN:
                lines.append(f"    {kind}: ... {len(found) - SHOWN} more")
        if self.layers:
            lines.append("  layers:")
            lines.extend(f"    {layer}" for layer in self.layers)
        lines.extend(f"  note: {n}" for n in self.notes)
        return "\n".join(lines)


def _names(entry: StorageEntry, limit: int = 3) -> str:
    shown = list(entry.names[:limit]) + (
        [f"... ({len(entry.names)} names)"] if len(entry.names) > limit else []
    )
    return " = ".join(shown)


# ---- the instrumented step ----------------------------------------------------------------


class _WriteRecorder(TorchDispatchMode):
    """Records, per watched storage, the ids of the tensor objects written in place."""

    def __init__(self, watched: set[StorageKey]) -> None:
        super().__init__()
        self.watched = watched
        self.writes: dict[StorageKey, list[int]] = {}

    def __torch_dispatch__(
        self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None
    ) -> Any:
        kwargs = kwargs or {}
        for index, argument in enumerate(func._schema.arguments):
            info = argument.alias_info
            if info is None or not info.is_write:
                continue
            value = args[index] if index < len(args) else kwargs.get(argument.name)
            for tensor in value if isinstance(value, list | tuple) else (value,):
                if isinstance(tensor, Tensor):
                    key = storage_key(tensor)
                    if key in self.watched:
                        self.writes.setdefault(key, []).append(id(tensor))
        return func(*args, **kwargs)


def _bytes_of(tensor: Tensor) -> Tensor:
    return torch.empty(0, dtype=torch.uint8, device=tensor.device).set_(tensor.untyped_storage())


class _Snapshot:
    """Bytes of every storage, gradients and optimizer states, to undo one step exactly."""

    def __init__(self, params: Sequence[Tensor], optimizers: Sequence[torch.optim.Optimizer]) -> None:
        self.storages: dict[StorageKey, tuple[Tensor, Tensor]] = {}
        for t in params:
            self._keep(t)
        self.grads = [(p, p.grad, None if p.grad is None else p.grad.detach().clone()) for p in params]
        self.states = [
            (
                opt,
                {p: _clone_state(s) for p, s in opt.state.items()},
                [_group_settings(g) for g in opt.param_groups],
            )
            for opt in optimizers
        ]

    def _keep(self, t: Tensor) -> None:
        key = storage_key(t)
        if key is not None and key not in self.storages:
            view = _bytes_of(t)
            self.storages[key] = (view, view.clone())

    def restore(self) -> None:
        with torch.no_grad():
            for view, saved in self.storages.values():
                view.copy_(saved)
            for param, grad, saved_grad in self.grads:
                param.grad = grad
                if grad is not None and saved_grad is not None:
                    grad.copy_(saved_grad)
        for opt, states, settings in self.states:
            opt.state.clear()
            for param, state in states.items():
                opt.state[param] = state
            for group, saved_settings in zip(opt.param_groups, settings, strict=True):
                group.update(saved_settings)


def _clone_state(state: dict[str, Any]) -> dict[str, Any]:
    return {k: v.clone() if torch.is_tensor(v) else copy.deepcopy(v) for k, v in state.items()}


def _group_settings(group: dict[str, Any]) -> dict[str, Any]:
    return {k: copy.deepcopy(v) for k, v in group.items() if k != "params"}


# ---- the audit ------------------------------------------------------------------------------


def _as_optimizers(optimizer: object) -> list[torch.optim.Optimizer]:
    if optimizer is None:
        return []
    items = list(optimizer) if isinstance(optimizer, list | tuple) else [optimizer]
    for item in items:
        if not isinstance(item, torch.optim.Optimizer):
            raise StorageAuditUsageError(
                f"{type(item).__name__} is not a torch.optim.Optimizer; "
                "pass the model's optimizer (or a list of them)"
            )
    return items  # type: ignore[return-value]


def _layers(model: nn.Module, layers: object) -> list[nn.Module]:
    if layers is None:
        found = getattr(model, "blocks", None)
        return list(found) if found is not None else []
    return list(layers)  # type: ignore[call-overload]


def _layer_ties(layers: list[nn.Module]) -> list[LayerTies]:
    result = []
    first_object: dict[tuple[str, int], int] = {}
    first_storage: dict[tuple[str, object], int] = {}
    for i, layer in enumerate(layers):
        kinds: list[tuple[str, str, int | None, bool]] = []
        for name, param in layer.named_parameters(remove_duplicate=False):
            by_object = first_object.setdefault((name, id(param)), i)
            by_storage = first_storage.setdefault((name, storage_key(param)), i)
            if by_object < i:
                kinds.append((name, "share", by_object, param.requires_grad))
            elif by_storage < i:
                kinds.append((name, "alias", by_storage, param.requires_grad))
            else:
                kinds.append((name, "own", None, param.requires_grad))
        distinct = {(kind, target) for _, kind, target, _ in kinds}
        trainable = any(t for *_, t in kinds)
        if len(distinct) <= 1:
            kind, target = distinct.pop() if distinct else ("own", None)
            trainable_alias = any(t for _, k, _, t in kinds if k == "alias")
            result.append(LayerTies(i, kind, target, trainable_alias if kind == "alias" else trainable))
        else:
            detail = tuple(
                f"{name} {kind}{'' if target is None else f' {target}'}" for name, kind, target, _ in kinds
            )
            result.append(LayerTies(i, "mixed", None, trainable, detail))
    return result


def audit_storage(
    model: nn.Module,
    optimizer: torch.optim.Optimizer | Sequence[torch.optim.Optimizer] | None = None,
    *,
    layers: Iterable[nn.Module] | None = None,
    gradients: str = "synthetic",
    seed: int = 0,
) -> StorageReport:
    """Audit which storages the model's Parameters and the optimizer's entries and states use.

    Parameters
    ----------
    model
        Any ``nn.Module``.
    optimizer
        Its ``torch.optim`` optimizer, a list of them, or ``None`` (then only aliasing, counts and
        layers are reported).
    layers
        The stack whose tie structure to report; by default ``model.blocks`` if it exists.
    gradients
        How the instrumented step gets gradients: ``"synthetic"`` (default: every trainable
        optimizer entry gets a random gradient, i.e. "what would one step do if every trainable
        parameter had a gradient"), ``"present"`` (the gradients as they are, e.g. after your
        ``loss.backward()``), ``"none"`` (no step: updates are judged from the entries alone).
    seed
        Seed of the synthetic gradients (a private generator; the global RNG is untouched).

    Returns
    -------
    StorageReport
        Model, gradients and optimizer state are exactly as before the call.

    Examples
    --------
    >>> import torch
    >>> layers = torch.nn.ModuleList([torch.nn.Linear(3, 3), torch.nn.Linear(3, 3)])
    >>> layers[1].weight.data = layers[0].weight.data          # the public code's "tie" ...
    >>> optimizer = torch.optim.AdamW(layers.parameters())     # ... with the layer still trainable
    >>> report = audit_storage(layers, optimizer, layers=layers)
    >>> print(report.problems()[0])
    double update: 0.weight = 1.weight updated 2 times per step (2 optimizer entries, 0 states on one storage)
    """
    if not isinstance(model, nn.Module):
        raise StorageAuditUsageError(f"{type(model).__name__} is not an nn.Module; pass the model to audit")
    if gradients not in GRADIENT_SOURCES:
        raise StorageAuditUsageError(
            f"gradients={gradients!r}; use one of {', '.join(repr(g) for g in GRADIENT_SOURCES)}"
        )
    optimizers = _as_optimizers(optimizer)
    stack = _layers(model, layers)
    named = list(model.named_parameters(remove_duplicate=False))
    model_params: dict[int, Tensor] = {}
    names_of: dict[int, list[str]] = {}
    for name, param in named:
        model_params.setdefault(id(param), param)
        names_of.setdefault(id(param), []).append(name)
    entries: list[Tensor] = [p for opt in optimizers for group in opt.param_groups for p in group["params"]]
    in_groups = {id(p) for p in entries}
    state_keys: list[Tensor] = [p for opt in optimizers for p in opt.state if isinstance(p, Tensor)]
    objects: dict[int, Tensor] = dict(model_params)
    for p in [*entries, *state_keys]:
        objects.setdefault(id(p), p)
    step_label = {"synthetic": "synthetic gradients", "present": "present gradients", "none": "not run"}[
        gradients
    ]
    writes: dict[StorageKey, list[int]] = {}
    had_grad: set[int] = set()
    if optimizers and gradients != "none":
        writes, had_grad = _instrumented_step(list(objects.values()), entries, optimizers, gradients, seed)
    else:
        had_grad = {id(p) for p in objects.values() if p.grad is not None}
        step_label = "not run"

    by_storage: dict[StorageKey, list[Tensor]] = {}
    for p in objects.values():
        key = storage_key(p)
        if key is not None:
            by_storage.setdefault(key, []).append(p)
    storages = []
    for key, group in by_storage.items():
        ids = {id(p) for p in group}
        group_entries = [p for p in entries if id(p) in ids]
        written = set(writes.get(key, []))
        names = tuple(n for p in group for n in names_of.get(id(p), ["<not in the model>"]))
        storages.append(
            StorageEntry(
                key=key,
                elements=count_elements(group),
                nbytes=count_bytes(group),
                names=names,
                objects=len(group),
                trainable_objects=sum(1 for p in group if p.requires_grad),
                optimizer_entries=len(group_entries),
                state_entries=sum(1 for p in state_keys if id(p) in ids),
                updates=None
                if step_label == "not run"
                else sum(1 for p in group_entries if id(p) in written),
                foreign_writes=len(written - {id(p) for p in group_entries}),
                expected_update=any(p.requires_grad and id(p) in had_grad for p in group),
            )
        )
    orphaned = []
    for p in state_keys + [p for p in entries if not any(p is s for s in state_keys)]:
        has_state = any(p is s for s in state_keys)
        reason = None
        if id(p) not in model_params:
            reason = "not a parameter of the model"
        elif id(p) not in in_groups:
            reason = "not in any parameter group (no step can use it)"
        elif not p.requires_grad and has_state:
            reason = "its Parameter is frozen (requires_grad=False): the state is never used again"
        if reason is not None and (has_state or id(p) not in model_params):
            orphaned.append(OrphanedState(tuple(names_of.get(id(p), [])), tuple(p.shape), reason, has_state))
    model_unique = list(model_params.values())
    notes = []
    if optimizers and gradients == "synthetic":
        notes.append("updates measured with a random gradient on every trainable parameter, then undone")
    return StorageReport(
        device=", ".join(sorted({str(p.device) for p in model_unique})) or "no parameters",
        storages=storages,
        orphaned=orphaned,
        layers=_layer_ties(stack),
        trainable_per_storage=count_parameters(model, trainable=True),
        trainable_per_object=count_parameters_per_object(model, trainable=True),
        parameters_per_storage=count_parameters(model),
        parameters_per_object=count_parameters_per_object(model),
        step=step_label,
        notes=notes,
    )


def _instrumented_step(
    params: list[Tensor],
    entries: list[Tensor],
    optimizers: list[torch.optim.Optimizer],
    gradients: str,
    seed: int,
) -> tuple[dict[StorageKey, list[int]], set[int]]:
    snapshot = _Snapshot(params, optimizers)
    generator = torch.Generator().manual_seed(seed)
    try:
        if gradients == "synthetic":
            # As after zero_grad(set_to_none=True) and a backward reaching every trainable parameter.
            for p in params:
                p.grad = None
            for p in params:
                if p.requires_grad and p.grad is None:
                    noise = torch.randn(p.shape, generator=generator, dtype=torch.float32).to(p.dtype)
                    p.grad = noise.to(p.device)
        had_grad = {id(p) for p in params if p.grad is not None}
        watched = {key for p in params if (key := storage_key(p)) is not None}
        recorder = _WriteRecorder(watched)
        with torch.no_grad(), recorder:
            for opt in optimizers:
                opt.step()
        return recorder.writes, had_grad
    finally:
        snapshot.restore()


def _raise_first(report: StorageReport, kinds: Sequence[str]) -> None:
    __tracebackhide__ = True
    checks: dict[str, tuple[type[StorageAuditError], list[Any]]] = {
        "double_update": (DoubleUpdateError, report.double_updated),
        "not_updated": (NotUpdatedError, report.not_updated),
        "duplicate_state": (DuplicateStateError, report.duplicate_state),
        "orphaned": (OrphanedStateError, report.orphaned),
    }
    for kind in kinds:
        error, found = checks[kind]
        if found:
            raise error(f"{len(found)} {kind.replace('_', ' ')} finding(s)\n{report}", report)


def assert_storage_consistent(
    model: nn.Module,
    optimizer: torch.optim.Optimizer | Sequence[torch.optim.Optimizer],
    **kwargs: Any,
) -> StorageReport:
    """:func:`audit_storage`, raising if anything is wrong; returns the report when all is well.

    Raises, in this order of precedence (the message lists every finding and the report):
    :class:`DoubleUpdateError`, :class:`NotUpdatedError`, :class:`DuplicateStateError`,
    :class:`OrphanedStateError`.
    """
    __tracebackhide__ = True
    report = audit_storage(model, optimizer, **kwargs)
    _raise_first(report, ("double_update", "not_updated", "duplicate_state", "orphaned"))
    return report


def assert_each_storage_updated_once(
    model: nn.Module, optimizer: torch.optim.Optimizer | Sequence[torch.optim.Optimizer], **kwargs: Any
) -> StorageReport:
    """Every trainable storage with a gradient is updated exactly once by one step.

    Raises :class:`DoubleUpdateError` (more than once) or :class:`NotUpdatedError` (never).
    """
    __tracebackhide__ = True
    report = audit_storage(model, optimizer, **kwargs)
    _raise_first(report, ("double_update", "not_updated"))
    return report


def assert_one_state_per_storage(
    model: nn.Module, optimizer: torch.optim.Optimizer | Sequence[torch.optim.Optimizer]
) -> StorageReport:
    """At most one optimizer state per storage; raises :class:`DuplicateStateError`."""
    __tracebackhide__ = True
    report = audit_storage(model, optimizer, gradients="none")
    _raise_first(report, ("duplicate_state",))
    return report


def assert_no_orphaned_state(
    model: nn.Module, optimizer: torch.optim.Optimizer | Sequence[torch.optim.Optimizer]
) -> StorageReport:
    """No optimizer state or entry without a live, trainable parameter; raises :class:`OrphanedStateError`."""
    __tracebackhide__ = True
    report = audit_storage(model, optimizer, gradients="none")
    _raise_first(report, ("orphaned",))
    return report


# ---- counting -------------------------------------------------------------------------------


def count_parameters(model: nn.Module, *, trainable: bool = False) -> int:
    """Parameter elements of ``model`` counted once per storage (only trainable ones if asked).

    A storage counts as trainable when any Parameter viewing it requires grad.

    >>> import torch
    >>> layers = torch.nn.ModuleList([torch.nn.Linear(3, 3, bias=False), torch.nn.Linear(3, 3, bias=False)])
    >>> layers[1].weight.data = layers[0].weight.data                  # one storage, two objects
    >>> count_parameters(layers), count_parameters_per_object(layers)
    (9, 18)
    """
    params = list(model.parameters())
    if trainable:
        keys = {storage_key(p) for p in params if p.requires_grad}
        params = [p for p in params if storage_key(p) in keys]
    return count_elements(params)


def count_parameters_per_object(model: nn.Module, *, trainable: bool = False) -> int:
    """The public code's count, ``sum(p.numel() for p in model.parameters() [if p.requires_grad])``.

    Counts an aliased storage once per Parameter object: it hides the saving of an alias.
    """
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable)


# ---- memory ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class PersistentMemory:
    """Bytes of the state that lives between training steps, every storage counted once."""

    parameter_bytes: int
    gradient_bytes: int
    optimizer_state_bytes: int

    @property
    def total(self) -> int:
        return self.parameter_bytes + self.gradient_bytes + self.optimizer_state_bytes


@dataclass(frozen=True)
class MemoryReport:
    """Persistent training state and, separately, what one forward saves for backward."""

    persistent: PersistentMemory
    activation_bytes: int
    activation_storages: int
    device: str

    def __str__(self) -> str:
        p = self.persistent
        return (
            f"persistent {p.total / 1024:.1f} KiB (parameters {p.parameter_bytes / 1024:.1f}, "
            f"gradients {p.gradient_bytes / 1024:.1f}, "
            f"optimizer state {p.optimizer_state_bytes / 1024:.1f}); "
            f"activations saved for backward {self.activation_bytes / 1024:.1f} KiB "
            f"({self.activation_storages} storages) on {self.device}"
        )


def persistent_memory(
    model: nn.Module, optimizer: torch.optim.Optimizer | Sequence[torch.optim.Optimizer] | None = None
) -> PersistentMemory:
    """Parameters, gradients and optimizer state alive now, every storage counted once.

    Parameters held only by the optimizer (entries or state of Parameters that left the model)
    are counted: they occupy memory.  Measure after a step (before ``zero_grad``) for the
    steady state of training.
    """
    optimizers = _as_optimizers(optimizer)
    params: dict[int, Tensor] = {id(p): p for p in model.parameters()}
    for opt in optimizers:
        for group in opt.param_groups:
            for p in group["params"]:
                params.setdefault(id(p), p)
        for p in opt.state:
            if isinstance(p, Tensor):
                params.setdefault(id(p), p)
    grads = [p.grad for p in params.values() if p.grad is not None]
    states = [v for opt in optimizers for s in opt.state.values() for v in s.values() if torch.is_tensor(v)]
    return PersistentMemory(count_bytes(params.values()), count_bytes(grads), count_bytes(states))


def measure_training_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer | Sequence[torch.optim.Optimizer],
    loss_fn: Callable[[], Tensor],
    *,
    inputs: Sequence[Tensor] = (),
) -> MemoryReport:
    """Run ONE real training step and report persistent and activation memory separately.

    The forward (``loss_fn()``) runs under ``torch.autograd.graph.saved_tensors_hooks``; every
    storage autograd packs is counted once, except storages that existed before (parameters,
    buffers and the ``inputs`` you pass, e.g. token ids): the activation figure.  Then backward
    and ``optimizer.step()``; the persistent figure is taken after the step, with gradients and
    optimizer state present.  The model is
    trained by one step.
    """
    from revcheck.bench.bdia import saved_for_backward  # the one home of the saved-bytes measurement

    optimizers = _as_optimizers(optimizer)
    for opt in optimizers:
        opt.zero_grad(set_to_none=True)
    preexisting = [*model.parameters(), *model.buffers(), *inputs]
    losses: list[Tensor] = []

    def forward() -> None:
        losses.append(loss_fn())

    saved = saved_for_backward(forward, preexisting)
    losses[0].backward()
    for opt in optimizers:
        opt.step()
    devices = sorted({str(p.device) for p in model.parameters()})
    return MemoryReport(
        persistent_memory(model, optimizers), saved.nbytes, saved.storages, ", ".join(devices)
    )
