"""Where chunks run: in this process, in local worker processes (the default), or on a Dask cluster.

Every backend takes *jobs* -- ``(config, chunk, implementation)``, a few hundred
bytes each: a worker enumerates its chunk's inputs itself from the index
(:mod:`revcheck.enumeration`), so no input or output array ever travels -- and
yields :class:`~revcheck.sweep.chunk.ChunkResult` s in completion order.  Only the
process that runs the sweep records results (:class:`revcheck.sweep.state.Journal`).

:func:`open_backend` picks one from the sweep's configuration: ``scheduler=None``
gives :class:`ProcessPool` (``workers`` single-threaded processes, or :class:`InProcess`
for one), ``scheduler="local"`` or ``"tcp://HOST:PORT"`` gives
:class:`revcheck.sweep.cluster.DaskCluster`.  One backend can serve several sweeps
(the campaign runs all its sweeps through one).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
from collections.abc import Iterable, Iterator
from multiprocessing.pool import Pool
from typing import Protocol

from revcheck.sweep.chunk import ChunkResult, Implementation, check_chunk
from revcheck.sweep.config import SweepConfig

__all__ = [
    "Backend",
    "InProcess",
    "Job",
    "ProcessPool",
    "check_chunk_job",
    "jobs_for",
    "open_backend",
    "worker_count",
]

#: One chunk to check: the sweep, the chunk's index, the implementation under test (None: the registry's).
Job = tuple[SweepConfig, int, Implementation | None]


class Backend(Protocol):
    """Runs jobs and yields their results in completion order."""

    #: Processes (or Dask worker threads) checking chunks at once.
    workers: int
    #: One line for progress and reports: "2 processes", "Dask LocalCluster, 3 workers", ...
    description: str

    def run(self, jobs: list[Job]) -> Iterator[ChunkResult]: ...


def worker_count(config: SweepConfig, jobs: int) -> int:
    """Processes for ``jobs`` chunks: ``config.workers`` (0: one per CPU), never more than the jobs."""
    wanted = config.workers or os.cpu_count() or 1
    return max(1, min(wanted, jobs))


def _single_threaded() -> None:
    import torch

    # The sweep's parallelism is across chunks: one torch thread per worker, no oversubscription.
    torch.set_num_threads(1)


def _init_worker() -> None:
    # Ctrl-C reaches the whole process group: the parent records what finished and stops the pool;
    # workers ignore it, so that none prints a KeyboardInterrupt traceback of its own.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _single_threaded()


def check_chunk_job(job: Job) -> ChunkResult:
    """:func:`~revcheck.sweep.chunk.check_chunk` of one job (a module-level function: picklable)."""
    config, chunk, implementation = job
    return check_chunk(config, chunk, implementation)


class InProcess:
    """Every chunk in this process, one after the other."""

    workers = 1
    description = "1 process"

    def run(self, jobs: list[Job]) -> Iterator[ChunkResult]:
        for job in jobs:
            yield check_chunk_job(job)


class ProcessPool:
    """``workers`` single-threaded local processes (spawned once, on first use, and kept for every run)."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.description = f"{workers} processes"
        self._pool: Pool | None = None

    def run(self, jobs: list[Job]) -> Iterator[ChunkResult]:
        if self._pool is None:
            # spawn, not fork: a forked child can inherit a locked torch/OpenMP thread pool.
            self._pool = multiprocessing.get_context("spawn").Pool(self.workers, initializer=_init_worker)
        yield from self._pool.imap_unordered(check_chunk_job, jobs)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()
            self._pool = None


@contextlib.contextmanager
def open_backend(config: SweepConfig, jobs: int | None = None) -> Iterator[Backend]:
    """The backend ``config`` asks for, closed on exit; ``jobs`` (if known) caps the local processes."""
    if config.scheduler is not None:
        from revcheck.sweep.cluster import DaskCluster

        with DaskCluster(config.scheduler, workers=config.workers) as cluster:
            yield cluster
        return
    workers = worker_count(config, jobs if jobs is not None else 1 << 30)
    if workers == 1:
        # In this process the caller's torch threads are kept: a test or a notebook should not find
        # them changed.
        yield InProcess()
        return
    pool = ProcessPool(workers)
    try:
        yield pool
    finally:
        pool.close()


def jobs_for(config: SweepConfig, chunks: Iterable[int], implementation: Implementation | None) -> list[Job]:
    """The jobs of ``chunks``."""
    return [(config, chunk, implementation) for chunk in chunks]
