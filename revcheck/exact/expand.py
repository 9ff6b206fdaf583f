"""Exact model (level R) of the reference transformer: the oracle's composition in mpmath at high precision.

:class:`ExactArithmetic` runs :func:`revcheck.oracle.expand.forward` on object
arrays of ``mpmath.mpf``: every stored parameter is read as the exact real
number it is, and every operation (sums, products, ``sqrt``, ``exp``, ``erf``,
``tanh``) is evaluated at ``precision`` bits (default 200).  Two models are
R-equal when their outputs agree to :data:`R_TOLERANCE_BITS` bits relative to
the output's scale: far below any float format's resolution (a rounded growth
factor is 2**-24 relative in fp32), far above the working precision's error.
This is numerical evidence at high precision, not a symbolic proof; the shapes
are tiny (:func:`check_size`).

The composition is shared with the oracle (one definition of the model); the
independent implementation is the torch module, which the tests compare
against both.
"""

from __future__ import annotations

from collections.abc import Mapping
from fractions import Fraction
from typing import Any

import mpmath
import numpy as np
import numpy.typing as npt

from revcheck.oracle.expand import ModelConfig, forward, parameter_shapes

__all__ = [
    "DEFAULT_PRECISION",
    "R_TOLERANCE_BITS",
    "ExactArithmetic",
    "check_size",
    "exact_forward",
    "r_distance",
]

DEFAULT_PRECISION = 200
R_TOLERANCE_BITS = 100
MAX_EXACT_OPERATIONS = 400_000  # about five seconds per model on one core

ObjectArray = npt.NDArray[np.object_]


def _vectorize(function: Any) -> Any:
    return np.frompyfunc(function, 1, 1)


def _rsqrt_one(x: Any) -> Any:
    if mpmath.isnan(x) or x < 0:
        return mpmath.mpf("nan")
    if x == 0:
        return mpmath.mpf("inf")
    return 1 / mpmath.sqrt(x)


def _relu_one(x: Any) -> Any:
    return x if (mpmath.isnan(x) or x > 0) else mpmath.mpf(0)


def _erf_gelu_one(x: Any) -> Any:
    return x / 2 * (1 + mpmath.erf(x / mpmath.sqrt(2)))


def _tanh_gelu_one(x: Any) -> Any:
    inner = mpmath.sqrt(2 / mpmath.pi) * (x + mpmath.mpf("0.044715") * x**3)
    return x / 2 * (1 + mpmath.tanh(inner))


def _exp_one(x: Any) -> Any:
    return mpmath.exp(x)


class ExactArithmetic:
    """Real arithmetic at ``precision`` bits on object arrays of ``mpmath.mpf`` (level R)."""

    level = "R"

    def __init__(
        self, precision: int = DEFAULT_PRECISION, overrides: Mapping[str, ObjectArray] | None = None
    ):
        self.precision = precision
        self.overrides = dict(overrides or {})

    def param(self, name: str, value: object) -> ObjectArray:
        if name in self.overrides:
            return self.overrides[name]
        return as_exact(value)

    def scalar(self, value: float | Fraction) -> Any:
        if isinstance(value, Fraction):
            return mpmath.mpf(value.numerator) / value.denominator
        return mpmath.mpf(value)

    def sqrt_scalar(self, k: int) -> Any:
        return mpmath.sqrt(k)

    def sdpa_scale(self, k: int) -> Any:
        return mpmath.mpf(k) ** mpmath.mpf(-0.25)

    def take(self, table: ObjectArray, index: npt.NDArray[np.int64]) -> ObjectArray:
        return table[index]

    def reshape(self, x: ObjectArray, shape: tuple[int, ...]) -> ObjectArray:
        return x.reshape(shape)

    def swapaxes(self, x: ObjectArray, a: int, b: int) -> ObjectArray:
        return np.swapaxes(x, a, b)

    def mask_fill(self, x: ObjectArray, mask: npt.NDArray[np.bool_], value: float) -> ObjectArray:
        return np.where(mask, mpmath.mpf(value), x)

    def add(self, a: Any, b: Any) -> Any:
        return a + b

    def sub(self, a: Any, b: Any) -> Any:
        return a - b

    def mul(self, a: Any, b: Any) -> Any:
        return a * b

    def div(self, a: Any, b: Any) -> Any:
        return a / b

    def matmul(self, a: ObjectArray, b: ObjectArray) -> ObjectArray:
        return np.matmul(a, b)

    def mean_last(self, x: ObjectArray) -> ObjectArray:
        return x.sum(axis=-1, keepdims=True) / x.shape[-1]

    def rsqrt(self, x: ObjectArray) -> ObjectArray:
        return _vectorize(_rsqrt_one)(x)

    def center(self, x: ObjectArray) -> ObjectArray:
        return x - self.mean_last(x)

    def normalize(self, x: ObjectArray, eps: Any) -> tuple[ObjectArray, ObjectArray]:
        r = self.rsqrt(self.mean_last(x * x) + eps)
        return x * r, r

    def relu(self, x: ObjectArray) -> ObjectArray:
        return _vectorize(_relu_one)(x)

    def gelu(self, x: ObjectArray) -> ObjectArray:
        return _vectorize(_erf_gelu_one)(x)

    def gelu_tanh(self, x: ObjectArray) -> ObjectArray:
        return _vectorize(_tanh_gelu_one)(x)

    def softmax_last(self, x: ObjectArray) -> ObjectArray:
        top = np.max(x, axis=-1, keepdims=True)
        e = _vectorize(_exp_one)(x - top)
        return e / e.sum(axis=-1, keepdims=True)


def as_exact(value: object) -> ObjectArray:
    """A float array (any dtype NumPy holds) as an object array of the exact ``mpf`` values."""
    array = np.asarray(value)
    return _vectorize(lambda v: mpmath.mpf(float(v)))(array.astype(np.float64)).astype(object)


def check_size(config: ModelConfig, batch: int, time: int) -> None:
    """Refuse shapes whose exact evaluation would take minutes (a ``ValueError`` saying what to use)."""
    c = config
    per_token = sum(
        int(np.prod(shape)) for shape in parameter_shapes(c).values()
    ) + c.layers * c.heads * time * (c.qk + c.v)
    operations = batch * time * per_token
    if operations > MAX_EXACT_OPERATIONS:
        raise ValueError(
            f"the exact (level R) model would take about {operations:,} mpmath operations for this shape "
            f"(limit {MAX_EXACT_OPERATIONS:,}); check R on a tiny model (e.g. hidden <= 16, batch 1, time "
            "<= 4), "
            "or use level O"
        )


def exact_forward(
    config: ModelConfig,
    params: Mapping[str, Any],
    ids: object,
    *,
    precision: int = DEFAULT_PRECISION,
    overrides: Mapping[str, ObjectArray] | None = None,
    eps: Fraction | None = None,
) -> ObjectArray:
    """Logits of the model read as exact reals, at ``precision`` bits (object array of mpf)."""
    ids_array = np.asarray(ids)
    check_size(config, int(ids_array.shape[0]), int(ids_array.shape[-1]))
    arithmetic = ExactArithmetic(precision, overrides)
    with mpmath.workprec(precision):
        eps_value = None if eps is None else arithmetic.scalar(eps)
        return forward(config, params, ids_array, arithmetic, eps=eps_value)  # type: ignore[no-any-return]


def r_distance(a: ObjectArray, b: ObjectArray) -> tuple[float, tuple[int, ...]]:
    """Largest ``|a - b|`` relative to ``max(|a|, |b|)`` over the output (as log2), and where.

    Equal NaN classes and equal infinities count as distance ``-inf``; a NaN
    against a number, or infinities of different sign, count as ``+inf``.
    """
    worst, where = -np.inf, ()
    scale: Any = max(  # type: ignore[type-var]
        (abs(v) for v in list(a.flat) + list(b.flat) if mpmath.isfinite(v)), default=mpmath.mpf(1)
    )
    scale = max(scale, mpmath.mpf(2) ** -1000)
    for index in np.ndindex(a.shape):
        x, y = a[index], b[index]
        if mpmath.isnan(x) or mpmath.isnan(y):
            distance = -np.inf if (mpmath.isnan(x) and mpmath.isnan(y)) else np.inf
        elif mpmath.isinf(x) or mpmath.isinf(y):
            distance = -np.inf if x == y else np.inf
        elif x == y:
            distance = -np.inf
        else:
            distance = float(mpmath.log(abs(x - y) / scale, 2))
        if distance > worst:
            worst, where = distance, index
    return worst, where
