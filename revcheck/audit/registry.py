"""The registry of operations: one :class:`~revcheck.audit.spec.OpSpec` per op name.

``revcheck ops`` prints it.  The audit and the exhaustive sweep (:mod:`revcheck.sweep`)
both look ops up here: adding an op means adding one entry to :data:`REGISTRY`
(its spec says how to draw inputs, call the candidate, ask the oracle and
compare; an elementwise op also names its bit-pattern oracle and revcheck's
implementations, which makes it sweepable).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from revcheck.audit import ops_bdia, ops_mulfree, ops_pam
from revcheck.audit.spec import OpSpec
from revcheck.errors import UsageError
from revcheck.oracle import pam

__all__ = [
    "MODEL_AUDITS",
    "REGISTRY",
    "ModelAudit",
    "UnknownOpError",
    "get",
    "implementation_names",
    "names",
    "sweepable",
]


class UnknownOpError(UsageError, KeyError):
    """Raised for an op name that is not in :data:`REGISTRY` (a usage error, and a ``KeyError``)."""

    def __str__(self) -> str:
        return str(self.args[0])


REGISTRY: dict[str, OpSpec] = {
    spec.name: spec
    for spec in (
        ops_pam.elementwise_spec(
            "pam_mul",
            pam.pam_mul,
            ("a", "b"),
            "PAM multiply a ⊡ b (integer addition of bit patterns)",
            exponent_rule=1,
        ),
        ops_pam.elementwise_spec(
            "pam_div",
            pam.pam_div,
            ("a", "b"),
            "PAM divide a ⊘ b (integer subtraction of bit patterns)",
            exponent_rule=-1,
        ),
        ops_pam.elementwise_spec(
            "pam_mul_grad",
            pam.pam_mul_grad,
            ("a", "b"),
            "exact derivative of a ⊡ b with respect to a: sign(b) · 2**(Eb + [Ma + Mb >= 1])",
        ),
        ops_pam.elementwise_spec(
            "pa_log2",
            pam.pa_log2,
            ("x",),
            "piecewise-affine log2: E + M",
            zero_is_exact_somewhere=True,
            regions=ops_pam.log2_region_values,
        ),
        ops_pam.elementwise_spec(
            "pa_exp2",
            pam.pa_exp2,
            ("y",),
            "piecewise-affine exp2: 2**floor(y) (1 + y - floor(y))",
            regions=ops_pam.exp2_region_values,
        ),
        ops_pam.matmul_spec(any_order=False),
        ops_pam.matmul_spec(any_order=True),
        ops_pam.matmul_backward_approx_spec(),
        ops_bdia.quantize_spec(),
        ops_bdia.forward_step_spec(),
        ops_bdia.inverse_step_spec(),
        ops_bdia.inference_step_spec(),
        *ops_mulfree.rowwise_specs(),
    )
}


def names() -> tuple[str, ...]:
    """Names of all registered ops."""
    return tuple(REGISTRY)


def sweepable() -> tuple[str, ...]:
    """Names of the ops the exhaustive sweep can enumerate (elementwise ops on bit patterns)."""
    return tuple(name for name, spec in REGISTRY.items() if spec.sweepable)


def implementation_names() -> tuple[str, ...]:
    """Every implementation name (``"torch"``, ``"triton"`` ...) some registered op has."""
    return tuple(dict.fromkeys(impl for spec in REGISTRY.values() for impl in spec.implementations))


def get(name: str) -> OpSpec:
    """The spec of op ``name``; raises :class:`UnknownOpError` naming the registered ops."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise UnknownOpError(f"unknown op {name!r}; registered ops are {', '.join(REGISTRY)}") from None


@dataclass(frozen=True)
class ModelAudit:
    """A whole-model audit of a method family (Python API): what it takes and what it proves."""

    name: str
    function: str  # "module:function", imported only when called
    takes: str
    proves: str
    levels: str

    def load(self) -> Callable[..., Any]:
        module, _, attribute = self.function.partition(":")
        return cast(Callable[..., Any], getattr(importlib.import_module(module), attribute))


#: The audits that take a model, a step or a user's function rather than an elementwise kernel.
#: ``revcheck ops`` lists them after the ops; each family's audit-ops module holds the code.
MODEL_AUDITS: tuple[ModelAudit, ...] = (
    ModelAudit(
        "audit_stack",
        "revcheck.audit.stack:audit_stack",
        "a reversible BDIA stack's forward, reconstruction and (optionally) backward",
        "every code and side bit against the oracle's forward, the reconstruction against its "
        "inverse, gradients against a stored-activation run (docs/spec.md §3)",
        "O",
    ),
    ModelAudit(
        "audit_growth_function",
        "revcheck.audit.ops_expand:audit_growth_function",
        "a user's growth function for the reference transformer (or a mapped model)",
        "the grown model computes the old function (docs/spec.md §4)",
        "O, K",
    ),
    ModelAudit(
        "audit_preservation_checker",
        "revcheck.audit.ops_expand:audit_preservation_checker",
        "a user's function-preservation checker",
        "it rejects the known broken growths and accepts the preserved ones (docs/spec.md §4)",
        "O, R",
    ),
    ModelAudit(
        "audit_storage",
        "revcheck.audit.ops_tying:audit_storage",
        "a model and its optimizer",
        "aliased storages, storages updated more than once per step, orphaned optimizer state, "
        "trainable parameters per storage (docs/spec.md §5)",
        "structural (storage identity, update counts)",
    ),
    ModelAudit(
        "audit_memory_transformer",
        "revcheck.audit.ops_memxl:audit_memory_transformer",
        "a Transformer-XL-style model following the documented protocol",
        "recurrence = masked full pass, relative positions, memory update, cross-head "
        "reparametrisation, skip-retain ages (docs/spec.md §6)",
        "O, R, K",
    ),
    ModelAudit(
        "certify_step",
        "revcheck.audit.ops_mulfree:certify_step",
        "a function building one training step",
        "no floating-point multiply in forward, backward and optimizer: runtime enforcer and "
        "static trace of the parameter slice (docs/spec.md §7)",
        "semantic, at the level of aten ops (docs/spec.md §7 lists what it cannot see)",
    ),
)
