"""Skip Cross-head Transformer-XL: is there really "no additional memory", and what does a step cost?

One training step (forward and backward of the loss on one segment, memories full from a warm-up
segment) of :class:`~revcheck.nn.memxl.MemTransformerXL` is measured in five variants: plain,
skip-retain, cross-head with the paper's ``ch_prob = 0.1``, cross-head with ``ch_prob = 1`` (every
attention call permutes: the worst case), and skip-retain with cross-head (0.1).

Memory is measured, not computed: the step's forward runs under
``torch.autograd.graph.saved_tensors_hooks`` and every storage autograd packs is counted once
(:func:`revcheck.bench.bdia.saved_for_backward`; parameters, inputs and the incoming memories
excluded).  Skip-retain draws which layers run, so its figure is over ``draws`` steps with different
random decisions (mean and min-max); the carried memories (``mem_len`` rows per layer) are the same
for every variant and reported once.  On CUDA the allocator's peak above the baseline in a step is
reported too; on the CPU there is no such counter.

Step time: the variants are timed in alternating rounds (each round runs every variant once, in
turn), ``repeat`` rounds; each ratio is the median of the per-round ratios to plain, with the min-max
spread of those ratios.
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from revcheck.bench._harness import DEFAULT_PAIRS, QUICK_PAIRS, Row, interleaved, load_average, ratio_rows
from revcheck.bench.bdia import saved_for_backward
from revcheck.nn.memxl import Memory, MemTransformerXL, skip_probabilities

TITLE = "Skip Cross-head Transformer-XL memory and speed"

VARIANTS: dict[str, tuple[bool, float]] = {
    "plain": (False, 0.0),
    "skip-retain": (True, 0.0),
    "cross-head 0.1": (False, 0.1),
    "cross-head 1.0": (False, 1.0),
    "skip-retain + cross-head 0.1": (True, 0.1),
}


@dataclass(frozen=True)
class BenchShape:
    """Model and batch sizes of one benchmark run."""

    n_layer: int
    d_model: int
    n_head: int
    segment: int
    mem_len: int
    batch: int
    vocab: int
    draws: int
    repeat: int
    loops: int


FULL = BenchShape(
    n_layer=12,
    d_model=128,
    n_head=4,
    segment=64,
    mem_len=64,
    batch=8,
    vocab=64,
    draws=12,
    repeat=DEFAULT_PAIRS,
    loops=2,
)
QUICK = BenchShape(
    n_layer=4,
    d_model=16,
    n_head=2,
    segment=8,
    mem_len=8,
    batch=2,
    vocab=16,
    draws=4,
    repeat=QUICK_PAIRS,
    loops=1,
)


def build(shape: BenchShape, skip_retain: bool, ch_prob: float, device: torch.device) -> MemTransformerXL:
    """A model of ``shape``; the same parameters for every variant (seed 0)."""
    torch.manual_seed(0)
    model = MemTransformerXL(
        shape.vocab,
        shape.n_layer,
        shape.n_head,
        shape.d_model,
        mem_len=shape.mem_len,
        skip_retain=skip_retain,
        ch_prob=ch_prob,
    )
    return model.to(device).train()


def stream(shape: BenchShape, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """A warm-up segment, then the measured segment and its targets."""
    tokens = torch.randint(
        0, shape.vocab, (shape.batch, 2 * shape.segment + 1), generator=torch.Generator().manual_seed(1)
    )
    tokens = tokens.to(device)
    return (
        tokens[:, : shape.segment],
        tokens[:, shape.segment : 2 * shape.segment],
        tokens[:, shape.segment + 1 :],
    )


def warm_memory(model: MemTransformerXL, warm: Tensor) -> Memory:
    with torch.no_grad():
        return model(warm).mems


def step_saved_bytes(model: MemTransformerXL, mems: Memory, x: Tensor, y: Tensor) -> int:
    """Bytes one training step's forward packs for backward."""
    preexisting = [*model.parameters(), *model.buffers(), x, y, *(m.hidden for m in mems.layers)]
    return saved_for_backward(lambda: model.loss(x, y, mems)[0], preexisting).nbytes


def training_step(model: MemTransformerXL, mems: Memory, x: Tensor, y: Tensor) -> Callable[[], None]:
    def step() -> None:
        model.zero_grad(set_to_none=True)
        model.loss(x, y, mems)[0].backward()
        if x.is_cuda:
            torch.cuda.synchronize()

    return step


def _kib(nbytes: float) -> str:
    return f"{nbytes / 1024:.1f} KiB"


def _cuda_peak(step: Callable[[], None]) -> int:
    step()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    baseline = torch.cuda.memory_allocated()
    step()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - baseline


def run(args: argparse.Namespace) -> list[Row]:
    """Saved-for-backward bytes and step-time ratios of the five variants, one run."""
    shape = QUICK if getattr(args, "quick", False) else FULL
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    warm, x, y = stream(shape, device)
    rows = [
        Row(
            "shape",
            f"{shape.n_layer} layers, d_model {shape.d_model}, {shape.n_head} heads, "
            f"segment {shape.segment}, "
            f"mem_len {shape.mem_len}, batch {shape.batch}, {device.type}",
        )
    ]
    models = {name: build(shape, skip, ch, device) for name, (skip, ch) in VARIANTS.items()}
    memories = {name: warm_memory(model, warm) for name, model in models.items()}
    carried = sum(m.hidden.numel() * m.hidden.element_size() for m in memories["plain"].layers)
    rows.append(Row("carried memories (every variant)", _kib(carried)))

    saved: dict[str, list[int]] = {}
    for name, model in models.items():
        model.generator.manual_seed(123)
        draws = shape.draws if VARIANTS[name] != (False, 0.0) else 1
        saved[name] = [step_saved_bytes(model, memories[name], x, y) for _ in range(draws)]
    plain = saved["plain"][0]
    rows.append(Row("saved for backward per step, plain", _kib(plain)))
    kept = 1 - sum(skip_probabilities(shape.n_layer)) / shape.n_layer
    # Cross-head packs one int64 index of n_head entries per permuted attention call (index_select's
    # backward needs it): the only memory it may add, at most once per layer and step.
    index_bytes = 8 * shape.n_head * shape.n_layer
    for name in list(VARIANTS)[1:]:
        values = saved[name]
        skip, ch_prob = VARIANTS[name]
        allowance = index_bytes if ch_prob > 0 else 0
        ratios = [v / plain for v in values]
        expected = f", layers kept in expectation {kept:.3f}" if skip else ""
        rows.append(
            Row(
                f"saved for backward, {name} / plain",
                f"{statistics.fmean(ratios):.4f} mean over {len(values)} steps (min-max {min(ratios):.4f}-"
                f"{max(ratios):.4f}{expected}); largest step {max(values) - plain:+d} bytes",
                "<= plain" + (f" + {allowance} B (index)" if allowance else ""),
                max(values) <= plain + allowance,
            )
        )
    if device.type == "cuda":
        peaks = {name: _cuda_peak(training_step(m, memories[name], x, y)) for name, m in models.items()}
        rows.append(
            Row("CUDA peak above baseline in a step", ", ".join(f"{n} {_kib(p)}" for n, p in peaks.items()))
        )
    else:
        rows.append(
            Row("peak memory", "not measured: no CUDA (saved-for-backward bytes above are the CPU figure)")
        )

    steps = {name: training_step(model, memories[name], x, y) for name, model in models.items()}
    loads = [load_average()]
    samples = interleaved(steps, pairs=shape.repeat, loops=shape.loops, desc="memxl: step time")
    loads.append(load_average())
    base = samples["plain"]
    rows.append(
        Row(
            "step time, plain",
            f"{statistics.median(base) * 1e3:.1f} ms (min-max {min(base) * 1e3:.1f}-"
            f"{max(base) * 1e3:.1f}, {shape.repeat} rounds)",
        )
    )
    rows += ratio_rows(
        samples, "plain", {name: f"step time, {name} / plain" for name in list(VARIANTS)[1:]}, loads=loads
    )
    return rows
