"""Running one shard of a sweep (resuming from its state file), and the summary of the run."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import TextIO

from revcheck import enumeration
from revcheck.bits import describe
from revcheck.sweep import state
from revcheck.sweep.config import SweepConfig, total_chunks, validate
from revcheck.sweep.pool import run_chunks
from revcheck.sweep.progress import Progress

__all__ = ["SUMMARY_EXAMPLES", "SweepInterrupted", "SweepResult", "format_summary", "run_sweep"]

SUMMARY_EXAMPLES = 5
# Seconds between state-file writes while chunks finish.
SAVE_INTERVAL = 2.0


class SweepInterrupted(KeyboardInterrupt):
    """Ctrl-C during :func:`run_sweep`, after the finished chunks were saved; ``str()`` says how to resume.

    A ``KeyboardInterrupt``, so code that does not know it still stops.
    """

    def __init__(self, config: SweepConfig, chunks_done: int, chunks_in_shard: int, run_now: int) -> None:
        self.config = config
        self.chunks_done = chunks_done
        self.chunks_in_shard = chunks_in_shard
        self.run_now = run_now
        path = state.state_path(config)
        if path is None:
            text = (
                f"interrupted after {run_now} chunk(s) of {chunks_in_shard}; nothing was recorded (no "
                "--state-dir): add --state-dir DIR to make the sweep resumable"
            )
        else:
            text = (
                f"interrupted: {chunks_done} of {chunks_in_shard} chunks of this shard are recorded in "
                f"{path} ({run_now} finished in this run); run the same command again to resume"
            )
        super().__init__(text)


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


def run_sweep(config: SweepConfig, *, progress_stream: TextIO | None = None) -> SweepResult:
    """Check every chunk of ``config``'s shard not yet recorded in the state dir; return the summary.

    Raises :class:`~revcheck.errors.UsageError` for a sweep that cannot run.
    """
    validate(config)
    start = time.perf_counter()
    n_total = total_chunks(config)
    shard = enumeration.shard_chunks(n_total, config.shard, config.num_shards)
    recorded = state.load_done(config)
    mine = {c: recorded[c] for c in shard if c in recorded}
    todo = [c for c in enumeration.run_order(shard, n_total) if c not in recorded]
    if config.limit_chunks is not None:
        todo = todo[: config.limit_chunks]
    chunk_size = 1 << config.bits_per_chunk
    progress = Progress(progress_stream or sys.stderr, len(todo) * chunk_size, not config.quiet, config.noun)
    run_now = 0
    last_save = time.perf_counter()
    try:
        for result in run_chunks(config, todo):
            mine[result.chunk] = result
            run_now += 1
            progress.update(result.inputs, len(mine), len(shard))
            if time.perf_counter() - last_save > SAVE_INTERVAL or run_now == len(todo):
                state.save(config, mine.values())
                last_save = time.perf_counter()
    except KeyboardInterrupt:
        state.save(config, mine.values())
        if not config.quiet:
            progress.stream.write("\n")
        raise SweepInterrupted(config, len(mine), len(shard), run_now) from None
    finally:
        state.save(config, mine.values())
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
    noun = config.noun
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
        args = ", ".join(f"{n}={describe(v, fmt)}" for n, v in zip(config.spec.inputs, operands, strict=True))
        lines.append(
            f"  counterexample: {config.op}({args}): {config.impl} gave {describe(got, fmt)}, "
            f"oracle gives {describe(expected, fmt)}"
        )
    return "\n".join(lines)
