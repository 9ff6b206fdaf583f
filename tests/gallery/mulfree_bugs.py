"""Planted bugs of the multiplication-free family: the public code's, hidden multiplies, weak certificates.

Each record (tests/harness.py) pairs one wrong implementation with the check of
properties/test_mulfree.py that must catch it and the exact error type:

* the public code's global-max softmax (a row depends on the rest of the batch);
* the public code's gradient normalisation that rebinds a local name (nothing scales);
* PA ops with a hidden float divide or multiply inside (mean by true division,
  layer norm through torch's mean/var, dropout with a float mask and 1/(1-p));
* Adam without bias correction;
* one step per hidden multiply of docs/spec.md §7's list, and a step calling an
  op the allowlist does not know;
* weakened certificates: name-based, alpha-blind, forward-only, and a paranoid
  one that rejects allowed float additions;
* a step whose optimizer multiplies inside the parameter slice (static proof).

Implementations are injected: namespaces of :mod:`revcheck.nn.mulfree` with one
function replaced, or subclasses of :class:`revcheck.mulfree.MulFreeMode`.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any

import torch

from properties import test_mulfree as props
from revcheck.kernels import pam as kernels
from revcheck.mulfree import FloatMultiplyError, Kind, MulFreeMode, UnknownOpError
from revcheck.mulfree.allowlist import Verdict
from revcheck.nn import mulfree as real
from revcheck.nn.mulfree import ops as real_ops
from revcheck.testing import BitMismatchError
from tests.harness import PlantedBug

__all__ = ["PLANTED_BUGS"]

FAMILY = "mulfree"


def _with(**replacements: Any) -> types.SimpleNamespace:
    namespace = types.SimpleNamespace(**{k: v for k, v in vars(real).items() if not k.startswith("__")})
    for name, value in replacements.items():
        setattr(namespace, name, value)
    return namespace


# ---- the public code's softmax: one global shift -------------------------------------------------


class _GlobalMaxSoftmax(torch.autograd.Function):
    """epfml/pam's PA softmax: shift by floor(max over the WHOLE tensor), pa_exp2, sum, PA divide."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, dim: int) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        ctx.dim = dim
        wide = x.to(real.compute_dtype(x.dtype)).movedim(dim, -1)
        y = wide - torch.floor(torch.amax(wide))
        e = kernels.pa_exp2(y)
        s = real_ops._sequential_sum(e)
        return kernels.pam_div(e, s.expand(e.shape)).movedim(-1, dim).to(x.dtype).contiguous()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (x,) = ctx.saved_tensors
        return torch.ops.revcheck.pa_softmax_backward(grad.contiguous(), x, ctx.dim), None


def global_max_softmax(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    return _GlobalMaxSoftmax.apply(x, dim)


# ---- the public code's gradient normalisation: a rebound local name --------------------------------


def rebinding_scale_grads_(parameters: Any, c: Any) -> None:
    for p in parameters:
        if p.grad is None:
            continue
        g = p.grad
        factor = c if isinstance(c, torch.Tensor) else torch.tensor(c, dtype=real.compute_dtype(g.dtype))
        g = kernels.pam_mul(g.to(factor.dtype), factor.expand(g.shape)).to(g.dtype)


def rebinding_clip_grad_norm_(parameters: Any, max_norm: float, eps: float = 1e-6) -> torch.Tensor:
    params = list(parameters)
    norm = real.pa_sqrt(real.pa_grad_sq_norm(params))
    coefficient = kernels.pam_div(torch.tensor(max_norm, dtype=norm.dtype), norm + eps)
    rebinding_scale_grads_(params, torch.minimum(coefficient, torch.ones((), dtype=norm.dtype)))
    return norm


# ---- PA ops with a hidden float multiply -----------------------------------------------------------------


def true_division_mean(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    return (
        real_ops._sequential_sum(x.to(real.compute_dtype(x.dtype)), dim, keepdim=False) / x.shape[dim]
    ).to(x.dtype)


def torch_statistics_layer_norm(
    x: torch.Tensor, weight: Any = None, bias: Any = None, eps: float = 1e-5
) -> torch.Tensor:
    out = (x - x.mean(-1, keepdim=True)) / torch.sqrt(x.var(-1, unbiased=False, keepdim=True) + eps)
    if weight is not None:
        out = out * weight
    return out if bias is None else out + bias


def float_mask_dropout(
    x: torch.Tensor, p: float, *, training: bool = True, generator: Any = None
) -> torch.Tensor:
    keep = torch.rand(x.shape, generator=generator) >= p
    return torch.where(keep, x / (1 - p), torch.zeros((), dtype=x.dtype))


# ---- Adam without bias correction ----------------------------------------------------------------------


class UncorrectedPAAdam(real.PAAdam):
    """PA Adam whose bias corrections are 1 (``1 - β^t`` forgotten)."""

    def _constants(self, group: dict[str, Any], step: int, param: torch.Tensor) -> torch.Tensor:
        constants = super()._constants(group, step, param).clone()
        for name in ("1-beta1^t", "1-beta2^t"):
            constants[real.ADAM_CONSTANT_NAMES.index(name)] = 1.0
        return constants


# ---- weakened certificates ------------------------------------------------------------------------------


class NameBasedMode(MulFreeMode):
    """Flags an op only when its name says mul/div/exp/log/sqrt/pow: blind to hidden multiplies."""

    def __torch_dispatch__(
        self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None
    ) -> Any:
        out = func(*args, **(kwargs or {}))
        name = func._schema.name
        if (
            any(word in name for word in ("mul", "div", "exp", "log", "sqrt", "pow"))
            and "revcheck" not in name
        ):
            self._note(func, Verdict(Kind.MULTIPLY, "name says so"), self.current_phase(), args, kwargs, out)
        return out


class AlphaBlindMode(MulFreeMode):
    """Treats add/sub as plain additions whatever their alpha."""

    def _note(self, func: Any, verdict: Verdict, phase: str, args: Any, kwargs: Any, out: Any) -> None:
        if func._schema.name in ("aten::add", "aten::sub", "aten::add_", "aten::sub_"):
            verdict = Verdict(Kind.ADD, "alpha ignored")
        super()._note(func, verdict, phase, args, kwargs, out)


class ForwardOnlyMode(MulFreeMode):
    """Checks forward and optimizer but lets everything in backward through."""

    def _note(self, func: Any, verdict: Verdict, phase: str, args: Any, kwargs: Any, out: Any) -> None:
        if phase == "backward":
            verdict = Verdict(Kind.DATA, "backward not checked")
        super()._note(func, verdict, phase, args, kwargs, out)


class ParanoidMode(MulFreeMode):
    """Rejects every float op, additions included: a false alarm on an allowed step."""

    def _note(self, func: Any, verdict: Verdict, phase: str, args: Any, kwargs: Any, out: Any) -> None:
        if verdict.kind == Kind.ADD:
            verdict = Verdict(Kind.MULTIPLY, "every float op rejected")
        super()._note(func, verdict, phase, args, kwargs, out)


# ---- steps ------------------------------------------------------------------------------------------------

_opaque = torch.library.custom_op(
    "revcheck_gallery::opaque_double", lambda x: x + x, mutates_args=(), schema="(Tensor x) -> Tensor"
)


def unknown_op_step() -> None:
    _opaque(torch.ones(3))


def sgd_step() -> Callable[[], torch.Tensor]:
    """A step whose optimizer multiplies in the parameter slice (SGD: add_ with alpha = -lr)."""
    w = torch.nn.Parameter(torch.ones(4))
    optimizer = torch.optim.SGD([w], lr=0.1)

    def step() -> torch.Tensor:
        optimizer.zero_grad()
        loss = (w + torch.ones(4)).sum()
        loss.backward()
        optimizer.step()
        return loss.detach()

    return step


# One allowed step for every step record: the harness runs each distinct right implementation once.
_ALLOWED_STEP = props.pa_step()


def _step_records() -> list[PlantedBug]:
    records = [
        PlantedBug(
            name=f"hidden multiply: {name}",
            mistake=f"a training step uses {name}, which runs a float multiply/divide/transcendental",
            check=props.check_step_is_multiplication_free,
            wrong=make(),
            right=_ALLOWED_STEP,
            error=FloatMultiplyError,
            family=FAMILY,
            hypothesis=False,
        )
        for name, make in props.HIDDEN_MULTIPLIES.items()
    ]
    records.append(
        PlantedBug(
            name="op unknown to the allowlist",
            mistake="a step calls a torch.library op nobody certified",
            check=props.check_step_is_multiplication_free,
            wrong=unknown_op_step,
            right=_ALLOWED_STEP,
            error=UnknownOpError,
            family=FAMILY,
            hypothesis=False,
        )
    )
    return records


PLANTED_BUGS: list[PlantedBug] = [
    PlantedBug(
        name="public global-max softmax",
        mistake="the softmax shift is one global maximum, so a row's result depends on the rest of the batch",
        check=props.check_softmax_rows_independent,
        wrong=_with(pa_softmax=global_max_softmax),
        right=real,
        error=BitMismatchError,
        family=FAMILY,
    ),
    PlantedBug(
        name="public global-max softmax vs oracle",
        mistake="the softmax shift is one global maximum instead of each row's",
        check=props.check_softmax_matches_oracle,
        wrong=_with(pa_softmax=global_max_softmax),
        right=real,
        error=BitMismatchError,
        family=FAMILY,
    ),
    PlantedBug(
        name="public rebinding gradient normalisation (clip)",
        mistake="the scaled gradient is bound to a local name, so p.grad never changes",
        check=props.check_gradient_scaling_scales,
        wrong=_with(pa_clip_grad_norm_=rebinding_clip_grad_norm_, pa_scale_grads_=rebinding_scale_grads_),
        right=real,
        error=BitMismatchError,
        family=FAMILY,
    ),
    PlantedBug(
        name="mean by true division",
        mistake="the PA mean divides with IEEE division instead of ⊘",
        check=props.check_mean_exact_iff_power_of_two,
        wrong=_with(pa_mean=true_division_mean),
        right=real,
        error=props.MeanExactnessError,
        family=FAMILY,
    ),
    PlantedBug(
        name="mean by true division (certificate)",
        mistake="the PA mean hides a float divide",
        check=props.check_pa_ops_are_multiplication_free,
        wrong=_with(pa_mean=true_division_mean),
        right=real,
        error=FloatMultiplyError,
        family=FAMILY,
        max_examples=3,
    ),
    PlantedBug(
        name="layer norm through torch statistics",
        mistake="the PA layer norm takes torch's mean and var (hidden divides and squares)",
        check=props.check_pa_ops_are_multiplication_free,
        wrong=_with(pa_layer_norm=torch_statistics_layer_norm),
        right=real,
        error=FloatMultiplyError,
        family=FAMILY,
        max_examples=3,
    ),
    PlantedBug(
        name="dropout with a float mask",
        mistake="dropout draws uniform floats and divides by 1 - p",
        check=props.check_pa_ops_are_multiplication_free,
        wrong=_with(pa_dropout=float_mask_dropout),
        right=real,
        error=FloatMultiplyError,
        family=FAMILY,
        max_examples=3,
    ),
    PlantedBug(
        name="Adam without bias correction",
        mistake="PA Adam forgets 1 - β^t",
        check=props.check_adam_matches_oracle,
        wrong=_with(PAAdam=UncorrectedPAAdam),
        right=real,
        error=BitMismatchError,
        family=FAMILY,
    ),
    PlantedBug(
        name="name-based certificate",
        mistake="the certificate flags only ops whose names say multiply",
        check=props.check_certificate_catches_hidden_multiplies,
        wrong=NameBasedMode,
        right=MulFreeMode,
        error=props.HiddenMultiplyMissedError,
        family=FAMILY,
        hypothesis=False,
    ),
    PlantedBug(
        name="alpha-blind certificate",
        mistake="the certificate treats add/sub as additions whatever their alpha",
        check=props.check_certificate_catches_hidden_multiplies,
        wrong=AlphaBlindMode,
        right=MulFreeMode,
        error=props.HiddenMultiplyMissedError,
        family=FAMILY,
        hypothesis=False,
    ),
    PlantedBug(
        name="forward-only certificate",
        mistake="the certificate does not look at backward",
        check=props.check_certificate_catches_hidden_multiplies,
        wrong=ForwardOnlyMode,
        right=MulFreeMode,
        error=props.HiddenMultiplyMissedError,
        family=FAMILY,
        hypothesis=False,
    ),
    PlantedBug(
        name="paranoid certificate",
        mistake="the certificate rejects float additions, which are allowed",
        check=props.check_certificate_passes_allowed_step,
        wrong=ParanoidMode,
        right=MulFreeMode,
        error=props.FalseAlarmError,
        family=FAMILY,
        hypothesis=False,
    ),
    PlantedBug(
        name="optimizer multiply in the parameter slice",
        mistake="SGD's update is add_ with alpha = -lr: a multiply that reaches the parameters",
        check=props.check_static_proof_certifies,
        wrong=sgd_step,
        right=props.pa_step_with_logging,
        error=FloatMultiplyError,
        family=FAMILY,
        hypothesis=False,
    ),
    *_step_records(),
]
