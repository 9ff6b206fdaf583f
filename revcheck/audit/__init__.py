"""Audit a user's kernel against revcheck's oracle: ``audit(kernel, "pam_mul", formats="bf16")``.

The audit draws TestFloat-style inputs with Hypothesis, enumerates every input
where that is cheap (8-bit formats; 16-bit unary ops), and reports a minimal
counterexample per failing (op, format, device, mode) with its class and a
one-line reproduction.  ``revcheck audit MODULE:FUNCTION --op ...`` is the
command-line form (``revcheck ops`` lists the ops); :func:`assert_deterministic`
checks run-to-run bit equality; :func:`audit_stack` (``revcheck audit-stack``) audits a whole
reversible BDIA stack: its forward, its reconstruction and its gradients.

Layout: :mod:`~revcheck.audit.api` (``audit``, ``reproduce``) resolves the
arguments (:mod:`~revcheck.audit.arguments`) into a frozen
:class:`~revcheck.audit.config.AuditConfig`, and runs each check
(:mod:`~revcheck.audit.check`) through the stages
(:mod:`~revcheck.audit.hypothesis_stage`, :mod:`~revcheck.audit.exhaustive_stage`,
:mod:`~revcheck.audit.determinism_stage`), which run cases
(:mod:`~revcheck.audit.case`); failures become counterexamples
(:mod:`~revcheck.audit.counterexample`) in the report (:mod:`~revcheck.audit.report`).
The ops are data: :mod:`~revcheck.audit.registry` holds one
:class:`~revcheck.audit.spec.OpSpec` per op, built by the family modules
:mod:`~revcheck.audit.ops_pam` and :mod:`~revcheck.audit.ops_bdia`.
"""

from revcheck.audit.api import audit, reproduce
from revcheck.audit.config import DEFAULT_MAX_EXAMPLES
from revcheck.audit.determinism import NondeterminismError, assert_deterministic, first_difference
from revcheck.audit.registry import REGISTRY, UnknownOpError
from revcheck.audit.report import AuditFailure, AuditReport, CheckResult, Counterexample, Value
from revcheck.audit.spec import OpSpec
from revcheck.audit.stack import StackAuditReport, audit_stack, default_blocks
from revcheck.audit.target import TargetError
from revcheck.errors import UsageError

#: The audit's usage errors are :class:`revcheck.errors.UsageError` (this name is kept for existing code).
AuditUsageError = UsageError

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
    "StackAuditReport",
    "TargetError",
    "UnknownOpError",
    "UsageError",
    "Value",
    "assert_deterministic",
    "audit",
    "audit_stack",
    "default_blocks",
    "first_difference",
    "reproduce",
]
