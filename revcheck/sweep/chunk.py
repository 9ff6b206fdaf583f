"""Checking one chunk: the implementation and the oracle on every input of it, compared bit for bit."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from revcheck.bits import to_bits, to_torch
from revcheck.sweep.config import SweepConfig, chunk_inputs
from revcheck.testing import compare_bits

__all__ = ["MAX_EXAMPLES_PER_CHUNK", "ChunkResult", "check_chunk"]

MAX_EXAMPLES_PER_CHUNK = 5


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


def check_chunk(config: SweepConfig, chunk: int) -> ChunkResult:
    """Run the implementation and the oracle on every input of ``chunk`` and compare bit patterns."""
    start, cpu_start = time.perf_counter(), time.process_time()
    fmt, spec = config.fmt, config.spec
    assert spec.bit_oracle is not None, f"{config.op} is not sweepable"  # validate() checked it
    operands = chunk_inputs(config, chunk)
    expected = np.asarray(spec.bit_oracle(*operands, fmt, mode=config.mode))
    tensors = [to_torch(x, fmt, device=config.device) for x in operands]
    # Formats without a torch dtype travel as uint8 bit patterns, with fmt= (docs/spec.md D1.10).
    keywords = {"fmt": fmt.name} if fmt.torch_dtype_name is None else {}
    got = to_bits(spec.implementation(config.impl)(*tensors, mode=config.mode, **keywords), fmt)
    if expected.dtype != fmt.uint_dtype or got.dtype != fmt.uint_dtype:
        raise TypeError(
            f"{config.op} on {fmt.name} should give {fmt.uint_dtype} patterns; oracle gave "
            f"{expected.dtype}, {config.impl} gave {got.dtype}"
        )
    comparison = compare_bits(got, expected, fmt=fmt, max_reported=MAX_EXAMPLES_PER_CHUNK)
    if comparison.reason not in (None, "values"):
        raise TypeError(
            f"{config.impl} {config.op} cannot be compared with the oracle:\n{comparison.message()}"
        )
    examples = [
        [*(int(x[index]) for x in operands), actual, wanted]
        for (index,), actual, wanted in zip(
            comparison.indices, comparison.actual_bits, comparison.expected_bits, strict=True
        )
    ]
    return ChunkResult(
        chunk,
        int(expected.size),
        comparison.mismatch_count,
        examples,
        time.perf_counter() - start,
        time.process_time() - cpu_start,
    )
