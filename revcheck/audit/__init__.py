"""Audit a user's kernel against revcheck's oracle: ``audit(kernel, "pam_mul", formats="bf16")``.

The audit draws TestFloat-style inputs with Hypothesis, enumerates every input
where that is cheap (8-bit formats; 16-bit unary ops), and reports a minimal
counterexample per failing (op, format, device, mode) with its class and a
one-line reproduction.  ``revcheck audit MODULE:FUNCTION --op ...`` is the
command-line form; :func:`assert_deterministic` checks run-to-run bit equality.
"""

from revcheck.audit.determinism import NondeterminismError, assert_deterministic, first_difference
from revcheck.audit.registry import REGISTRY, UnknownOpError
from revcheck.audit.report import AuditFailure, AuditReport, CheckResult, Counterexample, Value
from revcheck.audit.runner import DEFAULT_MAX_EXAMPLES, AuditUsageError, audit, reproduce
from revcheck.audit.spec import OpSpec

__all__ = [
    "DEFAULT_MAX_EXAMPLES",
    "REGISTRY",
    "AuditFailure",
    "AuditReport",
    "AuditUsageError",
    "CheckResult",
    "Counterexample",
    "NondeterminismError",
    "OpSpec",
    "UnknownOpError",
    "Value",
    "assert_deterministic",
    "audit",
    "first_difference",
    "reproduce",
]
