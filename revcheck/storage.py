"""Storage identity of tensors: which tensors share memory, and sizes counted once per storage.

Two tensors share memory when they are views of one storage (``untyped_storage()``).  A
``torch.nn.Parameter`` is an *object*; several objects can view one storage (``p.data =
q.data`` makes two), and one object can sit at several places of a model (weight sharing).
Counting per object (``sum(p.numel() for p in model.parameters())``) therefore counts an
aliased storage once per object, and counting per position counts a shared Parameter once per
use.  Memory is a property of storages: everything here counts per storage.

This module is the one home of the concept; the tying controller (``revcheck.nn.tying``) and
the storage audit (``revcheck.audit.ops_tying``) import it.

Examples
--------
>>> import torch
>>> a = torch.zeros(4, 3)
>>> b = a[1:]            # a view: same storage
>>> storage_key(a) == storage_key(b)
True
>>> count_elements([a, b]), sum(t.numel() for t in (a, b))   # per storage vs per tensor
(12, 21)
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import Tensor

__all__ = ["StorageKey", "byte_span", "count_bytes", "count_elements", "group_by_storage", "storage_key"]

# (device, address of the storage's first byte): equal keys mean the same memory.
StorageKey = tuple[str, int]


def storage_key(tensor: Tensor) -> StorageKey | None:
    """The storage ``tensor`` views, as ``(device, data_ptr)``; ``None`` if it has no memory.

    Empty storages (``nbytes() == 0``) have no identity (every one has address 0), and some
    tensor subclasses have no storage at all; both give ``None``.
    """
    try:
        storage = tensor.untyped_storage()
    except (RuntimeError, NotImplementedError, TypeError):
        return None
    if storage.nbytes() == 0:
        return None
    return str(tensor.device), storage.data_ptr()


def byte_span(tensor: Tensor) -> tuple[int, int]:
    """Bytes ``[start, stop)`` of its storage that ``tensor`` can reach.

    Exact for tensors with non-negative strides whose elements are dense (contiguous tensors,
    which every ``nn.Parameter`` of the usual layers is); for a strided view it is the bounding
    interval, an upper bound of the bytes it covers.
    """
    itemsize = tensor.element_size()
    start = int(tensor.storage_offset()) * itemsize
    if tensor.numel() == 0:
        return start, start
    reach = 1 + sum(
        (int(size) - 1) * abs(int(stride)) for size, stride in zip(tensor.shape, tensor.stride(), strict=True)
    )
    return start, start + reach * itemsize


def group_by_storage(tensors: Iterable[Tensor]) -> dict[StorageKey, list[Tensor]]:
    """The tensors grouped by the storage they view, in first-seen order (memory-less ones dropped)."""
    groups: dict[StorageKey, list[Tensor]] = {}
    for tensor in tensors:
        key = storage_key(tensor)
        if key is not None:
            groups.setdefault(key, []).append(tensor)
    return groups


def _union_length(intervals: list[tuple[int, int]]) -> int:
    total, reach = 0, None
    for start, stop in sorted(intervals):
        if reach is None or start >= reach:
            total += stop - start
            reach = stop
        elif stop > reach:
            total += stop - reach
            reach = stop
    return total


def count_bytes(tensors: Iterable[Tensor]) -> int:
    """Bytes the tensors occupy, each byte of each storage counted once (union of their spans)."""
    return sum(_union_length([byte_span(t) for t in group]) for group in group_by_storage(tensors).values())


def count_elements(tensors: Iterable[Tensor]) -> int:
    """Elements the tensors occupy, counted once per storage (see :func:`count_bytes`).

    Bytes are converted with the element size of the first tensor seen on each storage.
    """
    total = 0
    for group in group_by_storage(tensors).values():
        total += _union_length([byte_span(t) for t in group]) // group[0].element_size()
    return total
