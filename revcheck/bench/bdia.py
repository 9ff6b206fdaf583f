"""BDIA memory and speed: what a residual stack keeps for backward, and what a step costs.

Three ways to train the same :class:`~revcheck.nn.transformer.TinyGPT` stack are compared
at depths 6, 12, 24 and 48: plain autograd, per-block ``torch.utils.checkpoint`` and the
reversible ``BDIAStack``.

Memory is measured, not computed: the stack's forward runs under
``torch.autograd.graph.saved_tensors_hooks`` and every tensor autograd packs is recorded by
its storage.  Each storage is counted once, with its full size (a saved view keeps its whole
storage alive).  Storages that already existed before the forward -- the parameters, buffers
and the stack's input -- are excluded by storage address, since they are live whatever the
stack keeps.  This counts what is packed for backward (which is what ``torch.utils.checkpoint``
and ``ctx.save_for_backward`` go through); on CUDA the allocator's peak during a whole training
step is reported as well.

Step time is forward plus backward of the whole model's loss; every ratio is measured in
interleaved rounds and printed with its spread (:mod:`revcheck.bench._harness`).  With one
intra-op thread (``OMP_NUM_THREADS=1`` or ``torch.set_num_threads(1)``) the clock is the
process's CPU time, which load from other processes does not inflate; a loaded machine
should be measured that way.  ``bdia-compiled`` is the reversible stack with
``BDIAStack(compiled=True)`` (its compilation is part of the warm-up, not of the timings).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from revcheck.bench._harness import (
    DEFAULT_PAIRS,
    QUICK_PAIRS,
    Row,
    interleaved,
    load_average,
    progress,
    ratio_rows,
)
from revcheck.nn.bdia import BDIAStack
from revcheck.nn.transformer import TinyGPT

TITLE = "BDIA memory and speed"

MEMORY_KINDS = ("plain", "checkpoint", "bdia")
TARGET_DEPTH = 24
TARGET_BDIA_FRACTION_OF_PLAIN = 1 / 20
TARGET_BITS_PER_ELEMENT_PER_BLOCK = 1.1  # 1 side bit plus at most 10% bookkeeping (γ signs, RNG state)
TARGET_STEP_TIME_RATIO = 1.4


@dataclass(frozen=True)
class BenchShape:
    """Model and batch sizes of one benchmark run."""

    d_model: int
    n_heads: int
    seq_len: int
    batch: int
    vocab: int
    depths: tuple[int, ...]
    timed_depths: tuple[int, ...]
    repeat: int
    min_time: float

    @property
    def activation_elements(self) -> int:
        """Elements of one residual-stream state (batch x time x d_model)."""
        return self.batch * self.seq_len * self.d_model


FULL = BenchShape(
    d_model=128,
    n_heads=4,
    seq_len=64,
    batch=8,
    vocab=64,
    depths=(6, 12, 24, 48),
    timed_depths=(24,),
    repeat=DEFAULT_PAIRS,  # interleaved rounds: the median ratio and its spread
    min_time=0.1,
)
QUICK = BenchShape(
    d_model=32,
    n_heads=2,
    seq_len=16,
    batch=2,
    vocab=16,
    depths=(6, 12, 24),
    timed_depths=(24,),
    repeat=QUICK_PAIRS,
    min_time=0.02,
)


@dataclass(frozen=True)
class SavedForBackward:
    """What autograd packed during one forward: unique storages and their total bytes."""

    nbytes: int
    storages: int


def _storage_key(tensor: Tensor) -> tuple[int, int] | None:
    try:
        storage = tensor.untyped_storage()
    except (RuntimeError, NotImplementedError):  # tensors without storage (e.g. some subclasses)
        return None
    if storage.nbytes() == 0:
        return None
    return storage.data_ptr(), storage.nbytes()


def saved_for_backward(forward: Callable[[], object], preexisting: Iterable[Tensor]) -> SavedForBackward:
    """Run ``forward()`` and measure the tensors autograd packs for backward.

    Storages of ``preexisting`` tensors (pass the parameters, buffers and inputs) are not
    counted.  The result of ``forward`` is dropped after the measurement.
    """
    excluded = {key[0] for t in preexisting if (key := _storage_key(t)) is not None}
    packed: dict[int, int] = {}

    def pack(tensor: Tensor) -> Tensor:
        key = _storage_key(tensor)
        if key is not None and key[0] not in excluded:
            packed[key[0]] = max(packed.get(key[0], 0), key[1])
        return tensor

    def unpack(tensor: Tensor) -> Tensor:
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, unpack):
        result = forward()
    del result
    return SavedForBackward(sum(packed.values()), len(packed))


def _model(shape: BenchShape, depth: int, stack: str, device: torch.device) -> TinyGPT:
    model = TinyGPT(shape.vocab, shape.d_model, shape.n_heads, depth, shape.seq_len, stack=stack, seed=0)
    return model.to(device).train()


def _batch(shape: BenchShape, device: torch.device) -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, shape.vocab, (shape.batch, shape.seq_len + 1), generator=generator)
    tokens = tokens.to(device)
    return tokens[:, :-1], tokens[:, 1:]


def stack_saved_bytes(model: TinyGPT, x: Tensor) -> SavedForBackward:
    """Bytes the model's residual stack packs for backward on input ``x`` (leaf, requires grad)."""
    preexisting = [*model.parameters(), *model.buffers(), x]
    return saved_for_backward(lambda: model.stack(x), preexisting)


def model_saved_bytes(model: TinyGPT, idx: Tensor, targets: Tensor) -> SavedForBackward:
    """Bytes the whole model (embeddings, stack, head, loss) packs for backward."""
    preexisting = [*model.parameters(), *model.buffers(), idx, targets]
    return saved_for_backward(lambda: model.loss(idx, targets), preexisting)


def training_step(model: nn.Module, idx: Tensor, targets: Tensor) -> Callable[[], None]:
    """A closure running forward and backward of the loss once (gradients are discarded)."""

    def step() -> None:
        model.zero_grad(set_to_none=True)
        model.loss(idx, targets).backward()  # type: ignore[operator]
        if idx.is_cuda:
            torch.cuda.synchronize()

    return step


def slope(xs: Iterable[float], ys: Iterable[float]) -> float:
    """Least-squares slope of ``ys`` against ``xs``."""
    xs, ys = list(xs), list(ys)
    mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
    covariance = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True))
    return covariance / sum((x - mean_x) ** 2 for x in xs)


def _kib(nbytes: float) -> str:
    return f"{nbytes / 1024:.1f} KiB"


def _cuda_peak_step(model: TinyGPT, idx: Tensor, targets: Tensor) -> int:
    step = training_step(model, idx, targets)
    step()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    baseline = torch.cuda.memory_allocated()
    step()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - baseline


def run(args: argparse.Namespace) -> list[Row]:
    """Measure saved-for-backward bytes per depth and step-time ratios; rows with targets."""
    shape = QUICK if getattr(args, "quick", False) else FULL
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    idx, targets = _batch(shape, device)
    elements = shape.activation_elements
    rows: list[Row] = [
        Row(
            "shape",
            f"d_model {shape.d_model}, {shape.n_heads} heads, seq {shape.seq_len}, "
            f"batch {shape.batch} ({elements} elements per state), {device.type}",
        ),
    ]

    saved: dict[str, dict[int, SavedForBackward]] = {kind: {} for kind in MEMORY_KINDS}
    for depth in progress(shape.depths, "BDIA saved-for-backward bytes"):
        for kind in MEMORY_KINDS:
            model = _model(shape, depth, kind, device)
            x = model.embed(idx).detach().requires_grad_(True)
            saved[kind][depth] = stack_saved_bytes(model, x)
        figures = ", ".join(
            f"{kind} {_kib(saved[kind][depth].nbytes)} ({saved[kind][depth].storages} storages)"
            for kind in MEMORY_KINDS
        )
        rows.append(Row(f"stack saved for backward, depth {depth}", figures))

    for kind in MEMORY_KINDS:
        bits = slope(shape.depths, [saved[kind][d].nbytes * 8 for d in shape.depths]) / elements
        is_bdia = kind == "bdia"
        rows.append(
            Row(
                f"growth with depth, {kind}",
                f"{bits:.3f} bits/element/block",
                f"<= {TARGET_BITS_PER_ELEMENT_PER_BLOCK:g}" if is_bdia else "",
                bits <= TARGET_BITS_PER_ELEMENT_PER_BLOCK if is_bdia else None,
            )
        )

    if TARGET_DEPTH in shape.depths:
        plain, ckpt, bdia = (saved[kind][TARGET_DEPTH].nbytes for kind in MEMORY_KINDS)
        fraction = bdia / plain
        rows.append(
            Row(
                f"depth {TARGET_DEPTH}: bdia / plain saved bytes",
                f"{fraction:.4f} (1/{plain / max(bdia, 1):.0f})",
                f"<= 1/{1 / TARGET_BDIA_FRACTION_OF_PLAIN:g}",
                fraction <= TARGET_BDIA_FRACTION_OF_PLAIN,
            )
        )
        rows.append(
            Row(
                f"depth {TARGET_DEPTH}: bdia / checkpoint saved bytes",
                f"{bdia / ckpt:.4f}",
                "< 1",
                bdia < ckpt,
            )
        )
        whole = {
            kind: model_saved_bytes(_model(shape, TARGET_DEPTH, kind, device), idx, targets)
            for kind in MEMORY_KINDS
        }
        rows.append(
            Row(
                f"whole model saved for backward, depth {TARGET_DEPTH}",
                ", ".join(f"{kind} {_kib(whole[kind].nbytes)}" for kind in MEMORY_KINDS),
            )
        )
        if device.type == "cuda":
            peaks = {
                kind: _cuda_peak_step(_model(shape, TARGET_DEPTH, kind, device), idx, targets)
                for kind in MEMORY_KINDS
            }
            rows.append(
                Row(
                    f"CUDA peak above baseline in a step, depth {TARGET_DEPTH}",
                    ", ".join(f"{kind} {_kib(peaks[kind])}" for kind in MEMORY_KINDS),
                )
            )

    for depth in shape.timed_depths:
        steps = {
            kind: training_step(_timed_model(shape, depth, kind, device), idx, targets)
            for kind in TIMED_KINDS
        }
        for step in progress(steps.values(), f"BDIA warm-up, depth {depth} (compiles bdia-compiled)"):
            step()  # a compiled candidate compiles on its first calls: untimed
        # CPU time with one intra-op thread (other processes' load does not inflate it), else wall time.
        single = torch.get_num_threads() == 1
        loads = [load_average()]
        samples = interleaved(
            steps,
            pairs=shape.repeat,
            min_time=shape.min_time,
            clock=time.process_time if single else time.perf_counter,
            desc=f"BDIA step, depth {depth}",
        )
        loads.append(load_average())
        plain_seconds = statistics.median(samples["plain"])
        clock = "CPU time" if single else "wall time"
        rows.append(Row(f"step time depth {depth}, plain ({clock})", f"{plain_seconds * 1e3:.1f} ms"))
        rows += ratio_rows(
            samples,
            "plain",
            {kind: f"step time depth {depth}, {kind} / plain" for kind in TIMED_KINDS[1:]},
            targets={"bdia": TARGET_STEP_TIME_RATIO, "bdia-compiled": TARGET_STEP_TIME_RATIO},
            loads=loads,
        )
    return rows


# "bdia-compiled": the reversible stack with BDIAStack(compiled=True) (torch.compile-fused code update).
TIMED_KINDS = ("plain", "checkpoint", "bdia-stored", "bdia", "bdia-compiled")


def _timed_model(shape: BenchShape, depth: int, kind: str, device: torch.device) -> TinyGPT:
    model = _model(shape, depth, "bdia" if kind == "bdia-compiled" else kind, device)
    if kind == "bdia-compiled":
        stack = model.stack
        assert isinstance(stack, BDIAStack)
        stack.compiled = True
    return model
