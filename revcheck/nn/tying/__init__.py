"""Dynamic layer tying with declared semantics (docs/spec.md §5).

* :mod:`~revcheck.nn.tying.controller`: :class:`TyingController` (``tie(i, j, mode)`` with
  mode ``"share"``, ``"copy"`` or ``"stopgrad"``; ``untie(i)``; chains; the optimizer kept
  consistent by storage);
* :mod:`~revcheck.nn.tying.checkpoint`: state dict plus tie structure, and the detection of a
  plain state dict that would silently untie;
* :mod:`~revcheck.nn.tying.agent`: the Q-learning tying agent and its rewards;
* :mod:`~revcheck.nn.tying.train`: the training loop that runs the agent every few steps.

The storage audit and the memory report are in :mod:`revcheck.audit.ops_tying`; the checks
(``assert_tie_semantics`` ...) in :mod:`revcheck.tying`.
"""

from revcheck.nn.tying.agent import (
    REWARDS,
    TyingAgent,
    action_offset,
    clipped_perplexity_reward,
    log_perplexity_reward,
    num_actions,
)
from revcheck.nn.tying.checkpoint import (
    CHECKPOINT_FORMAT,
    LostTie,
    TiesLostError,
    TiesLostWarning,
    find_lost_ties,
    load_checkpoint,
    save_checkpoint,
    storage_groups,
    warn_if_ties_lost,
)
from revcheck.nn.tying.controller import (
    TIE_MODES,
    UNTIE_STATES,
    NoLayersError,
    Tie,
    TieModeError,
    TieShapeError,
    TieTargetError,
    TyingController,
    TyingError,
    check_tie_mode,
    state_from_storage,
)
from revcheck.nn.tying.train import Decision, heldout_loss, train_with_agent

__all__ = [
    "CHECKPOINT_FORMAT",
    "REWARDS",
    "TIE_MODES",
    "UNTIE_STATES",
    "Decision",
    "LostTie",
    "NoLayersError",
    "Tie",
    "TieModeError",
    "TieShapeError",
    "TieTargetError",
    "TiesLostError",
    "TiesLostWarning",
    "TyingAgent",
    "TyingController",
    "TyingError",
    "action_offset",
    "check_tie_mode",
    "clipped_perplexity_reward",
    "find_lost_ties",
    "heldout_loss",
    "load_checkpoint",
    "log_perplexity_reward",
    "num_actions",
    "save_checkpoint",
    "state_from_storage",
    "storage_groups",
    "train_with_agent",
    "warn_if_ties_lost",
]
