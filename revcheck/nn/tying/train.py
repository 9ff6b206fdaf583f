"""Training a language model while the tying agent decides, every few steps, how layers are tied.

One *episode* sweeps layers ``1 … L−1`` (docs/spec.md §5).  For each layer: the agent picks
``s_i`` from the state the weights have now; the controller applies it; the model trains for
``steps_per_action`` optimizer steps; the reward is computed on held-out text (the validation
loss before the decision against the one after it and its training steps); one TD update.
After the sweep epsilon decays.

The validation loss after one decision is the "before" of the next, so each decision costs
one evaluation.  The reward therefore also credits the ``steps_per_action`` training steps,
which lower the loss whatever the action; it is the same for every action, so it shifts all
Q-values alike and does not change which action is best (D5.5).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from revcheck.nn.tying.agent import TyingAgent, log_perplexity_reward
from revcheck.nn.tying.controller import TyingController, TyingError, check_tie_mode
from revcheck.storage import count_elements

__all__ = ["Decision", "heldout_loss", "train_with_agent"]

Batch = tuple[Tensor, Tensor]


@dataclass(frozen=True)
class Decision:
    """One agent decision and what followed it."""

    episode: int
    layer: int
    action: int
    state: tuple[int, ...]  # after the action
    val_loss_before: float
    val_loss_after: float
    reward: float
    td_loss: float
    trainable_elements: int  # of the whole model, counted per storage
    epsilon: float  # used for this decision
    steps: int  # language-model steps so far


@torch.no_grad()
def heldout_loss(model: nn.Module, batches: Sequence[Batch]) -> float:
    """Mean ``model.loss`` over fixed held-out ``batches``, in eval mode (restored afterwards)."""
    if not batches:
        raise TyingError("no held-out batches; pass at least one (inputs, targets) pair of validation text")
    was_training = model.training
    model.eval()
    try:
        losses = [float(model.loss(x, y).item()) for x, y in batches]  # type: ignore[operator]
    finally:
        model.train(was_training)
    return sum(losses) / len(losses)


def _trainable_elements(model: nn.Module) -> int:
    return count_elements(p for p in model.parameters() if p.requires_grad)


def train_with_agent(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    controller: TyingController,
    agent: TyingAgent,
    *,
    train_batch: Callable[[], Batch],
    val_loss: Callable[[], float],
    episodes: int,
    steps_per_action: int,
    mode: str,
    reward: Callable[[float, float], float] = log_perplexity_reward,
    parameter_weight: float = 0.0,
    progress: bool = False,
    on_decision: Callable[[Decision], None] | None = None,
) -> list[Decision]:
    """Train ``model`` for ``episodes`` sweeps of agent decisions; return every decision.

    Parameters
    ----------
    model
        A language model with ``loss(inputs, targets)`` whose layers ``controller`` ties.
    optimizer
        Its optimizer; attached to ``controller`` here, so it stays consistent with the ties.
    train_batch
        Returns the next training batch ``(inputs, targets)``.
    val_loss
        Returns the loss on held-out text (e.g. ``lambda: heldout_loss(model, val_batches)``).
    mode
        The meaning of every tie the agent makes: ``"share"``, ``"copy"`` or ``"stopgrad"``.
    reward
        ``reward(val_loss_before, val_loss_after)``; the default is the decrease of
        log-perplexity.
    parameter_weight
        Adds ``parameter_weight × (trainable elements freed) / (trainable elements of an
        untied stack)`` to the reward (0 by default: the reward is the perplexity change only).

    Raises
    ------
    TyingError
        Bad sizes, or an agent for a different number of layers.
    """
    check_tie_mode(mode)
    if episodes < 1 or steps_per_action < 1:
        raise TyingError(
            f"episodes={episodes}, steps_per_action={steps_per_action}: use positive numbers, e.g. 10 and 4"
        )
    if agent.num_layers != controller.num_layers:
        raise TyingError(
            f"the agent decides for {agent.num_layers} layers, the controller has {controller.num_layers}; "
            "build TyingAgent(controller.num_layers)"
        )
    controller.attach_optimizer(optimizer)
    layer_elements = max(
        1, sum(p.numel() for i in range(controller.num_layers) for p in controller.parameters_of(i).values())
    )
    decisions: list[Decision] = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=episodes * (controller.num_layers - 1), desc="tying decisions", unit="decision")
    steps = 0
    before = val_loss()
    try:
        for episode in range(episodes):
            for layer in range(1, controller.num_layers):
                state = controller.state()
                epsilon = agent.epsilon
                action = agent.act(state, layer)
                trainable_before = _trainable_elements(model)
                next_state = list(state)
                next_state[layer] = action
                controller.apply_state(next_state, mode)
                for _ in range(steps_per_action):
                    optimizer.zero_grad(set_to_none=True)
                    model.loss(*train_batch()).backward()  # type: ignore[operator]
                    optimizer.step()
                    steps += 1
                after = val_loss()
                trainable = _trainable_elements(model)
                r = reward(before, after) + parameter_weight * (trainable_before - trainable) / layer_elements
                next_layer = layer + 1 if layer + 1 < controller.num_layers else 1
                td = agent.td_update(state, layer, action, r, controller.state(), next_layer)
                decision = Decision(
                    episode,
                    layer,
                    action,
                    tuple(controller.state()),
                    before,
                    after,
                    r,
                    td,
                    trainable,
                    epsilon,
                    steps,
                )
                decisions.append(decision)
                if on_decision is not None:
                    on_decision(decision)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(val=f"{after:.3f}", reward=f"{r:+.3f}", trainable=trainable)
                before = after
            agent.end_episode()
    finally:
        if bar is not None:
            bar.close()
    return decisions
