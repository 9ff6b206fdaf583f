"""Exhaustive sweeps: every input of an op in a small format, implementation vs the NumPy oracle.

::

    revcheck sweep --op pam_mul --format bf16 [--mode ieee|ftz] [--impl torch|triton]
                   [--shard I/N] [--state-dir DIR] [--chunk-bits B] [--limit-chunks C]
                   [--workers W] [--scheduler local|tcp://HOST:PORT] [--block-bits B]
                   [--device cpu|cuda] [--quiet]
    revcheck sweep campaign --state-dir DIR [--unary32] [--report FILE.md] [--estimate] ...

(``python -m revcheck.sweep ...`` is the same command.)  The ops are the
elementwise ops of the op registry (:func:`revcheck.audit.registry.sweepable`),
each with its bit-pattern oracle and revcheck's implementations of it.  A binary
operation is checked on all ``2**(2w)`` ordered pairs of ``w``-bit patterns
(65 536 for fp8, 4 294 967 296 for bf16/fp16), a unary one on all ``2**w``
patterns (up to fp32: 4 294 967 296), in the order and chunks of
:mod:`revcheck.enumeration`.  A result
matches when the bit patterns are equal or both are NaN (NaNs are one class:
:func:`revcheck.testing.compare_bits`).

Sharding: shard ``I/N`` takes the chunks ``c`` with ``c % N == I``, so the ``N``
shards together cover every chunk exactly once.  Each finished chunk is appended,
as its result arrives, to the shard's journal under ``--state-dir``; re-running
resumes, and chunks recorded by any shard of the same sweep (same op, format,
mode, impl and chunk size) are skipped.  Chunks run in ``--workers`` processes
(default: one per CPU), each single-threaded, or on a Dask cluster
(``--scheduler``: :mod:`~revcheck.sweep.cluster`).

Exit status: 0 every checked input matched, 1 some did not, 2 bad usage.

Layout: :mod:`~revcheck.sweep.config` (what to sweep, validated),
:mod:`~revcheck.sweep.chunk` (checking one chunk, block by block),
:mod:`~revcheck.sweep.state` (the journal), :mod:`~revcheck.sweep.pool` (where chunks
run: this process, worker processes), :mod:`~revcheck.sweep.cluster` (Dask),
:mod:`~revcheck.sweep.run` (running a shard, its tqdm progress, its summary),
:mod:`~revcheck.sweep.campaign` (every 2**32 sweep, with a report),
:mod:`~revcheck.sweep.throughput` (speed for the benchmarks), :mod:`~revcheck.sweep.cli`
(the command line).
"""

from revcheck.enumeration import run_order, shard_chunks
from revcheck.errors import UsageError
from revcheck.sweep.chunk import ChunkResult, Implementation, check_chunk
from revcheck.sweep.cli import main, parse_args
from revcheck.sweep.config import SweepConfig, chunk_inputs, default_chunk_bits, total_chunks, validate
from revcheck.sweep.run import SweepResult, format_summary, run_sweep
from revcheck.sweep.throughput import Throughput, throughput

__all__ = [
    "ChunkResult",
    "Implementation",
    "SweepConfig",
    "SweepResult",
    "Throughput",
    "UsageError",
    "check_chunk",
    "chunk_inputs",
    "default_chunk_bits",
    "format_summary",
    "main",
    "parse_args",
    "run_order",
    "run_sweep",
    "shard_chunks",
    "throughput",
    "total_chunks",
    "validate",
]
