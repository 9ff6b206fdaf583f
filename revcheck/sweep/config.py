"""What to sweep and how: :class:`SweepConfig`, and :func:`validate` for a sweep that can run."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy.typing as npt

from revcheck import enumeration, formats
from revcheck.audit import registry
from revcheck.audit.arguments import check_device
from revcheck.audit.spec import OpSpec
from revcheck.cli import check_output_directory
from revcheck.errors import UsageError
from revcheck.formats import FloatFormat
from revcheck.modes import check_mode

__all__ = [
    "DEFAULT_BLOCK_BITS",
    "DEFAULT_CHUNK_BITS",
    "MAX_INPUT_BITS",
    "SweepConfig",
    "chunk_inputs",
    "default_chunk_bits",
    "small_formats",
    "total_chunks",
    "validate",
]

# Input spaces larger than 2**32 (binary ops on 32-bit formats) are too large to enumerate.
MAX_INPUT_BITS = 32
# 2**20 inputs per chunk: 4096 records for a 2**32 sweep, each a fraction of a second of work.
DEFAULT_CHUNK_BITS = 20
# 2**15 inputs per call of the oracle and the implementation: their int64 temporaries fit the caches
# (measured: about twice the rate of one call per 2**20 chunk; ``nox -s bench`` shows it).
DEFAULT_BLOCK_BITS = 15


@dataclass(frozen=True)
class SweepConfig:
    """What to sweep and how; :func:`revcheck.sweep.cli.parse_args` builds one from the command line."""

    op: str
    format: str
    mode: str = "ieee"
    impl: str = "torch"
    shard: int = 0
    num_shards: int = 1
    state_dir: Path | None = None
    chunk_bits: int | None = None
    limit_chunks: int | None = None
    workers: int = 0  # 0: one per CPU (with scheduler="local": that many Dask workers)
    device: str = "cpu"
    quiet: bool = False
    #: None: local processes; ``"local"``: a Dask LocalCluster; ``"tcp://HOST:PORT"``: a Dask scheduler.
    scheduler: str | None = None
    #: log2 of the inputs per call of the oracle and the implementation (None: DEFAULT_BLOCK_BITS).
    block_bits: int | None = None

    @property
    def spec(self) -> OpSpec:
        return registry.get(self.op)

    @property
    def fmt(self) -> FloatFormat:
        return formats.get(self.format)

    @property
    def arity(self) -> int:
        return self.spec.arity

    @property
    def input_bits(self) -> int:
        """log2 of the number of inputs of the whole sweep."""
        return enumeration.input_bits(self.fmt, self.arity)

    @property
    def bits_per_chunk(self) -> int:
        return default_chunk_bits(self.op, self.fmt) if self.chunk_bits is None else self.chunk_bits

    @property
    def bits_per_block(self) -> int:
        """log2 of the inputs per call (never more than a chunk)."""
        bits = DEFAULT_BLOCK_BITS if self.block_bits is None else self.block_bits
        return min(bits, self.bits_per_chunk)

    @property
    def noun(self) -> str:
        """What one input is called in progress and summary lines."""
        return "pairs" if self.arity == 2 else "inputs"

    @property
    def key(self) -> str:
        """Identifies the sweep (not the shard): state files with the same key share progress."""
        return f"{self.op}-{self.fmt.name}-{self.mode}-{self.impl}-chunk{self.bits_per_chunk}"


def default_chunk_bits(op: str, fmt: FloatFormat) -> int:
    """2**20 inputs per chunk, or the whole sweep when that is smaller."""
    return enumeration.chunk_bits_for(fmt, registry.get(op).arity, DEFAULT_CHUNK_BITS)


def total_chunks(config: SweepConfig) -> int:
    """How many chunks the whole sweep (all shards) has."""
    return enumeration.total_chunks(config.fmt, config.arity, config.bits_per_chunk)


def chunk_inputs(config: SweepConfig, chunk: int) -> list[npt.NDArray[Any]]:
    """Operand bit patterns of one chunk: one uint array per operand, in flat-index order."""
    return enumeration.chunk(config.fmt, config.arity, config.bits_per_chunk, chunk)


def small_formats() -> list[str]:
    """Names of the formats narrow enough to enumerate for some op (unary ops on up to 32-bit patterns)."""
    return [f.name for f in formats.FORMATS.values() if f.width <= MAX_INPUT_BITS]


def validate(config: SweepConfig) -> None:
    """Raise :class:`~revcheck.errors.UsageError` (saying what to use instead) if the sweep cannot run."""
    sweepable = registry.sweepable()
    if config.op not in sweepable:
        raise UsageError(f"unknown --op {config.op!r}; use one of {', '.join(sweepable)}")
    try:
        fmt = config.fmt
    except formats.UnsupportedFormatError as error:
        raise UsageError(str(error)) from error
    bits = enumeration.input_bits(fmt, config.spec.arity)
    if bits > MAX_INPUT_BITS:
        narrow = [
            name
            for name in small_formats()
            if enumeration.input_bits(name, config.spec.arity) <= MAX_INPUT_BITS
        ]
        raise UsageError(
            f"--op {config.op} on --format {fmt.name} has 2^{bits} inputs, too many to enumerate; use one "
            f"of {', '.join(narrow)} (or property tests for wider formats)"
        )
    try:
        check_mode(config.mode)
    except ValueError as error:
        raise UsageError(f"--mode: {error}") from None
    spec = config.spec
    if config.impl not in spec.implementations:
        raise UsageError(f"unknown --impl {config.impl!r}; use one of {', '.join(spec.implementations)}")
    enumeration.shard_chunks(0, config.shard, config.num_shards)
    if config.chunk_bits is not None and not 1 <= config.chunk_bits <= config.input_bits:
        raise UsageError(
            f"--chunk-bits {config.chunk_bits} is out of range for {config.op} on {fmt.name}; "
            f"use 1..{config.input_bits}"
        )
    if config.limit_chunks is not None and config.limit_chunks < 1:
        raise UsageError(f"--limit-chunks {config.limit_chunks} must be at least 1")
    if config.workers < 0:
        raise UsageError(f"--workers {config.workers} must be >= 0 (0: one per CPU)")
    if config.block_bits is not None and not 0 <= config.block_bits <= config.input_bits:
        raise UsageError(f"--block-bits {config.block_bits} is out of range; use 0..{config.input_bits}")
    if config.scheduler is not None:
        from revcheck.sweep import cluster

        cluster.check_scheduler(config.scheduler)
    if config.state_dir is not None:
        # Before any work: a state dir that cannot hold the records would lose every finished chunk.
        check_output_directory(config.state_dir, "--state-dir")
    check_device(config.device)
    try:
        spec.implementation(config.impl)
    except ImportError as error:
        raise UsageError(f"--impl {config.impl} is unavailable: {error}; use --impl torch") from error
    if config.impl == "triton" and config.device == "cpu":
        from revcheck.kernels import triton_pam

        if not triton_pam.INTERPRETED:
            raise UsageError("--impl triton on the CPU needs TRITON_INTERPRET=1; use --device cuda or set it")
