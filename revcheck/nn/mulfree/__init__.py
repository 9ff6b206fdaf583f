"""Multiplication-free training on torch (docs/spec.md §7): the registered PA ops, modules, PA Adam, a model.

* :mod:`revcheck.nn.mulfree.ops` -- every PA op as a ``torch.library`` op with a
  multiplication-free backward (``revcheck::pa_softmax`` ...), the modules
  :class:`PALayerNorm`, :class:`PARMSNorm`, :class:`PADropout`,
  :class:`PAMLinearOp`, gradient scaling and clipping, and :class:`PAAdam`;
* :mod:`revcheck.nn.mulfree.model` -- :class:`TinyTransformer`, one
  architecture with PA or standard arithmetic (the example and the benchmark).

The oracle is :mod:`revcheck.oracle.mulfree`; the certificate :mod:`revcheck.mulfree`.
"""

from __future__ import annotations

from revcheck.nn.mulfree.model import ARITHMETICS, TinyTransformer, make_optimizer, training_step
from revcheck.nn.mulfree.ops import (
    ADAM_CONSTANT_NAMES,
    PA_OPS,
    PAAdam,
    PADropout,
    PALayerNorm,
    PAMLinearOp,
    PARMSNorm,
    attention_scale,
    compute_dtype,
    dropout_keep_mask,
    pa_bmm,
    pa_clip_grad_norm_,
    pa_cross_entropy,
    pa_dropout,
    pa_grad_sq_norm,
    pa_layer_norm,
    pa_log_softmax,
    pa_mean,
    pa_rms_norm,
    pa_scale,
    pa_scale_grads_,
    pa_softmax,
    pa_sqrt,
    pam_linear,
)

__all__ = [
    "ADAM_CONSTANT_NAMES",
    "ARITHMETICS",
    "PA_OPS",
    "PAAdam",
    "PADropout",
    "PALayerNorm",
    "PAMLinearOp",
    "PARMSNorm",
    "TinyTransformer",
    "attention_scale",
    "compute_dtype",
    "dropout_keep_mask",
    "make_optimizer",
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
    "training_step",
]
