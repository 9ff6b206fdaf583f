"""Sweep speed, for the benchmarks (``python -m revcheck.bench``) and the campaign's time estimate."""

from __future__ import annotations

import time
from dataclasses import dataclass

from revcheck import enumeration
from revcheck.sweep.chunk import check_chunk
from revcheck.sweep.config import SweepConfig, total_chunks, validate
from revcheck.sweep.pool import ProcessPool, check_chunk_job, jobs_for, worker_count

__all__ = ["STAGES", "Throughput", "sample_chunks", "stage_seconds", "throughput"]


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


def sample_chunks(config: SweepConfig, count: int) -> list[int]:
    """``count`` chunks spread evenly over the whole space (the prefix of the run order)."""
    n_total = total_chunks(config)
    return enumeration.run_order(range(n_total), n_total)[:count]


def throughput(config: SweepConfig, n_chunks: int) -> Throughput:
    """Steady-state speed of ``config``'s sweep over ``n_chunks`` chunks spread over the space.

    Worker start-up and a warm-up chunk per worker are excluded, so the figure
    projects long sweeps (a full 2**32 one runs for minutes; start-up takes seconds).
    The CPU rate (inputs per CPU-second of the workers) depends less on what else
    the machine is running.  Nothing is recorded in the state dir.
    """
    validate(config)
    workers = worker_count(config, n_chunks)
    order = sample_chunks(config, workers + n_chunks)
    warm_up, timed = order[:workers], order[workers:]
    if workers == 1:
        check_chunk(config, warm_up[0])
        start = time.perf_counter()
        results = [check_chunk_job(job) for job in jobs_for(config, timed, None)]
    else:
        pool = ProcessPool(workers)
        try:
            list(pool.run(jobs_for(config, warm_up, None)))
            start = time.perf_counter()
            results = list(pool.run(jobs_for(config, timed, None)))
        finally:
            pool.close()
    elapsed = time.perf_counter() - start
    inputs = sum(r.inputs for r in results)
    return Throughput(inputs / elapsed, inputs / sum(r.cpu_seconds for r in results), workers)


#: The stages of a chunk, in the order :func:`stage_seconds` reports them.
STAGES = ("enumeration", "oracle", "to torch", "implementation", "to bits", "comparison")


def stage_seconds(config: SweepConfig, chunks: list[int]) -> dict[str, float]:
    """CPU seconds of each stage of :func:`~revcheck.sweep.chunk.check_chunk` over ``chunks``.

    The same steps as ``check_chunk`` (blocks of ``config.bits_per_block``), timed one
    by one with ``time.process_time``, for the benchmarks' "where the time goes"; the
    result checks are left out (``check_chunk`` does them).  What travels between the
    client and a worker is a chunk index and a :class:`ChunkResult` (a few hundred
    bytes), so chunk transfer is not a stage here.
    """
    import numpy as np

    from revcheck.bits import to_bits, to_torch
    from revcheck.sweep.chunk import MAX_EXAMPLES_PER_CHUNK, _mismatches

    validate(config)
    fmt, spec, mode = config.fmt, config.spec, config.mode
    assert spec.bit_oracle is not None
    function = spec.implementation(config.impl)
    seconds = dict.fromkeys(STAGES, 0.0)
    clock = time.process_time
    for chunk in chunks:
        pieces = enumeration.blocks(fmt, config.arity, config.bits_per_chunk, chunk, config.bits_per_block)
        while True:
            marks = [clock()]
            try:
                _, operands = next(pieces)
            except StopIteration:
                break
            marks.append(clock())
            expected = np.asarray(spec.bit_oracle(*operands, fmt, mode=mode))
            marks.append(clock())
            tensors = [to_torch(x, fmt, device=config.device) for x in operands]
            marks.append(clock())
            result = function(*tensors, mode=mode)
            marks.append(clock())
            got = to_bits(result)
            marks.append(clock())
            _mismatches(got, expected, fmt, MAX_EXAMPLES_PER_CHUNK)
            marks.append(clock())
            for stage, start, end in zip(STAGES, marks[:-1], marks[1:], strict=True):
                seconds[stage] += end - start
    return seconds
