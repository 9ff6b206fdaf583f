"""Planted bugs of layer tying (docs/spec.md §5), each caught by the property or audit that names it.

Most of them are the public code of arXiv 2401.12819 (tamirdh/Dynamic-Layer-Tying), written
here as docs/spec.md §5 describes it, with no fixes:

* ``PublicCodeTying.tie`` is ``param.data = src.data`` and ``requires_grad = False`` for every
  parameter of the layer, whatever meaning was asked for (fact a);
* ``PublicCodeTying.untie`` ("train independently") only sets ``requires_grad = True`` again: the
  storage stays aliased, and the optimizer, built once over every Parameter, keeps two entries
  and two AdamW states on it (facts b, f);
* the reward ``clip(−perplexity, −10, 10)`` (fact d) and the initial state "every layer copies
  layer 0" (fact c);
* parameters counted per Parameter object (``sum(p.numel() for p in model.parameters())``).

The others are bugs an implementation could plausibly make: a controller that never syncs the
optimizer, an untie that makes new Parameter objects on the old storage, a reward with the
wrong sign, checkpoints as plain state dicts, a detector that never reports lost ties.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from properties.test_tying import (
    REAL_CHECKPOINTING,
    Checkpointing,
    check_checkpoint_round_trip,
    check_each_storage_updated_once,
    check_initial_state_matches_weights,
    check_mixed_sequence_matches_reference,
    check_one_state_per_storage,
    check_optimizer_state_released,
    check_parameter_count,
    check_plain_state_dict_untie_detected,
    check_reward_informative,
    check_share_matches_module_reuse,
    real_tying,
)
from revcheck.audit.ops_tying import (
    DoubleUpdateError,
    DuplicateStateError,
    NotUpdatedError,
    OrphanedStateError,
    ParameterCountError,
    count_parameters,
    count_parameters_per_object,
)
from revcheck.nn.tying import (
    TyingAgent,
    TyingController,
    clipped_perplexity_reward,
    find_lost_ties,
    log_perplexity_reward,
)
from revcheck.testing import BitMismatchError
from revcheck.tying import (
    RewardSaturatedError,
    RewardSignError,
    SilentUntieError,
    StateMismatchError,
    TiesNotRestoredError,
)
from tests.harness import PlantedBug

# ---- the public code, as it is ---------------------------------------------------------------


class PublicCodeTying:
    """The public code's tying: aliased storage, frozen position, "independent" = requires_grad only."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> None:
        # The public code builds its optimizer once over every Parameter and never changes it.
        self.blocks = list(model.blocks)  # type: ignore[attr-defined,arg-type]

    def tie(self, i: int, j: int, mode: str = "share") -> None:
        del mode  # one meaning, whatever is asked
        for param, source in zip(self.blocks[i].parameters(), self.blocks[j].parameters(), strict=True):
            param.data = source.data
            param.requires_grad = False

    def untie(self, i: int) -> None:
        for param in self.blocks[i].parameters():
            param.requires_grad = True


def public_tying(model: nn.Module, optimizer: torch.optim.Optimizer) -> PublicCodeTying:
    return PublicCodeTying(model, optimizer)


class PublicInitialStateAgent(TyingAgent):
    """The public agent's initial state: every layer "tied to layer 0", while the weights are independent."""

    def initial_state(self) -> list[int]:
        return [0] * self.num_layers


def public_parameter_count(model: nn.Module) -> int:
    return count_parameters_per_object(model)


# ---- plausible implementation bugs ------------------------------------------------------------


class UnsyncedController(TyingController):
    """Ties right, but never touches the optimizer: retired Parameters stay in it, new ones never enter."""

    def _sync(self) -> None:
        self._pending = []


def unsynced_tying(model: nn.Module, optimizer: torch.optim.Optimizer) -> UnsyncedController:
    return UnsyncedController(model, optimizer=optimizer)


class AliasingUntieController(TyingController):
    """``untie`` makes new Parameter objects that still view the shared storage (no clone)."""

    def untie(self, i: int) -> None:
        own = self._own[i]
        if own is None:
            own = {}
            for name, source in self.parameters_of(i).items():
                fresh = nn.Parameter(source.detach(), requires_grad=True)  # BUG: no .clone()
                self._remember(fresh)
                own[name] = fresh
            self._own[i] = own
        self._target[i], self._mode[i] = None, None
        self._materialise()


def aliasing_untie(model: nn.Module, optimizer: torch.optim.Optimizer) -> AliasingUntieController:
    return AliasingUntieController(model, optimizer=optimizer)


def flipped_reward(val_loss_before: float, val_loss_after: float) -> float:
    return val_loss_after - val_loss_before  # BUG: rewards a rise of perplexity


def _plain_save(model: nn.Module, tying: Any, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    # Only the tie structure is missing: the optimizer state is even kept by name, so that nothing
    # but the lost ties can make the round trip fail.
    names = {id(p): name for name, p in model.named_parameters()}
    states = {names[id(p)]: state for p, state in optimizer.state.items() if id(p) in names}
    return {"model": model.state_dict(), "optimizer_by_name": states}


def _plain_load(model: nn.Module, saved: dict[str, Any], optimizer: torch.optim.Optimizer) -> None:
    model.load_state_dict(saved["model"])  # copies every tensor into its own Parameter: untied
    by_name = dict(model.named_parameters())
    for name, state in saved["optimizer_by_name"].items():
        optimizer.state[by_name[name]] = state


PLAIN_STATE_DICT_CHECKPOINTING = Checkpointing(_plain_save, _plain_load)


def never_detects(model: nn.Module, state_dict: dict[str, Any]) -> list[Any]:
    return []


# ---- the records ----------------------------------------------------------------------------

FAMILY = "tying"

PLANTED_BUGS = [
    PlantedBug(
        name="public-stopgrad-called-share",
        mistake="tie = `param.data = src.data; requires_grad = False`: "
        "the source layer's gradient lacks the tied use",
        check=check_share_matches_module_reuse,
        wrong=public_tying,
        right=real_tying,
        error=BitMismatchError,
        family=FAMILY,
        max_examples=15,
    ),
    PlantedBug(
        name="public-untie-keeps-alias",
        mistake="'independent' only resets requires_grad: two optimizer entries update one storage per step",
        check=check_each_storage_updated_once,
        wrong=public_tying,
        right=real_tying,
        error=DoubleUpdateError,
        family=FAMILY,
        max_examples=25,
    ),
    PlantedBug(
        name="public-adamw-state-never-freed",
        mistake="the AdamW state of a layer trained and then tied stays in the optimizer",
        check=check_optimizer_state_released,
        wrong=public_tying,
        right=real_tying,
        error=OrphanedStateError,
        family=FAMILY,
        max_examples=25,
    ),
    PlantedBug(
        name="public-two-states-one-storage",
        mistake="the tied layer keeps its own AdamW state on the storage it now aliases",
        check=check_one_state_per_storage,
        wrong=public_tying,
        right=real_tying,
        error=DuplicateStateError,
        family=FAMILY,
        max_examples=25,
    ),
    PlantedBug(
        name="public-clipped-reward",
        mistake="reward = clip(-perplexity, -10, 10): constant -10 whenever perplexity >= 10",
        check=check_reward_informative,
        wrong=clipped_perplexity_reward,
        right=log_perplexity_reward,
        error=RewardSaturatedError,
        family=FAMILY,
    ),
    PlantedBug(
        name="reward-sign-flipped",
        mistake="reward = after - before: a rise of validation perplexity is rewarded",
        check=check_reward_informative,
        wrong=flipped_reward,
        right=log_perplexity_reward,
        error=RewardSignError,
        family=FAMILY,
    ),
    PlantedBug(
        name="public-initial-state",
        mistake="initial state 'every layer copies layer 0' while the layers are independent",
        check=check_initial_state_matches_weights,
        wrong=PublicInitialStateAgent,
        right=TyingAgent,
        error=StateMismatchError,
        family=FAMILY,
        max_examples=10,
    ),
    PlantedBug(
        name="per-parameter-object-count",
        mistake="parameters counted per Parameter object: an aliased storage counts twice",
        check=check_parameter_count,
        wrong=public_parameter_count,
        right=count_parameters,
        error=ParameterCountError,
        family=FAMILY,
        max_examples=30,
    ),
    PlantedBug(
        name="optimizer-never-synced",
        mistake="the controller ties and unties but never updates param_groups: new layers are never trained",
        check=check_each_storage_updated_once,
        wrong=unsynced_tying,
        right=real_tying,
        error=NotUpdatedError,
        family=FAMILY,
        max_examples=25,
    ),
    PlantedBug(
        name="optimizer-never-synced-state",
        mistake="the controller never releases optimizer state of Parameters that left the model",
        check=check_optimizer_state_released,
        wrong=unsynced_tying,
        right=real_tying,
        error=OrphanedStateError,
        family=FAMILY,
        max_examples=25,
    ),
    PlantedBug(
        name="untie-without-new-storage",
        mistake="untie makes new Parameter objects on the shared storage (no clone): a double update",
        check=check_each_storage_updated_once,
        wrong=aliasing_untie,
        right=real_tying,
        error=DoubleUpdateError,
        family=FAMILY,
        max_examples=25,
    ),
    PlantedBug(
        name="untie-without-new-storage-values",
        mistake="untie makes new Parameter objects on the shared storage: the layers move together",
        check=check_mixed_sequence_matches_reference,
        wrong=aliasing_untie,
        right=real_tying,
        error=BitMismatchError,
        family=FAMILY,
        max_examples=25,
    ),
    PlantedBug(
        name="checkpoint-as-plain-state-dict",
        mistake="checkpoint = model.state_dict(): loading it into a fresh model unties every layer",
        check=check_checkpoint_round_trip,
        wrong=PLAIN_STATE_DICT_CHECKPOINTING,
        right=REAL_CHECKPOINTING,
        error=TiesNotRestoredError,
        family=FAMILY,
        max_examples=15,
    ),
    PlantedBug(
        name="lost-ties-never-reported",
        mistake="loading a plain state dict of a tied model into a fresh one is not detected",
        check=check_plain_state_dict_untie_detected,
        wrong=never_detects,
        right=find_lost_ties,
        error=SilentUntieError,
        family=FAMILY,
        max_examples=15,
    ),
]
