"""Exhaustive sweeps: every input of an 8/16-bit format, implementation vs the NumPy oracle.

::

    python -m revcheck.sweep --op pam_mul --format bf16 [--mode ieee|ftz] [--impl torch|triton]
                             [--shard I/N] [--state-dir DIR] [--chunk-bits B] [--limit-chunks C]
                             [--workers W] [--device cpu|cuda] [--quiet]

A binary operation is checked on all ``2**(2w)`` ordered pairs of ``w``-bit
patterns (65 536 for fp8, 4 294 967 296 for bf16/fp16), a unary one on all
``2**w`` patterns.  The flat input index ``i`` stands for the pair
``a = i >> w, b = i & (2**w - 1)`` (for a unary op, ``x = i``); chunk ``c`` holds
indices ``[c * 2**B, (c + 1) * 2**B)``, so a chunk of ``2**B >= 2**w`` pairs is a
block of consecutive ``a`` values against every ``b``.  A result matches when the
bit patterns are equal or both are NaN (NaNs are one class).

Sharding: shard ``I/N`` takes the chunks ``c`` with ``c % N == I``, so the ``N``
shards together cover every chunk exactly once.  Each finished chunk is recorded
(atomically) in a JSON state file under ``--state-dir``; re-running resumes, and
chunks recorded by any shard of the same sweep (same op, format, mode, impl and
chunk size) are skipped.  Chunks run in ``--workers`` processes (default: one per
CPU), each single-threaded.

Exit status: 0 every checked input matched, 1 some did not, 2 bad usage.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn, TextIO

import numpy as np
import numpy.typing as npt

from revcheck import formats
from revcheck.bits import describe, is_nan
from revcheck.formats import FloatFormat

__all__ = [
    "IMPLS",
    "MODES",
    "OPS",
    "ChunkResult",
    "SweepConfig",
    "SweepResult",
    "Throughput",
    "UsageError",
    "chunk_inputs",
    "default_chunk_bits",
    "main",
    "parse_args",
    "run_order",
    "run_sweep",
    "shard_chunks",
    "throughput",
    "total_chunks",
]

#: Operation name -> number of operands.
OPS: dict[str, int] = {"pam_mul": 2, "pam_div": 2, "pam_mul_grad": 2, "pa_log2": 1, "pa_exp2": 1}
IMPLS = ("torch", "triton")
MODES = ("ieee", "ftz")
MAX_EXHAUSTIVE_WIDTH = 16
DEFAULT_CHUNK_BITS = 20
MAX_EXAMPLES_PER_CHUNK = 5
SUMMARY_EXAMPLES = 5


class UsageError(ValueError):
    """A sweep asked for something that cannot be run; the message says what to use instead."""


@dataclass(frozen=True)
class SweepConfig:
    """What to sweep and how; :func:`parse_args` builds one from the command line."""

    op: str
    format: str
    mode: str = "ieee"
    impl: str = "torch"
    shard: int = 0
    num_shards: int = 1
    state_dir: Path | None = None
    chunk_bits: int | None = None
    limit_chunks: int | None = None
    workers: int = 0  # 0: one per CPU
    device: str = "cpu"
    quiet: bool = False

    @property
    def fmt(self) -> FloatFormat:
        return formats.get(self.format)

    @property
    def arity(self) -> int:
        return OPS[self.op]

    @property
    def input_bits(self) -> int:
        """log2 of the number of inputs of the whole sweep."""
        return self.arity * self.fmt.width

    @property
    def bits_per_chunk(self) -> int:
        return default_chunk_bits(self.op, self.fmt) if self.chunk_bits is None else self.chunk_bits

    @property
    def key(self) -> str:
        """Identifies the sweep (not the shard): state files with the same key share progress."""
        return f"{self.op}-{self.fmt.name}-{self.mode}-{self.impl}-chunk{self.bits_per_chunk}"


@dataclass
class ChunkResult:
    """Outcome of one chunk: inputs checked, mismatches, and the first few counterexamples."""

    chunk: int
    inputs: int
    mismatches: int
    # Each example: operand patterns..., implementation's result, oracle's result (Python ints).
    examples: list[list[int]] = field(default_factory=list)
    seconds: float = 0.0
    cpu_seconds: float = 0.0


@dataclass
class SweepResult:
    """Summary of one run of one shard (chunks resumed from the state file included)."""

    config: SweepConfig
    chunks_in_shard: int
    chunks_done: int
    chunks_run_now: int
    inputs_checked: int
    inputs_run_now: int
    mismatches: int
    examples: list[list[int]]
    seconds: float

    @property
    def rate(self) -> float:
        """Inputs per second checked by this run (0 when nothing ran)."""
        return self.inputs_run_now / self.seconds if self.seconds > 0 else 0.0

    @property
    def complete(self) -> bool:
        return self.chunks_done == self.chunks_in_shard


# ---- chunks and shards -------------------------------------------------------------------


def default_chunk_bits(op: str, fmt: FloatFormat) -> int:
    """2**20 inputs per chunk (temporaries stay small enough to be fast), or the whole sweep."""
    return min(OPS[op] * fmt.width, DEFAULT_CHUNK_BITS)


def total_chunks(config: SweepConfig) -> int:
    """How many chunks the whole sweep (all shards) has."""
    return 1 << (config.input_bits - config.bits_per_chunk)


def shard_chunks(n_chunks: int, shard: int, num_shards: int) -> range:
    """Chunk ids of shard ``shard`` of ``num_shards``: every ``num_shards``-th chunk from ``shard``."""
    if not 0 <= shard < num_shards:
        raise UsageError(f"shard {shard}/{num_shards} does not exist; use I/N with 0 <= I < N")
    return range(shard, n_chunks, num_shards)


def _bit_reversed(value: int, bits: int) -> int:
    return int(format(value, f"0{bits}b")[::-1], 2) if bits else 0


def run_order(chunks: range, n_chunks: int) -> list[int]:
    """The order a shard runs its chunks in: by bit-reversed chunk id.

    Any prefix is then spread evenly over the input space, so ``--limit-chunks``
    measures a representative sample (not, say, only the subnormal ``a`` values).
    """
    bits = max(n_chunks - 1, 0).bit_length()
    return sorted(chunks, key=lambda c: _bit_reversed(c, bits))


def chunk_inputs(config: SweepConfig, chunk: int) -> list[npt.NDArray[Any]]:
    """Operand bit patterns of one chunk: one uint array per operand, in flat-index order."""
    fmt = config.fmt
    size = 1 << config.bits_per_chunk
    flat: npt.NDArray[np.int64] = np.arange(chunk * size, (chunk + 1) * size, dtype=np.int64)
    if config.arity == 1:
        return [flat.astype(fmt.uint_dtype)]
    a = (flat >> fmt.width).astype(fmt.uint_dtype)
    b = (flat & ((1 << fmt.width) - 1)).astype(fmt.uint_dtype)
    return [a, b]


# ---- checking one chunk -------------------------------------------------------------------


def _implementation(config: SweepConfig) -> Callable[..., Any]:
    # Looked up at call time (not import time) so that tests can monkeypatch a kernel.
    if config.impl == "triton":
        from revcheck.kernels import triton_pam as module
    else:
        from revcheck.kernels import pam as module  # type: ignore[no-redef]
    return getattr(module, config.op)  # type: ignore[no-any-return]


def _oracle(config: SweepConfig) -> Callable[..., Any]:
    from revcheck.oracle import pam as oracle

    return getattr(oracle, config.op)  # type: ignore[no-any-return]


def check_chunk(config: SweepConfig, chunk: int) -> ChunkResult:
    """Run the implementation and the oracle on every input of ``chunk`` and compare bit patterns."""
    from revcheck.bits import to_bits, to_torch

    start, cpu_start = time.perf_counter(), time.process_time()
    fmt = config.fmt
    operands = chunk_inputs(config, chunk)
    expected = np.asarray(_oracle(config)(*operands, fmt, mode=config.mode))
    tensors = [to_torch(x, fmt, device=config.device) for x in operands]
    got = to_bits(_implementation(config)(*tensors, mode=config.mode))
    if expected.dtype != fmt.uint_dtype or got.dtype != fmt.uint_dtype:
        raise TypeError(
            f"{config.op} on {fmt.name} should give {fmt.uint_dtype} patterns; oracle gave "
            f"{expected.dtype}, {config.impl} gave {got.dtype}"
        )
    bad = (got != expected) & ~(is_nan(got, fmt) & is_nan(expected, fmt))
    bad_at = np.flatnonzero(bad)
    examples = [
        [*(int(x[i]) for x in operands), int(got[i]), int(expected[i])]
        for i in bad_at[:MAX_EXAMPLES_PER_CHUNK]
    ]
    return ChunkResult(
        chunk,
        int(expected.size),
        int(bad_at.size),
        examples,
        time.perf_counter() - start,
        time.process_time() - cpu_start,
    )


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)


def _check_chunk_job(job: tuple[SweepConfig, int]) -> ChunkResult:
    return check_chunk(*job)


# ---- state file --------------------------------------------------------------------------------


def _state_path(config: SweepConfig) -> Path | None:
    if config.state_dir is None:
        return None
    return config.state_dir / f"{config.key}-shard{config.shard}of{config.num_shards}.json"


def _load_done(config: SweepConfig) -> dict[int, ChunkResult]:
    """Chunks recorded by any shard of this sweep under ``state_dir``."""
    done: dict[int, ChunkResult] = {}
    if config.state_dir is None or not config.state_dir.exists():
        return done
    for path in sorted(config.state_dir.glob(f"{config.key}-shard*.json")):
        try:
            state = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise UsageError(f"state file {path} is unreadable ({error}); delete it to start over") from error
        for record in state.get("chunks", []):
            result = ChunkResult(**record)
            done[result.chunk] = result
    return done


def _save(config: SweepConfig, results: Iterable[ChunkResult]) -> None:
    path = _state_path(config)
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        "sweep": config.key,
        "shard": f"{config.shard}/{config.num_shards}",
        "chunks": [vars(r) for r in sorted(results, key=lambda r: r.chunk)],
    }
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(state))
    os.replace(temporary, path)  # atomic: an interrupted run never leaves half a state file


# ---- progress ------------------------------------------------------------------------------------


class _Progress:
    """Rate and ETA on stderr: redrawn in place on a terminal, a line every 30 s otherwise."""

    def __init__(self, stream: TextIO, total_inputs: int, enabled: bool, noun: str) -> None:
        self.stream = stream
        self.noun = noun
        self.total = total_inputs
        self.enabled = enabled
        self.interactive = stream.isatty()
        self.start = time.perf_counter()
        self.last = 0.0
        self.done = 0

    def update(self, inputs: int, chunks_done: int, chunks_total: int, *, final: bool = False) -> None:
        self.done += inputs
        now = time.perf_counter()
        interval = 0.5 if self.interactive else 30.0
        if not self.enabled or (not final and now - self.last < interval):
            return
        self.last = now
        elapsed = now - self.start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        remaining = (self.total - self.done) / rate if rate > 0 else float("inf")
        text = (
            f"chunk {chunks_done}/{chunks_total}  {self.done:,}/{self.total:,} {self.noun}  "
            f"{rate:,.0f} {self.noun}/s  elapsed {_duration(elapsed)}  ETA {_duration(remaining)}"
        )
        if self.interactive:
            self.stream.write("\r" + text + ("\n" if final else ""))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()


def _duration(seconds: float) -> str:
    if seconds == float("inf"):
        return "?"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


# ---- running a sweep ---------------------------------------------------------------------------


def _validate(config: SweepConfig) -> None:
    if config.op not in OPS:
        raise UsageError(f"unknown --op {config.op!r}; use one of {', '.join(OPS)}")
    try:
        fmt = config.fmt
    except formats.UnsupportedFormatError as error:
        raise UsageError(str(error)) from error
    if fmt.width > MAX_EXHAUSTIVE_WIDTH:
        small = [f.name for f in formats.FORMATS.values() if f.width <= MAX_EXHAUSTIVE_WIDTH]
        raise UsageError(
            f"--format {fmt.name} has {fmt.width}-bit patterns, too many to enumerate; use one of "
            f"{', '.join(small)} (or property tests for wider formats)"
        )
    if config.mode not in MODES:
        raise UsageError(f"unknown --mode {config.mode!r}; use one of {', '.join(MODES)}")
    if config.impl not in IMPLS:
        raise UsageError(f"unknown --impl {config.impl!r}; use one of {', '.join(IMPLS)}")
    shard_chunks(0, config.shard, config.num_shards)
    if config.chunk_bits is not None and not 1 <= config.chunk_bits <= config.input_bits:
        raise UsageError(
            f"--chunk-bits {config.chunk_bits} is out of range for {config.op} on {fmt.name}; "
            f"use 1..{config.input_bits}"
        )
    if config.limit_chunks is not None and config.limit_chunks < 1:
        raise UsageError(f"--limit-chunks {config.limit_chunks} must be at least 1")
    if config.workers < 0:
        raise UsageError(f"--workers {config.workers} must be >= 0 (0: one per CPU)")
    if config.impl == "triton":
        try:
            from revcheck.kernels import triton_pam
        except ImportError as error:
            raise UsageError(f"--impl triton is unavailable: {error}; use --impl torch") from error
        if not hasattr(triton_pam, config.op):
            raise UsageError(f"--impl triton has no {config.op}; use --impl torch")
        if config.device == "cpu" and not triton_pam.INTERPRETED:
            raise UsageError("--impl triton on the CPU needs TRITON_INTERPRET=1; use --device cuda or set it")


def _workers(config: SweepConfig, jobs: int) -> int:
    wanted = config.workers or os.cpu_count() or 1
    return max(1, min(wanted, jobs))


def _run_chunks(config: SweepConfig, todo: list[int]) -> Iterator[ChunkResult]:
    workers = _workers(config, len(todo))
    if workers == 1:
        for chunk in todo:
            yield check_chunk(config, chunk)
        return
    # spawn, not fork: a forked child can inherit a locked torch/OpenMP thread pool.
    context = multiprocessing.get_context("spawn")
    with context.Pool(workers, initializer=_init_worker) as pool:
        yield from pool.imap_unordered(_check_chunk_job, [(config, c) for c in todo])


@dataclass(frozen=True)
class Throughput:
    """Sweep speed: wall-clock inputs/s with ``workers`` processes, and inputs per CPU-second."""

    wall_rate: float
    cpu_rate: float
    workers: int

    def projected_seconds(self, inputs: int, cores: int | None = None) -> float:
        """Time for ``inputs`` at the measured wall rate, or on ``cores`` otherwise idle cores."""
        if cores is None:
            return inputs / self.wall_rate
        return inputs / (self.cpu_rate * cores)


def throughput(config: SweepConfig, n_chunks: int) -> Throughput:
    """Steady-state speed of ``config``'s sweep over ``n_chunks`` chunks spread over the space.

    Worker start-up and a warm-up chunk per worker are excluded, so the figure
    projects long sweeps (a full 2**32 one runs for minutes; start-up takes seconds).
    The CPU rate (inputs per CPU-second of the workers) does not depend on what else
    the machine is running.  Nothing is recorded in the state dir.
    """
    _validate(config)
    order = run_order(range(total_chunks(config)), total_chunks(config))
    workers = _workers(config, n_chunks)
    warm_up, timed = order[:workers], order[workers : workers + n_chunks]
    jobs = [(config, c) for c in timed]
    if workers == 1:
        _check_chunk_job((config, warm_up[0]))
        start = time.perf_counter()
        results = [_check_chunk_job(job) for job in jobs]
    else:
        context = multiprocessing.get_context("spawn")
        with context.Pool(workers, initializer=_init_worker) as pool:
            pool.map(_check_chunk_job, [(config, c) for c in warm_up], chunksize=1)
            start = time.perf_counter()
            results = list(pool.imap_unordered(_check_chunk_job, jobs))
    elapsed = time.perf_counter() - start
    inputs = sum(r.inputs for r in results)
    return Throughput(inputs / elapsed, inputs / sum(r.cpu_seconds for r in results), workers)


def run_sweep(config: SweepConfig, *, progress_stream: TextIO | None = None) -> SweepResult:
    """Check every chunk of ``config``'s shard not yet recorded in the state dir; return the summary.

    Raises :class:`UsageError` for a sweep that cannot run.
    """
    _validate(config)
    start = time.perf_counter()
    shard = shard_chunks(total_chunks(config), config.shard, config.num_shards)
    recorded = _load_done(config)
    mine = {c: recorded[c] for c in shard if c in recorded}
    todo = [c for c in run_order(shard, total_chunks(config)) if c not in recorded]
    if config.limit_chunks is not None:
        todo = todo[: config.limit_chunks]
    chunk_size = 1 << config.bits_per_chunk
    noun = "pairs" if config.arity == 2 else "inputs"
    progress = _Progress(progress_stream or sys.stderr, len(todo) * chunk_size, not config.quiet, noun)
    run_now = 0
    last_save = time.perf_counter()
    try:
        for result in _run_chunks(config, todo):
            mine[result.chunk] = result
            run_now += 1
            progress.update(result.inputs, len(mine), len(shard))
            if time.perf_counter() - last_save > 2.0 or run_now == len(todo):
                _save(config, mine.values())
                last_save = time.perf_counter()
    finally:
        _save(config, mine.values())
    if todo:
        progress.update(0, len(mine), len(shard), final=True)
    ordered = [mine[c] for c in sorted(mine)]
    return SweepResult(
        config=config,
        chunks_in_shard=len(shard),
        chunks_done=len(mine),
        chunks_run_now=run_now,
        inputs_checked=sum(r.inputs for r in ordered),
        inputs_run_now=run_now * chunk_size,
        mismatches=sum(r.mismatches for r in ordered),
        examples=[e for r in ordered for e in r.examples][:SUMMARY_EXAMPLES],
        seconds=time.perf_counter() - start,
    )


def format_summary(result: SweepResult) -> str:
    """Multi-line text summary of a sweep: counts, time, rate and the first counterexamples."""
    config = result.config
    fmt = config.fmt
    noun = "pairs" if config.arity == 2 else "inputs"
    lines = [
        f"sweep {config.op} {fmt.name} mode={config.mode} impl={config.impl} vs oracle, "
        f"shard {config.shard}/{config.num_shards}",
        f"  chunks: {result.chunks_done}/{result.chunks_in_shard} of this shard done "
        f"({result.chunks_run_now} now, chunk = 2^{config.bits_per_chunk} {noun})"
        + ("" if result.complete else "  INCOMPLETE: re-run to resume"),
        f"  {noun} checked: {result.inputs_checked:,} (of {1 << config.input_bits:,} in the whole sweep)",
        f"  mismatches: {result.mismatches:,}",
        f"  time: {result.seconds:.1f} s, {result.rate:,.0f} {noun}/s this run",
    ]
    for example in result.examples:
        *operands, got, expected = example
        names = ("a", "b") if config.arity == 2 else ("x",)
        args = ", ".join(f"{n}={describe(v, fmt)}" for n, v in zip(names, operands, strict=True))
        lines.append(
            f"  counterexample: {config.op}({args}): {config.impl} gave {describe(got, fmt)}, "
            f"oracle gives {describe(expected, fmt)}"
        )
    return "\n".join(lines)


# ---- command line --------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def _shard(text: str) -> tuple[int, int]:
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--shard {text!r} is not I/N (e.g. 0/4)") from None
    if not 0 <= index < count:
        raise argparse.ArgumentTypeError(f"--shard {text}: use I/N with 0 <= I < N")
    return index, count


def parse_args(argv: list[str] | None = None) -> SweepConfig:
    """The :class:`SweepConfig` of a command line; exits 2 with a one-line reason on bad usage."""
    small = [f.name for f in formats.FORMATS.values() if f.width <= MAX_EXHAUSTIVE_WIDTH]
    parser = _Parser(prog="python -m revcheck.sweep", description=__doc__.split("\n\n")[0])
    parser.add_argument("--op", required=True, choices=list(OPS))
    parser.add_argument("--format", required=True, choices=small)
    parser.add_argument("--mode", default="ieee", choices=MODES)
    parser.add_argument("--impl", default="torch", choices=IMPLS)
    parser.add_argument("--shard", type=_shard, default=(0, 1), metavar="I/N")
    parser.add_argument("--state-dir", type=Path, default=None, help="record finished chunks here; resume")
    parser.add_argument("--chunk-bits", type=int, default=None, help="log2 of inputs per chunk")
    parser.add_argument("--limit-chunks", type=int, default=None, help="run at most this many chunks now")
    parser.add_argument("--workers", type=int, default=0, help="processes (default: one per CPU)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--quiet", action="store_true", help="no progress display")
    args = parser.parse_args(argv)
    config = SweepConfig(
        op=args.op,
        format=args.format,
        mode=args.mode,
        impl=args.impl,
        shard=args.shard[0],
        num_shards=args.shard[1],
        state_dir=args.state_dir,
        chunk_bits=args.chunk_bits,
        limit_chunks=args.limit_chunks,
        workers=args.workers,
        device=args.device,
        quiet=args.quiet,
    )
    try:
        _validate(config)
    except UsageError as error:
        parser.error(str(error))
    return config


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (0 clean, 1 mismatches, 2 bad usage)."""
    config = parse_args(argv)
    try:
        result = run_sweep(config)
    except UsageError as error:
        print(f"python -m revcheck.sweep: error: {error}", file=sys.stderr)
        return 2
    print(format_summary(result))
    return 1 if result.mismatches else 0


if __name__ == "__main__":
    raise SystemExit(main())
