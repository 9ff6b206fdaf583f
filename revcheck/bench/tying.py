"""Layer tying: what it saves, persistent state against activations, and what the agent does.

For a :class:`~revcheck.nn.transformer.TinyGPT` of depth ``L`` trained with AdamW, every
number of independent layers ``n`` (layer ``i ≥ n`` share-tied to layer ``i mod n``) is
measured in the same run with :func:`revcheck.audit.ops_tying.measure_training_step`:

* **persistent** bytes: parameters, gradients and AdamW state after one real step, every storage
  counted once (embeddings and head included: they are not tied);
* **activation** bytes: what the forward saves for backward (``saved_tensors_hooks``), the
  parameters and token ids excluded.

Ratios are against the untied model of the same run.  The same ``n`` with stopgrad ties shows
the small activation drop of frozen layers (docs/spec.md §5).  Step time (forward, backward,
AdamW step) of the untied and the fully tied model is timed interleaved and repeated
(median, min-max spread).  Last, the trainable-parameter count (per storage) at the end of
every episode of a short agent run on random tokens.
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable
from dataclasses import dataclass

import torch

from revcheck.audit.ops_tying import MemoryReport, count_parameters, measure_training_step
from revcheck.bench._harness import DEFAULT_PAIRS, QUICK_PAIRS, Row, interleaved, load_average, ratio_rows
from revcheck.nn.transformer import TinyGPT
from revcheck.nn.tying import TyingAgent, TyingController, heldout_loss, train_with_agent

TITLE = "Layer tying: persistent and activation memory, trainable parameters over agent episodes"


@dataclass(frozen=True)
class BenchShape:
    d_model: int
    n_heads: int
    seq_len: int
    batch: int
    vocab: int
    depth: int
    agent_depth: int
    episodes: int
    repeat: int
    min_time: float


FULL = BenchShape(128, 4, 64, 8, 64, depth=12, agent_depth=6, episodes=10, repeat=DEFAULT_PAIRS, min_time=0.1)
QUICK = BenchShape(32, 2, 16, 2, 16, depth=6, agent_depth=4, episodes=3, repeat=QUICK_PAIRS, min_time=0.02)


def independent_counts(depth: int) -> list[int]:
    """``L, L/2, L/4, ..., 2, 1`` (distinct, descending)."""
    counts = {depth, 1}
    n = depth
    while n > 1:
        n //= 2
        counts.add(max(n, 1))
    return sorted(counts, reverse=True)


def tied_model(shape: BenchShape, independent: int, mode: str) -> tuple[TinyGPT, torch.optim.Optimizer]:
    """A model whose layer ``i >= independent`` is tied to ``i % independent``, and its AdamW."""
    model = TinyGPT(shape.vocab, shape.d_model, shape.n_heads, shape.depth, shape.seq_len, seed=0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    tying = TyingController(model, optimizer=optimizer)
    for i in range(independent, shape.depth):
        tying.tie(i, i % independent, mode)
    return model, optimizer


def _batch(shape: BenchShape, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    tokens = torch.randint(
        0, shape.vocab, (shape.batch, shape.seq_len + 1), generator=torch.Generator().manual_seed(seed)
    )
    return tokens[:, :-1], tokens[:, 1:]


def measure(shape: BenchShape, independent: int, mode: str) -> MemoryReport:
    model, optimizer = tied_model(shape, independent, mode)
    idx, targets = _batch(shape)
    return measure_training_step(model, optimizer, lambda: model.loss(idx, targets), inputs=[idx, targets])


def _step(
    model: TinyGPT, optimizer: torch.optim.Optimizer, idx: torch.Tensor, targets: torch.Tensor
) -> Callable[[], None]:
    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        model.loss(idx, targets).backward()
        optimizer.step()

    return step


def agent_episodes(shape: BenchShape, seed: int = 0) -> list[int]:
    """Trainable parameters (per storage) of the whole model at the end of every episode."""
    torch.manual_seed(seed)
    model = TinyGPT(shape.vocab, shape.d_model, shape.n_heads, shape.agent_depth, shape.seq_len, seed=seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    tying = TyingController(model, optimizer=optimizer)
    agent = TyingAgent(shape.agent_depth)
    generator = torch.Generator().manual_seed(seed + 1)
    held_out = [_batch(shape, seed=100 + k) for k in range(2)]
    counts = [count_parameters(model, trainable=True)]

    def train_batch() -> tuple[torch.Tensor, torch.Tensor]:
        tokens = torch.randint(0, shape.vocab, (shape.batch, shape.seq_len + 1), generator=generator)
        return tokens[:, :-1], tokens[:, 1:]

    def record(decision: object) -> None:
        if getattr(decision, "layer", 0) == shape.agent_depth - 1:
            counts.append(count_parameters(model, trainable=True))

    train_with_agent(
        model,
        optimizer,
        tying,
        agent,
        train_batch=train_batch,
        val_loss=lambda: heldout_loss(model, held_out),
        episodes=shape.episodes,
        steps_per_action=2,
        mode="share",
        on_decision=record,
    )
    return counts


def _kib(nbytes: float) -> str:
    return f"{nbytes / 1024:.1f} KiB"


def run(args: argparse.Namespace) -> list[Row]:
    """Memory against the number of independent layers, step-time ratio, agent episodes."""
    shape = QUICK if getattr(args, "quick", False) else FULL
    rows = [
        Row(
            "shape",
            f"depth {shape.depth}, d_model {shape.d_model}, {shape.n_heads} heads, seq {shape.seq_len}, "
            f"batch {shape.batch}, vocab {shape.vocab}, AdamW, fp32, cpu",
        )
    ]
    untied = measure(shape, shape.depth, "share")
    untied_persistent, untied_activations = untied.persistent.total, untied.activation_bytes
    for n in independent_counts(shape.depth):
        report = untied if n == shape.depth else measure(shape, n, "share")
        p, a = report.persistent, report.activation_bytes
        both = (p.total + a) / (untied_persistent + untied_activations)
        rows.append(
            Row(
                f"share, {n:2d}/{shape.depth} independent",
                f"persistent {_kib(p.total)} ({p.total / untied_persistent:.3f} of untied; "
                f"params {_kib(p.parameter_bytes)}, grads {_kib(p.gradient_bytes)}, "
                f"AdamW {_kib(p.optimizer_state_bytes)}); "
                f"activations {_kib(a)} ({a / untied_activations:.3f}); both {both:.3f}",
            )
        )
    for n in (shape.depth // 2, 1):
        report = measure(shape, n, "stopgrad")
        p, a = report.persistent, report.activation_bytes
        rows.append(
            Row(
                f"stopgrad, {n:2d}/{shape.depth} independent",
                f"persistent {_kib(p.total)} ({p.total / untied_persistent:.3f}); "
                f"activations {_kib(a)} ({a / untied_activations:.3f})",
            )
        )
    fully = measure(shape, 1, "share")
    fully_both = fully.persistent.total + fully.activation_bytes
    rows.append(
        Row(
            "untied / fully tied (share)",
            f"persistent {untied_persistent / fully.persistent.total:.2f}x, activations "
            f"{untied_activations / fully.activation_bytes:.2f}x, persistent + activations "
            f"{(untied_persistent + untied_activations) / fully_both:.2f}x",
        )
    )

    idx, targets = _batch(shape)
    models = {"untied": tied_model(shape, shape.depth, "share"), "fully tied": tied_model(shape, 1, "share")}
    loads = [load_average()]
    samples = interleaved(
        {name: _step(m, o, idx, targets) for name, (m, o) in models.items()},
        pairs=shape.repeat,
        min_time=shape.min_time,
        desc="tying: step time",
    )
    loads.append(load_average())
    (row,) = ratio_rows(samples, "untied", {"fully tied": "step time, fully tied / untied"}, loads=loads)
    row.figure += f"; untied {1e3 * statistics.median(samples['untied']):.1f} ms"
    rows.append(row)
    counts = agent_episodes(shape)
    rows.append(
        Row(
            f"agent, depth {shape.agent_depth}: trainable parameters per episode",
            " -> ".join(str(c) for c in counts)
            + f" (start, then after each of {shape.episodes} episodes; share ties)",
        )
    )
    return rows
