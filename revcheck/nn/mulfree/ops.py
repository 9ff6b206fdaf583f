"""Multiplication-free training ops on torch tensors (docs/spec.md §7), each a registered torch.library op.

Every op here is the definition of :mod:`revcheck.oracle.mulfree` written on
tensors, line by line: values are widened exactly to the compute dtype (float64
for float64, float32 for float32 / float16 / bfloat16), combined only with the
piecewise-affine primitives of :mod:`revcheck.kernels.pam` (``⊡`` ``pam_mul``,
``⊘`` ``pam_div``, ``pa_exp2``, ``pa_log2``, ``pam_mul_grad``: integer
arithmetic on bit views), IEEE additions and subtractions, comparisons,
``floor``, ``amax``, sign flips and selections, with every reduction a Python
loop of additions in the declared order; the result is rounded once to the
input dtype.  No float multiply, divide or transcendental runs, in forward or
backward.  The properties in ``properties/test_mulfree.py`` check every op
against the oracle bit for bit; :mod:`revcheck.mulfree` certifies whole steps.

Why a registered op: under ``torch.library`` each op is ONE named op in traces
and dispatch logs (``revcheck::pa_softmax``), so a dispatch mode or ``make_fx``
sees what ran and can look inside (:data:`PA_OPS` maps each name to its Python
implementation).  Backward formulas are registered with ``register_autograd``
and are ops themselves (``revcheck::pa_softmax_backward`` ...), first order only.

Derivative choices (docs/spec.md §7): exact slopes of the affine
pieces (signed powers of two) for every elementwise and normalising op;
the paper's approximate ``G ⊡@ Bᵀ`` / ``Aᵀ ⊡@ G`` for the matrix products.

Why here (``revcheck/nn``) and not ``revcheck/kernels``: these ops carry
autograd formulas, modules and an optimizer; ``revcheck.kernels.pam`` stays the
autograd-free elementwise layer they are built from.

Examples
--------
>>> import torch
>>> pa_softmax(torch.tensor([[0.0, 1.0], [5.0, 5.0]]))   # rows need not sum to 1: ⊘ errs up to +1/8
tensor([[0.3750, 0.7500],
        [0.5000, 0.5000]])
"""

# No ``from __future__ import annotations``: torch.library reads the schemas given below, and the
# Python annotations of the public functions stay plain.
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from revcheck import bits as _bits
from revcheck import formats
from revcheck.errors import UsageError
from revcheck.kernels import pam as kernels
from revcheck.nn.pam import PAMLinear
from revcheck.oracle import mulfree as oracle

__all__ = [
    "ADAM_CONSTANT_NAMES",
    "PA_OPS",
    "PAAdam",
    "PADropout",
    "PALayerNorm",
    "PAMLinearOp",
    "PARMSNorm",
    "attention_scale",
    "compute_dtype",
    "dropout_keep_mask",
    "pa_bmm",
    "pa_clip_grad_norm_",
    "pa_cross_entropy",
    "pa_dropout",
    "pa_grad_sq_norm",
    "pa_layer_norm",
    "pa_log_softmax",
    "pa_mean",
    "pa_rms_norm",
    "pa_scale",
    "pa_scale_grads_",
    "pa_softmax",
    "pa_sqrt",
    "pam_linear",
]

NAMESPACE = "revcheck"
#: Every registered PA op: qualified name -> its Python implementation (what a dispatch mode descends into).
PA_OPS: dict[str, Callable[..., Any]] = {}
#: Order of the host constants in the tensor handed to ``revcheck::pa_adam_step``.
ADAM_CONSTANT_NAMES = (
    "lr",
    "beta1",
    "beta2",
    "eps",
    "1-beta1",
    "1-beta2",
    "lr*weight_decay",
    "1-beta1^t",
    "1-beta2^t",
)


# ---- formats ------------------------------------------------------------------------------------------


def _check_tensor(x: object, op: str, role: str = "input") -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"{op}: {role} must be a torch.Tensor, got {type(x).__name__}")
    oracle.check_format(x.dtype, op)
    return x


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the PA ops compute in: float64 for float64, float32 for float32, float16, bfloat16."""
    acc = oracle.compute_format(dtype)
    return _bits.torch_dtype(acc)


def _widen(x: Tensor) -> Tensor:
    return x.to(compute_dtype(x.dtype))


def _constant(value: Any, dtype: torch.dtype, device: torch.device) -> Tensor:
    """A 0-d tensor of the compute dtype holding ``value`` rounded once (oracle.exact_constant)."""
    fmt = formats.get(dtype)
    return _bits_tensor([oracle.exact_constant(value, fmt)], fmt, device).reshape(())


def _bits_tensor(patterns: Sequence[int], fmt: formats.FloatFormat, device: torch.device) -> Tensor:
    return _bits.to_torch(np.array(patterns, dtype=fmt.uint_dtype), fmt, device)


# ---- primitives on compute-dtype tensors ---------------------------------------------------------------


class _PA:
    """PA primitives and their exact slopes on tensors of one compute dtype (the oracle's ``_PA``)."""

    def __init__(self, dtype: torch.dtype, device: torch.device) -> None:
        self.dtype = dtype
        self.one = torch.ones((), dtype=dtype, device=device)
        self.zero = torch.zeros((), dtype=dtype, device=device)
        self.half = torch.full((), 0.5, dtype=dtype, device=device)
        self.nan = torch.full((), float("nan"), dtype=dtype, device=device)

    mul = staticmethod(kernels.pam_mul)
    div = staticmethod(kernels.pam_div)
    exp2 = staticmethod(kernels.pa_exp2)
    log2 = staticmethod(kernels.pa_log2)
    mul_grad = staticmethod(kernels.pam_mul_grad)

    def lead(self, x: Tensor) -> Tensor:
        return kernels.pam_mul_grad(self.one.expand(x.shape), x)

    def exponent(self, x: Tensor) -> Tensor:
        return kernels.pa_log2(self.lead(x))

    def one_plus_fraction(self, x: Tensor) -> Tensor:
        fraction = kernels.pam_div(torch.abs(x), torch.abs(self.lead(x)))
        return torch.where((x == 0) | torch.isinf(x), self.one, fraction)

    def exp2_slope(self, y: Tensor) -> Tensor:
        return kernels.pa_exp2(torch.floor(y))

    def log2_slope(self, x: Tensor) -> Tensor:
        magnitude = kernels.pa_exp2(-self.exponent(x))
        return torch.where(torch.signbit(x), -magnitude, magnitude)

    def _fraction_below(self, a: Tensor, b: Tensor) -> Tensor:
        return (self.one_plus_fraction(a) < self.one_plus_fraction(b)).to(self.dtype)

    def div_slope_a(self, a: Tensor, b: Tensor) -> Tensor:
        below = self._fraction_below(a, b)
        magnitude = kernels.pa_exp2(-(self.exponent(b) + below))
        return torch.where(torch.signbit(b), -magnitude, magnitude)

    def div_slope_b(self, a: Tensor, b: Tensor) -> Tensor:
        below = self._fraction_below(a, b)
        eb = self.exponent(b)
        magnitude = kernels.pa_exp2(self.exponent(a) - (eb + eb) - below)
        return torch.where(torch.signbit(a), magnitude, -magnitude)

    def sqrt(self, v: Tensor) -> Tensor:
        root = kernels.pa_exp2(kernels.pam_mul(kernels.pa_log2(v), self.half.expand(v.shape)))
        return torch.where(v < 0, self.nan, root)

    def sqrt_backward(self, g: Tensor, v: Tensor) -> Tensor:
        z = kernels.pa_log2(v)
        w = kernels.pam_mul(z, self.half.expand(z.shape))
        out = kernels.pam_mul(g, self.exp2_slope(w))
        out = kernels.pam_mul(out, kernels.pam_mul_grad(z, self.half.expand(z.shape)))
        out = kernels.pam_mul(out, self.log2_slope(v))
        return torch.where(v < 0, self.nan, out)


def _pa_for(x: Tensor) -> _PA:
    return _PA(compute_dtype(x.dtype), x.device)


def _sequential_sum(x: Tensor, dim: int = -1, keepdim: bool = True) -> Tensor:
    """``acc = +0.0; acc = fl(acc + x_k)`` along ``dim``, k in increasing order."""
    moved = x.movedim(dim, -1)
    total = torch.zeros(moved.shape[:-1], dtype=x.dtype, device=x.device)
    for k in range(moved.shape[-1]):
        total = total + moved[..., k]
    return total.unsqueeze(dim) if keepdim else total


def _strided_sum(flat: Tensor) -> Tensor:
    """The declared order of whole-model reductions (oracle ``_strided_sum``): strided lanes, then lanes."""
    lanes_count = oracle.LANES
    padded = torch.zeros(-(-flat.numel() // lanes_count) * lanes_count, dtype=flat.dtype, device=flat.device)
    padded[: flat.numel()] = flat
    rows = padded.reshape(-1, lanes_count)
    lanes = torch.zeros(lanes_count, dtype=flat.dtype, device=flat.device)
    for index in range(rows.shape[0]):
        lanes = lanes + rows[index]
    return _sequential_sum(lanes, keepdim=False)


# ---- registration -------------------------------------------------------------------------------------


def _register(name: str, schema: str, impl: Callable[..., Any], fake: Callable[..., Any], mutates=()) -> Any:
    qualname = f"{NAMESPACE}::{name}"
    op = torch.library.custom_op(qualname, impl, mutates_args=tuple(mutates), schema=schema)
    op.register_fake(fake)
    PA_OPS[qualname] = impl
    return op


def _check_dim(x: Tensor, dim: int, op: str) -> int:
    if x.dim() == 0:
        raise UsageError(f"{op} needs at least one dimension, got a 0-d tensor; use x.reshape(1)")
    if not -x.dim() <= dim < x.dim():
        raise UsageError(f"{op}: dim {dim} is out of range for shape {tuple(x.shape)}")
    if x.shape[dim] == 0:
        raise UsageError(f"{op}: dimension {dim} of shape {tuple(x.shape)} is empty")
    return dim % x.dim()


# ---- softmax and log-softmax ---------------------------------------------------------------------------


def _softmax_parts(P: _PA, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    shift = torch.floor(torch.amax(x, dim=-1, keepdim=True)) + P.zero
    y = x - shift
    e = kernels.pa_exp2(y)
    return y, e, _sequential_sum(e)


def _softmax_impl(x: Tensor, dim: int) -> Tensor:
    _check_tensor(x, "pa_softmax")
    dim = _check_dim(x, dim, "pa_softmax")
    P = _pa_for(x)
    _, e, s = _softmax_parts(P, _widen(x).movedim(dim, -1))
    return kernels.pam_div(e, s.expand(e.shape)).movedim(-1, dim).to(x.dtype).contiguous()


def _softmax_backward_impl(grad: Tensor, x: Tensor, dim: int) -> Tensor:
    dim = _check_dim(x, dim, "pa_softmax_backward")
    P = _pa_for(x)
    xw = _widen(x).movedim(dim, -1)
    g = _widen(grad).movedim(dim, -1)
    y, e, s = _softmax_parts(P, xw)
    s_full = s.expand(e.shape)
    t = _sequential_sum(kernels.pam_mul(g, P.div_slope_b(e, s_full)))
    ge = kernels.pam_mul(g, P.div_slope_a(e, s_full)) + t
    gy = kernels.pam_mul(ge, P.exp2_slope(y))
    return gy.movedim(-1, dim).to(x.dtype).contiguous()


def _log_softmax_values(P: _PA, x: Tensor) -> Tensor:
    y, _, s = _softmax_parts(P, x)
    return y - kernels.pa_log2(s)


def _log_softmax_impl(x: Tensor, dim: int) -> Tensor:
    _check_tensor(x, "pa_log_softmax")
    dim = _check_dim(x, dim, "pa_log_softmax")
    P = _pa_for(x)
    return _log_softmax_values(P, _widen(x).movedim(dim, -1)).movedim(-1, dim).to(x.dtype).contiguous()


def _log_softmax_grad(P: _PA, g: Tensor, x: Tensor) -> Tensor:
    y, _, s = _softmax_parts(P, x)
    v = kernels.pam_mul(_sequential_sum(g), P.log2_slope(s))
    return g - kernels.pam_mul(v.expand(y.shape), P.exp2_slope(y))


def _log_softmax_backward_impl(grad: Tensor, x: Tensor, dim: int) -> Tensor:
    dim = _check_dim(x, dim, "pa_log_softmax_backward")
    P = _pa_for(x)
    g = _log_softmax_grad(P, _widen(grad).movedim(dim, -1), _widen(x).movedim(dim, -1))
    return g.movedim(-1, dim).to(x.dtype).contiguous()


def _like(x: Tensor, *_: Any) -> Tensor:
    return torch.empty_like(x)


def _grad_like_second(grad: Tensor, x: Tensor, *_: Any) -> Tensor:
    return torch.empty_like(x)


_pa_softmax_op = _register("pa_softmax", "(Tensor x, int dim) -> Tensor", _softmax_impl, _like)
_pa_softmax_backward_op = _register(
    "pa_softmax_backward",
    "(Tensor grad, Tensor x, int dim) -> Tensor",
    _softmax_backward_impl,
    _grad_like_second,
)
_pa_log_softmax_op = _register("pa_log_softmax", "(Tensor x, int dim) -> Tensor", _log_softmax_impl, _like)
_pa_log_softmax_backward_op = _register(
    "pa_log_softmax_backward",
    "(Tensor grad, Tensor x, int dim) -> Tensor",
    _log_softmax_backward_impl,
    _grad_like_second,
)


def _save_x_dim(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
    ctx.save_for_backward(inputs[0])
    ctx.dim = inputs[1]


def _softmax_autograd(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
    (x,) = ctx.saved_tensors
    return _pa_softmax_backward_op(grad.contiguous(), x, ctx.dim), None


def _log_softmax_autograd(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
    (x,) = ctx.saved_tensors
    return _pa_log_softmax_backward_op(grad.contiguous(), x, ctx.dim), None


_pa_softmax_op.register_autograd(_softmax_autograd, setup_context=_save_x_dim)
_pa_log_softmax_op.register_autograd(_log_softmax_autograd, setup_context=_save_x_dim)


def pa_softmax(x: Tensor, dim: int = -1) -> Tensor:
    """PA softmax (base 2) along ``dim`` with a per-row shift: ``revcheck::pa_softmax``.

    ``y = x - floor(max(row))``, ``e = pa_exp2(y)``, ``p = e ⊘ Σe`` (sequential
    sum), in the compute dtype, rounded once to ``x``'s dtype.  Rows do not sum
    to exactly 1 (⊘ errs in [0, 1/8]).  Backward: exact slopes.

    Raises
    ------
    PAFormatError
        For a dtype other than float64, float32, float16, bfloat16.
    """
    return _pa_softmax_op(_check_tensor(x, "pa_softmax"), dim)


def pa_log_softmax(x: Tensor, dim: int = -1) -> Tensor:
    """PA log-softmax (base 2) ``y - pa_log2(Σ pa_exp2(y))``, per-row shift: ``revcheck::pa_log_softmax``."""
    return _pa_log_softmax_op(_check_tensor(x, "pa_log_softmax"), dim)


# ---- cross-entropy ----------------------------------------------------------------------------------------


def _check_targets(logits: Tensor, target: Tensor, op: str, *, values: bool) -> None:
    if logits.dim() != 2:
        raise UsageError(
            f"{op} needs logits (N, C), got shape {tuple(logits.shape)}; flatten the batch first"
        )
    if not isinstance(target, Tensor) or target.dtype != torch.int64 or target.shape != logits.shape[:1]:
        got = f"{target.dtype} {tuple(target.shape)}" if isinstance(target, Tensor) else type(target).__name__
        raise UsageError(f"{op} needs int64 targets of shape ({logits.shape[0]},), got {got}")
    if values and target.numel() and bool(((target < 0) | (target >= logits.shape[1])).any()):
        raise UsageError(f"{op}: targets must lie in [0, {logits.shape[1]}); some are outside")


def _cross_entropy_rows(P: _PA, logits: Tensor, target: Tensor) -> Tensor:
    log_p = _log_softmax_values(P, logits)
    return -torch.gather(log_p, 1, target.unsqueeze(1)).squeeze(1)


def _cross_entropy_impl(logits: Tensor, target: Tensor, reduction: str) -> Tensor:
    _check_tensor(logits, "pa_cross_entropy", "logits")
    # The value check runs inside the op (a leaf of traces), so tracing the step needs no host sync.
    _check_targets(logits, target, "pa_cross_entropy", values=True)
    reduction = oracle._check_reduction(reduction, "pa_cross_entropy")
    P = _pa_for(logits)
    rows = _cross_entropy_rows(P, _widen(logits), target)
    if reduction == "none":
        return rows.to(logits.dtype)
    total = _sequential_sum(rows, keepdim=False)
    if reduction == "sum":
        return total.to(logits.dtype)
    count = _constant(rows.shape[0], P.dtype, logits.device)
    return kernels.pam_div(total, count).to(logits.dtype)


def _cross_entropy_backward_impl(grad: Tensor, logits: Tensor, target: Tensor, reduction: str) -> Tensor:
    P = _pa_for(logits)
    wide = _widen(logits)
    g = _widen(grad)
    rows = wide.shape[0]
    if reduction == "none":
        g_rows = g
    elif reduction == "sum":
        g_rows = g.expand(rows)
    else:
        total = _sequential_sum(_cross_entropy_rows(P, wide, target), keepdim=False)
        g_total = kernels.pam_mul(g, P.div_slope_a(total, _constant(rows, P.dtype, logits.device)))
        g_rows = g_total.expand(rows)
    g_log_p = torch.zeros_like(wide).scatter(1, target.unsqueeze(1), (-g_rows).unsqueeze(1))
    return _log_softmax_grad(P, g_log_p, wide).to(logits.dtype)


def _cross_entropy_fake(logits: Tensor, target: Tensor, reduction: str) -> Tensor:
    shape = (logits.shape[0],) if reduction == "none" else ()
    return logits.new_empty(shape)


def _cross_entropy_backward_fake(grad: Tensor, logits: Tensor, target: Tensor, reduction: str) -> Tensor:
    return torch.empty_like(logits)


_pa_cross_entropy_op = _register(
    "pa_cross_entropy",
    "(Tensor logits, Tensor target, str reduction) -> Tensor",
    _cross_entropy_impl,
    _cross_entropy_fake,
)
_pa_cross_entropy_backward_op = _register(
    "pa_cross_entropy_backward",
    "(Tensor grad, Tensor logits, Tensor target, str reduction) -> Tensor",
    _cross_entropy_backward_impl,
    _cross_entropy_backward_fake,
)


def _cross_entropy_setup(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
    ctx.save_for_backward(inputs[0], inputs[1])
    ctx.reduction = inputs[2]


def _cross_entropy_autograd(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None]:
    logits, target = ctx.saved_tensors
    return _pa_cross_entropy_backward_op(grad.contiguous(), logits, target, ctx.reduction), None, None


_pa_cross_entropy_op.register_autograd(_cross_entropy_autograd, setup_context=_cross_entropy_setup)


def pa_cross_entropy(logits: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:
    """PA cross-entropy in BITS (base-2 log-softmax): ``revcheck::pa_cross_entropy``.

    ``logits`` (N, C), ``target`` int64 (N,).  ``"mean"`` is the sequential sum
    over rows ⊘ N, exact only when N is a power of two; ``"sum"``, ``"none"``.
    Multiply by ln 2 (outside the training step) to compare with nats.
    """
    _check_tensor(logits, "pa_cross_entropy", "logits")
    _check_targets(logits, target, "pa_cross_entropy", values=False)
    oracle._check_reduction(reduction, "pa_cross_entropy")
    return _pa_cross_entropy_op(logits, target, reduction)


# ---- mean and square root -------------------------------------------------------------------------------


def _mean_impl(x: Tensor, dim: int) -> Tensor:
    _check_tensor(x, "pa_mean")
    dim = _check_dim(x, dim, "pa_mean")
    P = _pa_for(x)
    wide = _widen(x).movedim(dim, -1)
    total = _sequential_sum(wide, keepdim=False)
    return kernels.pam_div(total, _constant(wide.shape[-1], P.dtype, x.device).expand(total.shape)).to(
        x.dtype
    )


def _mean_backward_impl(grad: Tensor, x: Tensor, dim: int) -> Tensor:
    dim = _check_dim(x, dim, "pa_mean_backward")
    P = _pa_for(x)
    wide = _widen(x).movedim(dim, -1)
    total = _sequential_sum(wide, keepdim=False)
    count = _constant(wide.shape[-1], P.dtype, x.device).expand(total.shape)
    g_total = kernels.pam_mul(_widen(grad), P.div_slope_a(total, count))
    return g_total.unsqueeze(-1).expand(wide.shape).movedim(-1, dim).to(x.dtype).contiguous()


def _mean_fake(x: Tensor, dim: int) -> Tensor:
    shape = list(x.shape)
    del shape[dim]
    return x.new_empty(shape)


_pa_mean_op = _register("pa_mean", "(Tensor x, int dim) -> Tensor", _mean_impl, _mean_fake)
_pa_mean_backward_op = _register(
    "pa_mean_backward", "(Tensor grad, Tensor x, int dim) -> Tensor", _mean_backward_impl, _grad_like_second
)


def _mean_autograd(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
    (x,) = ctx.saved_tensors
    return _pa_mean_backward_op(grad.contiguous(), x, ctx.dim), None


_pa_mean_op.register_autograd(_mean_autograd, setup_context=_save_x_dim)


def pa_mean(x: Tensor, dim: int = -1) -> Tensor:
    """PA mean along ``dim``: sequential sum ⊘ count (``revcheck::pa_mean``); exact iff the count is 2**k."""
    return _pa_mean_op(_check_tensor(x, "pa_mean"), dim)


def pa_sqrt(v: Tensor) -> Tensor:
    """PA square root ``pa_exp2(pa_log2(v) ⊡ 0.5)`` in the compute dtype, rounded to ``v``'s (no autograd)."""
    _check_tensor(v, "pa_sqrt")
    return _pa_for(v).sqrt(_widen(v)).to(v.dtype)


# ---- layer norm and RMS norm -----------------------------------------------------------------------------


def _check_norm(x: Tensor, params: dict[str, Tensor | None], op: str) -> int:
    _check_tensor(x, op)
    if x.dim() == 0 or x.shape[-1] == 0:
        raise UsageError(f"{op} normalises the last dimension; shape {tuple(x.shape)} has no entries there")
    n = x.shape[-1]
    for name, value in params.items():
        if value is None:
            continue
        if not isinstance(value, Tensor) or value.dtype != x.dtype or value.shape != (n,):
            got = f"{value.dtype} {tuple(value.shape)}" if isinstance(value, Tensor) else type(value).__name__
            raise UsageError(f"{op}: {name} must be a {x.dtype} tensor of shape ({n},), got {got}")
    return n


def _affine(xhat: Tensor, weight: Tensor | None, bias: Tensor | None) -> Tensor:
    y = xhat if weight is None else kernels.pam_mul(xhat, _widen(weight).expand(xhat.shape))
    return y if bias is None else y + _widen(bias)


def _affine_backward(
    g: Tensor, xhat: Tensor, weight: Tensor | None, bias: Tensor | None
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    rows_g = g.reshape(-1, g.shape[-1])
    g_bias = None if bias is None else _sequential_sum(rows_g, dim=0, keepdim=False)
    if weight is None:
        return g, None, g_bias
    w = _widen(weight).expand(xhat.shape)
    g_xhat = kernels.pam_mul(g, kernels.pam_mul_grad(xhat, w))
    terms = kernels.pam_mul(g, kernels.pam_mul_grad(w, xhat)).reshape(-1, g.shape[-1])
    return g_xhat, _sequential_sum(terms, dim=0, keepdim=False), g_bias


def _layer_norm_parts(P: _PA, x: Tensor, eps: float) -> dict[str, Tensor]:
    n = _constant(x.shape[-1], P.dtype, x.device)
    sum_x = _sequential_sum(x)
    d = x - kernels.pam_div(sum_x, n.expand(sum_x.shape))
    sum_q = _sequential_sum(kernels.pam_mul(d, d))
    v = kernels.pam_div(sum_q, n.expand(sum_q.shape)) + _constant(eps, P.dtype, x.device)
    sigma = P.sqrt(v)
    xhat = kernels.pam_div(d, sigma.expand(d.shape))
    return {
        "n": n.expand(sum_x.shape),
        "sum_x": sum_x,
        "d": d,
        "sum_q": sum_q,
        "v": v,
        "sigma": sigma,
        "xhat": xhat,
    }


def _layer_norm_impl(x: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float) -> Tensor:
    _check_norm(x, {"weight": weight, "bias": bias}, "pa_layer_norm")
    P = _pa_for(x)
    parts = _layer_norm_parts(P, _widen(x), eps)
    return _affine(parts["xhat"], weight, bias).to(x.dtype)


def _empty_grad(x: Tensor) -> Tensor:
    return x.new_empty((0,))


def _layer_norm_backward_impl(
    grad: Tensor, x: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float
) -> tuple[Tensor, Tensor, Tensor]:
    P = _pa_for(x)
    parts = _layer_norm_parts(P, _widen(x), eps)
    d, sigma = parts["d"], parts["sigma"].expand(parts["d"].shape)
    g_xhat, g_weight, g_bias = _affine_backward(_widen(grad), parts["xhat"], weight, bias)
    g_d = kernels.pam_mul(g_xhat, P.div_slope_a(d, sigma))
    g_sigma = _sequential_sum(kernels.pam_mul(g_xhat, P.div_slope_b(d, sigma)))
    g_v = P.sqrt_backward(g_sigma, parts["v"])
    g_sum_q = kernels.pam_mul(g_v, P.div_slope_a(parts["sum_q"], parts["n"]))
    t = kernels.pam_mul(g_sum_q.expand(d.shape), kernels.pam_mul_grad(d, d))
    g_d = g_d + (t + t)
    g_mu = -_sequential_sum(g_d)
    g_x = g_d + kernels.pam_mul(g_mu, P.div_slope_a(parts["sum_x"], parts["n"])).expand(d.shape)
    return (
        g_x.to(x.dtype),
        _empty_grad(x) if g_weight is None else g_weight.to(x.dtype),
        _empty_grad(x) if g_bias is None else g_bias.to(x.dtype),
    )


def _layer_norm_fake(x: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float) -> Tensor:
    return torch.empty_like(x)


def _layer_norm_backward_fake(
    grad: Tensor, x: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float
) -> tuple[Tensor, Tensor, Tensor]:
    n = x.shape[-1]
    return (
        torch.empty_like(x),
        x.new_empty((n,) if weight is not None else (0,)),
        x.new_empty((n,) if bias is not None else (0,)),
    )


_pa_layer_norm_op = _register(
    "pa_layer_norm",
    "(Tensor x, Tensor? weight, Tensor? bias, float eps) -> Tensor",
    _layer_norm_impl,
    _layer_norm_fake,
)
_pa_layer_norm_backward_op = _register(
    "pa_layer_norm_backward",
    "(Tensor grad, Tensor x, Tensor? weight, Tensor? bias, float eps) -> (Tensor, Tensor, Tensor)",
    _layer_norm_backward_impl,
    _layer_norm_backward_fake,
)


def _layer_norm_setup(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
    x, weight, bias, eps = inputs
    ctx.save_for_backward(x, weight, bias)
    ctx.eps = eps


def _layer_norm_autograd(ctx: Any, grad: Tensor) -> tuple[Tensor, Tensor | None, Tensor | None, None]:
    x, weight, bias = ctx.saved_tensors
    g_x, g_w, g_b = _pa_layer_norm_backward_op(grad.contiguous(), x, weight, bias, ctx.eps)
    return g_x, (g_w if weight is not None else None), (g_b if bias is not None else None), None


_pa_layer_norm_op.register_autograd(_layer_norm_autograd, setup_context=_layer_norm_setup)


def pa_layer_norm(
    x: Tensor, weight: Tensor | None = None, bias: Tensor | None = None, eps: float = 1e-5
) -> Tensor:
    """PA layer norm over the last dimension: ``revcheck::pa_layer_norm``.

    ``μ = Σx ⊘ n``, ``d = x - μ``, ``σ = pa_sqrt(Σ(d ⊡ d) ⊘ n + eps)``,
    ``y = (d ⊘ σ) ⊡ w + b`` (PA mean: exact division only when n is a power
    of two).  ``weight``/``bias`` have shape (n,) and ``x``'s dtype.
    """
    _check_norm(x, {"weight": weight, "bias": bias}, "pa_layer_norm")
    return _pa_layer_norm_op(x, weight, bias, float(eps))


def _rms_norm_parts(P: _PA, x: Tensor, eps: float) -> dict[str, Tensor]:
    n = _constant(x.shape[-1], P.dtype, x.device)
    sum_q = _sequential_sum(kernels.pam_mul(x, x))
    v = kernels.pam_div(sum_q, n.expand(sum_q.shape)) + _constant(eps, P.dtype, x.device)
    sigma = P.sqrt(v)
    return {
        "n": n.expand(sum_q.shape),
        "sum_q": sum_q,
        "v": v,
        "sigma": sigma,
        "xhat": kernels.pam_div(x, sigma.expand(x.shape)),
    }


def _rms_norm_impl(x: Tensor, weight: Tensor | None, eps: float) -> Tensor:
    _check_norm(x, {"weight": weight}, "pa_rms_norm")
    parts = _rms_norm_parts(_pa_for(x), _widen(x), eps)
    return _affine(parts["xhat"], weight, None).to(x.dtype)


def _rms_norm_backward_impl(
    grad: Tensor, x: Tensor, weight: Tensor | None, eps: float
) -> tuple[Tensor, Tensor]:
    P = _pa_for(x)
    wide = _widen(x)
    parts = _rms_norm_parts(P, wide, eps)
    sigma = parts["sigma"].expand(wide.shape)
    g_xhat, g_weight, _ = _affine_backward(_widen(grad), parts["xhat"], weight, None)
    g_x = kernels.pam_mul(g_xhat, P.div_slope_a(wide, sigma))
    g_sigma = _sequential_sum(kernels.pam_mul(g_xhat, P.div_slope_b(wide, sigma)))
    g_v = P.sqrt_backward(g_sigma, parts["v"])
    g_sum_q = kernels.pam_mul(g_v, P.div_slope_a(parts["sum_q"], parts["n"]))
    t = kernels.pam_mul(g_sum_q.expand(wide.shape), kernels.pam_mul_grad(wide, wide))
    g_x = g_x + (t + t)
    return g_x.to(x.dtype), _empty_grad(x) if g_weight is None else g_weight.to(x.dtype)


def _rms_norm_fake(x: Tensor, weight: Tensor | None, eps: float) -> Tensor:
    return torch.empty_like(x)


def _rms_norm_backward_fake(
    grad: Tensor, x: Tensor, weight: Tensor | None, eps: float
) -> tuple[Tensor, Tensor]:
    return torch.empty_like(x), x.new_empty((x.shape[-1],) if weight is not None else (0,))


_pa_rms_norm_op = _register(
    "pa_rms_norm", "(Tensor x, Tensor? weight, float eps) -> Tensor", _rms_norm_impl, _rms_norm_fake
)
_pa_rms_norm_backward_op = _register(
    "pa_rms_norm_backward",
    "(Tensor grad, Tensor x, Tensor? weight, float eps) -> (Tensor, Tensor)",
    _rms_norm_backward_impl,
    _rms_norm_backward_fake,
)


def _rms_norm_setup(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
    x, weight, eps = inputs
    ctx.save_for_backward(x, weight)
    ctx.eps = eps


def _rms_norm_autograd(ctx: Any, grad: Tensor) -> tuple[Tensor, Tensor | None, None]:
    x, weight = ctx.saved_tensors
    g_x, g_w = _pa_rms_norm_backward_op(grad.contiguous(), x, weight, ctx.eps)
    return g_x, (g_w if weight is not None else None), None


_pa_rms_norm_op.register_autograd(_rms_norm_autograd, setup_context=_rms_norm_setup)


def pa_rms_norm(x: Tensor, weight: Tensor | None = None, eps: float = 1e-6) -> Tensor:
    """PA RMS norm ``(x ⊘ pa_sqrt(Σ(x ⊡ x) ⊘ n + eps)) ⊡ w`` over the last dimension.

    The registered op ``revcheck::pa_rms_norm``; backward with exact slopes.
    """
    _check_norm(x, {"weight": weight}, "pa_rms_norm")
    return _pa_rms_norm_op(x, weight, float(eps))


# ---- scaling ---------------------------------------------------------------------------------------------


def _check_scale(x: Tensor, c: Tensor, op: str) -> None:
    _check_tensor(x, op)
    expected = compute_dtype(x.dtype)
    if not isinstance(c, Tensor) or c.dtype != expected or c.dim() != 0:
        got = f"{c.dtype} of shape {tuple(c.shape)}" if isinstance(c, Tensor) else type(c).__name__
        raise UsageError(
            f"{op}: the scale must be a 0-d {expected} tensor (the compute dtype of {x.dtype}), got {got}"
        )


def _scale_impl(x: Tensor, c: Tensor) -> Tensor:
    _check_scale(x, c, "pa_scale")
    wide = _widen(x)
    return kernels.pam_mul(wide, c.expand(wide.shape)).to(x.dtype)


def _scale_backward_impl(grad: Tensor, x: Tensor, c: Tensor) -> Tensor:
    wide = _widen(x)
    slope = kernels.pam_mul_grad(wide, c.expand(wide.shape))
    return kernels.pam_mul(_widen(grad), slope).to(x.dtype)


_pa_scale_op = _register("pa_scale", "(Tensor x, Tensor c) -> Tensor", _scale_impl, _like)
_pa_scale_backward_op = _register(
    "pa_scale_backward",
    "(Tensor grad, Tensor x, Tensor c) -> Tensor",
    _scale_backward_impl,
    _grad_like_second,
)


def _scale_setup(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
    ctx.save_for_backward(*inputs)


def _scale_autograd(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
    x, c = ctx.saved_tensors
    return _pa_scale_backward_op(grad.contiguous(), x, c), None


_pa_scale_op.register_autograd(_scale_autograd, setup_context=_scale_setup)


def _scale_tensor(c: float | Tensor, x: Tensor) -> Tensor:
    if isinstance(c, Tensor):
        if c.requires_grad:
            raise UsageError(
                "pa_scale: the scale is a constant; pass c.detach() (its gradient is not computed)"
            )
        return c
    return _constant(c, compute_dtype(x.dtype), x.device)


def pa_scale(x: Tensor, c: float | Tensor) -> Tensor:
    """``x ⊡ c`` (``revcheck::pa_scale``), ``c`` a Python number (rounded once) or a 0-d compute-dtype tensor.

    Exact when ``c`` is a signed power of two.  Backward ``g ⊡ pam_mul_grad(x, c)``.
    """
    _check_tensor(x, "pa_scale")
    c_tensor = _scale_tensor(c, x)
    _check_scale(x, c_tensor, "pa_scale")
    return _pa_scale_op(x, c_tensor)


def attention_scale(head_dim: int, dtype: torch.dtype = torch.float32, device: Any = "cpu") -> Tensor:
    """PA ``head_dim ** -1/2`` as a 0-d compute-dtype tensor: ``pa_exp2(pa_log2(d) ⊡ -0.5)``.

    Exact (``2**-k``) when ``head_dim`` is a power of four; then the attention
    scaling ``pa_scale(scores, attention_scale(d))`` is exact too.
    """
    if not isinstance(head_dim, int) or head_dim < 1:
        raise UsageError(f"head_dim must be a positive int, got {head_dim!r}")
    acc = compute_dtype(dtype)
    d = _constant(head_dim, acc, torch.device(device))
    return kernels.pa_exp2(
        kernels.pam_mul(kernels.pa_log2(d), torch.full((), -0.5, dtype=acc, device=d.device))
    )


# ---- dropout ---------------------------------------------------------------------------------------------


def _dropout_impl(x: Tensor, keep: Tensor, c: Tensor) -> Tensor:
    _check_scale(x, c, "pa_dropout")
    if keep.dtype != torch.bool or keep.shape != x.shape:
        raise UsageError(f"pa_dropout: keep must be a bool tensor of shape {tuple(x.shape)}")
    wide = _widen(x)
    scaled = kernels.pam_mul(wide, c.expand(wide.shape))
    return torch.where(keep, scaled, torch.zeros((), dtype=wide.dtype, device=x.device)).to(x.dtype)


def _dropout_backward_impl(grad: Tensor, x: Tensor, keep: Tensor, c: Tensor) -> Tensor:
    wide = _widen(x)
    scaled = kernels.pam_mul(_widen(grad), kernels.pam_mul_grad(wide, c.expand(wide.shape)))
    return torch.where(keep, scaled, torch.zeros((), dtype=wide.dtype, device=x.device)).to(x.dtype)


_pa_dropout_op = _register("pa_dropout", "(Tensor x, Tensor keep, Tensor c) -> Tensor", _dropout_impl, _like)
_pa_dropout_backward_op = _register(
    "pa_dropout_backward",
    "(Tensor grad, Tensor x, Tensor keep, Tensor c) -> Tensor",
    _dropout_backward_impl,
    _grad_like_second,
)


def _dropout_autograd(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None]:
    x, keep, c = ctx.saved_tensors
    return _pa_dropout_backward_op(grad.contiguous(), x, keep, c), None, None


_pa_dropout_op.register_autograd(_dropout_autograd, setup_context=_scale_setup)


def dropout_keep_mask(
    shape: Sequence[int], p: float, *, generator: torch.Generator | None = None, device: Any = "cpu"
) -> tuple[Tensor, Tensor]:
    """The integer draws (int64 in [0, 2**24)) and the keep mask ``draws >= round(p · 2**24)``.

    Integer work only: ``torch.randint`` and one comparison.  The drop
    probability is exactly ``round(p · 2**24) / 2**24``.
    """
    threshold = oracle.dropout_threshold(p)
    draws = torch.randint(
        0, 1 << oracle.DROPOUT_DRAW_BITS, tuple(shape), generator=generator, device=device, dtype=torch.int64
    )
    return draws, draws >= threshold


def pa_dropout(
    x: Tensor, p: float, *, training: bool = True, generator: torch.Generator | None = None
) -> Tensor:
    """PA dropout (``revcheck::pa_dropout``): integer threshold mask, kept values ``x ⊡ c``, dropped +0.

    ``c = 1 / (1 - round(p·2**24)/2**24)`` rounded once (a declared host
    constant); exactly 2 for ``p = 1/2``, where the rescale is exact.  Identity
    when not training or ``p == 0``.
    """
    _check_tensor(x, "pa_dropout")
    threshold = oracle.dropout_threshold(p)
    if not training or threshold == 0:
        return x
    _, keep = dropout_keep_mask(x.shape, p, generator=generator, device=x.device)
    acc = formats.get(compute_dtype(x.dtype))
    c = _bits_tensor([oracle.dropout_scale(p, acc)], acc, x.device).reshape(())
    return _pa_dropout_op(x, keep, c)


# ---- matrix products ------------------------------------------------------------------------------------


def _check_bmm(a: Tensor, b: Tensor) -> None:
    _check_tensor(a, "pa_bmm", "A")
    _check_tensor(b, "pa_bmm", "B")
    if a.dtype != b.dtype:
        raise UsageError(
            f"pa_bmm: A is {a.dtype} but B is {b.dtype}; convert one (nothing is upcast silently)"
        )
    if a.dim() < 2 or b.dim() < 2 or a.shape[:-2] != b.shape[:-2] or a.shape[-1] != b.shape[-2]:
        raise UsageError(
            f"pa_bmm needs A (..., M, K) and B (..., K, N) with equal batch dimensions, got {tuple(a.shape)} "
            f"and {tuple(b.shape)}; expand the batch dimensions explicitly"
        )


def _bmm_impl(a: Tensor, b: Tensor) -> Tensor:
    _check_bmm(a, b)
    return kernels.pam_matmul(_widen(a), _widen(b)).to(a.dtype)


def _bmm_backward_impl(grad: Tensor, a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    g = _widen(grad).contiguous()
    g_a = kernels.pam_matmul(g, _widen(b).transpose(-1, -2).contiguous())
    g_b = kernels.pam_matmul(_widen(a).transpose(-1, -2).contiguous(), g)
    return g_a.to(a.dtype), g_b.to(b.dtype)


def _bmm_fake(a: Tensor, b: Tensor) -> Tensor:
    return a.new_empty((*a.shape[:-1], b.shape[-1]))


def _bmm_backward_fake(grad: Tensor, a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    return torch.empty_like(a), torch.empty_like(b)


_pa_bmm_op = _register("pa_bmm", "(Tensor a, Tensor b) -> Tensor", _bmm_impl, _bmm_fake)
_pa_bmm_backward_op = _register(
    "pa_bmm_backward",
    "(Tensor grad, Tensor a, Tensor b) -> (Tensor, Tensor)",
    _bmm_backward_impl,
    _bmm_backward_fake,
)


def _bmm_autograd(ctx: Any, grad: Tensor) -> tuple[Tensor, Tensor]:
    a, b = ctx.saved_tensors
    g_a, g_b = _pa_bmm_backward_op(grad.contiguous(), a, b)
    return g_a, g_b


_pa_bmm_op.register_autograd(_bmm_autograd, setup_context=_scale_setup)


def pa_bmm(a: Tensor, b: Tensor) -> Tensor:
    """Batched PAM product ``A ⊡@ B`` (``revcheck::pa_bmm``), sequential k, rounded once to the input dtype.

    Backward: the paper's approximate ``dA = G ⊡@ Bᵀ``, ``dB = Aᵀ ⊡@ G``.
    """
    _check_bmm(a, b)
    return _pa_bmm_op(a, b)


def _check_linear(x: Tensor, weight: Tensor, bias: Tensor | None) -> None:
    _check_tensor(x, "pam_linear")
    if not isinstance(weight, Tensor) or weight.dtype != x.dtype or weight.dim() != 2:
        raise UsageError(f"pam_linear: weight must be a 2-d {x.dtype} tensor (out, in)")
    if x.dim() == 0 or x.shape[-1] != weight.shape[1]:
        raise UsageError(f"pam_linear: input {tuple(x.shape)} does not end in in_features={weight.shape[1]}")
    if bias is not None and (
        not isinstance(bias, Tensor) or bias.dtype != x.dtype or bias.shape != weight.shape[:1]
    ):
        raise UsageError(f"pam_linear: bias must be a {x.dtype} tensor of shape ({weight.shape[0]},)")


def _linear_impl(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    _check_linear(x, weight, bias)
    rows = x.reshape(-1, x.shape[-1])
    out = kernels.pam_matmul(rows, weight.t())
    if bias is not None:
        out = out + bias.to(out.dtype)
    return out.to(x.dtype).reshape(*x.shape[:-1], weight.shape[0])


def _linear_backward_impl(
    grad: Tensor, x: Tensor, weight: Tensor, bias: Tensor | None
) -> tuple[Tensor, Tensor, Tensor]:
    # Exactly PAMMatmul's "approx" backward (revcheck.nn.pam); the bias gradient a declared sequential sum.
    rows = x.reshape(-1, x.shape[-1])
    acc = kernels.accumulator_dtype(x.dtype)
    g2 = grad.reshape(-1, grad.shape[-1]).to(acc).contiguous()
    b_wide = weight.t().to(acc)
    g_x = kernels.pam_matmul(g2, b_wide.t().contiguous())
    g_wt = kernels.pam_matmul(rows.to(acc).t().contiguous(), g2)
    g_b = _empty_grad(x) if bias is None else _sequential_sum(g2, dim=0, keepdim=False).to(x.dtype)
    return g_x.to(x.dtype).reshape(x.shape), g_wt.to(x.dtype).t().contiguous(), g_b


def _linear_fake(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    return x.new_empty((*x.shape[:-1], weight.shape[0]))


def _linear_backward_fake(
    grad: Tensor, x: Tensor, weight: Tensor, bias: Tensor | None
) -> tuple[Tensor, Tensor, Tensor]:
    return (
        torch.empty_like(x),
        torch.empty_like(weight),
        x.new_empty(weight.shape[:1] if bias is not None else (0,)),
    )


_pam_linear_op = _register(
    "pam_linear", "(Tensor x, Tensor weight, Tensor? bias) -> Tensor", _linear_impl, _linear_fake
)
_pam_linear_backward_op = _register(
    "pam_linear_backward",
    "(Tensor grad, Tensor x, Tensor weight, Tensor? bias) -> (Tensor, Tensor, Tensor)",
    _linear_backward_impl,
    _linear_backward_fake,
)


def _linear_autograd(ctx: Any, grad: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
    x, weight, bias = ctx.saved_tensors
    g_x, g_w, g_b = _pam_linear_backward_op(grad.contiguous(), x, weight, bias)
    return g_x, g_w, (g_b if bias is not None else None)


_pam_linear_op.register_autograd(_linear_autograd, setup_context=_scale_setup)


def pam_linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``x ⊡@ Wᵀ + b`` as :class:`~revcheck.nn.pam.PAMLinear` computes it, as the op ``revcheck::pam_linear``.

    Forward and input/weight gradients are bit-identical to ``PAMLinear`` (mode
    ``"ieee"``, backward ``"approx"``); the bias gradient is the sequential sum
    over rows (PAMLinear leaves that order to torch's reduction).
    """
    _check_linear(x, weight, bias)
    return _pam_linear_op(x, weight, bias)


class PAMLinearOp(PAMLinear):
    """:class:`~revcheck.nn.pam.PAMLinear` whose product is the registered op ``revcheck::pam_linear``.

    ``PAMLinear`` is a ``torch.autograd.Function`` whose kernel branches on the
    data (a ``.item()`` in its fast-path test), which ``make_fx`` cannot trace;
    as one registered op the layer is a named leaf in traces and dispatch logs.
    Same parameters, same forward bits (mode ``"ieee"``, backward ``"approx"``).
    """

    def __init__(
        self, in_features: int, out_features: int, bias: bool = True, device: Any = None, dtype: Any = None
    ) -> None:
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)

    def forward(self, x: Tensor) -> Tensor:
        if not isinstance(x, Tensor) or x.dtype != self.weight.dtype:
            given = x.dtype if isinstance(x, Tensor) else type(x).__name__
            raise TypeError(f"PAMLinearOp has weight dtype {self.weight.dtype} but the input is {given}")
        return pam_linear(x, self.weight, self.bias)


# ---- gradient norms and scaling ---------------------------------------------------------------------------


def _sq_norm_impl(xs: list[Tensor]) -> Tensor:
    if not xs:
        raise UsageError("pa_sq_norm needs at least one tensor")
    dtypes = {x.dtype for x in xs}
    if len(dtypes) != 1:
        raise UsageError(f"pa_sq_norm: tensors have dtypes {sorted(map(str, dtypes))}; use one dtype")
    _check_tensor(xs[0], "pa_sq_norm")
    flat = torch.cat([_widen(x).reshape(-1) for x in xs])
    return _strided_sum(kernels.pam_mul(flat, flat))


def _sq_norm_fake(xs: list[Tensor]) -> Tensor:
    return xs[0].new_empty((), dtype=compute_dtype(xs[0].dtype))


def _scale_in_place_impl(xs: list[Tensor], c: Tensor) -> None:
    for x in xs:
        _check_scale(x, c, "pa_scale_")
        x.copy_(kernels.pam_mul(_widen(x), c.expand(x.shape)))


def _scale_in_place_fake(xs: list[Tensor], c: Tensor) -> None:
    return None


_pa_sq_norm_op = _register("pa_sq_norm", "(Tensor[] xs) -> Tensor", _sq_norm_impl, _sq_norm_fake)
_pa_scale_in_place_op = _register(
    "pa_scale_",
    "(Tensor(a!)[] xs, Tensor c) -> ()",
    _scale_in_place_impl,
    _scale_in_place_fake,
    mutates=("xs",),
)


def _grads(parameters: Iterable[Tensor] | Tensor) -> list[Tensor]:
    params = [parameters] if isinstance(parameters, Tensor) else list(parameters)
    return [p.grad for p in params if p.grad is not None]


def pa_grad_sq_norm(parameters: Iterable[Tensor] | Tensor) -> Tensor:
    """``Σ g ⊡ g`` over all gradients (``revcheck::pa_sq_norm``), declared strided order; compute dtype."""
    grads = _grads(parameters)
    if not grads:
        raise UsageError("pa_grad_sq_norm: no parameter has a gradient; call backward() first")
    return _pa_sq_norm_op(grads)


def pa_scale_grads_(parameters: Iterable[Tensor] | Tensor, c: float | Tensor) -> None:
    """Scale every ``p.grad`` IN PLACE by ``⊡ c`` (``revcheck::pa_scale_``): the gradients really change.

    (The public code rebinds a local name instead, so its gradients never scale.)
    """
    grads = _grads(parameters)
    if not grads:
        return
    c_tensor = _scale_tensor(c, grads[0])
    _pa_scale_in_place_op(grads, c_tensor)


def _clip_impl(grads: list[Tensor], max_norm: float, eps: float) -> Tensor:
    sq_norm = _sq_norm_impl(grads)
    P = _PA(sq_norm.dtype, sq_norm.device)
    norm = P.sqrt(sq_norm)
    bound = _constant(max_norm, sq_norm.dtype, sq_norm.device)
    coefficient = kernels.pam_div(bound, norm + _constant(eps, sq_norm.dtype, sq_norm.device))
    _scale_in_place_impl(grads, torch.minimum(coefficient, P.one))
    return norm


def _clip_fake(grads: list[Tensor], max_norm: float, eps: float) -> Tensor:
    return _sq_norm_fake(grads)


_pa_clip_op = _register(
    "pa_clip_grad_norm_",
    "(Tensor(a!)[] grads, float max_norm, float eps) -> Tensor",
    _clip_impl,
    _clip_fake,
    mutates=("grads",),
)


def pa_clip_grad_norm_(parameters: Iterable[Tensor] | Tensor, max_norm: float, eps: float = 1e-6) -> Tensor:
    """PA ``clip_grad_norm_`` (``revcheck::pa_clip_grad_norm_``): total norm ``pa_sqrt(Σ g ⊡ g)``.

    The coefficient is ``min(max_norm ⊘ (norm + eps), 1)`` and every gradient
    is scaled IN PLACE by ``⊡`` it (exact when it is 1); returns the total norm
    (compute dtype).  ``max_norm`` and ``eps`` are declared host constants,
    rounded once; the sum of squares runs in the declared strided order.
    """
    grads = _grads(parameters)
    if not grads:
        raise UsageError("pa_clip_grad_norm_: no parameter has a gradient; call backward() first")
    return _pa_clip_op(grads, float(max_norm), float(eps))


# ---- modules ---------------------------------------------------------------------------------------------


class PALayerNorm(nn.Module):
    """PA layer norm over the last dimension (:func:`pa_layer_norm`); parameters as ``nn.LayerNorm``'s."""

    def __init__(
        self,
        normalized_shape: int,
        eps: float = 1e-5,
        elementwise_affine: bool = True,
        bias: bool = True,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__()
        if not isinstance(normalized_shape, int):
            raise UsageError("PALayerNorm normalises one (the last) dimension; pass its size as an int")
        self.normalized_shape = (normalized_shape,)
        self.eps = eps
        factory = {"device": device, "dtype": dtype}
        self.weight = nn.Parameter(torch.ones(normalized_shape, **factory)) if elementwise_affine else None
        self.bias = (
            nn.Parameter(torch.zeros(normalized_shape, **factory)) if elementwise_affine and bias else None
        )

    def forward(self, x: Tensor) -> Tensor:
        return pa_layer_norm(x, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.weight is not None}"


class PARMSNorm(nn.Module):
    """PA RMS norm over the last dimension (:func:`pa_rms_norm`), weight initialised to ones."""

    def __init__(
        self, normalized_shape: int, eps: float = 1e-6, device: Any = None, dtype: Any = None
    ) -> None:
        super().__init__()
        self.normalized_shape = (normalized_shape,)
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(normalized_shape, device=device, dtype=dtype))

    def forward(self, x: Tensor) -> Tensor:
        return pa_rms_norm(x, self.weight, self.eps)


class PADropout(nn.Module):
    """PA dropout (:func:`pa_dropout`); draws from ``generator`` (or the global one) as integers."""

    def __init__(self, p: float = 0.5, generator: torch.Generator | None = None) -> None:
        super().__init__()
        oracle.dropout_threshold(p)  # validates p
        self.p = p
        self.generator = generator

    def forward(self, x: Tensor) -> Tensor:
        return pa_dropout(x, self.p, training=self.training, generator=self.generator)

    def extra_repr(self) -> str:
        return f"p={self.p}"


# ---- optimizer -------------------------------------------------------------------------------------------


def _adam_step_impl(
    param: Tensor, grad: Tensor, exp_avg: Tensor, exp_avg_sq: Tensor, constants: Tensor
) -> None:
    _check_tensor(param, "pa_adam_step", "param")
    acc = compute_dtype(param.dtype)
    if constants.dtype != acc or constants.shape != (len(ADAM_CONSTANT_NAMES),):
        raise UsageError(
            f"pa_adam_step: constants must be a {acc} tensor of {len(ADAM_CONSTANT_NAMES)} values"
        )
    c = dict(zip(ADAM_CONSTANT_NAMES, constants.unbind(0), strict=True))
    P = _PA(acc, param.device)
    p = _widen(param)
    g = _widen(grad)
    shape = p.shape

    def const(name: str) -> Tensor:
        return c[name].expand(shape)

    if bool(c["lr*weight_decay"] != 0):
        p = p - kernels.pam_mul(const("lr*weight_decay"), p)
    m = kernels.pam_mul(const("beta1"), exp_avg) + kernels.pam_mul(const("1-beta1"), g)
    v = kernels.pam_mul(const("beta2"), exp_avg_sq) + kernels.pam_mul(const("1-beta2"), kernels.pam_mul(g, g))
    m_hat = kernels.pam_div(m, const("1-beta1^t"))
    denominator = P.sqrt(kernels.pam_div(v, const("1-beta2^t"))) + const("eps")
    p = p - kernels.pam_mul(const("lr"), kernels.pam_div(m_hat, denominator))
    exp_avg.copy_(m)
    exp_avg_sq.copy_(v)
    param.copy_(p.to(param.dtype))


def _adam_step_fake(
    param: Tensor, grad: Tensor, exp_avg: Tensor, exp_avg_sq: Tensor, constants: Tensor
) -> None:
    return None


_pa_adam_step_op = _register(
    "pa_adam_step",
    "(Tensor(a!) param, Tensor grad, Tensor(b!) exp_avg, Tensor(c!) exp_avg_sq, Tensor constants) -> ()",
    _adam_step_impl,
    _adam_step_fake,
    mutates=("param", "exp_avg", "exp_avg_sq"),
)


class PAAdam(torch.optim.Optimizer):
    """Adam(W) with every β, bias correction and step size applied by ⊡ and ⊘ (``revcheck::pa_adam_step``).

    Per parameter and step, in the compute dtype (state ``exp_avg``,
    ``exp_avg_sq`` are compute-dtype tensors)::

        p = p - (lr·wd) ⊡ p                                  (weight_decay != 0: decoupled, AdamW)
        m = β1 ⊡ m + (1-β1) ⊡ g
        v = β2 ⊡ v + (1-β2) ⊡ (g ⊡ g)
        p = p - lr ⊡ ((m ⊘ (1-β1^t)) ⊘ (pa_sqrt(v ⊘ (1-β2^t)) + eps))

    The scalars are host constants computed once per step in exact rational
    arithmetic and rounded once (:func:`revcheck.oracle.mulfree.adam_constants`);
    :meth:`host_constants` declares the last step's.  ``p`` is rounded once to
    its dtype after the update.
    """

    def __init__(
        self,
        params: Any,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        oracle.adam_constants(
            1, "fp32", lr=lr, beta1=betas[0], beta2=betas[1], eps=eps, weight_decay=weight_decay
        )
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": weight_decay})
        self._declared: dict[str, dict[str, float]] = {}

    def _constants(self, group: dict[str, Any], step: int, param: Tensor) -> Tensor:
        acc = formats.get(compute_dtype(param.dtype))
        beta1, beta2 = group["betas"]
        constants = oracle.adam_constants(
            step,
            acc,
            lr=group["lr"],
            beta1=beta1,
            beta2=beta2,
            eps=group["eps"],
            weight_decay=group["weight_decay"],
        )
        patterns = [constants[name] for name in ADAM_CONSTANT_NAMES]
        values = _bits_tensor(patterns, acc, torch.device("cpu"))
        self._declared[f"{acc.name} step {step}"] = {
            name: float(v) for name, v in zip(ADAM_CONSTANT_NAMES, values.tolist(), strict=True)
        }
        return values.to(param.device)

    def host_constants(self) -> dict[str, dict[str, float]]:
        """The host constants of the last step, by compute format and step: name -> value."""
        return dict(self._declared)

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self._declared = {}
        for group in self.param_groups:
            cache: dict[tuple[int, torch.dtype, torch.device], Tensor] = {}
            for param in group["params"]:
                if param.grad is None:
                    continue
                if param.grad.is_sparse:
                    raise UsageError("PAAdam does not take sparse gradients")
                state = self.state[param]
                if not state:
                    acc = compute_dtype(param.dtype)
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(
                        param, dtype=acc, memory_format=torch.contiguous_format
                    )
                    state["exp_avg_sq"] = torch.zeros_like(
                        param, dtype=acc, memory_format=torch.contiguous_format
                    )
                state["step"] += 1
                key = (state["step"], param.dtype, param.device)
                if key not in cache:
                    cache[key] = self._constants(group, state["step"], param)
                _pa_adam_step_op(param, param.grad, state["exp_avg"], state["exp_avg_sq"], cache[key])
        return loss
