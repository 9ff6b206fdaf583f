"""The registry of auditable operations: one :class:`~revcheck.audit.spec.OpSpec` per op name.

``revcheck audit --list-ops`` prints it.  Adding an op means adding one entry to
:data:`REGISTRY` (its spec says how to draw inputs, call the candidate, ask the
oracle and compare); the runner and the CLI pick it up from here.
"""

from __future__ import annotations

from revcheck.audit import ops_bdia, ops_pam
from revcheck.audit.spec import OpSpec

__all__ = ["REGISTRY", "UnknownOpError", "get", "names"]


class UnknownOpError(KeyError):
    """Raised for an op name that is not in :data:`REGISTRY`."""

    def __str__(self) -> str:
        return str(self.args[0])


REGISTRY: dict[str, OpSpec] = {
    spec.name: spec
    for spec in (
        ops_pam.elementwise_spec(
            "pam_mul", ("a", "b"), "PAM multiply a ⊡ b (integer addition of bit patterns)", exponent_rule=1
        ),
        ops_pam.elementwise_spec(
            "pam_div", ("a", "b"), "PAM divide a ⊘ b (integer subtraction of bit patterns)", exponent_rule=-1
        ),
        ops_pam.elementwise_spec("pa_log2", ("x",), "piecewise-affine log2: E + M"),
        ops_pam.elementwise_spec("pa_exp2", ("y",), "piecewise-affine exp2: 2**floor(y) (1 + y - floor(y))"),
        ops_pam.matmul_spec(any_order=False),
        ops_pam.matmul_spec(any_order=True),
        ops_bdia.quantize_spec(),
        ops_bdia.forward_step_spec(),
        ops_bdia.inverse_step_spec(),
    )
}


def names() -> tuple[str, ...]:
    """Names of all registered ops."""
    return tuple(REGISTRY)


def get(name: str) -> OpSpec:
    """The spec of op ``name``; raises :class:`UnknownOpError` naming the registered ops."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise UnknownOpError(f"unknown op {name!r}; registered ops are {', '.join(REGISTRY)}") from None
