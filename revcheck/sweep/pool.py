"""Worker processes: chunks checked in ``--workers`` single-threaded processes (or in this one)."""

from __future__ import annotations

import multiprocessing
import os
import signal
from collections.abc import Iterator
from multiprocessing.pool import Pool

from revcheck.sweep.chunk import ChunkResult, check_chunk
from revcheck.sweep.config import SweepConfig

__all__ = ["run_chunks", "spawn_pool", "worker_count"]


def worker_count(config: SweepConfig, jobs: int) -> int:
    """Processes for ``jobs`` chunks: ``config.workers`` (0: one per CPU), never more than the jobs."""
    wanted = config.workers or os.cpu_count() or 1
    return max(1, min(wanted, jobs))


def _init_worker() -> None:
    import torch

    # Ctrl-C reaches the whole process group: the parent saves the state and stops the pool;
    # workers ignore it, so that none prints a KeyboardInterrupt traceback of its own.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(1)


def check_chunk_job(job: tuple[SweepConfig, int]) -> ChunkResult:
    """:func:`~revcheck.sweep.chunk.check_chunk` of one ``(config, chunk)`` job (picklable for a pool)."""
    return check_chunk(*job)


def spawn_pool(workers: int) -> Pool:
    """A pool of ``workers`` single-threaded processes."""
    # spawn, not fork: a forked child can inherit a locked torch/OpenMP thread pool.
    return multiprocessing.get_context("spawn").Pool(workers, initializer=_init_worker)


def run_chunks(config: SweepConfig, todo: list[int]) -> Iterator[ChunkResult]:
    """Check the chunks ``todo``; results come in completion order."""
    workers = worker_count(config, len(todo))
    if workers == 1:
        for chunk in todo:
            yield check_chunk(config, chunk)
        return
    with spawn_pool(workers) as pool:
        yield from pool.imap_unordered(check_chunk_job, [(config, c) for c in todo])
