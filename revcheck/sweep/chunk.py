"""Checking one chunk: the implementation and the oracle on every input of it, compared bit for bit.

A chunk (the unit the state file records) is evaluated in blocks of ``2**block_bits``
inputs (:func:`revcheck.enumeration.blocks`): the oracle and the implementation run
on one block at a time, so their temporaries stay in the CPU caches.  On the
project's CPU machine a 2**20-pair chunk in blocks of 2**15 pairs runs about twice as
fast as one call on the whole chunk (``nox -s bench``'s sweep section measures it).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from revcheck import enumeration
from revcheck.bits import to_bits, to_torch
from revcheck.sweep.config import SweepConfig
from revcheck.testing import compare_bits

__all__ = ["MAX_EXAMPLES_PER_CHUNK", "ChunkResult", "Implementation", "check_chunk"]

MAX_EXAMPLES_PER_CHUNK = 5

#: An implementation under test: tensors in (one per operand), a tensor out, ``mode=`` keyword.
Implementation = Callable[..., Any]


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


def check_chunk(
    config: SweepConfig,
    chunk: int,
    implementation: Implementation | None = None,
    *,
    block_bits: int | None = None,
) -> ChunkResult:
    """Run the implementation and the oracle on every input of ``chunk`` and compare bit patterns.

    Parameters
    ----------
    config
        The sweep (op, format, mode, implementation name, chunk size).
    chunk
        The chunk's index in the whole sweep.
    implementation
        The implementation under test; None takes ``config.impl`` from the op registry.
        (A test passes a deliberately wrong one here.)
    block_bits
        log2 of the inputs per call; None: ``config.bits_per_block``.  ``block_bits >=
        config.bits_per_chunk`` calls the implementation once on the whole chunk.
    """
    start, cpu_start = time.perf_counter(), time.process_time()
    fmt, spec = config.fmt, config.spec
    assert spec.bit_oracle is not None, f"{config.op} is not sweepable"  # validate() checked it
    function = spec.implementation(config.impl) if implementation is None else implementation
    bits = config.bits_per_block if block_bits is None else block_bits
    mismatches = 0
    examples: list[list[int]] = []
    inputs = 0
    # Formats without a torch dtype travel as uint8 bit patterns, with fmt= (docs/spec.md D1.10).
    keywords = {"fmt": fmt.name} if fmt.torch_dtype_name is None else {}
    for _, operands in enumeration.blocks(fmt, config.arity, config.bits_per_chunk, chunk, bits):
        expected = np.asarray(spec.bit_oracle(*operands, fmt, mode=config.mode))
        tensors = [to_torch(x, fmt, device=config.device) for x in operands]
        got = to_bits(function(*tensors, mode=config.mode, **keywords), fmt)
        if expected.dtype != fmt.uint_dtype or got.dtype != fmt.uint_dtype:
            raise TypeError(
                f"{config.op} on {fmt.name} should give {fmt.uint_dtype} patterns; oracle gave "
                f"{expected.dtype}, {config.impl} gave {got.dtype}"
            )
        if got.shape != expected.shape:
            raise TypeError(
                f"{config.impl} {config.op} gave shape {got.shape} for {expected.size} inputs; "
                f"the oracle gives {expected.shape}"
            )
        count, found = _mismatches(got, expected, fmt, MAX_EXAMPLES_PER_CHUNK - len(examples))
        mismatches += count
        examples += [[*(int(x[i]) for x in operands), int(got[i]), int(expected[i])] for i in found]
        inputs += int(expected.size)  # blocks come in order: the first examples found are the chunk's first
    return ChunkResult(
        chunk,
        inputs,
        mismatches,
        examples,
        time.perf_counter() - start,
        time.process_time() - cpu_start,
    )


def _mismatches(
    got: npt.NDArray[Any], expected: npt.NDArray[Any], fmt: Any, wanted: int
) -> tuple[int, list[int]]:
    """Mismatch count of one block and the indices of its first ``wanted`` mismatches.

    Equal patterns always match, so only the differing patterns go to
    :func:`~revcheck.testing.compare_bits`, which decides (NaNs are one class) and
    counts; a clean block costs one comparison pass.
    """
    differing = np.flatnonzero(got != expected)
    if differing.size == 0:
        return 0, []
    comparison = compare_bits(got[differing], expected[differing], fmt=fmt, max_reported=max(wanted, 1))
    if comparison.reason not in (None, "values"):
        raise TypeError(f"the implementation cannot be compared with the oracle:\n{comparison.message()}")
    found = [int(differing[index]) for (index,) in comparison.indices][: max(wanted, 0)]
    return comparison.mismatch_count, found
