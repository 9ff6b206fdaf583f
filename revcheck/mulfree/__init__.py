"""The certificate that no floating-point multiply ran in a training step (docs/spec.md §7).

Three parts, each with its own module:

* :mod:`revcheck.mulfree.enforcer` -- :class:`MulFreeMode`, a ``TorchDispatchMode``
  that sees every aten op of forward, backward and optimizer and raises on (or
  counts) float multiplies, divides and transcendentals, by the allowlist of
  :mod:`revcheck.mulfree.allowlist`;
* :mod:`revcheck.mulfree.static` -- :func:`prove_step`, a ``make_fx`` trace of
  the whole step whose backward slice from the updated parameters and
  optimizer state must hold only allowed ops (monitoring math reported apart);
* :mod:`revcheck.mulfree.blind_spots` -- :data:`BLIND_SPOTS`, what neither can
  see and what to do about it, and :func:`check_triton_kernels`, the
  instruction-level check of revcheck's own Triton kernels.

The PA ops themselves live in :mod:`revcheck.nn.mulfree`.
"""

from __future__ import annotations

from revcheck.mulfree.allowlist import Kind, Verdict, classify
from revcheck.mulfree.blind_spots import BLIND_SPOTS, BlindSpot, check_triton_kernels
from revcheck.mulfree.enforcer import (
    PHASES,
    FloatMultiplyError,
    MulFreeMode,
    MulFreeViolation,
    OpRecord,
    Report,
    UnknownOpError,
    certify,
)
from revcheck.mulfree.static import NotTraceableError, StaticProof, prove_step

__all__ = [
    "BLIND_SPOTS",
    "PHASES",
    "BlindSpot",
    "FloatMultiplyError",
    "Kind",
    "MulFreeMode",
    "MulFreeViolation",
    "NotTraceableError",
    "OpRecord",
    "Report",
    "StaticProof",
    "UnknownOpError",
    "Verdict",
    "certify",
    "check_triton_kernels",
    "classify",
    "prove_step",
]
