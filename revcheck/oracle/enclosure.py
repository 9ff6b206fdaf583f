"""Interval enclosures of every floating-point evaluation of a model (level B), pure NumPy.

:class:`IntervalArithmetic` runs a model composition (such as
:func:`revcheck.oracle.expand.forward`) on intervals ``[lo, hi]`` of binary64
endpoints.  Each operation returns an interval that contains

* the exact real result for every choice of inputs inside the input intervals
  (endpoints computed in binary64 and moved outward by ``nextafter``; sums and
  matmuls carry the binary64 error bound ``gamma_n`` of any summation order), and
* every result a kernel may return under the :class:`ErrorModel`: a reduction
  of ``n`` products in any order, with or without FMA, is within
  ``gamma_n = n u / (1 - n u)`` times the sum of the magnitudes of its terms
  (Higham, *Accuracy and Stability of Numerical Algorithms*, §3.1; holds for
  blocked, pairwise and vectorised orders); an elementwise basic operation is
  within ``basic_ulps`` rounding errors, a library function (exp, erf, tanh,
  rsqrt, GELU) within ``function_ulps``; a result stored in a narrower format
  (bf16) is rounded once more (``u_store``); underflow adds at most the
  smallest subnormal per rounding.

With :meth:`ErrorModel.exact` (no rounding at all) the interval encloses the
model's exact real function.  The library-function accuracies and the SDPA
allowance are *assumptions* about the kernels (stated in the model and in
every B report), not facts derived from their source; a kernel result outside
the enclosure is reported, never hidden.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from revcheck.oracle import ordered

__all__ = ["ErrorModel", "Interval", "IntervalArithmetic"]

F64 = npt.NDArray[np.float64]

_PRECISION = {"fp64": 53, "fp32": 24, "bf16": 8, "fp16": 11}
_SMALLEST_SUBNORMAL = {"fp64": 2.0**-1074, "fp32": 2.0**-149, "bf16": 2.0**-133, "fp16": 2.0**-24}
_U64 = 2.0**-53
# ordered.exp / erf / tanh are within 2.5 binary64 ulps (measured by tests/test_expand_ordered.py);
# 2**-49 covers it.
_F64_FUNCTION_REL = 2.0**-49
_F64_FUNCTION_ABS = 2.0**-1070


def _dn(x: Any) -> Any:
    return np.nextafter(x, -np.inf)


def _up(x: Any) -> Any:
    return np.nextafter(x, np.inf)


def _gamma(n: int, u: float) -> float:
    """``n u / (1 - n u)``, rounded up (tiny relative slack)."""
    if n * u >= 0.5:
        return math.inf
    return float(_up(_up(n * u) / _dn(1.0 - n * u))) * (1.0 + 2.0**-40)


@dataclass(frozen=True)
class ErrorModel:
    """What a kernel may do to each operation, for the enclosure of its results."""

    storage: str = "fp32"
    compute: str = "fp32"
    basic_ulps: float = 2.0  # one rounding, or two for a*(1/b) style divisions
    function_ulps: float = (
        4.0  # exp, erf, tanh, rsqrt, GELU of the library (SLEEF u10 is 1; torch's exp_u20 2)
    )
    sdpa_weight_ulps: float = 16.0  # relative slack of each attention weight inside a fused SDPA kernel
    rounding: bool = True

    @classmethod
    def exact(cls) -> ErrorModel:
        """No rounding at all: the enclosure of the exact real function."""
        return cls(
            storage="fp64",
            compute="fp64",
            basic_ulps=0.0,
            function_ulps=0.0,
            sdpa_weight_ulps=0.0,
            rounding=False,
        )

    @classmethod
    def for_storage(cls, storage: str, **changes: Any) -> ErrorModel:
        """The model for a torch dtype: fp64 computes in fp64, everything else in fp32."""
        return cls(storage=storage, compute="fp64" if storage == "fp64" else "fp32", **changes)

    @property
    def u_compute(self) -> float:
        return 2.0 ** -_PRECISION[self.compute] if self.rounding else 0.0

    @property
    def u_store(self) -> float:
        narrower = _PRECISION[self.storage] < _PRECISION[self.compute]
        return 2.0 ** -_PRECISION[self.storage] if (self.rounding and narrower) else 0.0

    @property
    def eta(self) -> float:
        return _SMALLEST_SUBNORMAL[self.storage] if self.rounding else 0.0

    def describe(self) -> str:
        if not self.rounding:
            return "exact real arithmetic"
        return (
            f"{self.storage} storage, {self.compute} compute: reductions within gamma_n of any order, "
            "basic ops "
            f"<= {self.basic_ulps:g} ulp, library functions <= {self.function_ulps:g} ulp (assumed), "
            f"SDPA weights <= {self.sdpa_weight_ulps:g} ulp (assumed)"
        )


@dataclass(frozen=True)
class Interval:
    """Elementwise intervals ``[lo, hi]`` (binary64 arrays of one shape)."""

    lo: F64
    hi: F64

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.lo.shape)

    @property
    def finite(self) -> npt.NDArray[np.bool_]:
        return np.isfinite(self.lo) & np.isfinite(self.hi)

    def contains(self, values: F64) -> npt.NDArray[np.bool_]:
        return (self.lo <= values) & (values <= self.hi)

    def contains_interval(self, other: Interval) -> npt.NDArray[np.bool_]:
        return (self.lo <= other.lo) & (other.hi <= self.hi)

    def magnitude(self) -> F64:
        return np.maximum(np.abs(self.lo), np.abs(self.hi))


def _clean(lo: F64, hi: F64) -> Interval:
    """NaN endpoints mean 'anything': widen them to the whole line."""
    lo = np.where(np.isnan(lo), -np.inf, lo)
    hi = np.where(np.isnan(hi), np.inf, hi)
    return Interval(np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64))


class IntervalArithmetic:
    """The arithmetic interface of :func:`revcheck.oracle.expand.forward` on :class:`Interval` values.

    ``fused_attention=True`` (SDPA kernels) widens every attention weight by
    ``sdpa_weight_ulps`` more: a fused kernel rescales and normalises its
    weights in its own order (online softmax).

    ``uncertain[name]`` (a boolean mask of a parameter's shape) marks entries
    whose intended real value is the stored one within ``2 u_store`` relative
    (the rounded products of a non-power-of-two growth factor): they enter as
    intervals around the stored value.
    """

    level = "B"

    def __init__(
        self,
        model: ErrorModel,
        uncertain: dict[str, npt.NDArray[np.bool_]] | None = None,
        *,
        fused_attention: bool = False,
    ) -> None:
        self.model = model
        self.uncertain = dict(uncertain or {})
        self.fused_attention = fused_attention

    # ---- widening by the error model ----
    def _round(self, x: Interval, rel: float, reduction_abs: F64 | float = 0.0) -> Interval:
        """Widen the exact-result enclosure ``x`` by a relative error ``rel``, an absolute term, storage."""
        m = self.model
        if not m.rounding:
            return x
        absolute = _up(np.asarray(reduction_abs, dtype=np.float64) + m.eta)
        lo = _dn(_dn(x.lo - _up(rel * np.abs(x.lo))) - absolute)
        hi = _up(_up(x.hi + _up(rel * np.abs(x.hi))) + absolute)
        if m.u_store:
            lo = _dn(_dn(lo - _up(m.u_store * np.abs(lo))) - m.eta)
            hi = _up(_up(hi + _up(m.u_store * np.abs(hi))) + m.eta)
        return _clean(lo, hi)

    def _basic(self, x: Interval) -> Interval:
        return self._round(x, self.model.basic_ulps * self.model.u_compute)

    def _function(self, x: Interval, absolute: F64 | float = 0.0) -> Interval:
        return self._round(x, self.model.function_ulps * self.model.u_compute, absolute)

    # ---- conversion and structure ----
    def param(self, name: str, value: object) -> Interval:
        array = np.asarray(value, dtype=np.float64)
        if name in self.uncertain:
            u = 2.0 ** -_PRECISION[self.model.storage] if self.model.storage in _PRECISION else _U64
            slack = _up(2.0 * u * np.abs(array) + _SMALLEST_SUBNORMAL[self.model.storage])
            mask = self.uncertain[name]
            return Interval(
                np.where(mask, _dn(array - slack), array), np.where(mask, _up(array + slack), array)
            )
        return Interval(array, array.copy())

    def hull(self, *values: float) -> Interval:
        return Interval(np.asarray(_dn(min(values))), np.asarray(_up(max(values))))

    def scalar(self, value: float) -> Interval:
        rounded = float(np.asarray(value, dtype=_NUMPY[self.model.compute]))
        return self.hull(float(value), rounded)

    def sqrt_scalar(self, k: int) -> Interval:
        exact = math.sqrt(k)
        return self.hull(exact, float(_dn(exact)), float(_up(exact)), float(np.float32(exact)))

    def sdpa_scale(self, k: int) -> Interval:
        value = math.sqrt(1.0 / math.sqrt(k))
        spread = [value * (1 + s * 8 * _U64) for s in (-1, 1)]
        return self.hull(*spread, float(np.float32(value)))

    def take(self, table: Interval, index: npt.NDArray[np.int64]) -> Interval:
        return Interval(table.lo[index], table.hi[index])

    def reshape(self, x: Interval, shape: tuple[int, ...]) -> Interval:
        return Interval(x.lo.reshape(shape), x.hi.reshape(shape))

    def swapaxes(self, x: Interval, a: int, b: int) -> Interval:
        return Interval(np.swapaxes(x.lo, a, b), np.swapaxes(x.hi, a, b))

    def mask_fill(self, x: Interval, mask: npt.NDArray[np.bool_], value: float) -> Interval:
        return Interval(np.where(mask, value, x.lo), np.where(mask, value, x.hi))

    # ---- elementwise ----
    def add(self, a: Interval, b: Interval) -> Interval:
        return self._basic(_clean(_dn(a.lo + b.lo), _up(a.hi + b.hi)))

    def sub(self, a: Interval, b: Interval) -> Interval:
        return self._basic(_clean(_dn(a.lo - b.hi), _up(a.hi - b.lo)))

    def _product(self, a: Interval, b: Interval) -> Interval:
        with np.errstate(invalid="ignore", over="ignore"):
            corners = np.stack(np.broadcast_arrays(a.lo * b.lo, a.lo * b.hi, a.hi * b.lo, a.hi * b.hi))
        nan = np.isnan(corners).any(axis=0)
        lo = np.where(nan, -np.inf, _dn(np.nanmin(np.where(np.isnan(corners), np.inf, corners), axis=0)))
        hi = np.where(nan, np.inf, _up(np.nanmax(np.where(np.isnan(corners), -np.inf, corners), axis=0)))
        return _clean(lo, hi)

    def mul(self, a: Interval, b: Interval) -> Interval:
        return self._basic(self._product(a, b))

    def div(self, a: Interval, b: Interval) -> Interval:
        zero_inside = (b.lo <= 0) & (b.hi >= 0)
        with np.errstate(divide="ignore", invalid="ignore"):
            inverse = Interval(
                np.where(zero_inside, -np.inf, _dn(1.0 / b.hi)),
                np.where(zero_inside, np.inf, _up(1.0 / b.lo)),
            )
        return self._round(self._product(a, inverse), 2 * self.model.basic_ulps * self.model.u_compute)

    # ---- reductions ----
    def _dot(self, a: Interval, b: Interval, n: int) -> Interval:
        """Enclosure of ``a @ b`` (reduction length ``n``) by midpoint and radius, binary64 BLAS errors "
        "included."""
        with np.errstate(invalid="ignore", over="ignore"):
            ma, mb = a.lo + (a.hi - a.lo) / 2, b.lo + (b.hi - b.lo) / 2
            ra = np.maximum(_up(a.hi - ma), _up(ma - a.lo))
            rb = np.maximum(_up(b.hi - mb), _up(mb - b.lo))
            g64 = _gamma(n + 2, _U64)
            centre = np.matmul(ma, mb)
            abs_ma, abs_mb = np.abs(ma), np.abs(mb)
            magnitude = _up(np.matmul(_up(abs_ma + ra), _up(abs_mb + rb)) * (1 + 2 * g64))
            radius = np.matmul(abs_ma, rb) + np.matmul(ra, _up(abs_mb + rb))
            radius = _up(radius * (1 + 2 * g64) + g64 * magnitude)
            lo, hi = _dn(centre - radius), _up(centre + radius)
        bad = ~np.isfinite(centre) | ~np.isfinite(radius)
        out = _clean(np.where(bad, -np.inf, lo), np.where(bad, np.inf, hi))
        kernel_abs = _gamma(n, self.model.u_compute) * magnitude + n * self.model.eta
        return self._round(out, 0.0, np.where(np.isfinite(kernel_abs), kernel_abs, np.inf))

    def matmul(self, a: Interval, b: Interval) -> Interval:
        return self._dot(a, b, a.shape[-1])

    def mean_last(self, x: Interval) -> Interval:
        n = x.shape[-1]
        ones = Interval(np.ones((n, 1)), np.ones((n, 1)))
        total = self._dot(x, ones, n)
        return self.div(total, Interval(np.asarray(float(n)), np.asarray(float(n))))

    # ---- functions ----
    def rsqrt(self, x: Interval) -> Interval:
        with np.errstate(divide="ignore", invalid="ignore"):
            lo = np.where(x.hi <= 0, np.inf, _dn(1.0 / _up(np.sqrt(np.maximum(x.hi, 0.0)))))
            hi = np.where(x.lo <= 0, np.inf, _up(1.0 / _dn(np.sqrt(np.maximum(x.lo, 0.0)))))
        lo = np.where(x.hi < 0, np.nan, lo)
        return self._function(_clean(lo, hi))

    def relu(self, x: Interval) -> Interval:
        return Interval(np.maximum(x.lo, 0.0), np.maximum(x.hi, 0.0))

    def _monotone(self, function: Any, x: Interval) -> Interval:
        lo, hi = function(x.lo), function(x.hi)
        slack_lo = _up(_F64_FUNCTION_REL * np.abs(lo) + _F64_FUNCTION_ABS)
        slack_hi = _up(_F64_FUNCTION_REL * np.abs(hi) + _F64_FUNCTION_ABS)
        return _clean(_dn(lo - slack_lo), _up(hi + slack_hi))

    def _gelu_like(self, x: Interval, function: Any, band: tuple[float, float], minimum: float) -> Interval:
        with np.errstate(all="ignore"):
            g_lo, g_hi = function(x.lo), function(x.hi)
        slack_lo = _up(_F64_FUNCTION_REL * 8 * (np.abs(g_lo) + np.abs(x.lo)) + _F64_FUNCTION_ABS)
        slack_hi = _up(_F64_FUNCTION_REL * 8 * (np.abs(g_hi) + np.abs(x.hi)) + _F64_FUNCTION_ABS)
        upper = _up(np.maximum(g_lo + slack_lo, g_hi + slack_hi))
        decreasing, increasing = x.hi <= band[0], x.lo >= band[1]
        lower = np.where(
            decreasing, _dn(g_hi - slack_hi), np.where(increasing, _dn(g_lo - slack_lo), minimum)
        )
        exact = _clean(lower, upper)
        # The kernel's GELU: x * 0.5 * (1 + f(x)) with f within function_ulps: absolute error <= 2 ulps * |x|.
        return self._function(exact, self.model.function_ulps * self.model.u_compute * 2 * x.magnitude())

    def gelu(self, x: Interval) -> Interval:
        # erf-GELU decreases on (-inf, -0.75179...] and increases after; its minimum is -0.169971...
        return self._gelu_like(
            x, lambda v: ordered.gelu(np.asarray(v, dtype=np.float64)), (-0.7536, -0.75), -0.1700
        )

    def gelu_tanh(self, x: Interval) -> Interval:
        return self._gelu_like(
            x, lambda v: ordered.gelu_tanh(np.asarray(v, dtype=np.float64)), (-0.7600, -0.74), -0.1710
        )

    def _exp_bounds(self, lo: F64, hi: F64) -> tuple[F64, F64]:
        """Binary64 bounds on ``exp`` at the endpoints (ordered.exp is within 2 ulps)."""
        e_lo, e_hi = (
            ordered.exp(np.asarray(lo, dtype=np.float64)),
            ordered.exp(np.asarray(hi, dtype=np.float64)),
        )
        return _dn(e_lo * (1 - _F64_FUNCTION_REL)), _up(e_hi * (1 + _F64_FUNCTION_REL) + _F64_FUNCTION_ABS)

    def softmax_last(self, x: Interval) -> Interval:
        """The exact range of softmax over the box, widened by the kernel's errors.

        ``w_i`` increases with ``x_i`` and decreases with every other ``x_j``, so
        ``w_i`` ranges over ``[e(lo_i) / (e(lo_i) + sum_{j!=i} e(hi_j)),
        e(hi_i) / (e(hi_i) + sum_{j!=i} e(lo_j))]``
        (``e(t) = exp(t - c)`` for a constant ``c``).  The kernel's own shift ``m``
        (its row maximum), the rounding of ``x_j - m`` (relative error
        ``|x_j - m| u`` in ``exp``), exp itself, the sum and the division add
        relative errors ``rho_i`` to each weight and ``rho_sum`` to the sum.
        """
        masked = np.isneginf(x.hi)
        top = np.max(np.where(masked, -np.inf, x.hi), axis=-1, keepdims=True)
        top = np.where(np.isfinite(top), top, 0.0)
        with np.errstate(invalid="ignore", over="ignore"):
            e_lo, e_hi = self._exp_bounds(_dn(x.lo - top), _up(x.hi - top))
        e_lo = np.where(masked, 0.0, np.maximum(e_lo, 0.0))
        e_hi = np.where(masked, 0.0, e_hi)
        n = x.shape[-1]
        g64 = _gamma(n + 1, _U64)
        sum_lo = _dn(np.sum(e_lo, axis=-1, keepdims=True) * (1 - g64))
        sum_hi = _up(np.sum(e_hi, axis=-1, keepdims=True) * (1 + g64))
        others_hi = _up(sum_hi - e_hi)  # an upper bound on sum_{j != i} e(hi_j)
        others_lo = np.maximum(_dn(sum_lo - e_lo), 0.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            w_lo = _dn(e_lo / _up(e_lo + np.maximum(others_hi, 0.0)))
            w_hi = _up(e_hi / _dn(e_hi + others_lo))
        w_lo = np.where(masked, 0.0, np.clip(np.where(np.isnan(w_lo), 0.0, w_lo), 0.0, 1.0))
        w_hi = np.where(masked, 0.0, np.clip(np.where(np.isnan(w_hi), 1.0, w_hi), 0.0, 1.0))
        m = self.model
        if not m.rounding:
            return Interval(w_lo, w_hi)
        u = m.u_compute
        # |x_j - m| for any kernel shift m in [max lo, max hi]
        spread = np.where(
            masked, 0.0, _up(np.max(np.where(masked, -np.inf, x.hi), axis=-1, keepdims=True) - x.lo)
        )
        extra = m.sdpa_weight_ulps * u if self.fused_attention else 0.0
        with np.errstate(over="ignore", invalid="ignore"):
            rho = _up(np.expm1(_up(m.basic_ulps * u * spread)) * (1 + 2**-40) + m.function_ulps * u + extra)
            rho = np.where(np.isfinite(rho), rho, np.inf)
            rho_sum = _up(
                np.sum(np.where(masked, 0.0, e_hi * rho), axis=-1, keepdims=True) / np.maximum(sum_lo, 1e-300)
            )
            rho_sum = _up(rho_sum + _gamma(n, u))
            division = 2 * m.basic_ulps * u
            low = _dn(w_lo * _dn((1 - rho) * (1 - division) / _up(1 + rho_sum)))
            high = _up(w_hi * _up((1 + rho) * (1 + division) / _dn(1 - rho_sum)))
        low = np.where(np.isnan(low) | (rho >= 1), 0.0, np.maximum(low, 0.0))
        high = np.where(np.isnan(high) | (rho_sum >= 1) | (rho >= 1), np.inf, high)
        out = self._round(Interval(low, high), 0.0)
        return Interval(np.where(masked, 0.0, out.lo), np.where(masked, 0.0, out.hi))

    def center(self, x: Interval) -> Interval:
        """The exact range of ``x_i - mean(x)``: ``(1 - 1/n) x_i - sum_{j != i} x_j / n``, plus kernel "
        "errors."""
        n = x.shape[-1]
        g64 = _gamma(n + 2, _U64)
        total_lo = np.sum(x.lo, axis=-1, keepdims=True)
        total_hi = np.sum(x.hi, axis=-1, keepdims=True)
        slack = _up(g64 * np.sum(x.magnitude(), axis=-1, keepdims=True))
        others_lo, others_hi = _dn(_dn(total_lo - x.lo) - slack), _up(_up(total_hi - x.hi) + slack)
        keep = (n - 1) / n
        lo = _dn(_dn(keep * x.lo) - _up(others_hi / n))
        hi = _up(_up(keep * x.hi) - _dn(others_lo / n))
        out = _clean(lo, hi)
        m = self.model
        if not m.rounding:
            return out
        mean_error = (_gamma(n, m.u_compute) + 2 * m.basic_ulps * m.u_compute) * np.sum(
            x.magnitude(), axis=-1, keepdims=True
        ) / n + m.u_store * np.sum(x.magnitude(), axis=-1, keepdims=True) / n
        return self._round(out, m.basic_ulps * m.u_compute, _up(mean_error * (1 + 2**-40)))

    def normalize(self, x: Interval, eps: Interval) -> tuple[Interval, None]:
        """The exact range of ``x_i / sqrt(mean(x*x) + eps)`` over the box, plus kernel errors.

        ``y_i`` increases with ``x_i`` (``dy_i/dx_i = r (1 - x_i**2 r**2 / n) >= 0``) and
        depends on the other entries only through ``S = sum_{j != i} x_j**2``, falling
        with ``S`` (and eps) where ``x_i > 0`` and rising where ``x_i < 0``.
        """
        n = x.shape[-1]
        straddle = (x.lo <= 0) & (x.hi >= 0)
        sq_lo = np.where(straddle, 0.0, _dn(np.minimum(x.lo * x.lo, x.hi * x.hi)))
        sq_hi = _up(np.maximum(x.lo * x.lo, x.hi * x.hi))
        g64 = _gamma(n + 2, _U64)
        s_lo = _dn(np.sum(sq_lo, axis=-1, keepdims=True) * (1 - g64))
        s_hi = _up(np.sum(sq_hi, axis=-1, keepdims=True) * (1 + g64))
        others_lo = np.maximum(_dn(s_lo - sq_lo), 0.0)
        others_hi = _up(s_hi - sq_hi)
        eps_lo, eps_hi = float(np.min(eps.lo)), float(np.max(eps.hi))

        def y(value: F64, direction: int) -> F64:
            """``value / sqrt((value**2 + S)/n + eps)`` at extreme S and eps, rounded toward ``direction``.

            The quotient moves toward ``direction`` with a big denominator when
            ``value >= 0`` and ``direction < 0`` (or ``value < 0`` and ``direction > 0``),
            else with a small one; S and eps take the matching end of their ranges.
            """
            big = (value >= 0) == (direction < 0)
            with np.errstate(invalid="ignore", over="ignore"):
                d_big = _up(_up(_up(_up(value * value) + others_hi) / n) + eps_hi)
                d_small = _dn(_dn(_dn(_dn(value * value) + others_lo) / n) + eps_lo)
                root = np.where(big, _up(np.sqrt(d_big)), _dn(np.sqrt(np.maximum(d_small, 0.0))))
            with np.errstate(divide="ignore", invalid="ignore"):
                quotient = value / root
            return _dn(quotient) if direction < 0 else _up(quotient)

        lo, hi = y(x.lo, -1), y(x.hi, 1)
        out = _clean(np.where(np.isnan(lo), -np.inf, lo), np.where(np.isnan(hi), np.inf, hi))
        m = self.model
        if not m.rounding:
            return out, None
        u = m.u_compute
        rel = (
            0.5 * (_gamma(n, u) + 4 * m.basic_ulps * u + 3 * m.u_store)
            + m.function_ulps * u
            + m.basic_ulps * u
        )
        rel += 2.5 * m.u_store  # the other storage points (the last one is _round's)
        return self._round(out, rel * (1 + 2**-30)), None


_NUMPY = {"fp64": np.float64, "fp32": np.float32}
