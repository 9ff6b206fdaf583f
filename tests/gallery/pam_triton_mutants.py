"""Deliberately wrong Triton PAM kernels: realistic mistakes the PAM kernel suite must catch on Triton.

Each mutant replaces one op of the Triton implementation
(:data:`properties.pam_suite.TRITON`, ``TRITON.replace(pam_div=...)``) and is
handed to the suite's check bodies (properties/pam_suite.py): the random draws,
the counted TestFloat pairs, the exhaustive fp8 check and the fixed-case matmul
checks.  Nothing is patched.  Mutants reuse the real kernels for everything they
do not break, so each has exactly one bug.

This module imports without triton: the real kernels are looked up when a
mutant runs, and the mutant matmul kernels (``@triton.jit``) live in
tests/triton/pam_mutant_kernels.py, named by reference.  Every record needs
triton (``requires=("triton",)``) and is skipped, with the reason, without it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from properties import pam_suite as suite
from properties.pam_suite import TRITON
from revcheck import formats
from revcheck.testing import BitMismatchError
from tests.harness import PlantedBug, check_with

__all__ = ["PLANTED_BUGS"]

FAMILY = "pam_triton"
KERNELS = "tests.triton.pam_mutant_kernels"


def _real(op: str) -> Callable[..., torch.Tensor]:
    """The real Triton kernel of ``op`` (triton is imported on first use, with the interpreter on a CPU)."""
    return TRITON.function(op)


def _signed(x: torch.Tensor) -> torch.Tensor:
    return x.view(getattr(torch, formats.get(x.dtype).int_dtype.name))


# ---- elementwise -------------------------------------------------------------------------


def ieee_flushes_subnormals(a: torch.Tensor, b: torch.Tensor, *, mode: str = "ieee") -> torch.Tensor:
    """pam_mul that runs the FTZ kernel whatever the mode: a mode-plumbing slip."""
    return _real("pam_mul")(a, b, mode="ftz")


def nan_keeps_sign(a: torch.Tensor, b: torch.Tensor, *, mode: str = "ieee") -> torch.Tensor:
    """pam_div whose NaN gets the XOR of the operand signs, like every other result: not canonical."""
    out = _real("pam_div")(a, b, mode=mode)
    fmt = formats.get(out.dtype)
    negative = (_signed(a) < 0) ^ (_signed(b) < 0)
    is_nan = _signed(out) == fmt.canonical_nan
    _signed(out)[is_nan & negative] = (fmt.canonical_nan | fmt.sign_mask) - (1 << fmt.width)
    return out


def saturating_divide_by_zero_gives_nan(
    a: torch.Tensor, b: torch.Tensor, *, mode: str = "ieee"
) -> torch.Tensor:
    """pam_div where x / ±0 in a format without infinity is NaN instead of ±max (e.g. ±448)."""
    out = _real("pam_div")(a, b, mode=mode)
    fmt = formats.get(out.dtype)
    if fmt.saturates:
        a_int, b_int = torch.broadcast_tensors(_signed(a), _signed(b))
        divide_by_zero = ((b_int & fmt.magnitude_mask) == 0) & ((a_int & fmt.magnitude_mask) != 0)
        _signed(out)[divide_by_zero] = fmt.canonical_nan
    return out


def log2_of_one_is_negative_zero(x: torch.Tensor, *, mode: str = "ieee") -> torch.Tensor:
    """pa_log2 that gives -0 for E + M = 0 (the sign taken from E - 1 < 0 instead of the value)."""
    out = _real("pa_log2")(x, mode=mode)
    fmt = formats.get(out.dtype)
    _signed(out)[(_signed(out) == 0) & ((_signed(x) & fmt.magnitude_mask) == fmt.one)] = -(
        1 << (fmt.width - 1)
    )
    return out


# ---- matmul --------------------------------------------------------------------------------


def matmul_ignores_ftz(A: torch.Tensor, B: torch.Tensor, *, mode: str = "ieee") -> torch.Tensor:
    """pam_matmul that always runs the IEEE kernel: subnormal inputs, products and sums survive FTZ."""
    return _real("pam_matmul")(A, B, mode="ieee")


# ---- the records ----------------------------------------------------------------------------


def _check(name: str, **params: str) -> Any:
    return check_with(getattr(suite, name), device="cpu", **params)


def _bug(
    name: str, mistake: str, op: str, replacement: Callable[..., Any] | str, check: Any, max_examples: int
) -> PlantedBug:
    return PlantedBug(
        name,
        mistake,
        check,
        TRITON.replace(**{op: replacement}),
        TRITON,
        BitMismatchError,
        family=FAMILY,
        hypothesis=not check.__name__.startswith(_PLAIN_CHECKS),
        max_examples=max_examples,
        requires=("triton",),
    )


# Checks without Hypothesis draws (counted cases, every fp8 input, fixed cases): run once.
_PLAIN_CHECKS = (
    "check_binary_op_on_counted_pairs",
    "check_unary_op_on_counted_cases",
    "check_exhaustive_fp8",
    "check_matmul_sums_in_order",
    "check_matmul_ftz_flushes_partial_sums",
)


def _elementwise(mutant: Callable[..., Any], op: str, checks: list[tuple[Any, int]]) -> list[PlantedBug]:
    mistake = (mutant.__doc__ or "").strip()
    return [_bug(mutant.__name__, mistake, op, mutant, check, examples) for check, examples in checks]


def _binary_checks(op: str, *, random: bool = True) -> list[tuple[Any, int]]:
    checks = [
        (_check("check_binary_op_on_counted_pairs", op=op), 1),
        (_check("check_exhaustive_fp8", op=op), 1),
    ]
    return ([(_check("check_binary_op_equals_oracle", op=op), 100)] if random else []) + checks


_REVERSED = "pam_matmul summing k = K-1 ... 0"
_TWO_ACCUMULATORS = "pam_matmul with separate even-k and odd-k partial sums (an unroll-by-two speed-up)"
_MATMUL_EQUALS_ORACLE = _check("check_matmul_equals_oracle")
_ORDER_KEPT = _check("check_sequential_order_is_kept_where_order_changes_the_result")

PLANTED_BUGS: list[PlantedBug] = [
    *_elementwise(ieee_flushes_subnormals, "pam_mul", _binary_checks("pam_mul")),
    *_elementwise(nan_keeps_sign, "pam_div", _binary_checks("pam_div")),
    # x / ±0 in e4m3fn: random arrays reach it rarely; the counted pairs and every fp8 input hold it.
    *_elementwise(saturating_divide_by_zero_gives_nan, "pam_div", _binary_checks("pam_div", random=False)),
    *_elementwise(
        log2_of_one_is_negative_zero,
        "pa_log2",
        [
            # Needs x = ±1 in the array: the first element (a counted case) is, at example 59 when
            # measured (24 is the median, 74 the largest, over 20 seeds).
            (_check("check_unary_op_equals_oracle", op="pa_log2"), 200),
            (_check("check_unary_op_on_counted_cases", op="pa_log2"), 1),
            (_check("check_exhaustive_fp8", op="pa_log2"), 1),
        ],
    ),
    _bug(
        "reversed_k_matmul",
        _REVERSED,
        "pam_matmul",
        f"{KERNELS}:reversed_k_matmul",
        _MATMUL_EQUALS_ORACLE,
        100,
    ),
    # The order-sensitive and the ftz-input checks draw their corner every example: caught within 5.
    _bug("reversed_k_matmul", _REVERSED, "pam_matmul", f"{KERNELS}:reversed_k_matmul", _ORDER_KEPT, 30),
    _bug(
        "reversed_k_matmul",
        _REVERSED,
        "pam_matmul",
        f"{KERNELS}:reversed_k_matmul",
        _check("check_matmul_sums_in_order"),
        1,
    ),
    _bug(
        "two_accumulator_matmul",
        _TWO_ACCUMULATORS,
        "pam_matmul",
        f"{KERNELS}:two_accumulator_matmul",
        _MATMUL_EQUALS_ORACLE,
        100,
    ),
    _bug(
        "two_accumulator_matmul",
        _TWO_ACCUMULATORS,
        "pam_matmul",
        f"{KERNELS}:two_accumulator_matmul",
        _ORDER_KEPT,
        30,
    ),
    _bug(
        "two_accumulator_matmul",
        _TWO_ACCUMULATORS,
        "pam_matmul",
        f"{KERNELS}:two_accumulator_matmul",
        _check("check_matmul_sums_in_order"),
        1,
    ),
    *_elementwise(
        matmul_ignores_ftz,
        "pam_matmul",
        [
            (_MATMUL_EQUALS_ORACLE, 100),
            (_check("check_ftz_flushes_subnormal_inputs_of_their_own_format"), 30),
            (_check("check_matmul_ftz_flushes_partial_sums"), 1),
        ],
    ),
]
