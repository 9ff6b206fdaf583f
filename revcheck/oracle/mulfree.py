"""Oracle of the multiplication-free training ops (docs/spec.md §7), pure NumPy on bit patterns.

Every public function takes bit patterns (``fmt.uint_dtype`` arrays) of one of
:data:`SUPPORTED_FORMATS` and returns bit patterns.  Inside, values are widened
exactly to the *compute format* (:func:`compute_format`: fp64 for fp64, fp32 for
fp32, fp16 and bf16 -- the PAM accumulator format) and every operation is one of

* a piecewise-affine primitive of :mod:`revcheck.oracle.pam` (``⊡`` ``pam_mul``,
  ``⊘`` ``pam_div``, ``pa_exp2``, ``pa_log2``, ``pam_mul_grad``), applied to the
  bit views of compute-format arrays;
* an IEEE addition or subtraction, a comparison, ``floor``, ``max``, a sign
  flip or a selection, each correctly rounded (NumPy float32/float64 ufuncs, one
  call per step, so nothing contracts into an FMA);
* a sequential sum ``acc = +0.0; acc = fl(acc + x_k)`` for ``k = 0, 1, ...``
  along the reduced axis (:func:`sequential_sum`), or for whole-model reductions
  the declared strided order of :func:`strided_sum`.

There is no float multiply, divide or transcendental anywhere.  The result is
rounded once (RNE) from the compute format to the input format.  The same
definitions, line by line, are implemented on torch tensors in
:mod:`revcheck.nn.mulfree`; the properties in ``properties/test_mulfree.py``
check the two bit for bit (level O: the oracle defines the declared order).

Derivatives (docs/spec.md §7): every backward here is the chain rule
through the PA primitives with each local derivative the EXACT slope of the
affine piece the forward used.  Those slopes are signed powers of two
(:func:`exp2_slope`, :func:`log2_slope`, :func:`div_slope_a`,
:func:`div_slope_b`, ``pam_mul_grad``), so each chain step ``g ⊡ slope`` is
exact unless it over- or underflows; only the sums round.  The shift of the
softmax (the floor of the row maximum) is piecewise constant: its derivative is
zero.  The matrix products (:func:`pa_bmm`, :func:`pam_linear`) use the paper's
approximate backward ``G ⊡@ Bᵀ``, ``Aᵀ ⊡@ G`` (as :class:`revcheck.nn.pam.PAMMatmul`).

Host-side constants (hyperparameters, ``1 - β``, Adam's bias corrections
``1 - β^t``, dropout's ``1/(1-p)``) are exact rational numbers rounded once to
the compute format (:func:`exact_constant`): the host does integer arithmetic
only.  The torch implementation takes its constants from here, so both sides
use the same bits by construction.

This module never imports torch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction
from typing import Any

import numpy as np
import numpy.typing as npt

from revcheck import formats
from revcheck.errors import UsageError
from revcheck.formats import FloatFormat
from revcheck.oracle import pam
from revcheck.oracle.rounding import check_bits, decode, encode_exact, round_to_format, special_bits

__all__ = [
    "DROPOUT_DRAW_BITS",
    "LANES",
    "REDUCTIONS",
    "SUPPORTED_FORMATS",
    "AdamConstants",
    "PAFormatError",
    "adam_constants",
    "compute_format",
    "div_slope_a",
    "div_slope_b",
    "dropout_scale",
    "dropout_threshold",
    "exact_constant",
    "exp2_slope",
    "log2_slope",
    "narrow",
    "pa_adam_step",
    "pa_bmm",
    "pa_bmm_backward",
    "pa_clip_coefficient",
    "pa_cross_entropy",
    "pa_cross_entropy_backward",
    "pa_dropout",
    "pa_dropout_backward",
    "pa_layer_norm",
    "pa_layer_norm_backward",
    "pa_log_softmax",
    "pa_log_softmax_backward",
    "pa_mean",
    "pa_mean_backward",
    "pa_rms_norm",
    "pa_rms_norm_backward",
    "pa_scale",
    "pa_scale_backward",
    "pa_softmax",
    "pa_softmax_backward",
    "pa_sq_norm",
    "pa_sqrt",
    "pam_linear",
    "pam_linear_backward",
    "sequential_sum",
    "strided_sum",
    "widen",
]

#: Formats the PA training ops accept (fp8 has no room for a training step's dynamic range).
SUPPORTED_FORMATS = ("fp64", "fp32", "fp16", "bf16")
#: Lanes of the declared order of whole-model reductions (:func:`strided_sum`).
LANES = 1024
#: Dropout draws are uniform integers in [0, 2**DROPOUT_DRAW_BITS).
DROPOUT_DRAW_BITS = 24
REDUCTIONS = ("mean", "sum", "none")

FloatArray = npt.NDArray[np.floating[Any]]
UIntArray = npt.NDArray[np.unsignedinteger[Any]]


class PAFormatError(UsageError):
    """A dtype or format the PA training ops do not take; the message names the ones they do."""


# ---- formats, widening and narrowing -------------------------------------------------------------------


def check_format(fmt: object, op: str = "the PA training ops") -> FloatFormat:
    """``formats.get(fmt)`` restricted to :data:`SUPPORTED_FORMATS`; else a :class:`PAFormatError`."""
    supported = ", ".join(SUPPORTED_FORMATS)
    try:
        fmt_ = formats.get(fmt)
    except formats.UnsupportedFormatError:
        raise PAFormatError(
            f"{op}: {fmt!s} is not a float format the PA training ops take; they take {supported} "
            "(an integer dtype holds no PA values: convert explicitly, e.g. x.to(torch.float32))"
        ) from None
    if fmt_.name not in SUPPORTED_FORMATS:
        raise PAFormatError(
            f"{op}: format {fmt_.name} is not supported; use one of {supported} "
            "(convert explicitly, e.g. to fp32; nothing is converted silently)"
        )
    return fmt_


def compute_format(fmt: object) -> FloatFormat:
    """The format every PA training op computes in: fp64 for fp64, fp32 for fp32, fp16 and bf16."""
    return pam.accumulator_format(check_format(fmt))


def _float_dtype(acc: FloatFormat) -> np.dtype[Any]:
    assert acc.numpy_float is not None
    return acc.numpy_float


def widen(x_bits: object, fmt: object, name: str = "x_bits") -> FloatArray:
    """Bit patterns of ``fmt`` as a NumPy float array of the compute format (exact)."""
    fmt_ = check_format(fmt)
    acc = pam.accumulator_format(fmt_)
    bits = check_bits(x_bits, fmt_, name)
    if fmt_ is acc:
        return np.asarray(bits).view(_float_dtype(acc))
    return encode_exact(decode(bits, fmt_, "ieee"), fmt_, acc).view(_float_dtype(acc))


def narrow(values: FloatArray, fmt: object) -> UIntArray:
    """Compute-format floats rounded once (RNE, overflow to inf) to ``fmt``; returns bit patterns."""
    fmt_ = check_format(fmt)
    acc = pam.accumulator_format(fmt_)
    acc_bits = np.asarray(values, dtype=_float_dtype(acc)).view(acc.uint_dtype)
    if fmt_ is acc:
        return acc_bits.copy()
    d = decode(acc_bits, acc, "ieee")
    out = round_to_format(
        d.negative, d.exponent, d.significand(acc), acc.mantissa_bits - fmt_.mantissa_bits, fmt_, "ieee"
    )
    out = np.where(d.is_inf, special_bits(d.negative, fmt_.overflow_magnitude, fmt_), out)
    return np.where(d.is_nan, fmt_.uint_dtype.type(fmt_.canonical_nan), out).astype(fmt_.uint_dtype)


# ---- exact host constants ------------------------------------------------------------------------------


def exact_constant(value: int | float | Fraction, fmt: object) -> int:
    """The bit pattern of ``value`` (an exact rational) rounded once to ``fmt``, RNE, overflow to ±inf.

    Host constants of the PA training step are made here: a Python float is the
    exact binary64 number it denotes, so ``exact_constant(0.9, "fp32")`` equals
    ``np.float32(0.9)``; ``exact_constant(Fraction(1) - Fraction(0.9), "fp32")``
    is ``1 - 0.9`` computed exactly, then rounded once.  Only integer arithmetic.

    Examples
    --------
    >>> hex(exact_constant(Fraction(1, 3), "fp32"))
    '0x3eaaaaab'
    >>> exact_constant(0.5, "bf16") == 0x3F00
    True
    """
    fmt_ = formats.get(fmt)
    if isinstance(value, float) and value != value:
        return fmt_.canonical_nan
    if isinstance(value, float) and value in (float("inf"), float("-inf")):
        return int(special_bits(np.bool_(value < 0), fmt_.overflow_magnitude, fmt_))
    q = Fraction(value)
    negative = q < 0
    numerator, denominator = abs(q.numerator), q.denominator
    if numerator == 0:
        return fmt_.sign_mask if isinstance(value, float) and math.copysign(1.0, value) < 0 else 0
    # floor(log2 q): the exponent E with 2**E <= q < 2**(E+1).
    exponent = numerator.bit_length() - denominator.bit_length()
    if (numerator << max(-exponent, 0)) < (denominator << max(exponent, 0)):
        exponent -= 1
    # A significand with m + 3 fraction bits below the leading one, plus a sticky bit.
    extra = 3
    shift = fmt_.mantissa_bits + extra - exponent
    scaled_num = numerator << max(shift, 0)
    scaled_den = denominator << max(-shift, 0)
    significand, remainder = divmod(scaled_num, scaled_den)
    significand = (significand << 1) | (remainder != 0)  # sticky bit below the kept bits
    out = round_to_format(
        np.array([negative]),
        np.array([exponent], dtype=np.int64),
        np.array([significand], dtype=np.int64),
        extra + 1,
        fmt_,
        "ieee",
    )
    return int(out[0])


def _constant(value: int | float | Fraction, acc: FloatFormat) -> FloatArray:
    bits = np.array(exact_constant(value, acc), dtype=acc.uint_dtype)
    return bits.view(_float_dtype(acc))


# ---- primitives on compute-format arrays ----------------------------------------------------------------


class _PA:
    """PA primitives and their exact slopes on compute-format NumPy floats (fp32 or fp64)."""

    def __init__(self, acc: FloatFormat) -> None:
        self.acc = acc
        self.dtype = _float_dtype(acc)
        self.one = np.asarray(1.0, dtype=self.dtype)
        self.zero = np.asarray(0.0, dtype=self.dtype)
        self.half = np.asarray(0.5, dtype=self.dtype)

    def bits(self, x: object) -> UIntArray:
        return np.asarray(x, dtype=self.dtype).view(self.acc.uint_dtype)

    def floats(self, bits: UIntArray) -> FloatArray:
        return np.asarray(bits).view(self.dtype)

    def mul(self, a: object, b: object) -> FloatArray:
        return self.floats(pam.pam_mul(self.bits(a), self.bits(b), self.acc))

    def div(self, a: object, b: object) -> FloatArray:
        return self.floats(pam.pam_div(self.bits(a), self.bits(b), self.acc))

    def exp2(self, y: object) -> FloatArray:
        return self.floats(pam.pa_exp2(self.bits(y), self.acc))

    def log2(self, x: object) -> FloatArray:
        return self.floats(pam.pa_log2(self.bits(x), self.acc))

    def mul_grad(self, a: object, b: object) -> FloatArray:
        return self.floats(pam.pam_mul_grad(self.bits(a), self.bits(b), self.acc))

    # Exact slopes, composed of the primitives (docs/spec.md §7, "slopes").

    def lead(self, x: FloatArray) -> FloatArray:
        """sign(x) · 2**E: ``pam_mul_grad(1, x)`` (E exact also for subnormals)."""
        return self.mul_grad(np.broadcast_to(self.one, np.shape(x)), x)

    def exponent(self, x: FloatArray) -> FloatArray:
        """E of |x| as a float (an integer); ±0 -> -inf, ±inf -> +inf, NaN -> NaN."""
        return self.log2(self.lead(x))

    def one_plus_fraction(self, x: FloatArray) -> FloatArray:
        """1 + M of |x|; 1 for zeros and infinities (their fraction field), NaN for NaN."""
        fraction = self.div(np.abs(x), np.abs(self.lead(x)))
        return np.where((x == 0) | np.isinf(x), self.one, fraction)

    def exp2_slope(self, y: FloatArray) -> FloatArray:
        return exp2_slope_with(self, y)

    def log2_slope(self, x: FloatArray) -> FloatArray:
        return log2_slope_with(self, x)

    def div_slope_a(self, a: FloatArray, b: FloatArray) -> FloatArray:
        return div_slope_a_with(self, a, b)

    def div_slope_b(self, a: FloatArray, b: FloatArray) -> FloatArray:
        return div_slope_b_with(self, a, b)

    def sqrt(self, v: FloatArray) -> FloatArray:
        """pa_exp2(pa_log2(v) ⊡ 0.5); NaN for v < 0; ±0 -> +0."""
        root = self.exp2(self.mul(self.log2(v), self.half))
        return np.where(v < 0, self.dtype.type(np.nan), root)

    def sqrt_backward(self, g: FloatArray, v: FloatArray) -> FloatArray:
        """g · d sqrt/dv by the chain g ⊡ exp2'(w) ⊡ (d(z ⊡ 0.5)/dz) ⊡ log2'(v), in that order."""
        z = self.log2(v)
        w = self.mul(z, self.half)
        out = self.mul(g, self.exp2_slope(w))
        out = self.mul(out, self.mul_grad(z, np.broadcast_to(self.half, np.shape(z))))
        out = self.mul(out, self.log2_slope(v))
        return np.where(v < 0, self.dtype.type(np.nan), out)


def exp2_slope_with(P: _PA, y: FloatArray) -> FloatArray:
    """d pa_exp2(y)/dy = 2**floor(y) = pa_exp2(floor(y)), rounded once."""
    return P.exp2(np.floor(y))


def log2_slope_with(P: _PA, x: FloatArray) -> FloatArray:
    """d pa_log2(x)/dx = sign(x) · 2**-E: pa_exp2(-E) with the sign of x (±inf at ±0, +0 at inf)."""
    magnitude = P.exp2(-P.exponent(x))
    return np.where(np.signbit(x), -magnitude, magnitude)


def _fraction_below(P: _PA, a: FloatArray, b: FloatArray) -> FloatArray:
    """[Ma < Mb] as 1.0 / 0.0: which affine piece of ⊘ the pair lies on."""
    return (P.one_plus_fraction(a) < P.one_plus_fraction(b)).astype(P.dtype)


def div_slope_a_with(P: _PA, a: FloatArray, b: FloatArray) -> FloatArray:
    """d(a ⊘ b)/da = sign(b) · 2**(-Eb - [Ma < Mb])."""
    below = _fraction_below(P, a, b)
    magnitude = P.exp2(-(P.exponent(b) + below))
    return np.where(np.signbit(b), -magnitude, magnitude)


def div_slope_b_with(P: _PA, a: FloatArray, b: FloatArray) -> FloatArray:
    """d(a ⊘ b)/db = -sign(a) · 2**(Ea - 2 Eb - [Ma < Mb])."""
    below = _fraction_below(P, a, b)
    eb = P.exponent(b)
    magnitude = P.exp2(P.exponent(a) - (eb + eb) - below)
    return np.where(np.signbit(a), magnitude, -magnitude)


def _pa(fmt: object, op: str) -> tuple[FloatFormat, _PA]:
    fmt_ = check_format(fmt, op)
    return fmt_, _PA(pam.accumulator_format(fmt_))


def exp2_slope(y_bits: object, fmt: object) -> UIntArray:
    """The exact slope ``2**floor(y)`` of ``pa_exp2`` at ``y``, in ``fmt``'s compute format (bits)."""
    fmt_, P = _pa(fmt, "exp2_slope")
    return P.bits(P.exp2_slope(widen(y_bits, fmt_, "y_bits")))


def log2_slope(x_bits: object, fmt: object) -> UIntArray:
    """The exact slope ``sign(x) · 2**-E`` of ``pa_log2`` at ``x``, compute-format bits."""
    fmt_, P = _pa(fmt, "log2_slope")
    return P.bits(P.log2_slope(widen(x_bits, fmt_)))


def div_slope_a(a_bits: object, b_bits: object, fmt: object) -> UIntArray:
    """The exact slope of ``a ⊘ b`` in ``a``: ``sign(b) · 2**(-Eb - [Ma < Mb])``, compute-format bits."""
    fmt_, P = _pa(fmt, "div_slope_a")
    return P.bits(P.div_slope_a(widen(a_bits, fmt_, "a_bits"), widen(b_bits, fmt_, "b_bits")))


def div_slope_b(a_bits: object, b_bits: object, fmt: object) -> UIntArray:
    """The exact slope of ``a ⊘ b`` in ``b``: ``-sign(a) · 2**(Ea - 2Eb - [Ma < Mb])`` (compute bits)."""
    fmt_, P = _pa(fmt, "div_slope_b")
    return P.bits(P.div_slope_b(widen(a_bits, fmt_, "a_bits"), widen(b_bits, fmt_, "b_bits")))


# ---- declared-order sums -----------------------------------------------------------------------------


def _sequential_sum(x: FloatArray, axis: int = -1, keepdims: bool = True) -> FloatArray:
    moved = np.moveaxis(x, axis, -1)
    total = np.zeros(moved.shape[:-1], dtype=x.dtype)
    for k in range(moved.shape[-1]):
        total = total + moved[..., k]
    return np.expand_dims(total, axis) if keepdims else total


def sequential_sum(x_bits: object, fmt: object, *, axis: int = -1) -> UIntArray:
    """``acc = +0.0; acc = fl(acc + x_k)`` along ``axis`` in the compute format; compute-format bits."""
    fmt_, P = _pa(fmt, "sequential_sum")
    return P.bits(_sequential_sum(widen(x_bits, fmt_), axis, keepdims=False))


def _strided_sum(flat: FloatArray) -> FloatArray:
    """The declared order of whole-model reductions: :data:`LANES` strided lanes, then the lanes in order.

    Element ``i`` goes to lane ``i % LANES``; each lane sums its elements in
    increasing ``i`` from +0.0; the total is the sequential sum of the lanes.
    Padding the tail with +0.0 is bit-neutral (a lane started at +0.0 is never
    -0.0), so this is exact bookkeeping, not an approximation.
    """
    padded = np.zeros(-(-flat.size // LANES) * LANES, dtype=flat.dtype)
    padded[: flat.size] = flat
    rows = padded.reshape(-1, LANES)
    lanes = np.zeros(LANES, dtype=flat.dtype)
    for row in rows:
        lanes = lanes + row
    return _sequential_sum(lanes, keepdims=False)


def strided_sum(x_bits: object, fmt: object) -> UIntArray:
    """:func:`_strided_sum` of the flattened (C order) array; a compute-format scalar (bits)."""
    fmt_, P = _pa(fmt, "strided_sum")
    return P.bits(_strided_sum(np.ravel(widen(x_bits, fmt_))))


# ---- softmax, log-softmax, cross-entropy ----------------------------------------------------------------


def _check_axis(shape: tuple[int, ...], axis: int, op: str) -> int:
    if not shape:
        raise UsageError(f"{op} needs at least one dimension, got a 0-d array; reshape it to (1,)")
    if not -len(shape) <= axis < len(shape):
        raise UsageError(f"{op}: axis {axis} is out of range for shape {shape}")
    if shape[axis] == 0:
        raise UsageError(f"{op}: the reduced axis {axis} of shape {shape} is empty; a softmax needs entries")
    return axis % len(shape)


def _softmax_parts(P: _PA, x: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray]:
    """y = x - floor(row max) (+0.0 so the shift is never -0), e = pa_exp2(y), s = Σ e (keepdims)."""
    shift = np.floor(np.max(x, axis=-1, keepdims=True)) + P.zero
    y = x - shift
    e = P.exp2(y)
    return y, e, _sequential_sum(e)


def _softmax_backward(P: _PA, g: FloatArray, x: FloatArray) -> FloatArray:
    y, e, s = _softmax_parts(P, x)
    t = _sequential_sum(P.mul(g, P.div_slope_b(e, s)))
    ge = P.mul(g, P.div_slope_a(e, s)) + t
    return P.mul(ge, P.exp2_slope(y))


def _log_softmax(P: _PA, x: FloatArray) -> FloatArray:
    y, _, s = _softmax_parts(P, x)
    return y - P.log2(s)


def _log_softmax_backward(P: _PA, g: FloatArray, x: FloatArray) -> FloatArray:
    y, _, s = _softmax_parts(P, x)
    v = P.mul(_sequential_sum(g), P.log2_slope(s))
    return g - P.mul(v, P.exp2_slope(y))


def _along_last(x_bits: object, fmt: FloatFormat, axis: int, op: str) -> tuple[FloatArray, int]:
    x = widen(x_bits, fmt)
    axis = _check_axis(np.shape(x), axis, op)
    return np.moveaxis(x, axis, -1), axis


def pa_softmax(x_bits: object, fmt: object, *, axis: int = -1) -> UIntArray:
    """PA softmax along ``axis`` (base 2): ``pa_exp2(y) ⊘ Σ pa_exp2(y)``, ``y = x - floor(max(row))``.

    The shift is the floor of each row's OWN maximum, so a row's result never
    depends on other rows.  An integer shift is exact for pa_exp2 (it only moves
    the exponent), so the value equals the unshifted PA softmax wherever the
    subtraction is exact.  A row with NaN or +inf, or all -inf, is NaN.
    """
    with np.errstate(all="ignore"):
        fmt_, P = _pa(fmt, "pa_softmax")
        x, axis = _along_last(x_bits, fmt_, axis, "pa_softmax")
        _, e, s = _softmax_parts(P, x)
        return narrow(np.moveaxis(P.div(e, s), -1, axis), fmt_)


def pa_softmax_backward(grad_bits: object, x_bits: object, fmt: object, *, axis: int = -1) -> UIntArray:
    """Exact-slope backward of :func:`pa_softmax` (module docstring), given the upstream gradient."""
    with np.errstate(all="ignore"):
        fmt_, P = _pa(fmt, "pa_softmax_backward")
        x, axis = _along_last(x_bits, fmt_, axis, "pa_softmax_backward")
        g = np.moveaxis(widen(grad_bits, fmt_, "grad_bits"), axis, -1)
        return narrow(np.moveaxis(_softmax_backward(P, g, x), -1, axis), fmt_)


def pa_log_softmax(x_bits: object, fmt: object, *, axis: int = -1) -> UIntArray:
    """PA log-softmax (base 2): ``y - pa_log2(Σ pa_exp2(y))`` with ``y`` as in :func:`pa_softmax`."""
    with np.errstate(all="ignore"):
        fmt_, P = _pa(fmt, "pa_log_softmax")
        x, axis = _along_last(x_bits, fmt_, axis, "pa_log_softmax")
        return narrow(np.moveaxis(_log_softmax(P, x), -1, axis), fmt_)


def pa_log_softmax_backward(grad_bits: object, x_bits: object, fmt: object, *, axis: int = -1) -> UIntArray:
    """Exact-slope backward of :func:`pa_log_softmax`: ``g - (Σg ⊡ log2'(s)) ⊡ exp2'(y)``."""
    with np.errstate(all="ignore"):
        fmt_, P = _pa(fmt, "pa_log_softmax_backward")
        x, axis = _along_last(x_bits, fmt_, axis, "pa_log_softmax_backward")
        g = np.moveaxis(widen(grad_bits, fmt_, "grad_bits"), axis, -1)
        return narrow(np.moveaxis(_log_softmax_backward(P, g, x), -1, axis), fmt_)


def _check_targets(logits_shape: tuple[int, ...], targets: object, op: str) -> npt.NDArray[np.int64]:
    if len(logits_shape) != 2:
        raise UsageError(f"{op} needs logits of shape (N, C), got {logits_shape}; flatten the batch first")
    if not isinstance(targets, np.ndarray) or targets.dtype != np.int64 or targets.shape != logits_shape[:1]:
        got = (
            f"{targets.dtype} {targets.shape}" if isinstance(targets, np.ndarray) else type(targets).__name__
        )
        raise UsageError(f"{op} needs int64 targets of shape ({logits_shape[0]},), got {got}")
    if targets.size and (targets.min() < 0 or targets.max() >= logits_shape[1]):
        raise UsageError(f"{op}: targets must lie in [0, {logits_shape[1]}), got values outside")
    return targets


def _check_reduction(reduction: object, op: str) -> str:
    if reduction not in REDUCTIONS:
        raise UsageError(
            f"{op}: unknown reduction {reduction!r}; use one of {', '.join(map(repr, REDUCTIONS))}"
        )
    return str(reduction)


def _cross_entropy_rows(P: _PA, logits: FloatArray, targets: npt.NDArray[np.int64]) -> FloatArray:
    log_p = _log_softmax(P, logits)
    return -log_p[np.arange(logits.shape[0]), targets]


def pa_cross_entropy(
    logits_bits: object, targets: object, fmt: object, *, reduction: str = "mean"
) -> UIntArray:
    """PA cross-entropy in bits: ``-pa_log_softmax(logits)[i, t_i]``, then summed or PA-averaged.

    ``"mean"``: sequential sum over rows ⊘ N (exact division only when N is a
    power of two); ``"sum"``: the sequential sum; ``"none"``: per row.
    """
    with np.errstate(all="ignore"):
        fmt_, P = _pa(fmt, "pa_cross_entropy")
        reduction = _check_reduction(reduction, "pa_cross_entropy")
        logits = widen(logits_bits, fmt_, "logits_bits")
        rows = _cross_entropy_rows(P, logits, _check_targets(np.shape(logits), targets, "pa_cross_entropy"))
        if reduction == "none":
            return narrow(rows, fmt_)
        total = _sequential_sum(rows, keepdims=False)
        if reduction == "sum":
            return narrow(total, fmt_)
        return narrow(P.div(total, _constant(rows.shape[0], P.acc)), fmt_)


def pa_cross_entropy_backward(
    grad_bits: object, logits_bits: object, targets: object, fmt: object, *, reduction: str = "mean"
) -> UIntArray:
    """Exact-slope backward of :func:`pa_cross_entropy` with respect to the logits."""
    with np.errstate(all="ignore"):
        fmt_, P = _pa(fmt, "pa_cross_entropy_backward")
        reduction = _check_reduction(reduction, "pa_cross_entropy_backward")
        logits = widen(logits_bits, fmt_, "logits_bits")
        targets_ = _check_targets(np.shape(logits), targets, "pa_cross_entropy_backward")
        g = widen(grad_bits, fmt_, "grad_bits")
        rows = logits.shape[0]
        if reduction == "none":
            g_rows = g
        elif reduction == "sum":
            g_rows = np.broadcast_to(g, (rows,))
        else:
            total = _sequential_sum(_cross_entropy_rows(P, logits, targets_), keepdims=False)
            g_total = P.mul(g, P.div_slope_a(total, _constant(rows, P.acc)))
            g_rows = np.broadcast_to(g_total, (rows,))
        g_log_p = np.zeros(logits.shape, dtype=P.dtype)
        g_log_p[np.arange(rows), targets_] = -g_rows
        return narrow(_log_softmax_backward(P, g_log_p, logits), fmt_)


# ---- mean, square root -------------------------------------------------------------------------------


def pa_mean(x_bits: object, fmt: object, *, axis: int = -1) -> UIntArray:
    """PA mean along ``axis``: the sequential sum ⊘ the count (exact iff the count is a power of two)."""
    with np.errstate(all="ignore"):
        fmt_, P = _pa(fmt, "pa_mean")
        x, axis = _along_last(x_bits, fmt_, axis, "pa_mean")
        total = _sequential_sum(x, keepdims=False)
        return narrow(P.div(total, _constant(x.shape[-1], P.acc)), fmt_)


def pa_mean_backward(grad_bits: object, x_bits: object, fmt: object, *, axis: int = -1) -> UIntArray:
    """Backward of :func:`pa_mean`: every element gets ``g ⊡ d(S ⊘ n)/dS``."""
    with np.errstate(all="ignore"):
        fmt_, P = _pa(fmt, "pa_mean_backward")
        x, axis = _along_last(x_bits, fmt_, axis, "pa_mean_backward")
        total = _sequential_sum(x, keepdims=False)
        g = widen(grad_bits, fmt_, "grad_bits")
        g_total = P.mul(g, P.div_slope_a(total, _constant(x.shape[-1], P.acc)))
        return narrow(np.moveaxis(np.broadcast_to(g_total[..., None], x.shape), -1, axis), fmt_)


def pa_sqrt(v_bits: object, fmt: object) -> UIntArray:
    """PA square root ``pa_exp2(pa_log2(v) ⊡ 0.5)``, computed wide, rounded to ``fmt``; NaN for v < 0."""
    with np.errstate(all="ignore"):
        fmt_, P = _pa(fmt, "pa_sqrt")
        return narrow(P.sqrt(widen(v_bits, fmt_, "v_bits")), fmt_)


# ---- layer norm and RMS norm -----------------------------------------------------------------------------


def _optional(bits: object, fmt: FloatFormat, name: str, n: int) -> FloatArray | None:
    if bits is None:
        return None
    values = widen(bits, fmt, name)
    if np.shape(values) != (n,):
        raise UsageError(f"{name} must have shape ({n},) (the normalised size), got {np.shape(values)}")
    return values


def _affine(P: _PA, xhat: FloatArray, weight: FloatArray | None, bias: FloatArray | None) -> FloatArray:
    y = xhat if weight is None else P.mul(xhat, weight)
    return y if bias is None else y + bias


def _affine_backward(
    P: _PA, g: FloatArray, xhat: FloatArray, weight: FloatArray | None, bias: FloatArray | None
) -> tuple[FloatArray, FloatArray | None, FloatArray | None]:
    """(d xhat, d weight, d bias); parameter gradients are sequential sums over the rows in C order."""
    rows_g = g.reshape(-1, g.shape[-1])
    g_bias = None if bias is None else _sequential_sum(rows_g, axis=0, keepdims=False)
    if weight is None:
        return g, None, g_bias
    g_xhat = P.mul(g, P.mul_grad(xhat, np.broadcast_to(weight, xhat.shape)))
    terms = P.mul(g, P.mul_grad(np.broadcast_to(weight, xhat.shape), xhat)).reshape(-1, g.shape[-1])
    return g_xhat, _sequential_sum(terms, axis=0, keepdims=False), g_bias


def _layer_norm_parts(P: _PA, x: FloatArray, eps: FloatArray) -> dict[str, FloatArray]:
    n = _constant(x.shape[-1], P.acc)
    sum_x = _sequential_sum(x)
    d = x - P.div(sum_x, n)
    sum_q = _sequential_sum(P.mul(d, d))
    v = P.div(sum_q, n) + eps
    sigma = P.sqrt(v)
    return {"n": n, "sum_x": sum_x, "d": d, "sum_q": sum_q, "v": v, "sigma": sigma, "xhat": P.div(d, sigma)}


def _check_norm_input(x: FloatArray, op: str) -> int:
    if x.ndim == 0 or x.shape[-1] == 0:
        raise UsageError(
            f"{op} normalises the last dimension; got shape {x.shape}, which has no entries there"
        )
    return int(x.shape[-1])


def pa_layer_norm(
    x_bits: object, weight_bits: object, bias_bits: object, fmt: object, *, eps: float = 1e-5
) -> UIntArray:
    """PA layer norm over the last dimension (``weight_bits`` / ``bias_bits`` may be None).

    ``μ = Σx ⊘ n``; ``d = x - μ``; ``σ = pa_sqrt(Σ(d ⊡ d) ⊘ n + eps)``;
    ``y = (d ⊘ σ) ⊡ w + b``; sums sequential along the row; ``eps`` rounded once.
    """
    with np.errstate(all="ignore"):
        fmt_, P = _pa(fmt, "pa_layer_norm")
        x = widen(x_bits, fmt_)
        n = _check_norm_input(x, "pa_layer_norm")
        weight, bias = (
            _optional(weight_bits, fmt_, "weight_bits", n),
            _optional(bias_bits, fmt_, "bias_bits", n),
        )
        parts = _layer_norm_parts(P, x, _constant(eps, P.acc))
        return narrow(_affine(P, parts["xhat"], weight, bias), fmt_)


def pa_layer_norm_backward(
    grad_bits: object,
    x_bits: object,
    weight_bits: object,
    bias_bits: object,
    fmt: object,
    *,
    eps: float = 1e-5,
) -> tuple[UIntArray, UIntArray | None, UIntArray | None]:
    """Exact-slope backward of :func:`pa_layer_norm`: bits of (d x, d weight or None, d bias or None)."""
    with np.errstate(all="ignore"):
        fmt_, P = _pa(fmt, "pa_layer_norm_backward")
        x = widen(x_bits, fmt_)
        n = _check_norm_input(x, "pa_layer_norm_backward")
        weight, bias = (
            _optional(weight_bits, fmt_, "weight_bits", n),
            _optional(bias_bits, fmt_, "bias_bits", n),
        )
        g = widen(grad_bits, fmt_, "grad_bits")
        parts = _layer_norm_parts(P, x, _constant(eps, P.acc))
        d, sigma = parts["d"], parts["sigma"]
        g_xhat, g_weight, g_bias = _affine_backward(P, g, parts["xhat"], weight, bias)
        g_d = P.mul(g_xhat, P.div_slope_a(d, sigma))
        g_sigma = _sequential_sum(P.mul(g_xhat, P.div_slope_b(d, sigma)))
        g_v = P.sqrt_backward(g_sigma, parts["v"])
        g_sum_q = P.mul(g_v, P.div_slope_a(parts["sum_q"], parts["n"]))
        t = P.mul(np.broadcast_to(g_sum_q, d.shape), P.mul_grad(d, d))
        g_d = g_d + (t + t)
        g_mu = -_sequential_sum(g_d)
        g_x = g_d + P.mul(g_mu, P.div_slope_a(parts["sum_x"], parts["n"]))
        return (
            narrow(g_x, fmt_),
            None if g_weight is None else narrow(g_weight, fmt_),
            None if g_bias is None else narrow(g_bias, fmt_),
        )


def _rms_norm_parts(P: _PA, x: FloatArray, eps: FloatArray) -> dict[str, FloatArray]:
    n = _constant(x.shape[-1], P.acc)
    sum_q = _sequential_sum(P.mul(x, x))
    v = P.div(sum_q, n) + eps
    sigma = P.sqrt(v)
    return {"n": n, "sum_q": sum_q, "v": v, "sigma": sigma, "xhat": P.div(x, sigma)}


def pa_rms_norm(x_bits: object, weight_bits: object, fmt: object, *, eps: float = 1e-6) -> UIntArray:
    """PA RMS norm over the last dimension: ``(x ⊘ pa_sqrt(Σ(x ⊡ x) ⊘ n + eps)) ⊡ w``."""
    with np.errstate(all="ignore"):
        fmt_, P = _pa(fmt, "pa_rms_norm")
        x = widen(x_bits, fmt_)
        n = _check_norm_input(x, "pa_rms_norm")
        weight = _optional(weight_bits, fmt_, "weight_bits", n)
        parts = _rms_norm_parts(P, x, _constant(eps, P.acc))
        return narrow(_affine(P, parts["xhat"], weight, None), fmt_)


def pa_rms_norm_backward(
    grad_bits: object, x_bits: object, weight_bits: object, fmt: object, *, eps: float = 1e-6
) -> tuple[UIntArray, UIntArray | None]:
    """Exact-slope backward of :func:`pa_rms_norm`: bits of (d x, d weight or None)."""
    with np.errstate(all="ignore"):
        fmt_, P = _pa(fmt, "pa_rms_norm_backward")
        x = widen(x_bits, fmt_)
        n = _check_norm_input(x, "pa_rms_norm_backward")
        weight = _optional(weight_bits, fmt_, "weight_bits", n)
        g = widen(grad_bits, fmt_, "grad_bits")
        parts = _rms_norm_parts(P, x, _constant(eps, P.acc))
        sigma = parts["sigma"]
        g_xhat, g_weight, _ = _affine_backward(P, g, parts["xhat"], weight, None)
        g_x = P.mul(g_xhat, P.div_slope_a(x, sigma))
        g_sigma = _sequential_sum(P.mul(g_xhat, P.div_slope_b(x, sigma)))
        g_v = P.sqrt_backward(g_sigma, parts["v"])
        g_sum_q = P.mul(g_v, P.div_slope_a(parts["sum_q"], parts["n"]))
        t = P.mul(np.broadcast_to(g_sum_q, x.shape), P.mul_grad(x, x))
        g_x = g_x + (t + t)
        return narrow(g_x, fmt_), None if g_weight is None else narrow(g_weight, fmt_)


# ---- scaling and dropout ----------------------------------------------------------------------------------


def _scalar(c_bits: object, acc: FloatFormat) -> FloatArray:
    bits = check_bits(c_bits, acc, "c_bits")
    if np.shape(bits) != ():
        raise UsageError(
            f"the scale must be one compute-format ({acc.name}) value, got shape {np.shape(bits)}"
        )
    return np.asarray(bits).view(_float_dtype(acc))


def pa_scale(x_bits: object, c_bits: object, fmt: object) -> UIntArray:
    """``x ⊡ c``, ``c`` one compute-format value (attention or loss scaling): exact iff c = ±2**k."""
    with np.errstate(all="ignore"):
        fmt_, P = _pa(fmt, "pa_scale")
        return narrow(P.mul(widen(x_bits, fmt_), _scalar(c_bits, P.acc)), fmt_)


def pa_scale_backward(grad_bits: object, x_bits: object, c_bits: object, fmt: object) -> UIntArray:
    """``g ⊡ pam_mul_grad(x, c)``: the exact slope of ``x ⊡ c`` in ``x`` (c held constant)."""
    with np.errstate(all="ignore"):
        fmt_, P = _pa(fmt, "pa_scale_backward")
        x, c = widen(x_bits, fmt_), _scalar(c_bits, P.acc)
        g = widen(grad_bits, fmt_, "grad_bits")
        return narrow(P.mul(g, P.mul_grad(x, np.broadcast_to(c, x.shape))), fmt_)


def dropout_threshold(p: float) -> int:
    """Integer threshold ``t = round(p · 2**24)`` (exact rational, ties to even): drop iff draw < t.

    The drop probability is exactly ``t / 2**24`` (within 2**-25 of ``p``).
    """
    if not isinstance(p, (int, float)) or not 0.0 <= p <= 1.0:
        raise UsageError(f"dropout probability must be a number in [0, 1], got {p!r}")
    return round(Fraction(p) * (1 << DROPOUT_DRAW_BITS))


def dropout_scale(p: float, fmt: object) -> int:
    """Bits (compute format of ``fmt``) of ``1 / (1 - t/2**24)`` rounded once; exactly 2 for p = 1/2."""
    acc = compute_format(fmt)
    threshold = dropout_threshold(p)
    if threshold >= 1 << DROPOUT_DRAW_BITS:
        return 0  # everything dropped: the kept values (none) are scaled by nothing
    return exact_constant(Fraction(1 << DROPOUT_DRAW_BITS, (1 << DROPOUT_DRAW_BITS) - threshold), acc)


def _keep(draws: object, threshold: int, shape: tuple[int, ...]) -> npt.NDArray[np.bool_]:
    if not isinstance(draws, np.ndarray) or draws.dtype != np.int64 or draws.shape != shape:
        got = f"{draws.dtype} {draws.shape}" if isinstance(draws, np.ndarray) else type(draws).__name__
        raise UsageError(f"draws must be int64 of shape {shape} (one per element), got {got}")
    return np.asarray(draws >= threshold)


def pa_dropout(x_bits: object, draws: object, fmt: object, *, p: float) -> UIntArray:
    """PA dropout: keep iff ``draw >= threshold`` (integer compare), kept values ``x ⊡ c``, dropped +0."""
    with np.errstate(all="ignore"):
        fmt_, P = _pa(fmt, "pa_dropout")
        x = widen(x_bits, fmt_)
        keep = _keep(draws, dropout_threshold(p), np.shape(x))
        c = _scalar(np.array(dropout_scale(p, fmt_), P.acc.uint_dtype), P.acc)
        return narrow(np.where(keep, P.mul(x, c), P.zero), fmt_)


def pa_dropout_backward(
    grad_bits: object, x_bits: object, draws: object, fmt: object, *, p: float
) -> UIntArray:
    """``g ⊡ pam_mul_grad(x, c)`` where kept, +0 where dropped."""
    with np.errstate(all="ignore"):
        fmt_, P = _pa(fmt, "pa_dropout_backward")
        x = widen(x_bits, fmt_)
        keep = _keep(draws, dropout_threshold(p), np.shape(x))
        c = _scalar(np.array(dropout_scale(p, fmt_), P.acc.uint_dtype), P.acc)
        g = widen(grad_bits, fmt_, "grad_bits")
        return narrow(np.where(keep, P.mul(g, P.mul_grad(x, np.broadcast_to(c, x.shape))), P.zero), fmt_)


# ---- matrix products -----------------------------------------------------------------------------------


def _matmul_acc(a: FloatArray, b: FloatArray, acc: FloatFormat) -> FloatArray:
    return pam.pam_matmul(a.view(acc.uint_dtype), b.view(acc.uint_dtype), acc).view(_float_dtype(acc))


def _check_bmm(a: FloatArray, b: FloatArray) -> None:
    if a.ndim < 2 or b.ndim < 2 or a.shape[:-2] != b.shape[:-2] or a.shape[-1] != b.shape[-2]:
        raise UsageError(
            f"pa_bmm needs A (..., M, K) and B (..., K, N) with equal batch dimensions, got {a.shape} and "
            f"{b.shape}; expand the batch dimensions explicitly"
        )


def pa_bmm(a_bits: object, b_bits: object, fmt: object) -> UIntArray:
    """Batched PAM product ``A ⊡@ B`` (sequential k), rounded once to ``fmt``."""
    with np.errstate(all="ignore"):
        fmt_, P = _pa(fmt, "pa_bmm")
        a, b = widen(a_bits, fmt_, "a_bits"), widen(b_bits, fmt_, "b_bits")
        _check_bmm(a, b)
        return narrow(_matmul_acc(a, b, P.acc), fmt_)


def pa_bmm_backward(
    grad_bits: object, a_bits: object, b_bits: object, fmt: object
) -> tuple[UIntArray, UIntArray]:
    """The paper's approximate backward: ``dA = G ⊡@ Bᵀ`` (sum over N), ``dB = Aᵀ ⊡@ G`` (sum over M)."""
    with np.errstate(all="ignore"):
        fmt_, P = _pa(fmt, "pa_bmm_backward")
        a, b = widen(a_bits, fmt_, "a_bits"), widen(b_bits, fmt_, "b_bits")
        _check_bmm(a, b)
        g = np.ascontiguousarray(widen(grad_bits, fmt_, "grad_bits"))
        g_a = _matmul_acc(g, np.ascontiguousarray(np.swapaxes(b, -1, -2)), P.acc)
        g_b = _matmul_acc(np.ascontiguousarray(np.swapaxes(a, -1, -2)), g, P.acc)
        return narrow(g_a, fmt_), narrow(g_b, fmt_)


def pam_linear(x_bits: object, weight_bits: object, bias_bits: object, fmt: object) -> UIntArray:
    """``x ⊡@ Wᵀ + b`` as :class:`revcheck.nn.pam.PAMLinear` computes it (bias added once, wide)."""
    with np.errstate(all="ignore"):
        fmt_, P = _pa(fmt, "pam_linear")
        x, w = widen(x_bits, fmt_), widen(weight_bits, fmt_, "weight_bits")
        rows = x.reshape(-1, x.shape[-1])
        out = _matmul_acc(np.ascontiguousarray(rows), np.ascontiguousarray(w.T), P.acc)
        if bias_bits is not None:
            out = out + widen(bias_bits, fmt_, "bias_bits")
        return narrow(out.reshape(*x.shape[:-1], w.shape[0]), fmt_)


def pam_linear_backward(
    grad_bits: object, x_bits: object, weight_bits: object, bias_bits: object, fmt: object
) -> tuple[UIntArray, UIntArray, UIntArray | None]:
    """Approximate backward of :func:`pam_linear`: ``dx = G ⊡@ W``, ``dW = (xᵀ ⊡@ G)ᵀ``, ``db`` = Σ rows of G.

    The bias gradient is the sequential sum over the rows (C order) -- declared
    here, where ``PAMLinear`` leaves it to torch's reduction.
    """
    with np.errstate(all="ignore"):
        fmt_, P = _pa(fmt, "pam_linear_backward")
        x, w = widen(x_bits, fmt_), widen(weight_bits, fmt_, "weight_bits")
        g = widen(grad_bits, fmt_, "grad_bits")
        rows = np.ascontiguousarray(x.reshape(-1, x.shape[-1]))
        g_rows = np.ascontiguousarray(g.reshape(-1, g.shape[-1]))
        g_x = _matmul_acc(g_rows, np.ascontiguousarray(w), P.acc).reshape(x.shape)
        g_w = _matmul_acc(np.ascontiguousarray(rows.T), g_rows, P.acc).T
        g_b = None if bias_bits is None else _sequential_sum(g_rows, axis=0, keepdims=False)
        return (
            narrow(g_x, fmt_),
            narrow(np.ascontiguousarray(g_w), fmt_),
            None if g_b is None else narrow(g_b, fmt_),
        )


# ---- gradient norms and scaling ---------------------------------------------------------------------------


def _same_format_arrays(arrays: Sequence[object], fmt: FloatFormat, name: str) -> list[FloatArray]:
    if isinstance(arrays, np.ndarray) or not isinstance(arrays, Sequence):
        raise UsageError(f"{name} must be a sequence of bit-pattern arrays (one per parameter)")
    return [np.ravel(widen(a, fmt, f"{name}[{i}]")) for i, a in enumerate(arrays)]


def pa_sq_norm(grads_bits: Sequence[object], fmt: object) -> UIntArray:
    """``Σ g ⊡ g`` over every element of every array (arrays in order, each in C order), strided order.

    Returns one compute-format value (bits).
    """
    with np.errstate(all="ignore"):
        fmt_, P = _pa(fmt, "pa_sq_norm")
        flat = _same_format_arrays(grads_bits, fmt_, "grads_bits")
        joined = np.concatenate(flat) if flat else np.zeros(0, dtype=P.dtype)
        return P.bits(_strided_sum(P.mul(joined, joined)))


def pa_clip_coefficient(
    sq_norm_bits: object, fmt: object, *, max_norm: float, eps: float = 1e-6
) -> UIntArray:
    """``min(max_norm ⊘ (pa_sqrt(sq_norm) + eps), 1)`` in the compute format (bits), as clip_grad_norm_."""
    with np.errstate(all="ignore"):
        _, P = _pa(fmt, "pa_clip_coefficient")
        total = _scalar(sq_norm_bits, P.acc)
        coefficient = P.div(_constant(max_norm, P.acc), P.sqrt(total) + _constant(eps, P.acc))
        return P.bits(np.minimum(coefficient, P.one))


# ---- Adam ----------------------------------------------------------------------------------------------


class AdamConstants(dict):  # type: ignore[type-arg]
    """Host constants of one PA Adam step: name -> bits of the compute format (all declared)."""


def _beta_power(beta: float, step: int) -> Fraction:
    return Fraction(beta) ** step


def adam_constants(
    step: int, fmt: object, *, lr: float, beta1: float, beta2: float, eps: float, weight_decay: float
) -> AdamConstants:
    """The declared host constants of PA Adam step ``step`` (1-based), exact rationals rounded once.

    ``lr``, ``beta1``, ``beta2``, ``eps``; ``1-beta1``, ``1-beta2`` and
    ``lr*weight_decay`` computed exactly; the bias corrections ``1-beta1^t`` and
    ``1-beta2^t`` computed exactly (``beta^t`` in rationals) -- every one rounded
    once to the compute format.  Integer arithmetic only.
    """
    acc = compute_format(fmt)
    if not isinstance(step, int) or step < 1:
        raise UsageError(f"step must be a positive int (1 for the first step), got {step!r}")
    for name, beta in (("beta1", beta1), ("beta2", beta2)):
        if not 0.0 <= beta < 1.0:
            raise UsageError(f"{name} must lie in [0, 1), got {beta!r}")
    if not lr >= 0.0 or not eps >= 0.0 or not weight_decay >= 0.0:
        raise UsageError(f"lr, eps and weight_decay must be >= 0, got {lr!r}, {eps!r}, {weight_decay!r}")
    one = Fraction(1)
    values = {
        "lr": Fraction(lr),
        "beta1": Fraction(beta1),
        "beta2": Fraction(beta2),
        "eps": Fraction(eps),
        "1-beta1": one - Fraction(beta1),
        "1-beta2": one - Fraction(beta2),
        "lr*weight_decay": Fraction(lr) * Fraction(weight_decay),
        "1-beta1^t": one - _beta_power(beta1, step),
        "1-beta2^t": one - _beta_power(beta2, step),
    }
    return AdamConstants({name: exact_constant(value, acc) for name, value in values.items()})


def pa_adam_step(
    param_bits: object,
    grad_bits: object,
    exp_avg_bits: object,
    exp_avg_sq_bits: object,
    fmt: object,
    *,
    constants: AdamConstants,
) -> tuple[UIntArray, UIntArray, UIntArray]:
    """One PA Adam(W) step; returns bits of (param in ``fmt``, exp_avg, exp_avg_sq in the compute format).

    With ``c = constants`` (:func:`adam_constants`), in the compute format::

        p = p - c[lr*wd] ⊡ p                       (only if weight_decay != 0)
        m = c[beta1] ⊡ m + c[1-beta1] ⊡ g
        v = c[beta2] ⊡ v + c[1-beta2] ⊡ (g ⊡ g)
        p = p - c[lr] ⊡ ((m ⊘ c[1-beta1^t]) ⊘ (pa_sqrt(v ⊘ c[1-beta2^t]) + c[eps]))

    then ``p`` is rounded once to ``fmt``.
    """
    with np.errstate(all="ignore"):
        fmt_, P = _pa(fmt, "pa_adam_step")
        c = {name: _scalar(np.array(bits, P.acc.uint_dtype), P.acc) for name, bits in constants.items()}
        p = widen(param_bits, fmt_, "param_bits")
        g = widen(grad_bits, fmt_, "grad_bits")
        m = check_bits(exp_avg_bits, P.acc, "exp_avg_bits").view(P.dtype)
        v = check_bits(exp_avg_sq_bits, P.acc, "exp_avg_sq_bits").view(P.dtype)
        if not np.shape(p) == np.shape(g) == np.shape(m) == np.shape(v):
            raise UsageError(
                f"param, grad and state must have one shape, got {np.shape(p)}, {np.shape(g)}, "
                f"{np.shape(m)}, {np.shape(v)}"
            )
        if c["lr*weight_decay"] != 0:
            p = p - P.mul(c["lr*weight_decay"], p)
        m = P.mul(c["beta1"], m) + P.mul(c["1-beta1"], g)
        v = P.mul(c["beta2"], v) + P.mul(c["1-beta2"], P.mul(g, g))
        m_hat = P.div(m, c["1-beta1^t"])
        denominator = P.sqrt(P.div(v, c["1-beta2^t"])) + c["eps"]
        p = p - P.mul(c["lr"], P.div(m_hat, denominator))
        return narrow(p, fmt_), P.bits(m).copy(), P.bits(v).copy()
