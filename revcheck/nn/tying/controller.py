"""Layer tying with declared semantics over a stack of same-shaped layers (docs/spec.md §5).

:class:`TyingController` owns the decision "layer ``i`` uses the weights of layer ``j < i``"
for a stack of layers (for example ``TinyGPT.blocks``, the pre-norm GPT blocks of
``revcheck.nn.transformer``).  Every tie names one of three meanings; there is no default
(docs/spec.md §5, D5.1):

``"share"``
    One ``nn.Parameter`` object sits at both positions.  Autograd sums the gradients of both
    uses into it (in its own order); the optimizer holds one entry and one state for it.
``"copy"``
    Layer ``i``'s values become a copy of layer ``j``'s at the moment of the decision; after
    that ``i`` has its own storage, its own gradient and its own optimizer state.  A copy saves
    nothing: it is an initialisation.
``"stopgrad"``
    What the public code of arXiv 2401.12819 does (``param.data = src.data`` and
    ``requires_grad = False``), offered for comparison: position ``i`` holds a *distinct*
    Parameter object that views ``j``'s storage (so it follows ``j``'s training) and
    contributes no gradient.  Unlike the public code, the alias is never trained and never in
    the optimizer, and :meth:`TyingController.untie` breaks it.

Chains are resolved: the storage a layer uses is that of its *root*, found by following
share and stopgrad ties down to a layer that owns its storage (an independent or copy-tied
layer).  Each layer's mode is the mode of its own link: a layer stopgrad-tied to a layer that
is share-tied to ``k`` views ``k``'s storage without gradient; a layer share-tied to a
stopgrad-tied layer ``j`` holds ``k``'s Parameter itself, so its gradient reaches ``k``.
Layers tied to ``i`` follow ``i`` when ``i`` is tied or untied later.

The optimizer is kept consistent by storage (:meth:`TyingController.attach_optimizer`): after
every change its ``param_groups`` hold exactly the trainable Parameters the layers use, each
once; the state of Parameters that left the model is released; a layer that becomes
independent gets new Parameters whose state is a copy of the state of the Parameter they were
copied from (``untie_state="copy"``, the default) or starts fresh (``"fresh"``: torch creates
it at the next step).  Parameters of the model outside the layers (embeddings, head) are never
touched.

Ties cover parameters only; buffers stay per layer.  Convert dtype or device (``model.to``)
*before* tying: ``Module._apply`` rebinds ``param.data`` per object, which would break a
stopgrad alias.
"""

from __future__ import annotations

import copy
import weakref
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from revcheck.errors import UsageError
from revcheck.storage import count_elements, storage_key

__all__ = [
    "TIE_MODES",
    "UNTIE_STATES",
    "NoLayersError",
    "Tie",
    "TieModeError",
    "TieShapeError",
    "TieTargetError",
    "TyingController",
    "TyingError",
    "check_tie_mode",
    "state_from_storage",
]

TIE_MODES: tuple[str, ...] = ("share", "copy", "stopgrad")
UNTIE_STATES: tuple[str, ...] = ("copy", "fresh")
STRUCTURE_VERSION = 1


class TyingError(UsageError):
    """A tying request that cannot be carried out; the message says what to do instead."""


class NoLayersError(TyingError):
    """Tying was asked of a model or list without layers."""


class TieTargetError(TyingError):
    """A tie to the layer itself, to a later layer, to a missing layer, or an untie of an independent one."""


class TieShapeError(TyingError):
    """The two layers do not have the same parameters (names, shapes, dtypes, devices)."""


class TieModeError(TyingError):
    """An unknown tie mode or untie-state policy."""


def check_tie_mode(mode: object) -> str:
    """Return ``mode`` if it is one of :data:`TIE_MODES`; raise :class:`TieModeError` otherwise.

    >>> check_tie_mode("share")
    'share'
    >>> check_tie_mode("tied")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
      ...
    revcheck.nn.tying.controller.TieModeError: unknown tie mode 'tied'; use one of 'share', 'copy', ...
    """
    if not isinstance(mode, str) or mode not in TIE_MODES:
        names = ", ".join(repr(m) for m in TIE_MODES)
        raise TieModeError(
            f"unknown tie mode {mode!r}; use one of {names} (docs/spec.md §5: every tie declares its meaning)"
        )
    return mode


@dataclass(frozen=True)
class Tie:
    """A declared tie: the layer it points at (as requested, before chain resolution) and its mode."""

    target: int
    mode: str


@dataclass
class _Pending:
    """A Parameter whose optimizer state must be set at the next sync: cloned from ``source`` or fresh."""

    param: nn.Parameter
    source: nn.Parameter | None


def _layers_of(layers: object) -> list[nn.Module]:
    if isinstance(layers, nn.Module) and not isinstance(layers, nn.ModuleList | nn.Sequential):
        blocks = getattr(layers, "blocks", None)
        if blocks is None:
            raise NoLayersError(
                f"{type(layers).__name__} has no `blocks` attribute; pass the list of layers to tie "
                "(e.g. TyingController(model.blocks)) or use a model with a `blocks` ModuleList "
                "such as TinyGPT"
            )
        layers = blocks
    if not isinstance(layers, Iterable):
        raise NoLayersError(f"{type(layers).__name__} is not a sequence of layers; pass e.g. model.blocks")
    result = list(layers)
    if not result:
        raise NoLayersError(
            "there are no layers to tie; build the controller on a non-empty stack (e.g. model.blocks)"
        )
    for index, layer in enumerate(result):
        if not isinstance(layer, nn.Module):
            raise NoLayersError(
                f"layer {index} is a {type(layer).__name__}, not an nn.Module; pass nn.Module layers"
            )
    return result


class TyingController:
    """Ties layers of a stack with declared semantics and keeps an optimizer consistent.

    Parameters
    ----------
    layers
        The layers (all of them, in order), e.g. ``model.blocks``; or a model with a ``blocks``
        attribute.  They must not share storage yet.  Layers are modified in place (their
        Parameters are replaced); the list itself is not.
    optimizer
        Optional ``torch.optim.Optimizer`` to keep consistent (see :meth:`attach_optimizer`).
    untie_state
        Optimizer state of a layer that becomes independent (untie, or copy-tie): ``"copy"``
        (a copy of the state of the Parameter it was copied from) or ``"fresh"``.

    Raises
    ------
    NoLayersError
        No layers, or something that is not a list of modules.
    TyingError
        The layers already share storage.

    Examples
    --------
    >>> import torch
    >>> from revcheck.nn import TinyGPT
    >>> model = TinyGPT(vocab=16, d_model=8, n_heads=2, depth=3, seq_len=4)
    >>> optimizer = torch.optim.AdamW(model.parameters())
    >>> tying = TyingController(model.blocks, optimizer=optimizer)
    >>> tying.tie(2, 1, "share"); tying.tie(1, 0, "share")     # 2 -> 1 -> 0: all use layer 0's
    >>> tying.state(), tying.root(2)
    ([0, 0, 1], 0)
    >>> model.blocks[2].qkv.weight is model.blocks[0].qkv.weight
    True
    >>> tying.untie(1)                 # new storage for layer 1; layer 2 follows it
    >>> model.blocks[2].qkv.weight is model.blocks[1].qkv.weight is not model.blocks[0].qkv.weight
    True
    """

    def __init__(
        self,
        layers: Sequence[nn.Module] | nn.Module,
        *,
        optimizer: torch.optim.Optimizer | None = None,
        untie_state: str = "copy",
    ) -> None:
        self.layers = _layers_of(layers)
        self.untie_state = _check_untie_state(untie_state)
        self._names: list[list[str]] = []
        self._slots: list[dict[str, tuple[nn.Module, str]]] = []
        self._own: list[dict[str, nn.Parameter] | None] = []
        self._initial_requires_grad: list[dict[str, bool]] = []
        for layer in self.layers:
            slots: dict[str, tuple[nn.Module, str]] = {}
            for module_name, module in layer.named_modules(remove_duplicate=False):
                for leaf, param in module._parameters.items():
                    if param is not None:
                        slots[f"{module_name}.{leaf}" if module_name else leaf] = (module, leaf)
            self._slots.append(slots)
            self._names.append(list(slots))
            own = {name: self._installed_at(slots[name]) for name in slots}
            self._own.append(own)
            self._initial_requires_grad.append({name: p.requires_grad for name, p in own.items()})
        self._check_not_aliased()
        self._target: list[int | None] = [None] * len(self.layers)
        self._mode: list[str | None] = [None] * len(self.layers)
        self._aliases: list[dict[str, nn.Parameter]] = [{} for _ in self.layers]
        self._known: dict[int, weakref.ref[nn.Parameter]] = {}
        for layer_own in self._own:
            for param in (layer_own or {}).values():
                self._remember(param)
        self._pending: list[_Pending] = []
        self._optimizers: list[torch.optim.Optimizer] = []
        if optimizer is not None:
            self.attach_optimizer(optimizer)

    @classmethod
    def for_model(cls, model: nn.Module, **kwargs: Any) -> TyingController:
        """A controller over ``model.blocks`` (``TinyGPT``); keyword arguments as for the constructor."""
        return cls(model, **kwargs)

    # ---- queries -----------------------------------------------------------------------

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    def tie_of(self, i: int) -> Tie | None:
        """The declared tie of layer ``i`` (``None`` when independent)."""
        self._check_index(i, "layer")
        target, mode = self._target[i], self._mode[i]
        return None if target is None or mode is None else Tie(target, mode)

    def ties(self) -> dict[int, Tie]:
        """Every declared tie, by layer."""
        return {i: tie for i in range(self.num_layers) if (tie := self.tie_of(i)) is not None}

    def state(self) -> list[int]:
        """The agent's state vector (docs/spec.md §5): ``s_i = j`` if ``i`` is tied to ``j``, else ``i``."""
        return [i if target is None else target for i, target in enumerate(self._target)]

    def root(self, i: int) -> int:
        """The layer whose storage layer ``i`` uses (chains of share and stopgrad ties followed)."""
        self._check_index(i, "layer")
        while self._mode[i] in ("share", "stopgrad"):
            target = self._target[i]
            assert target is not None
            i = target
        return i

    def parameters_of(self, i: int) -> dict[str, nn.Parameter]:
        """The Parameters layer ``i`` uses now, by name."""
        self._check_index(i, "layer")
        return {name: self._installed_at(slot) for name, slot in self._slots[i].items()}

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The distinct trainable Parameters the layers use, in layer order (what the optimizer holds)."""
        seen: set[int] = set()
        result = []
        for i in range(self.num_layers):
            for param in self.parameters_of(i).values():
                if param.requires_grad and id(param) not in seen:
                    seen.add(id(param))
                    result.append(param)
        return result

    def trainable_elements(self) -> int:
        """Trainable elements of the layers, counted once per storage."""
        return count_elements(self.trainable_parameters())

    def describe(self) -> list[str]:
        """One line per layer: ``own``, ``share -> j (root k)``, ``copy <- j``, ``stopgrad -> j (root k)``."""
        lines = []
        for i in range(self.num_layers):
            tie = self.tie_of(i)
            if tie is None:
                lines.append(f"layer {i}: own")
            elif tie.mode == "copy":
                lines.append(f"layer {i}: copy <- {tie.target} (own storage)")
            else:
                lines.append(f"layer {i}: {tie.mode} -> {tie.target} (root {self.root(i)})")
        return lines

    # ---- decisions ---------------------------------------------------------------------

    def tie(self, i: int, j: int, mode: str) -> None:
        """Tie layer ``i`` to the earlier layer ``j`` with ``mode`` (``"share"``, ``"copy"``, ``"stopgrad"``).

        Tying an already tied layer re-ties it (a repeated ``"copy"`` copies again; a repeated
        share or stopgrad tie is a no-op).  Layers tied to ``i`` follow ``i``.

        Raises
        ------
        TieModeError
            ``mode`` is not one of :data:`TIE_MODES`.
        TieTargetError
            ``j >= i`` (a layer can be tied only to an earlier one), or an index out of range.
        TieShapeError
            The layers do not have the same parameter names, shapes, dtypes and devices.
        """
        check_tie_mode(mode)
        self._check_index(i, "layer")
        self._check_index(j, "target layer")
        if j == i:
            raise TieTargetError(
                f"layer {i} cannot be tied to itself; to make it independent call untie({i})"
            )
        if j > i:
            raise TieTargetError(
                f"layer {i} can only be tied to an earlier layer (j < {i}), not to layer {j}; "
                f"to tie layer {j} to layer {i} call tie({j}, {i}, {mode!r})"
            )
        self._check_same_shapes(i, j)
        if mode == "copy":
            sources = self.parameters_of(j)
            own = self._own[i]
            if own is None:
                own = {}
                for name, source in sources.items():
                    fresh = nn.Parameter(
                        source.detach().clone(), requires_grad=self._initial_requires_grad[i][name]
                    )
                    self._remember(fresh)
                    own[name] = fresh
                    self._pending.append(_Pending(fresh, self._own_parameter_behind(j, name)))
                self._own[i] = own
            else:
                with torch.no_grad():
                    for name, source in sources.items():
                        own[name].copy_(source)
                        self._pending.append(_Pending(own[name], self._own_parameter_behind(j, name)))
        else:
            # i's own Parameters leave the model; their optimizer state goes with them at the sync.
            self._own[i] = None
        self._target[i], self._mode[i] = j, mode
        self._materialise()

    def untie(self, i: int) -> None:
        """Make layer ``i`` independent: its own storage, a copy of the values it uses now.

        Under share and stopgrad this allocates new Parameters (the alias is really broken);
        a copy-tied layer already owns its storage and only forgets the tie.  Layers tied to
        ``i`` follow it to its new storage.

        Raises
        ------
        TieTargetError
            Layer ``i`` is not tied, or the index is out of range.
        """
        self._check_index(i, "layer")
        if self._target[i] is None:
            raise TieTargetError(f"layer {i} is independent; there is nothing to untie (see state())")
        if self._own[i] is None:
            own = {}
            for name, source in self.parameters_of(i).items():
                fresh = nn.Parameter(
                    source.detach().clone(), requires_grad=self._initial_requires_grad[i][name]
                )
                self._remember(fresh)
                own[name] = fresh
                self._pending.append(_Pending(fresh, self._own_parameter_behind(i, name)))
            self._own[i] = own
        self._target[i], self._mode[i] = None, None
        self._materialise()

    def apply_state(self, state: Sequence[int], mode: str) -> None:
        """Bring the ties to the agent state ``state`` (``s_i = i`` independent, ``s_i = j < i`` tied).

        Only layers whose state changes are touched: repeating a decision keeps an earlier copy
        (docs/spec.md §5, D5.3).  Layers are processed in increasing order.
        """
        check_tie_mode(mode)
        if len(state) != self.num_layers:
            raise TieTargetError(f"state has {len(state)} entries; use one per layer ({self.num_layers})")
        for i, target in enumerate(state):
            if not isinstance(target, int) or isinstance(target, bool) or not 0 <= target <= i:
                raise TieTargetError(
                    f"state[{i}] = {target!r}; use an integer 0 <= s_i <= {i} (s_i = {i} means independent)"
                )
        for i, target in enumerate(state):
            current = self.tie_of(i)
            if target == i:
                if current is not None:
                    self.untie(i)
            elif current is None or current.target != target or current.mode != mode:
                self.tie(i, target, mode)

    # ---- optimizer ---------------------------------------------------------------------

    def attach_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        """Keep ``optimizer`` consistent with the ties from now on (and reconcile it at once).

        Reconciling: every Parameter of the layers that is no longer used (or frozen) leaves
        ``param_groups`` and ``optimizer.state``; every trainable Parameter the layers use and
        the optimizer lacks is added, to the group of the Parameter it was copied from (else the
        group holding the same parameter of another layer, else the first group).  Parameters the
        controller never saw (embeddings, head) are left alone.
        """
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TyingError(
                f"{type(optimizer).__name__} is not a torch.optim.Optimizer; pass e.g. torch.optim.AdamW(...)"
            )
        if any(optimizer is attached for attached in self._optimizers):
            return
        self._optimizers.append(optimizer)
        self._sync()

    # ---- checkpoints -------------------------------------------------------------------

    def structure(self) -> dict[str, Any]:
        """The tie structure, for a checkpoint: ``{"version", "num_layers", "ties": [[i, j, mode], ...]}``."""
        return {
            "version": STRUCTURE_VERSION,
            "num_layers": self.num_layers,
            "ties": [[i, tie.target, tie.mode] for i, tie in sorted(self.ties().items())],
        }

    def load_structure(self, structure: Mapping[str, Any]) -> None:
        """Re-create the ties of :meth:`structure` (untying every layer first).

        Copy ties are re-copied from the current values; load the model's state dict afterwards
        to restore every value.
        """
        if not isinstance(structure, Mapping) or structure.get("version") != STRUCTURE_VERSION:
            raise TyingError(
                f"not a tie structure of version {STRUCTURE_VERSION}: {structure!r}; "
                "pass what TyingController.structure() returned"
            )
        if structure.get("num_layers") != self.num_layers:
            raise TieTargetError(
                f"the structure is for {structure.get('num_layers')} layers, "
                f"this stack has {self.num_layers}; "
                "load it into a model of the same depth"
            )
        for i in reversed(range(self.num_layers)):
            if self._target[i] is not None:
                self.untie(i)
        for entry in sorted(structure["ties"]):
            i, j, mode = entry
            self.tie(int(i), int(j), str(mode))

    # ---- internals ---------------------------------------------------------------------

    @staticmethod
    def _installed_at(slot: tuple[nn.Module, str]) -> nn.Parameter:
        module, leaf = slot
        param = module._parameters[leaf]
        assert param is not None
        return param

    def _own_parameter_behind(self, i: int, name: str) -> nn.Parameter:
        own = self._own[self.root(i)]
        assert own is not None
        return own[name]

    def _remember(self, param: nn.Parameter) -> None:
        self._known[id(param)] = weakref.ref(param)

    def _is_known(self, param: object) -> bool:
        ref = self._known.get(id(param))
        return ref is not None and ref() is param

    def _check_index(self, i: object, what: str) -> None:
        if not isinstance(i, int) or isinstance(i, bool) or not 0 <= i < self.num_layers:
            raise TieTargetError(
                f"{what} {i!r} is not a layer index; use an integer in 0..{self.num_layers - 1}"
            )

    def _check_not_aliased(self) -> None:
        owners: dict[object, tuple[int, str]] = {}
        for i, own in enumerate(self._own):
            assert own is not None
            for name, param in own.items():
                key = storage_key(param)
                if key is None:
                    continue
                if key in owners:
                    first = owners[key]
                    raise TyingError(
                        f"layer {i} parameter {name!r} already shares storage with layer {first[0]} "
                        f"parameter {first[1]!r}; build the controller on untied layers "
                        "and declare ties with tie()"
                    )
                owners[key] = (i, name)

    def _check_same_shapes(self, i: int, j: int) -> None:
        names_i, names_j = self._names[i], self._names[j]
        if not names_i:
            raise TieShapeError(f"layer {i} has no parameters; there is nothing to tie")
        if names_i != names_j:
            missing = sorted(set(names_j) - set(names_i)) or sorted(set(names_i) - set(names_j)) or names_i
            raise TieShapeError(
                f"layers {i} and {j} have different parameters (first difference near {missing[0]!r}); "
                "tie only layers of the same architecture"
            )
        mine, theirs = self.parameters_of(i), self.parameters_of(j)
        for name in names_i:
            a, b = mine[name], theirs[name]
            if a.shape != b.shape or a.dtype != b.dtype or a.device != b.device:
                raise TieShapeError(
                    f"layers {i} and {j} differ at {name!r}: {tuple(a.shape)} {a.dtype} on {a.device} vs "
                    f"{tuple(b.shape)} {b.dtype} on {b.device}; "
                    "tie only layers of the same shape, dtype and device"
                )

    def _materialise(self) -> None:
        for i in range(self.num_layers):
            root = self.root(i)
            root_own = self._own[root]
            assert root_own is not None
            for name, slot in self._slots[i].items():
                if root == i or self._mode[i] == "share":
                    wanted = root_own[name]
                    self._aliases[i].pop(name, None)
                else:  # stopgrad: a distinct, frozen object viewing the root's storage
                    alias = self._aliases[i].get(name)
                    source = root_own[name]
                    if (
                        alias is None
                        or storage_key(alias) != storage_key(source)
                        or alias.shape != source.shape
                    ):
                        alias = nn.Parameter(source.detach(), requires_grad=False)
                        self._remember(alias)
                        self._aliases[i][name] = alias
                    wanted = alias
                module, leaf = slot
                if module._parameters[leaf] is not wanted:
                    module._parameters[leaf] = wanted
        self._sync()

    def _sync(self) -> None:
        pending, self._pending = self._pending, []
        for optimizer in self._optimizers:
            self._reconcile(optimizer, pending)

    def _reconcile(self, optimizer: torch.optim.Optimizer, pending: list[_Pending]) -> None:
        wanted = self.trainable_parameters()
        wanted_ids = {id(p) for p in wanted}
        # 1. The states to clone, read before anything is released (a source may be leaving).
        cloned: dict[int, dict[str, Any] | None] = {}
        for item in pending:
            source_state = optimizer.state.get(item.source) if item.source is not None else None
            keep = self.untie_state == "copy" and bool(source_state)
            cloned[id(item.param)] = _clone_state(source_state) if keep and source_state else None
        groups_of_sources = {
            id(item.param): _group_index(optimizer, item.source)
            for item in pending
            if item.source is not None
        }
        # 2. Release what the layers no longer train.
        present: set[int] = set()
        for group in optimizer.param_groups:
            kept = []
            for param in group["params"]:
                if self._is_known(param) and id(param) not in wanted_ids:
                    optimizer.state.pop(param, None)
                    continue
                if self._is_known(param) and id(param) in present:  # a duplicate: two updates per step
                    continue
                present.add(id(param))
                kept.append(param)
            group["params"] = kept
        for param in list(optimizer.state):
            if self._is_known(param) and id(param) not in present:
                optimizer.state.pop(param, None)
        # 3. Add what they train and the optimizer lacks.
        for param in wanted:
            if id(param) not in present:
                index = groups_of_sources.get(id(param))
                if index is None:
                    index = self._group_by_name(optimizer, param)
                optimizer.param_groups[index]["params"].append(param)
                present.add(id(param))
        # 4. States of new or re-copied Parameters: a copy of their source's, or fresh.
        for item in pending:
            if id(item.param) not in present:
                continue
            state = cloned[id(item.param)]
            optimizer.state.pop(item.param, None)
            if state is not None:
                optimizer.state[item.param] = state

    def _group_by_name(self, optimizer: torch.optim.Optimizer, param: nn.Parameter) -> int:
        name = next(
            (n for i in range(self.num_layers) for n, p in self.parameters_of(i).items() if p is param), None
        )
        if name is not None:
            for i in range(self.num_layers):
                index = _group_index(optimizer, self.parameters_of(i)[name])
                if index is not None:
                    return index
        return 0

    def __repr__(self) -> str:
        return f"TyingController({self.num_layers} layers, state={self.state()})"


def _check_untie_state(untie_state: object) -> str:
    if untie_state not in UNTIE_STATES:
        names = ", ".join(repr(s) for s in UNTIE_STATES)
        raise TieModeError(f"untie_state={untie_state!r}; use one of {names}")
    return str(untie_state)


def _group_index(optimizer: torch.optim.Optimizer, param: object) -> int | None:
    for index, group in enumerate(optimizer.param_groups):
        if any(p is param for p in group["params"]):
            return index
    return None


def _clone_state(state: Mapping[str, Any]) -> dict[str, Any]:
    return {
        key: value.clone() if torch.is_tensor(value) else copy.deepcopy(value) for key, value in state.items()
    }


def state_from_storage(layers: Sequence[nn.Module] | nn.Module) -> list[int | None]:
    """The tie state the *weights* show: ``s_i`` = the first layer whose storage layer ``i`` uses.

    Read from storage identity, not from any bookkeeping: ``s_i = i`` when layer ``i`` shares no
    storage with an earlier layer, ``s_i = k`` when every parameter of ``i`` views the storage of
    the same parameter of layer ``k`` (the first such layer), ``None`` when its parameters
    disagree (some shared, some not).  A copy tie shows as independent: after the copy the
    weights are independent.
    """
    stack = _layers_of(layers)
    first_user: dict[tuple[str, object], int] = {}
    state: list[int | None] = []
    for i, layer in enumerate(stack):
        found: set[int] = set()
        for name, param in layer.named_parameters(remove_duplicate=False):
            key = (name, storage_key(param))
            found.add(first_user.setdefault(key, i))
        state.append(found.pop() if len(found) == 1 else (i if not found else None))
    return state
