"""Checkpoints of tied models: the state dict *and* the tie structure (docs/spec.md §5).

A plain ``model.state_dict()`` of a tied model holds the shared tensors under every name that
uses them (``torch.save`` even keeps them shared in the file), but loading it into a fresh
model with ``model.load_state_dict`` copies the values into *separate* Parameters: the ties are
silently gone, the trainable-parameter count and the memory grow back, and gradients stop
being summed.  :func:`save_checkpoint` stores the structure next to the state dict and
:func:`load_checkpoint` restores both and verifies the result; :func:`find_lost_ties` detects a
plain state dict whose ties a model does not have, and :func:`load_checkpoint` refuses one
with :class:`TiesLostError`.

Examples
--------
>>> import io, torch
>>> from revcheck.nn import TinyGPT
>>> from revcheck.nn.tying import TyingController
>>> def fresh():
...     return TinyGPT(vocab=16, d_model=8, n_heads=2, depth=3, seq_len=4)
>>> model = fresh()
>>> TyingController(model).tie(2, 0, "share")
>>> buffer = io.BytesIO(); torch.save(model.state_dict(), buffer); _ = buffer.seek(0)
>>> plain = torch.load(buffer)
>>> [tie.keys[:2] for tie in find_lost_ties(fresh(), plain)][:1]          # what load_state_dict would lose
[('stack.blocks.0.norm1.weight', 'stack.blocks.2.norm1.weight')]
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from revcheck.nn.tying.controller import TyingController, TyingError
from revcheck.storage import storage_key

__all__ = [
    "CHECKPOINT_FORMAT",
    "LostTie",
    "TiesLostError",
    "TiesLostWarning",
    "find_lost_ties",
    "load_checkpoint",
    "save_checkpoint",
    "storage_groups",
    "warn_if_ties_lost",
]

CHECKPOINT_FORMAT = "revcheck.tying/1"


class TiesLostError(TyingError):
    """Loading would silently untie layers (a plain state dict of a tied model, or a broken restore)."""


class TiesLostWarning(UserWarning):
    """A state dict holds ties that the model it was (or will be) loaded into does not have."""


@dataclass(frozen=True)
class LostTie:
    """Keys that are tied in the state dict but separate in the model.

    ``evidence`` is ``"storage"`` (the tensors share storage in the state dict) or ``"values"``
    (layers with bit-identical parameters under every name: a tie whose storage sharing was lost
    before, e.g. by cloning the state dict; a strong hint, not a proof).
    """

    keys: tuple[str, ...]
    evidence: str

    def __str__(self) -> str:
        return f"{' = '.join(self.keys)} ({self.evidence})"


def storage_groups(state_dict: Mapping[str, Any]) -> list[tuple[str, ...]]:
    """Groups (of two or more) of state-dict keys whose tensors share storage, in key order."""
    groups: dict[object, list[str]] = {}
    for key, value in state_dict.items():
        if torch.is_tensor(value) and (skey := storage_key(value)) is not None:
            groups.setdefault(skey, []).append(key)
    return [tuple(keys) for keys in groups.values() if len(keys) > 1]


def _partition(groups: list[tuple[str, ...]]) -> dict[str, int]:
    return {key: index for index, keys in enumerate(groups) for key in keys}


_INDEXED = re.compile(r"^(?P<prefix>.*?)\.(?P<index>\d+)\.(?P<rest>.+)$")


def _identical_layers(state_dict: Mapping[str, Any]) -> list[tuple[str, ...]]:
    # Keys "<prefix>.<i>.<rest>": layers i and k of one prefix whose every tensor is bit-identical.
    layers: dict[tuple[str, int], dict[str, torch.Tensor]] = {}
    for key, value in state_dict.items():
        match = _INDEXED.match(key)
        if match and torch.is_tensor(value):
            layers.setdefault((match["prefix"], int(match["index"])), {})[match["rest"]] = value
    found: list[tuple[str, ...]] = []
    ordered = sorted(layers)
    for a, (prefix_a, index_a) in enumerate(ordered):
        for prefix_b, index_b in ordered[a + 1 :]:
            first, second = layers[(prefix_a, index_a)], layers[(prefix_b, index_b)]
            if prefix_a != prefix_b or first.keys() != second.keys():
                continue
            if all(
                first[r].shape == second[r].shape
                and first[r].dtype == second[r].dtype
                and torch.equal(
                    first[r].reshape(-1).view(torch.uint8), second[r].reshape(-1).view(torch.uint8)
                )
                for r in first
            ):
                found.append((f"{prefix_a}.{index_a}", f"{prefix_b}.{index_b}"))
    return found


def find_lost_ties(model: nn.Module, state_dict: Mapping[str, Any]) -> list[LostTie]:
    """Ties that ``state_dict`` holds and ``model`` does not (what ``load_state_dict`` would drop).

    A tie is seen when tensors share storage in ``state_dict`` (as ``state_dict()`` returns them
    and ``torch.save`` keeps them) but the model's tensors under those keys do not.  When the
    state dict shares no storage at all, layers whose parameters are bit-identical under every
    name are reported with ``evidence="values"`` (a clone of the state dict loses the sharing,
    not the values).  A format that stores neither (a clone followed by training of only one
    of the copies) cannot be detected.
    """
    model_state = model.state_dict()
    model_groups = _partition(storage_groups(model_state))
    lost = []
    sd_groups = storage_groups(state_dict)
    for keys in sd_groups:
        present = [key for key in keys if key in model_state]
        if len(present) < 2:
            continue
        first = model_groups.get(present[0])
        if first is None or any(model_groups.get(key) != first for key in present[1:]):
            lost.append(LostTie(tuple(present), "storage"))
    if not sd_groups:
        model_layers = set(_identical_layers(model_state))
        for pair in _identical_layers(state_dict):
            if pair not in model_layers:
                lost.append(LostTie(pair, "values"))
    return lost


def warn_if_ties_lost(model: nn.Module, state_dict: Mapping[str, Any]) -> list[LostTie]:
    """:func:`find_lost_ties`, with a :class:`TiesLostWarning` naming them if there are any."""
    lost = find_lost_ties(model, state_dict)
    if lost:
        shown = "; ".join(str(tie) for tie in lost[:3]) + ("; ..." if len(lost) > 3 else "")
        warnings.warn(
            f"{len(lost)} tie(s) in the state dict are not ties in the model ({shown}): "
            "model.load_state_dict copies them into separate Parameters. "
            "Save with revcheck.nn.tying.save_checkpoint and load with load_checkpoint to keep them.",
            TiesLostWarning,
            stacklevel=2,
        )
    return lost


def _first_names(model: nn.Module) -> dict[int, str]:
    return {id(param): name for name, param in model.named_parameters()}


def save_checkpoint(
    model: nn.Module, controller: TyingController, optimizer: torch.optim.Optimizer | None = None
) -> dict[str, Any]:
    """A checkpoint dict: the model's state dict, the tie structure and (optionally) the optimizer.

    The optimizer's parameters are recorded by name, so a restore does not depend on the order
    in which Parameters entered its ``param_groups``.  Pass the result to ``torch.save``.
    """
    checkpoint: dict[str, Any] = {
        "format": CHECKPOINT_FORMAT,
        "model": model.state_dict(),
        "tying": controller.structure(),
        "storage_groups": storage_groups(model.state_dict()),
    }
    if optimizer is not None:
        names = _first_names(model)
        groups = []
        for index, group in enumerate(optimizer.param_groups):
            missing = [tuple(p.shape) for p in group["params"] if id(p) not in names]
            if missing:
                raise TyingError(
                    f"optimizer group {index} holds parameters that are not in the model "
                    f"(shapes {missing[:3]}); "
                    "checkpoint an optimizer over this model's parameters"
                )
            groups.append([names[id(p)] for p in group["params"]])
        checkpoint["optimizer"] = optimizer.state_dict()
        checkpoint["optimizer_parameter_names"] = groups
    return checkpoint


def load_checkpoint(
    model: nn.Module,
    checkpoint: Mapping[str, Any],
    *,
    optimizer: torch.optim.Optimizer | None = None,
    layers: Any = None,
    untie_state: str = "copy",
) -> TyingController:
    """Restore ties, values and (optionally) optimizer state from :func:`save_checkpoint`'s dict.

    ``model`` is a fresh, untied model of the same architecture (``layers`` its stack if it has
    no ``blocks``); ``optimizer`` one built over its parameters, with the same number of groups.
    Returns the controller that now owns the ties, with ``optimizer`` attached.

    Raises
    ------
    TiesLostError
        ``checkpoint`` is a plain state dict holding tied tensors (loading it would untie them),
        or the restored model does not share storage the way the saved one did.
    TyingError
        ``checkpoint`` is neither a checkpoint nor a state dict with ties, or its optimizer
        groups do not fit ``optimizer``.
    """
    if checkpoint.get("format") != CHECKPOINT_FORMAT:
        lost = find_lost_ties(model, checkpoint)
        if lost:
            shown = "; ".join(str(tie) for tie in lost[:3])
            raise TiesLostError(
                f"this is a plain state dict with {len(lost)} tie(s) ({shown}) and no tie structure: "
                "model.load_state_dict would copy them into separate Parameters (silently untied). "
                "Save with save_checkpoint(model, controller, optimizer); or, to load untied on purpose, "
                "call model.load_state_dict(state_dict) yourself"
            )
        raise TyingError(
            f"not a checkpoint of format {CHECKPOINT_FORMAT!r} (keys {sorted(checkpoint)[:4]}...); "
            "make one with save_checkpoint, or load a plain state dict with model.load_state_dict"
        )
    controller = TyingController(model if layers is None else layers, untie_state=untie_state)
    controller.load_structure(checkpoint["tying"])
    model.load_state_dict(checkpoint["model"])
    restored = storage_groups(model.state_dict())
    expected = [tuple(keys) for keys in checkpoint["storage_groups"]]
    if sorted(restored) != sorted(expected):
        raise TiesLostError(
            f"the restored model shares storage in {len(restored)} group(s), "
            f"the saved one in {len(expected)}; "
            "load into a fresh model of the same architecture (first difference: "
            f"{sorted(set(expected) ^ set(restored))[:1]})"
        )
    if optimizer is not None:
        if "optimizer" not in checkpoint:
            raise TyingError(
                "the checkpoint holds no optimizer state; save it with save_checkpoint(..., optimizer)"
            )
        names = checkpoint["optimizer_parameter_names"]
        if len(names) != len(optimizer.param_groups):
            raise TyingError(
                f"the checkpoint's optimizer has {len(names)} parameter groups, "
                f"this one {len(optimizer.param_groups)}; "
                "build the optimizer with the same groups"
            )
        by_name = dict(model.named_parameters())
        for group, group_names in zip(optimizer.param_groups, names, strict=True):
            group["params"] = [by_name[name] for name in group_names]
        optimizer.load_state_dict(checkpoint["optimizer"])
        controller.attach_optimizer(optimizer)
    return controller
