"""Side bits packed 8 to a byte: the one bit per element per block a reversible forward keeps."""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["pack_bits", "pack_bits_unchecked", "unpack_bits", "unpack_bits_unchecked"]


def pack_bits(bits: Tensor) -> Tensor:
    """Pack a tensor of 0/1 values into uint8, 8 per byte; element i is bit ``i % 8`` of byte ``i // 8``.

    Raises
    ------
    ValueError
        If a value is neither 0 nor 1.
    """
    flat = bits.reshape(-1).to(torch.uint8)
    if flat.numel() and bool(((flat != 0) & (flat != 1)).any()):
        raise ValueError("pack_bits takes only 0/1 values")
    return pack_bits_unchecked(flat)


def pack_bits_unchecked(bits: Tensor) -> Tensor:
    """:func:`pack_bits` without the 0/1 validation (the stack's side bits are parity by construction)."""
    flat = bits.reshape(-1).to(torch.uint8)
    pad = (-flat.numel()) % 8
    if pad:
        flat = torch.cat([flat, flat.new_zeros(pad)])
    if torch.compiler.is_compiling():
        # One pointwise pass that inductor fuses with the code update (the word trick below needs a
        # dtype view; a reduction over 8 elements compiles to a slow masked loop).
        columns = flat.view(-1, 8)
        packed = columns[:, 0].clone()
        for bit in range(1, 8):
            packed = packed | (columns[:, bit] << bit)
        return packed
    if sys.byteorder != "little":
        shifts = torch.arange(8, device=flat.device, dtype=torch.uint8)
        return (flat.view(-1, 8) << shifts).sum(dim=1, dtype=torch.uint8)
    if flat.storage_offset() % 8:
        flat = flat.clone()  # an int64 view needs 8-byte alignment
    # Eight 0/1 bytes read as one little-endian word hold bit i at position 8 i; three shift-ors
    # fold them into the low byte (the word is non-negative, so no sign bits shift in).  About
    # 8x fewer element operations than shifting and summing the bytes.
    word = flat.view(torch.int64)
    word = word | (word >> 7)
    word |= word >> 14
    word |= word >> 28
    return word.to(torch.uint8)  # integer narrowing keeps the low byte


def unpack_bits(packed: Tensor, shape: Sequence[int] | torch.Size) -> Tensor:
    """Inverse of :func:`pack_bits`: uint8 0/1 tensor of ``shape``.

    Raises
    ------
    TypeError
        If ``packed`` is not uint8.
    ValueError
        If ``packed`` has the wrong number of bytes for ``shape``.
    """
    if packed.dtype != torch.uint8:
        raise TypeError(f"packed side bits must be uint8, got {packed.dtype}")
    count = math.prod(shape)
    if packed.numel() != (count + 7) // 8:
        raise ValueError(
            f"{packed.numel()} packed bytes cannot hold a tensor of shape {tuple(shape)} "
            f"(needs {(count + 7) // 8} bytes)"
        )
    return unpack_bits_unchecked(packed, shape)


def unpack_bits_unchecked(packed: Tensor, shape: Sequence[int] | torch.Size) -> Tensor:
    """:func:`unpack_bits` without the validation (backward unpacks what its own forward packed)."""
    count = math.prod(shape)
    shifts = torch.arange(8, device=packed.device, dtype=torch.uint8)
    bits = (packed.reshape(-1, 1) >> shifts) & 1
    return bits.reshape(-1)[:count].reshape(tuple(shape))
