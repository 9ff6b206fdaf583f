"""Transformer-XL at (near) real precision: the oracle's composition over mpmath numbers (level R).

:class:`ExactArithmetic` evaluates :class:`revcheck.oracle.memxl.MemXLOracle` on NumPy object arrays
of ``mpmath.mpf`` at ``prec`` bits (default 200), with mpmath's own exp / sqrt / sin / cos.  It is the
SAME composition as the declared-order oracle, evaluated with (almost) no rounding: it shows that the
recurrence and the masked full pass are equal as real-number functions, not that the composition
is Transformer-XL (that is the torch model's conformance check, docs/spec.md §6).

At 200 bits every result carries a relative error of a few times ``n_ops * 2**-200``; the R-level
properties compare with :data:`R_TOLERANCE` (``2**-150``), far below any real difference a wrong
model makes (>= 1e-3 in every planted bug) and far above the working-precision residue.

Examples
--------
>>> import numpy as np
>>> from revcheck.oracle import memxl
>>> x = to_exact(np.float64([[1.0, 2.0]]))
>>> with mpmath.workprec(200):
...     y = ExactArithmetic().softmax(x)
>>> [float(v) for v in y[0]]
[0.2689414213699951, 0.7310585786300049]
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields
from typing import Any

import mpmath
import numpy as np
import numpy.typing as npt

from revcheck.oracle.memxl import LayerWeights, MemXLConfig, MemXLOracle, Weights, staircase_mask

__all__ = [
    "EXACT_ORACLE",
    "EXACT_PRECISION",
    "R_TOLERANCE",
    "ExactArithmetic",
    "exact_full_pass",
    "exact_recurrence",
    "exact_weights",
    "max_abs_difference",
    "to_exact",
    "to_float64",
]

Array = npt.NDArray[Any]
EXACT_PRECISION = 200
R_TOLERANCE = 2.0**-150


def _elementwise(function: Callable[[Any], Any]) -> Callable[[Array], Array]:
    vectorised = np.vectorize(function, otypes=[object])

    def apply(x: Array) -> Array:
        return np.asarray(vectorised(x), dtype=object) if np.size(x) else np.asarray(x, dtype=object)

    return apply


def to_exact(array: Array) -> Array:
    """An object array of ``mpmath.mpf`` with exactly the values of a float array."""
    values = np.asarray(array, dtype=np.float64)
    return np.asarray(_elementwise(lambda v: mpmath.mpf(float(v)))(values), dtype=object).reshape(
        values.shape
    )


def to_float64(array: Array) -> Array:
    """The nearest float64 of each element of an exact array."""
    return np.asarray(_elementwise(float)(array), dtype=np.float64).reshape(np.shape(array))


class ExactArithmetic:
    """mpmath arithmetic on object arrays; use inside ``mpmath.workprec(prec)`` (the functions below do)."""

    level = "R"

    def check(self, array: object, name: str) -> Array:
        if not isinstance(array, np.ndarray) or array.dtype != object:
            raise TypeError(f"{name} must be an object array of mpmath numbers (use to_exact)")
        return array

    def const(self, value: float, like: Array) -> Any:
        return mpmath.mpf(value)

    def from_ints(self, values: Array, like: Array) -> Array:
        return np.asarray([mpmath.mpf(int(v)) for v in np.ravel(values)], dtype=object).reshape(
            np.shape(values)
        )

    def full(self, shape: tuple[int, ...], value: float, like: Array) -> Array:
        out = np.empty(shape, dtype=object)
        out[...] = mpmath.mpf(value)
        return out

    def log_const(self, value: float, like: Array) -> Any:
        return mpmath.log(value)

    def matmul(self, a: Array, b: Array) -> Array:
        return np.matmul(a, b)

    def sequential_sum(self, x: Array) -> Array:
        return np.sum(x, axis=-1)

    exp = staticmethod(_elementwise(mpmath.exp))
    sqrt = staticmethod(_elementwise(mpmath.sqrt))
    sin = staticmethod(_elementwise(mpmath.sin))
    cos = staticmethod(_elementwise(mpmath.cos))

    def relu(self, x: Array) -> Array:
        return np.where(x > 0, x, mpmath.mpf(0))

    def softmax(self, x: Array) -> Array:
        shifted = x - np.max(x, axis=-1, keepdims=True)
        e = self.exp(shifted)
        return e / np.sum(e, axis=-1, keepdims=True)

    def layer_norm(self, x: Array, weight: Array, bias: Array, eps: float) -> Array:
        n = mpmath.mpf(x.shape[-1])
        centered = x - (np.sum(x, axis=-1, keepdims=True) / n)
        var = np.sum(centered * centered, axis=-1, keepdims=True) / n
        return centered / self.sqrt(var + mpmath.mpf(eps)) * weight + bias


def exact_weights(weights: Weights) -> Weights:
    """The same weights as exact arrays."""
    layers = tuple(
        LayerWeights(**{f.name: to_exact(getattr(layer, f.name)) for f in fields(LayerWeights)})
        for layer in weights.layers
    )
    return Weights(
        to_exact(weights.embedding), to_exact(weights.r_w_bias), to_exact(weights.r_r_bias), layers
    )


EXACT_ORACLE = MemXLOracle(ExactArithmetic())


def exact_recurrence(
    weights: Weights,
    config: MemXLConfig,
    tokens: Array,
    segment_length: int,
    init_memory: str = "empty",
    prec: int = EXACT_PRECISION,
) -> Array:
    """The segment recurrence at ``prec`` bits, kept exact (an object array of ``mpmath.mpf``)."""
    with mpmath.workprec(prec):
        out, _ = EXACT_ORACLE.recurrence(exact_weights(weights), config, tokens, segment_length, init_memory)
        return out


def exact_full_pass(
    weights: Weights,
    config: MemXLConfig,
    tokens: Array,
    segment_length: int,
    prec: int = EXACT_PRECISION,
    allowed: Array | None = None,
) -> Array:
    """The full pass with the staircase mask (or ``allowed``) at ``prec`` bits, kept exact (object array)."""
    T = np.asarray(tokens).shape[1]
    if allowed is None:
        allowed = staircase_mask(T, segment_length, config.mem_len, config.same_length)
    with mpmath.workprec(prec):
        return EXACT_ORACLE.full_pass(exact_weights(weights), config, tokens, allowed)


def max_abs_difference(a: Array, b: Array, prec: int = EXACT_PRECISION) -> float:
    """``max |a - b|`` of two exact arrays, computed at ``prec`` bits and rounded once."""
    with mpmath.workprec(prec):
        return float(max((abs(x - y) for x, y in zip(np.ravel(a), np.ravel(b), strict=True)), default=0.0))
