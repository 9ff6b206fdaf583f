"""Checks that tell the meanings of "tied" apart (docs/spec.md §5), each naming its level.

* :func:`assert_tie_semantics`: a tied model against a reference built from the *declared*
  ties alone: ``share`` as the same module object at both positions, ``stopgrad`` as the
  root's module called with detached parameters, ``copy`` and independent layers as
  themselves.  Forward, every gradient and one optimizer step must be bit-identical (level K:
  the same kernels on the same device and dtype run the same operations).
* :func:`assert_reward_informative`: a tying reward varies over a training curve and rewards
  a fall of perplexity above a rise (the public reward fails the first).
* :func:`assert_state_matches_weights`: an agent state vector against the tie structure the
  weights show (the public initial state fails it).

The storage audit (double updates, orphaned state, counts per storage) is in
:mod:`revcheck.audit.ops_tying`.
"""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from revcheck.errors import UsageError
from revcheck.levels import Level
from revcheck.nn.tying.controller import Tie, check_tie_mode, state_from_storage
from revcheck.testing import assert_bit_exact

__all__ = [
    "RewardCheckError",
    "RewardSaturatedError",
    "RewardSignError",
    "SilentUntieError",
    "StateMismatchError",
    "TieSemanticsError",
    "TieSemanticsResult",
    "TiesNotRestoredError",
    "assert_reward_informative",
    "assert_state_matches_weights",
    "assert_tie_semantics",
    "assert_ties_restored",
    "tie_signature",
    "training_curve_pairs",
]


class TieSemanticsError(AssertionError):
    """A tied model is structurally not what its declared ties mean (e.g. a gradient where none may be)."""


class RewardCheckError(AssertionError):
    """A tying reward that cannot teach the agent."""


class RewardSaturatedError(RewardCheckError):
    """The reward is constant over a training curve on which the validation loss changes."""


class RewardSignError(RewardCheckError):
    """The reward does not prefer a fall of validation perplexity to a rise."""


class StateMismatchError(AssertionError):
    """An agent state vector that does not describe the tie structure of the weights."""


class TiesNotRestoredError(AssertionError):
    """A restored model does not have the saved model's ties (which names share objects or storage)."""


class SilentUntieError(AssertionError):
    """A plain state dict of a tied model was loaded into a fresh model and nothing said ties were lost."""


@dataclass(frozen=True)
class TieSemanticsResult:
    """What :func:`assert_tie_semantics` compared, and at which level."""

    level: Level
    device: str
    dtypes: tuple[str, ...]
    positions: int  # parameter positions whose gradient and updated value were compared
    ties: dict[int, Tie]


class _Detached(nn.Module):
    """Calls ``layer`` with its parameters detached: the stopgrad reference."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        frozen = {name: p.detach() for name, p in self.layer.named_parameters()}
        return torch.func.functional_call(self.layer, frozen, args, kwargs)


def _normalise_ties(ties: Mapping[int, Tie | tuple[int, str]], depth: int) -> dict[int, Tie]:
    result = {}
    for i, tie in ties.items():
        target, mode = (tie.target, tie.mode) if isinstance(tie, Tie) else tie
        check_tie_mode(mode)
        if not (isinstance(i, int) and isinstance(target, int) and 0 <= target < i < depth):
            raise UsageError(f"tie {i} -> {target}: use layers 0 <= j < i < {depth}")
        result[i] = Tie(target, mode)
    return result


def _roots(ties: dict[int, Tie], depth: int) -> list[int]:
    roots = []
    for i in range(depth):
        k = i
        while k in ties and ties[k].mode in ("share", "stopgrad"):
            k = ties[k].target
        roots.append(k)
    return roots


def _path_of(model: nn.Module, layers: nn.Module) -> str:
    for name, module in model.named_modules(remove_duplicate=False):
        if module is layers:
            return name
    raise UsageError(
        "the layers are not a submodule of the model; pass model.blocks (an nn.ModuleList of model)"
    )


def assert_tie_semantics(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    ties: Mapping[int, Tie | tuple[int, str]],
    loss_fn: Callable[[nn.Module], Tensor],
    *,
    layers: nn.ModuleList | None = None,
) -> TieSemanticsResult:
    """Check a tied model against the reference its declared ``ties`` define, bit for bit.

    The reference is a deep copy of ``model`` in which position ``i`` of ``layers`` is
    replaced according to ``ties[i] = (j, mode)`` (chains resolved to the root ``k``):
    ``share``: the root's module object itself (one module used twice: what weight sharing
    means); ``stopgrad``: the root's module called with ``p.detach()`` parameters; ``copy``
    or untied: the layer as it is.  The reference gets an optimizer of the same class, groups
    and hyperparameters, with a copy of ``optimizer``'s state.  Then:

    1. forward: ``loss_fn(model)`` and ``loss_fn(reference)`` bit-identical;
    2. backward: the gradient at every parameter position bit-identical to the reference's
       (a stopgrad position must have none);
    3. one optimizer step: every parameter position's new value bit-identical.

    Level K: the real kernels on ``model``'s device and dtype.  ``model`` and ``optimizer`` are
    trained by one step.

    Raises
    ------
    revcheck.testing.BitMismatchError
        A loss, gradient or updated value differs (the message names which).
    TieSemanticsError
        A stopgrad position has a gradient, or a parameter is missing from the reference.
    """
    __tracebackhide__ = True
    stack = layers if layers is not None else getattr(model, "blocks", None)
    if not isinstance(stack, nn.ModuleList) or len(stack) == 0:
        raise UsageError("pass layers=model.blocks (a non-empty nn.ModuleList of the model)")
    path = _path_of(model, stack)
    depth = len(stack)
    declared = _normalise_ties(ties, depth)
    roots = _roots(declared, depth)

    reference = copy.deepcopy(model)
    ref_stack = reference.get_submodule(path)
    assert isinstance(ref_stack, nn.ModuleList)
    originals = list(ref_stack)
    for i in range(depth):
        tie = declared.get(i)
        if tie is not None and tie.mode == "share":
            ref_stack[i] = originals[roots[i]]
        elif tie is not None and tie.mode == "stopgrad":
            ref_stack[i] = _Detached(originals[roots[i]])

    prefix = f"{path}." if path else ""

    def position(name: str) -> tuple[int, str] | None:
        if not name.startswith(prefix):
            return None
        index, _, local = name[len(prefix) :].partition(".")
        return (int(index), local) if index.isdigit() else None

    def reference_parameter(name: str) -> nn.Parameter:
        where = position(name)
        if where is not None and where[0] in declared and declared[where[0]].mode == "stopgrad":
            name = f"{prefix}{roots[where[0]]}.{where[1]}"
        try:
            return reference.get_parameter(name)
        except AttributeError:
            raise TieSemanticsError(
                f"{name} has no counterpart in the reference built from the declared ties"
            ) from None

    def is_stopgrad(name: str) -> bool:
        where = position(name)
        return where is not None and where[0] in declared and declared[where[0]].mode == "stopgrad"

    named = list(model.named_parameters(remove_duplicate=False))
    first_name: dict[int, str] = {}
    for name, param in named:
        first_name.setdefault(id(param), name)

    # The reference optimizer: same class, groups and hyperparameters; a copy of the state.
    groups = []
    mapped: dict[int, nn.Parameter] = {}
    for group in optimizer.param_groups:
        params = []
        for param in group["params"]:
            found = first_name.get(id(param))
            if found is None:
                raise TieSemanticsError(
                    f"the optimizer holds a {list(param.shape)} parameter that is not in the model"
                )
            if is_stopgrad(found):
                continue  # a frozen alias: the reference has no such parameter to update
            counterpart = reference_parameter(found)
            if any(counterpart is p for p in mapped.values()):
                continue
            mapped[id(param)] = counterpart
            params.append(counterpart)
        groups.append({**{k: v for k, v in group.items() if k != "params"}, "params": params})
    # Every group carries all its hyperparameters; the constructor's defaults are not used.
    reference_optimizer = type(optimizer)(groups)  # type: ignore[call-arg]
    reference_optimizer.defaults = copy.deepcopy(optimizer.defaults)
    for held, state in optimizer.state.items():
        mapped_to = mapped.get(id(held))
        if mapped_to is not None:
            reference_optimizer.state[mapped_to] = {
                k: v.clone() if torch.is_tensor(v) else copy.deepcopy(v) for k, v in state.items()
            }

    optimizer.zero_grad(set_to_none=True)
    reference_optimizer.zero_grad(set_to_none=True)
    for module in (model, reference):
        for p in module.parameters():
            p.grad = None
    loss = loss_fn(model)
    reference_loss = loss_fn(reference)
    assert_bit_exact(
        loss.detach(), reference_loss.detach(), msg="forward: the loss differs from the reference's"
    )
    loss.backward()
    reference_loss.backward()
    for name, param in named:
        expected = reference_parameter(name)
        if is_stopgrad(name):
            if param.grad is not None:
                raise TieSemanticsError(
                    f"{name} is declared stopgrad but received a gradient "
                    f"(requires_grad={param.requires_grad})"
                )
            continue
        if (param.grad is None) != (expected.grad is None):
            raise TieSemanticsError(
                f"{name}: gradient {'missing' if param.grad is None else 'present'} in the model, "
                f"{'missing' if expected.grad is None else 'present'} in the reference"
            )
        if param.grad is not None and expected.grad is not None:
            assert_bit_exact(param.grad, expected.grad, msg=f"backward: the gradient of {name} differs")
    optimizer.step()
    reference_optimizer.step()
    for name, param in named:
        assert_bit_exact(
            param.detach(),
            reference_parameter(name).detach(),
            msg=f"step: the updated value of {name} differs",
        )
    return TieSemanticsResult(
        level=Level.K,
        device=", ".join(sorted({str(p.device) for _, p in named})),
        dtypes=tuple(sorted({str(p.dtype).removeprefix("torch.") for _, p in named})),
        positions=len(named),
        ties=declared,
    )


# ---- rewards ----------------------------------------------------------------------------------


def training_curve_pairs(
    start: float = 4.3, stop: float = 2.4, decisions: int = 24, *, wiggle: float = 0.03
) -> list[tuple[float, float]]:
    """``(val_loss_before, val_loss_after)`` pairs along a falling, slightly noisy training curve.

    The default runs from log-perplexity 4.3 (about ln 70: an untrained character model) to 2.4
    (perplexity 11): perplexity above 10 all the way, the regime of the reported training.
    The wiggle is deterministic (a sine), so some decisions make the loss rise.
    """
    losses = [
        start + (stop - start) * k / decisions + wiggle * math.sin(2.7 * k) for k in range(decisions + 1)
    ]
    return list(itertools.pairwise(losses))


def assert_reward_informative(
    reward: Callable[[float, float], float], pairs: Sequence[tuple[float, float]] | None = None
) -> None:
    """``reward(before, after)`` varies along a training curve and prefers improvement.

    1. Over ``pairs`` (default :func:`training_curve_pairs`) the rewards are not all equal,
       else :class:`RewardSaturatedError`.
    2. For every pair with ``after < before`` (perplexity fell), ``reward(before, after) >
       reward(after, before)`` (the same change reversed), else :class:`RewardSignError`.
       Validation loss is log-perplexity: lower is better.

    Examples
    --------
    >>> from revcheck.nn.tying import clipped_perplexity_reward, log_perplexity_reward
    >>> assert_reward_informative(log_perplexity_reward)
    >>> assert_reward_informative(clipped_perplexity_reward)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
      ...
    revcheck.tying.RewardSaturatedError: the reward is constant (-10.0) on 24 decisions ...
    """
    __tracebackhide__ = True
    pairs = list(pairs) if pairs is not None else training_curve_pairs()
    if not pairs:
        raise UsageError("no (before, after) pairs; pass some, or None for the default training curve")
    values = [float(reward(b, a)) for b, a in pairs]
    if len(set(values)) == 1:
        losses = [x for pair in pairs for x in pair]
        low, high = min(losses), max(losses)
        raise RewardSaturatedError(
            f"the reward is constant ({values[0]}) on {len(pairs)} decisions "
            "whose validation loss moves between "
            f"{low:.2f} and {high:.2f} nats (perplexity {math.exp(low):.1f} to {math.exp(high):.1f}): "
            "the agent cannot learn from it"
        )
    for before, after in pairs:
        if after < before:
            better, worse = float(reward(before, after)), float(reward(after, before))
            if not better > worse:
                raise RewardSignError(
                    f"reward({before:.4f} -> {after:.4f}) = {better!r} (perplexity fell) is not above "
                    f"reward({after:.4f} -> {before:.4f}) = {worse!r} (it rose); "
                    "lower log-perplexity is better"
                )


# ---- states -----------------------------------------------------------------------------------


def assert_state_matches_weights(state: Sequence[int], layers: Sequence[nn.Module] | nn.Module) -> None:
    """``state`` (``s_i = i`` independent, ``s_i = j`` tied to ``j``) matches the weights' storage.

    Compared with :func:`revcheck.nn.tying.state_from_storage`: a share or stopgrad tie shows as
    the first layer whose storage it uses, a copy tie as independent.  Raises
    :class:`StateMismatchError` naming the first layer that differs.

    >>> from revcheck.nn import TinyGPT
    >>> model = TinyGPT(vocab=8, d_model=8, n_heads=2, depth=3, seq_len=4)
    >>> assert_state_matches_weights([0, 1, 2], model)
    >>> assert_state_matches_weights([0, 0, 0], model)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
      ...
    revcheck.tying.StateMismatchError: state [0, 0, 0] says layer 1 uses layer 0's weights, but ...
    """
    __tracebackhide__ = True
    shown = state_from_storage(layers)
    if len(state) != len(shown):
        raise StateMismatchError(f"state has {len(state)} entries for {len(shown)} layers")
    for i, (claimed, actual) in enumerate(zip(state, shown, strict=True)):
        if claimed != actual:
            says = "is independent" if claimed == i else f"uses layer {claimed}'s weights"
            truth = (
                "its weights are its own"
                if actual == i
                else ("its parameters disagree" if actual is None else f"it uses layer {actual}'s")
            )
            raise StateMismatchError(
                f"state {list(state)} says layer {i} {says}, but {truth} (the weights show {shown})"
            )


# ---- checkpoints ------------------------------------------------------------------------------


def tie_signature(model: nn.Module) -> dict[str, tuple[int, int, bool]]:
    """Per parameter name: (first name index sharing its *object*, ... its *storage*, requires_grad).

    Two models have the same ties exactly when their signatures are equal: equal object groups
    (share), equal storage groups (share and stopgrad), equal frozen flags (stopgrad).
    """
    from revcheck.storage import storage_key

    named = list(model.named_parameters(remove_duplicate=False))
    by_object: dict[int, int] = {}
    by_storage: dict[object, int] = {}
    signature = {}
    for index, (name, param) in enumerate(named):
        signature[name] = (
            by_object.setdefault(id(param), index),
            by_storage.setdefault(storage_key(param), index),
            bool(param.requires_grad),
        )
    return signature


def assert_ties_restored(saved: nn.Module, restored: nn.Module) -> None:
    """``restored`` has ``saved``'s ties and bit-identical values under every parameter name.

    Level K (bit patterns of the stored values; ties compared as object and storage identity).
    Raises :class:`TiesNotRestoredError` for a different tie structure, and
    :class:`revcheck.testing.BitMismatchError` for a different value.
    """
    __tracebackhide__ = True
    expected, actual = tie_signature(saved), tie_signature(restored)
    if expected.keys() != actual.keys():
        raise TiesNotRestoredError(
            "the models have different parameter names "
            f"(first: {sorted(expected.keys() ^ actual.keys())[:2]})"
        )
    for name in expected:
        if expected[name] != actual[name]:
            names = list(expected)
            want, got = expected[name], actual[name]
            raise TiesNotRestoredError(
                f"{name}: saved shares its object with {names[want[0]]} and its storage with "
                f"{names[want[1]]} (requires_grad={want[2]}); restored shares its object with "
                f"{names[got[0]]} and its storage with {names[got[1]]} (requires_grad={got[2]}). "
                "Save and load with revcheck.nn.tying.save_checkpoint "
                "and load_checkpoint"
            )
    restored_parameters = dict(restored.named_parameters(remove_duplicate=False))
    for name, param in saved.named_parameters(remove_duplicate=False):
        assert_bit_exact(restored_parameters[name].detach(), param.detach(), msg=f"restored value of {name}")
