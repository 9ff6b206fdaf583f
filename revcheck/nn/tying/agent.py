"""The Q-learning tying agent of arXiv 2401.12819, with its flaws fixed (docs/spec.md §5).

The agent is the public one's (``code/dqn_trainer.py``, as docs/spec.md §5 describes it):

* state ``s ∈ R^L`` with ``s_i = i`` (layer ``i`` independent) or ``s_i = j`` (tied to ``j``);
* one Q-network ``L → 128 → ReLU → L(L+1)/2``; layer ``i`` owns the slice of ``i + 1``
  outputs starting at ``i(i+1)/2``, action ``a`` of that slice meaning ``s_i = a`` (so the
  last, ``a = i``, is "independent");
* epsilon-greedy, epsilon from 1, times 0.95 per episode, floor 0.01;
* one TD update per decision towards ``r + 0.99 · max Q(s′)`` with an MSE loss.

What is fixed, each declared in docs/spec.md §5:

* **the reward** (fact d): :func:`log_perplexity_reward`, the *decrease* of validation
  log-perplexity (mean cross-entropy in nats) over the decision; positive when perplexity
  fell (the metric is "lower is better"), unbounded, never clipped.  The public reward,
  ``clip(−perplexity, −10, 10)``, is :func:`clipped_perplexity_reward`, kept to show that it is
  constant (−10) for every perplexity ≥ 10;
* **held-out text**: the training loop (:mod:`revcheck.nn.tying.train`) computes the reward
  on validation batches the language model never trains on;
* **the initial state** (fact c): the state is read from the weights (:meth:`TyingController.state`,
  :func:`state_from_storage`), never initialised to "every layer copies layer 0".

The max in the TD target runs over the slice of the layer decided next (``i + 1``, and layer 1
after the last), i.e. over the actions available in ``s′``.  Layer 0's one-output slice exists
(for the public output count ``L(L+1)/2``) and is never selected, never in a TD target and so
never trained (D5.6).  All randomness (network initialisation, exploration) comes from torch's
global RNG unless a ``generator`` is given: ``torch.manual_seed`` makes a run reproducible.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from revcheck.nn.tying.controller import TyingError

__all__ = [
    "REWARDS",
    "TyingAgent",
    "action_offset",
    "clipped_perplexity_reward",
    "log_perplexity_reward",
    "num_actions",
]


def log_perplexity_reward(val_loss_before: float, val_loss_after: float) -> float:
    """The decrease of validation log-perplexity (nats): ``before − after``; positive when it improved.

    ``val_loss`` is the mean next-token cross-entropy, i.e. log-perplexity, whose direction is
    "lower is better"; the reward is therefore its decrease.  It does not saturate.

    >>> log_perplexity_reward(4.0, 3.5), log_perplexity_reward(3.5, 4.0)
    (0.5, -0.5)
    """
    return float(val_loss_before) - float(val_loss_after)


def clipped_perplexity_reward(val_loss_before: float, val_loss_after: float) -> float:
    """The public code's reward, for comparison: ``clip(−perplexity_after, −10, 10)``.

    Constant (−10) whenever the perplexity is at least 10, i.e. for every validation loss
    ``≥ ln 10 ≈ 2.303`` nats -- all of the reported language-model training (docs/spec.md §5,
    fact d).  Do not train with it.

    >>> clipped_perplexity_reward(5.0, 4.0), clipped_perplexity_reward(5.0, 3.0)
    (-10.0, -10.0)
    """
    del val_loss_before
    return float(min(10.0, max(-10.0, -math.exp(float(val_loss_after)))))


REWARDS = {"log_perplexity": log_perplexity_reward, "clipped_perplexity": clipped_perplexity_reward}


def num_actions(num_layers: int) -> int:
    """``L(L+1)/2``: the Q-network's outputs (a slice of ``i + 1`` per layer ``i``)."""
    return num_layers * (num_layers + 1) // 2


def action_offset(layer: int) -> int:
    """Index of the first output of layer ``layer``'s slice: ``i(i+1)/2``."""
    return layer * (layer + 1) // 2


class TyingAgent:
    """Epsilon-greedy Q-learning over tie decisions, one slice of actions per layer.

    Parameters
    ----------
    num_layers
        ``L``, the depth of the stack (at least 2).
    hidden, gamma, epsilon, epsilon_decay, epsilon_min, lr
        Hidden width (128), discount (0.99), initial epsilon (1), factor per episode (0.95),
        floor (0.01), Adam learning rate of the Q-network (1e-3).
    generator
        Random source for exploration; ``None`` uses torch's global RNG.

    Examples
    --------
    >>> _ = torch.manual_seed(0)
    >>> agent = TyingAgent(4)
    >>> agent.q_values([0, 1, 2, 3]).shape          # L(L+1)/2 = 10 outputs
    torch.Size([10])
    >>> 0 <= agent.act([0, 1, 2, 3], layer=2) <= 2  # s_2 in {0, 1} (tie) or 2 (independent)
    True
    """

    def __init__(
        self,
        num_layers: int,
        *,
        hidden: int = 128,
        gamma: float = 0.99,
        epsilon: float = 1.0,
        epsilon_decay: float = 0.95,
        epsilon_min: float = 0.01,
        lr: float = 1e-3,
        generator: torch.Generator | None = None,
    ) -> None:
        if not isinstance(num_layers, int) or num_layers < 2:
            raise TyingError(
                f"num_layers={num_layers!r}: a stack needs at least 2 layers for a tie decision; "
                "use depth >= 2"
            )
        if hidden < 1 or not 0.0 <= gamma <= 1.0:
            raise TyingError(f"hidden={hidden}, gamma={gamma}: use hidden >= 1 and 0 <= gamma <= 1")
        if not (0.0 <= epsilon_min <= epsilon <= 1.0 and 0.0 < epsilon_decay <= 1.0):
            raise TyingError(
                f"epsilon={epsilon}, epsilon_decay={epsilon_decay}, epsilon_min={epsilon_min}: "
                "use 0 <= epsilon_min <= epsilon <= 1 and 0 < epsilon_decay <= 1"
            )
        self.num_layers = num_layers
        self.gamma = gamma
        self.epsilon = epsilon
        self.epsilon_decay = epsilon_decay
        self.epsilon_min = epsilon_min
        self.generator = generator
        self.q_network = nn.Sequential(
            nn.Linear(num_layers, hidden), nn.ReLU(), nn.Linear(hidden, num_actions(num_layers))
        )
        self.optimizer = torch.optim.Adam(self.q_network.parameters(), lr=lr)
        self.updates = 0

    def action_slice(self, layer: int) -> slice:
        """The outputs of layer ``layer``'s actions: ``i + 1`` of them, the last meaning independent."""
        self._check_layer(layer, allow_zero=True)
        start = action_offset(layer)
        return slice(start, start + layer + 1)

    def _state_tensor(self, state: Sequence[int]) -> torch.Tensor:
        if len(state) != self.num_layers:
            raise TyingError(f"state has {len(state)} entries; the agent has {self.num_layers} layers")
        return torch.tensor([float(s) for s in state])

    def _check_layer(self, layer: int, *, allow_zero: bool = False) -> None:
        low = 0 if allow_zero else 1
        if not isinstance(layer, int) or not low <= layer < self.num_layers:
            raise TyingError(
                f"layer={layer!r}: decisions are made for layers {low}..{self.num_layers - 1} "
                "(layer 0 is never tied)"
            )

    @torch.no_grad()
    def q_values(self, state: Sequence[int]) -> torch.Tensor:
        """All ``L(L+1)/2`` Q-values of ``state``."""
        return self.q_network(self._state_tensor(state))

    def act(self, state: Sequence[int], layer: int) -> int:
        """Epsilon-greedy action for ``layer`` in ``state``: the new ``s_layer`` (``layer`` = independent)."""
        self._check_layer(layer)
        explore = torch.rand((), generator=self.generator).item() < self.epsilon
        if explore:
            return int(torch.randint(layer + 1, (), generator=self.generator).item())
        return int(self.q_values(state)[self.action_slice(layer)].argmax().item())

    def td_update(
        self,
        state: Sequence[int],
        layer: int,
        action: int,
        reward: float,
        next_state: Sequence[int],
        next_layer: int,
    ) -> float:
        """One TD step: MSE between ``Q(s)[layer, action]`` and ``r + γ max_a′ Q(s′)[next_layer, a′]``."""
        self._check_layer(layer)
        self._check_layer(next_layer)
        if not 0 <= action <= layer:
            raise TyingError(f"action={action} for layer {layer}: use 0..{layer}")
        if not math.isfinite(reward):
            raise TyingError(f"reward={reward} is not finite; a reward must be a finite number")
        with torch.no_grad():
            best_next = self.q_network(self._state_tensor(next_state))[self.action_slice(next_layer)].max()
            target = reward + self.gamma * best_next
        predicted = self.q_network(self._state_tensor(state))[action_offset(layer) + action]
        loss = F.mse_loss(predicted, target)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.updates += 1
        return float(loss.item())

    def end_episode(self) -> float:
        """Decay epsilon (``× epsilon_decay``, floor ``epsilon_min``); return the new value."""
        self.epsilon = max(self.epsilon_min, self.epsilon * self.epsilon_decay)
        return self.epsilon

    def initial_state(self) -> list[int]:
        """The state of an untied stack: every layer independent (``s_i = i``), as its weights are."""
        return list(range(self.num_layers))
