"""Sweeps on a Dask cluster (``dask.distributed``): ``--scheduler local`` or ``--scheduler tcp://HOST:PORT``.

``local`` starts a ``LocalCluster`` of ``--workers`` single-threaded worker processes
on this machine (default: one per CPU); an address connects to a running scheduler::

    dask scheduler                                   # on one machine: prints tcp://HOST:8786
    dask worker tcp://HOST:8786 --nthreads 1 --nworkers auto   # on every machine
    revcheck sweep --op pam_mul --format bf16 --scheduler tcp://HOST:8786 --state-dir sweeps

Every chunk is one Dask task whose argument is the chunk's index (the worker
enumerates the inputs itself) and whose result is its small
:class:`~revcheck.sweep.chunk.ChunkResult`.  The client -- the process that runs the
sweep -- writes each record to the state journal as the result arrives, so a
chunk finished on any worker is never checked again.  A worker that dies
mid-chunk loses only that chunk: the scheduler gives it to another worker (up to
Dask's ``distributed.scheduler.allowed-failures`` deaths per chunk, default 3), and
a job that raises is retried :data:`RETRIES` times before the sweep stops with the
error.  Progress is the client's.  Workers must run the same revcheck, torch and
NumPy versions as the client (checked before any chunk is sent).

Dask is optional (``pip install 'revcheck[dask]'``) and imported only here, only
when ``--scheduler`` is given.
"""

from __future__ import annotations

import logging
import os
import re
import uuid
from collections.abc import Iterator
from types import ModuleType, TracebackType
from typing import Any

from revcheck.errors import UsageError
from revcheck.sweep.chunk import ChunkResult
from revcheck.sweep.pool import Job, check_chunk_job

__all__ = ["RETRIES", "DaskCluster", "SweepWorkerError", "check_scheduler"]

#: Extra tries of a chunk whose job raised (a worker's death is handled by the scheduler, not counted here).
RETRIES = 2
INSTALL_HINT = "pip install 'revcheck[dask]'"
_ADDRESS = re.compile(r"(tcp|tls|ucx|ws|wss)://[^\s/]+")
# Seconds to wait for a remote scheduler's first worker.
WORKER_WAIT = 120.0


class SweepWorkerError(RuntimeError):
    """A chunk could not be checked on the cluster: its workers kept dying (finished chunks are recorded)."""


def _distributed() -> ModuleType:
    try:
        import distributed
    except ImportError as error:
        raise UsageError(
            f"--scheduler needs dask.distributed, which is not installed ({error}); {INSTALL_HINT}, "
            "or leave --scheduler out to run on local processes"
        ) from None
    return distributed


def check_scheduler(text: str) -> None:
    """Raise :class:`~revcheck.errors.UsageError` unless ``text`` is ``"local"`` or a scheduler address
    and dask.distributed is importable."""
    if text != "local" and not _ADDRESS.fullmatch(text):
        raise UsageError(
            f"--scheduler {text!r} is neither 'local' nor a scheduler address; use --scheduler local or "
            "--scheduler tcp://HOST:8786 (what `dask scheduler` prints)"
        )
    _distributed()


def _environment() -> dict[str, str]:
    """The versions a worker computes with (they must equal the client's)."""
    import numpy
    import torch

    import revcheck

    return {"revcheck": revcheck.__version__, "torch": torch.__version__, "numpy": numpy.__version__}


def _run_job(job: Job) -> ChunkResult:
    import torch

    # The sweep's parallelism is across chunks: one torch thread per task.
    torch.set_num_threads(1)
    return check_chunk_job(job)


class DaskCluster:
    """A Dask client (and, for ``"local"``, its ``LocalCluster``) as a sweep backend; a context manager."""

    def __init__(self, scheduler: str, *, workers: int = 0) -> None:
        check_scheduler(scheduler)
        self.scheduler = scheduler
        self.requested = workers
        self.workers = 0
        self.description = f"Dask scheduler {scheduler}"
        self._cluster: Any = None
        self._client: Any = None

    @property
    def client(self) -> Any:
        """The ``distributed.Client`` (while open)."""
        return self._client

    def __enter__(self) -> DaskCluster:
        distributed = _distributed()
        try:
            if self.scheduler == "local":
                count = self.requested or os.cpu_count() or 1
                self._cluster = distributed.LocalCluster(
                    n_workers=count,
                    threads_per_worker=1,
                    processes=True,
                    dashboard_address=None,
                    silence_logs=logging.ERROR,
                )
                self._client = distributed.Client(self._cluster)
                self.description = f"Dask LocalCluster, {count} worker processes"
            else:
                self._connect(distributed)
            self.workers = sum(self._client.nthreads().values())
            self._check_environment()
        except BaseException:
            self.close()
            raise
        return self

    def _connect(self, distributed: ModuleType) -> None:
        import dask

        # Dask's own setting (default 30 s): DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT=5s shortens it.
        timeout = dask.config.get("distributed.comm.timeouts.connect")
        try:
            self._client = distributed.Client(self.scheduler, timeout=timeout)
        except (OSError, TimeoutError) as error:
            raise UsageError(
                f"cannot reach the Dask scheduler at {self.scheduler} ({error}); start one with `dask "
                f"scheduler` and workers with `dask worker {self.scheduler} --nthreads 1`, or use "
                "--scheduler local"
            ) from None
        if not self._client.nthreads():
            try:
                self._client.wait_for_workers(1, timeout=WORKER_WAIT)
            except TimeoutError:
                raise UsageError(
                    f"the Dask scheduler at {self.scheduler} has no workers after {WORKER_WAIT:.0f} s; "
                    f"start some with `dask worker {self.scheduler} --nthreads 1`"
                ) from None
        self.description = f"Dask scheduler {self.scheduler}, {sum(self._client.nthreads().values())} threads"

    def _check_environment(self) -> None:
        here = _environment()
        for worker, there in self._client.run(_environment).items():
            if there != here:
                differs = ", ".join(
                    f"{k} {there.get(k)} (here {v})" for k, v in here.items() if there.get(k) != v
                )
                raise UsageError(
                    f"Dask worker {worker} computes with {differs}: its results would not check this "
                    "revcheck; install the same versions on every worker"
                )

    def run(self, jobs: list[Job]) -> Iterator[ChunkResult]:
        """Submit every job; yield results as they arrive (each released on the workers once fetched)."""
        distributed = _distributed()
        token = uuid.uuid4().hex[:8]
        keys = [f"revcheck-sweep-{config.key}-chunk{chunk}-{token}" for config, chunk, _ in jobs]
        futures = self._client.map(_run_job, jobs, key=keys, pure=False, retries=RETRIES)
        pending = set(futures)
        try:
            for future in distributed.as_completed(futures):
                pending.discard(future)
                if future.status == "error":
                    error = future.exception()
                    if isinstance(error, distributed.KilledWorker):
                        chunk = jobs[futures.index(future)][1]
                        raise SweepWorkerError(
                            f"chunk {chunk} was lost with every worker that ran it ({error}); the chunks "
                            "finished so far are recorded: look at the workers (memory? killed?) and run "
                            "the same command again to resume"
                        ) from None
                result: ChunkResult = future.result()  # raises a job's own error, with its traceback
                future.release()
                yield result
        finally:
            if pending:
                self._client.cancel(list(pending))

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        if self._cluster is not None:
            self._cluster.close()
            self._cluster = None

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()
