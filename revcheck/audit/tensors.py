"""Between the audit's NumPy cases and the candidate's torch tensors: inputs in, checked outputs out.

A candidate's output that cannot be compared (not a tensor, wrong dtype or
shape) raises :class:`BadOutput`, which the audit reports as a finding.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from revcheck import bits as _bits
from revcheck.formats import FloatFormat

__all__ = ["BadOutput", "codes_to_tensor", "output_bits", "output_codes", "to_tensor"]


class BadOutput(Exception):
    """The candidate returned something that cannot be compared (wrong type, dtype, shape, device)."""


def to_tensor(bits: np.ndarray[Any, Any], fmt: FloatFormat, device: str) -> Any:
    return _bits.to_torch(np.ascontiguousarray(bits), fmt, device)


def codes_to_tensor(codes: np.ndarray[Any, Any], device: str) -> Any:
    import torch

    return torch.from_numpy(np.ascontiguousarray(codes, dtype=np.int64).copy()).to(device)


def output_bits(result: object, fmt: FloatFormat, shape: tuple[int, ...], what: str) -> np.ndarray[Any, Any]:
    """Bit patterns of a candidate's float output, after checking type, dtype and shape.

    For a format without a torch dtype (fp6, fp4) the output must be uint8 bit patterns.
    """
    import torch

    # uint8 bit patterns stand for the formats torch has no dtype of (docs/spec.md D1.10).
    dtype_name = fmt.torch_dtype_name or fmt.uint_dtype.name
    if not isinstance(result, torch.Tensor):
        raise BadOutput(f"{what} is a {type(result).__name__}, expected a torch.Tensor of {dtype_name}")
    expected_dtype = getattr(torch, dtype_name)
    if result.dtype != expected_dtype:
        raise BadOutput(f"{what} has dtype {result.dtype}, expected {expected_dtype}")
    if tuple(result.shape) != tuple(shape):
        raise BadOutput(f"{what} has shape {tuple(result.shape)}, expected {tuple(shape)}")
    try:
        return _bits.to_bits(result, fmt)
    except ValueError as error:  # uint8 patterns with a padding bit set
        raise BadOutput(f"{what}: {error}") from None


def output_codes(
    result: object, shape: tuple[int, ...], what: str, dtype: str = "int64"
) -> np.ndarray[Any, Any]:
    """A candidate's integer output as a NumPy array, after checking type, dtype and shape."""
    import torch

    if not isinstance(result, torch.Tensor):
        raise BadOutput(f"{what} is a {type(result).__name__}, expected a torch.Tensor of {dtype}")
    if result.dtype != getattr(torch, dtype):
        raise BadOutput(f"{what} has dtype {result.dtype}, expected torch.{dtype}")
    if tuple(result.shape) != tuple(shape):
        raise BadOutput(f"{what} has shape {tuple(result.shape)}, expected {tuple(shape)}")
    return np.asarray(result.detach().cpu().numpy())
