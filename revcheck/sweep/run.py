"""Running one shard of a sweep (resuming from its journal), its progress, and the summary of the run."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import Any, TextIO

from revcheck import enumeration
from revcheck.bits import describe
from revcheck.sweep import state
from revcheck.sweep.chunk import Implementation
from revcheck.sweep.config import SweepConfig, total_chunks, validate
from revcheck.sweep.pool import Backend, jobs_for, open_backend

__all__ = [
    "SUMMARY_EXAMPLES",
    "SweepInterrupted",
    "SweepResult",
    "format_example",
    "format_summary",
    "run_sweep",
]

SUMMARY_EXAMPLES = 5


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


def run_sweep(
    config: SweepConfig,
    *,
    implementation: Implementation | None = None,
    backend: Backend | None = None,
    progress_stream: TextIO | None = None,
) -> SweepResult:
    """Check every chunk of ``config``'s shard not yet recorded in the state dir; return the summary.

    Parameters
    ----------
    config
        What to sweep; validated first.
    implementation
        The implementation under test, instead of the registry's ``config.impl`` (a test
        passes a planted bug here).  It must be picklable (a module-level function) when
        chunks run in other processes.  The records do not say which implementation made
        them: give a deliberately different one its own ``state_dir``.
    backend
        Where chunks run (:mod:`revcheck.sweep.pool`); None opens the one ``config`` asks
        for (``workers`` local processes, or ``scheduler``) and closes it afterwards.
    progress_stream
        Where the progress bar goes (default stderr; nothing with ``config.quiet``).

    Raises
    ------
    revcheck.errors.UsageError
        For a sweep that cannot run.
    SweepInterrupted
        On Ctrl-C, after every finished chunk was recorded.
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
    run_now = 0
    with state.Journal(config) as journal:
        progress = _progress_bar(config, len(mine), len(todo), progress_stream or sys.stderr)
        mismatches = sum(r.mismatches for r in mine.values())
        shown = mismatches > 0  # a resumed run has shown (and recorded) its first mismatch before
        try:
            if todo:
                with _backend(config, backend, len(todo)) as running:
                    progress.set_description(_description(config, running.description), refresh=False)
                    for result in running.run(jobs_for(config, todo, implementation)):
                        journal.append(result)
                        mine[result.chunk] = result
                        run_now += 1
                        progress.update(result.inputs)
                        mismatches += result.mismatches
                        progress.set_postfix_str(
                            f"chunks {len(mine)}/{len(shard)}, mismatches {mismatches:,}", refresh=False
                        )
                        if result.examples and not shown:
                            shown = True
                            progress.write(f"first mismatch: {format_example(config, result.examples[0])}")
        except KeyboardInterrupt:
            progress.close()  # before the message, so that it starts on a line of its own
            raise SweepInterrupted(config, len(mine), len(shard), run_now) from None
        finally:
            progress.close()
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


class _Borrowed:
    """A backend the caller opened (and will close): entered and left without closing it."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    def __enter__(self) -> Backend:
        return self.backend

    def __exit__(self, *exc: object) -> None:
        return None


def _backend(config: SweepConfig, backend: Backend | None, jobs: int) -> Any:
    return _Borrowed(backend) if backend is not None else open_backend(config, jobs)


def _description(config: SweepConfig, where: str) -> str:
    return f"{config.op} {config.fmt.name} {config.mode} {config.impl} ({where})"


def _progress_bar(config: SweepConfig, chunks_done: int, chunks_todo: int, stream: TextIO) -> Any:
    """A tqdm bar over this run's inputs: redrawn in place on a terminal, a line every 30 s otherwise."""
    from tqdm import tqdm

    chunk_size = 1 << config.bits_per_chunk
    interactive = stream.isatty()
    return tqdm(
        total=(chunks_done + chunks_todo) * chunk_size,
        initial=chunks_done * chunk_size,
        desc=_description(config, "starting workers"),
        unit=f" {config.noun}",
        unit_scale=True,
        file=stream,
        disable=config.quiet or not chunks_todo,
        mininterval=0.5 if interactive else 30.0,
        maxinterval=30.0,
        dynamic_ncols=interactive,
        smoothing=0.05,
    )


def format_example(config: SweepConfig, example: list[int]) -> str:
    """One counterexample as text: the call, the implementation's result and the oracle's."""
    fmt = config.fmt
    *operands, got, expected = example
    args = ", ".join(f"{n}={describe(v, fmt)}" for n, v in zip(config.spec.inputs, operands, strict=True))
    return (
        f"{config.op}({args}): {config.impl} gave {describe(got, fmt)}, "
        f"oracle gives {describe(expected, fmt)}"
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
    lines += [f"  counterexample: {format_example(config, example)}" for example in result.examples]
    return "\n".join(lines)
