"""Every input of an elementwise op in one format, in chunks and shards: the one enumeration.

The audit's exhaustive stage and the sweep both walk the input space through
this module, so they agree on which input is the ``i``-th and on how chunks and
shards divide the space.

Flat index.  An op of ``arity`` operands on ``w``-bit patterns has
``2**(arity * w)`` inputs.  The flat index ``i`` stands for the operand tuple
whose patterns are the base-``2**w`` digits of ``i``, most significant first:
for a binary op ``a = i >> w, b = i & (2**w - 1)``; for a unary one ``x = i``.

Chunks.  Chunk ``c`` of size ``2**chunk_bits`` holds the flat indices
``[c * 2**chunk_bits, (c + 1) * 2**chunk_bits)``; a chunk of ``2**chunk_bits >= 2**w``
pairs is a block of consecutive ``a`` values against every ``b``.

Blocks.  A chunk is the unit of bookkeeping (a sweep records finished chunks); a
*block* is the unit of evaluation: chunk ``c`` at ``chunk_bits`` is the blocks
``c * 2**(chunk_bits - block_bits) + j`` at ``block_bits`` (:func:`blocks`), so an
implementation can be called on cache-sized pieces of a chunk in the same order.

Shards.  Shard ``I`` of ``N`` takes the chunks ``c`` with ``c % N == I``, so the
``N`` shards together cover every chunk exactly once; a shard runs its chunks in
bit-reversed order (:func:`run_order`), so that any prefix samples the whole space.

Pure NumPy: the oracle's tests may use it without torch.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import numpy.typing as npt

from revcheck import formats
from revcheck.errors import UsageError

__all__ = [
    "all_patterns",
    "blocks",
    "chunk",
    "chunk_bits_for",
    "chunks",
    "input_bits",
    "run_order",
    "shard_chunks",
    "total_chunks",
]


def input_bits(fmt: object, arity: int) -> int:
    """log2 of the number of inputs of an ``arity``-operand op on ``fmt``'s bit patterns."""
    return arity * formats.get(fmt).width


def chunk_bits_for(fmt: object, arity: int, largest: int) -> int:
    """Chunks of ``2**largest`` inputs, or one chunk for the whole space when that is smaller."""
    return min(input_bits(fmt, arity), largest)


def total_chunks(fmt: object, arity: int, chunk_bits: int) -> int:
    """How many chunks of ``2**chunk_bits`` inputs the whole space has."""
    bits = input_bits(fmt, arity)
    if not 0 <= chunk_bits <= bits:
        raise ValueError(f"chunk_bits={chunk_bits} is out of range; use 0..{bits}")
    return 1 << (bits - chunk_bits)


def chunk(fmt: object, arity: int, chunk_bits: int, index: int) -> list[npt.NDArray[Any]]:
    """Operand bit patterns of chunk ``index``: one ``fmt.uint_dtype`` array per operand, flat-index order."""
    fmt_ = formats.get(fmt)
    if not 0 <= index < total_chunks(fmt_, arity, chunk_bits):
        raise ValueError(f"chunk {index} does not exist; there are {total_chunks(fmt_, arity, chunk_bits)}")
    size = 1 << chunk_bits
    width = fmt_.width
    # Operand p (0 = least significant) is (i >> p*w) mod 2**w over i in [start, start + size): a run
    # of consecutive digits, each repeated 2**(p*w) times, which np.repeat builds directly in the
    # operand's dtype (no flat uint64 index array and no 64-bit shifts over the whole chunk).
    start = index * size
    operands = []
    for position in reversed(range(arity)):
        shift = position * width
        # Chunks are aligned to their power-of-two size, so a chunk holds size / 2**shift whole runs
        # of one digit value each (or lies inside one run when 2**shift >= size).
        runs = max(size >> shift, 1)
        first = start >> shift
        digits = (np.arange(first, first + runs, dtype=np.uint64) & np.uint64((1 << width) - 1)).astype(
            fmt_.uint_dtype
        )
        operands.append(np.repeat(digits, size // runs) if runs < size else digits)
    return operands


def blocks(
    fmt: object, arity: int, chunk_bits: int, index: int, block_bits: int
) -> Iterator[tuple[int, list[npt.NDArray[Any]]]]:
    """The blocks of ``2**block_bits`` inputs of chunk ``index``, in order: ``(offset, operands)``.

    ``block_bits >= chunk_bits`` gives the whole chunk as one block.
    """
    if block_bits >= chunk_bits:
        yield 0, chunk(fmt, arity, chunk_bits, index)
        return
    if block_bits < 0:
        raise ValueError(f"block_bits={block_bits} must be >= 0")
    per_chunk = 1 << (chunk_bits - block_bits)
    if not 0 <= index < total_chunks(fmt, arity, chunk_bits):
        raise ValueError(f"chunk {index} does not exist; there are {total_chunks(fmt, arity, chunk_bits)}")
    for j in range(per_chunk):
        yield j << block_bits, chunk(fmt, arity, block_bits, index * per_chunk + j)


def chunks(fmt: object, arity: int, chunk_bits: int) -> Iterator[list[npt.NDArray[Any]]]:
    """Every chunk of the space, in flat-index order."""
    for index in range(total_chunks(fmt, arity, chunk_bits)):
        yield chunk(fmt, arity, chunk_bits, index)


def all_patterns(fmt: object) -> npt.NDArray[Any]:
    """Every bit pattern of ``fmt`` in increasing order (the inputs of a unary op, in one chunk)."""
    width = formats.get(fmt).width
    (patterns,) = chunk(fmt, 1, width, 0)
    return patterns


def shard_chunks(n_chunks: int, shard: int, num_shards: int) -> range:
    """Chunk ids of shard ``shard`` of ``num_shards``: every ``num_shards``-th chunk from ``shard``.

    Raises :class:`~revcheck.errors.UsageError` for a shard that does not exist.
    """
    if not 0 <= shard < num_shards:
        raise UsageError(f"shard {shard}/{num_shards} does not exist; use I/N with 0 <= I < N")
    return range(shard, n_chunks, num_shards)


def _bit_reversed(value: int, bits: int) -> int:
    return int(format(value, f"0{bits}b")[::-1], 2) if bits else 0


def run_order(chunk_ids: Iterable[int], n_chunks: int) -> list[int]:
    """The order a shard runs its chunks in: by bit-reversed chunk id.

    Any prefix is then spread evenly over the input space, so a limited run
    measures a representative sample (not, say, only the subnormal ``a`` values).
    """
    bits = max(n_chunks - 1, 0).bit_length()
    return sorted(chunk_ids, key=lambda c: _bit_reversed(c, bits))
