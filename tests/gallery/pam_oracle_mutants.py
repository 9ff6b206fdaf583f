"""Deliberately wrong variants of the PAM oracle, each caught by properties of properties/test_pam_oracle.py.

Every mutant has the signature of the oracle function it replaces and differs
from it in one plausible bug; the wrong implementation handed to a property body
is a copy of the oracle's namespace with that one function replaced
(``oracle=``).  :data:`PLANTED_BUGS` holds one record per mutant and property,
with the error that must catch it: ``BitMismatchError`` for the comparisons with
the exact model, ``PamLawError`` for the laws.  (The random exact-model
comparison of ``pam_div`` rarely reaches ``pam_div_missing_borrow``: normal
operands with Ma < Mb and a normal quotient are a small share of its draws; the
counted TestFloat pairs reach it at once.)
"""

from __future__ import annotations

import math
import types
from collections.abc import Callable
from fractions import Fraction
from typing import Any

import numpy as np

from properties import test_pam_oracle as properties
from properties.test_pam_oracle import PamLawError
from revcheck import formats
from revcheck.exact import rounding as exact_rounding
from revcheck.oracle import pam as oracle
from revcheck.oracle import rounding
from revcheck.testing import BitMismatchError
from tests.harness import PlantedBug, check_with

__all__ = ["PLANTED_BUGS"]

FAMILY = "pam_oracle"

# The real functions the mutants call for everything they do not break.
_pam_mul = oracle.pam_mul
_pam_div = oracle.pam_div
_pam_mul_grad = oracle.pam_mul_grad
_pa_log2 = oracle.pa_log2
_pa_exp2 = oracle.pa_exp2
_pam_matmul = oracle.pam_matmul


def _normal(bits: np.ndarray, fmt: formats.FloatFormat) -> np.ndarray:
    magnitude = bits & fmt.uint_dtype.type(fmt.magnitude_mask)
    return (magnitude >= fmt.min_normal) & (magnitude <= fmt.max_finite)


def pa_log2_truncating(x_bits: Any, fmt: Any, *, mode: str = "ieee") -> Any:
    """Rounds E + M toward zero instead of to nearest even."""
    fmt_ = formats.get(fmt)
    x = np.asarray(x_bits)
    m = fmt_.mantissa_bits
    decoded = rounding.decode(x, fmt_, mode)
    fixed = (decoded.exponent << np.int64(m)) + decoded.fraction
    magnitude = np.abs(fixed)
    drop = np.maximum(rounding.bit_length(magnitude) - 1 - m, 0)
    truncated = (magnitude >> drop) << drop
    out = rounding.round_scaled(fixed < 0, truncated, -m, fmt_, mode)
    real = _pa_log2(x_bits, fmt_, mode=mode)
    finite = decoded.is_finite_nonzero
    return np.where(finite, out, real)


def pam_mul_ftz_forgets_sign(a_bits: Any, b_bits: Any, fmt: Any, *, mode: str = "ieee") -> Any:
    """In ftz mode, flushed (and all other zero) results come out as +0."""
    fmt_ = formats.get(fmt)
    out = _pam_mul(a_bits, b_bits, fmt_, mode=mode)
    if mode != "ftz":
        return out
    is_zero = (out & fmt_.uint_dtype.type(fmt_.magnitude_mask)) == 0
    return np.where(is_zero, fmt_.uint_dtype.type(0), out)


def pam_mul_missing_carry(a_bits: Any, b_bits: Any, fmt: Any, *, mode: str = "ieee") -> Any:
    """When Ma + Mb >= 1 the fraction wraps but the exponent is not incremented."""
    fmt_ = formats.get(fmt)
    a, b = np.broadcast_arrays(np.asarray(a_bits), np.asarray(b_bits))
    out = _pam_mul(a, b, fmt_, mode=mode)
    mask = fmt_.uint_dtype.type(fmt_.mantissa_mask)
    carry = ((a & mask).astype(np.int64) + (b & mask)) >> fmt_.mantissa_bits
    wrong = _normal(a, fmt_) & _normal(b, fmt_) & _normal(out, fmt_) & (carry == 1)
    wrong &= (out & fmt_.uint_dtype.type(fmt_.magnitude_mask)) > 2 * fmt_.min_normal
    return np.where(wrong, out - fmt_.uint_dtype.type(fmt_.min_normal), out)


def pam_mul_loses_sign_of_zero(a_bits: Any, b_bits: Any, fmt: Any, *, mode: str = "ieee") -> Any:
    """±0 ⊡ finite is +0 whatever the signs."""
    fmt_ = formats.get(fmt)
    out = _pam_mul(a_bits, b_bits, fmt_, mode=mode)
    magnitude_mask = fmt_.uint_dtype.type(fmt_.magnitude_mask)
    input_zero = ((np.asarray(a_bits) & magnitude_mask) == 0) | ((np.asarray(b_bits) & magnitude_mask) == 0)
    result_zero = (out & magnitude_mask) == 0
    return np.where(input_zero & result_zero, fmt_.uint_dtype.type(0), out)


def pam_div_missing_borrow(a_bits: Any, b_bits: Any, fmt: Any, *, mode: str = "ieee") -> Any:
    """When Ma < Mb the exponent is not decremented (2^(Ea-Eb)·(2 + Ma - Mb) / 2 is forgotten)."""
    fmt_ = formats.get(fmt)
    a, b = np.broadcast_arrays(np.asarray(a_bits), np.asarray(b_bits))
    out = _pam_div(a, b, fmt_, mode=mode)
    mask = fmt_.uint_dtype.type(fmt_.mantissa_mask)
    borrow = (a & mask) < (b & mask)
    wrong = _normal(a, fmt_) & _normal(b, fmt_) & _normal(out, fmt_) & borrow
    wrong &= (out & fmt_.uint_dtype.type(fmt_.magnitude_mask)) < fmt_.max_finite - fmt_.min_normal
    return np.where(wrong, out + fmt_.uint_dtype.type(fmt_.min_normal), out)


def pam_mul_grad_ignores_carry(a_bits: Any, b_bits: Any, fmt: Any, *, mode: str = "ieee") -> Any:
    """Always sign(b)·2^Eb, forgetting the [Ma + Mb >= 1] term."""
    fmt_ = formats.get(fmt)
    one = np.asarray(fmt_.one, dtype=fmt_.uint_dtype)
    return _pam_mul_grad(np.zeros_like(np.asarray(a_bits)) | one, b_bits, fmt_, mode=mode)


def _elementwise(scalar: Callable[[int, formats.FloatFormat, str], int]) -> Callable[..., Any]:
    def vectorized(x_bits: Any, fmt: Any, *, mode: str = "ieee") -> Any:
        fmt_ = formats.get(fmt)
        x = np.asarray(x_bits)
        out = np.array([scalar(int(v), fmt_, mode) for v in x.reshape(-1)], dtype=np.uint64)
        return out.astype(fmt_.uint_dtype).reshape(x.shape)

    return vectorized


def _exp2_truncating_floor(y_bits: int, fmt: formats.FloatFormat, mode: str) -> int:
    """2^trunc(y)·(1 + y - trunc(y)): int() instead of floor for negative y."""
    y = exact_rounding.decode(y_bits, fmt, mode)
    real = int(_pa_exp2(np.asarray(y_bits, dtype=fmt.uint_dtype), fmt, mode=mode))
    if y.kind != "finite" or not y.negative or y.magnitude > 64 or y.magnitude.denominator == 1:
        return real
    n = math.trunc(y.signed)
    value = Fraction(2) ** n * (1 + y.signed - n)
    return exact_rounding.round_fraction(False, value, fmt, mode)


pa_exp2_truncating_floor = _elementwise(_exp2_truncating_floor)
pa_exp2_truncating_floor.__name__ = "pa_exp2_truncating_floor"
pa_exp2_truncating_floor.__doc__ = _exp2_truncating_floor.__doc__


def pam_matmul_reversed(
    A_bits: Any, B_bits: Any, fmt: Any, *, order: str = "sequential", mode: str = "ieee"
) -> Any:
    """Sums the products from k = K-1 down to 0."""
    return _pam_matmul(np.flip(A_bits, -1), np.flip(B_bits, -2), fmt, order=order, mode=mode)


def within_bound_always(C_acc_bits: Any, A_bits: Any, B_bits: Any, fmt: Any, *, mode: str = "ieee") -> Any:
    """Accepts every result."""
    return np.ones(np.shape(C_acc_bits), dtype=bool)


def _oracle_with(**replacements: Callable[..., Any]) -> types.SimpleNamespace:
    """A copy of the oracle module's namespace with some functions replaced."""
    namespace = types.SimpleNamespace(**{k: v for k, v in vars(oracle).items() if not k.startswith("__")})
    for name, function in replacements.items():
        if not hasattr(oracle, name):
            raise AttributeError(f"the oracle has no {name} to replace")
        setattr(namespace, name, function)
    return namespace


def _bug(
    function: Callable[..., Any],
    target: str,
    check_name: str,
    params: dict[str, str],
    error: type[BaseException],
    max_examples: int,
) -> PlantedBug:
    check = check_with(getattr(properties, check_name), inject="oracle", **params)
    return PlantedBug(
        function.__name__,
        (function.__doc__ or "").strip(),
        check,
        _oracle_with(**{target: function}),
        oracle,
        error,
        family=FAMILY,
        hypothesis=check_name not in _COUNTED,
        max_examples=max_examples,
    )


_COUNTED = {
    "check_binary_op_on_counted_pairs_matches_exact_model",
    "check_unary_op_on_counted_cases_matches_exact_model",
}
BINARY = "check_binary_op_matches_exact_model"
UNARY = "check_unary_op_matches_exact_model"

PLANTED_BUGS: list[PlantedBug] = [
    _bug(
        pa_log2_truncating,
        "pa_log2",
        UNARY,
        {"op": "pa_log2", "fmt_name": "fp8_e4m3fn", "mode": "ieee"},
        BitMismatchError,
        100,
    ),
    _bug(
        pam_mul_ftz_forgets_sign,
        "pam_mul",
        BINARY,
        {"op": "pam_mul", "fmt_name": "bf16", "mode": "ftz"},
        BitMismatchError,
        100,
    ),
    _bug(
        pam_mul_ftz_forgets_sign,
        "pam_mul",
        "check_sign_is_xor_of_signs",
        {"op": "pam_mul", "fmt_name": "fp16", "mode": "ftz"},
        PamLawError,
        100,
    ),
    _bug(
        pam_mul_missing_carry,
        "pam_mul",
        BINARY,
        {"op": "pam_mul", "fmt_name": "fp32", "mode": "ieee"},
        BitMismatchError,
        100,
    ),
    _bug(
        pam_mul_missing_carry,
        "pam_mul",
        "check_mul_relative_error_within_minus_one_ninth_and_zero",
        {"fmt_name": "bf16"},
        PamLawError,
        100,
    ),
    _bug(
        pam_mul_loses_sign_of_zero,
        "pam_mul",
        BINARY,
        {"op": "pam_mul", "fmt_name": "fp8_e5m2", "mode": "ieee"},
        BitMismatchError,
        100,
    ),
    _bug(
        pam_mul_loses_sign_of_zero,
        "pam_mul",
        "check_sign_is_xor_of_signs",
        {"op": "pam_mul", "fmt_name": "fp64", "mode": "ieee"},
        PamLawError,
        100,
    ),
    _bug(
        pam_div_missing_borrow,
        "pam_div",
        "check_div_relative_error_within_zero_and_one_eighth",
        {"fmt_name": "fp32"},
        PamLawError,
        100,
    ),
    _bug(
        pam_div_missing_borrow,
        "pam_div",
        "check_div_undoes_mul_without_under_or_overflow",
        {"fmt_name": "bf16", "mode": "ieee"},
        PamLawError,
        100,
    ),
    _bug(
        pam_mul_grad_ignores_carry,
        "pam_mul_grad",
        BINARY,
        {"op": "pam_mul_grad", "fmt_name": "bf16", "mode": "ieee"},
        BitMismatchError,
        100,
    ),
    _bug(
        pa_exp2_truncating_floor,
        "pa_exp2",
        UNARY,
        {"op": "pa_exp2", "fmt_name": "fp16", "mode": "ieee"},
        BitMismatchError,
        100,
    ),
    _bug(
        pam_matmul_reversed,
        "pam_matmul",
        "check_matmul_matches_exact_sequential_model",
        {"fmt_name": "fp32", "mode": "ieee"},
        BitMismatchError,
        100,
    ),
    _bug(
        within_bound_always,
        "within_bound",
        "check_result_beyond_the_bound_is_rejected",
        {"fmt_name": "bf16", "mode": "ieee"},
        PamLawError,
        100,
    ),
]

# The counted TestFloat cases catch each elementwise mutant deterministically, in one pass.
PLANTED_BUGS += [
    _bug(
        pa_log2_truncating,
        "pa_log2",
        "check_unary_op_on_counted_cases_matches_exact_model",
        {"op": "pa_log2", "fmt_name": "fp8_e4m3fn", "mode": "ieee"},
        BitMismatchError,
        1,
    ),
    _bug(
        pam_mul_ftz_forgets_sign,
        "pam_mul",
        "check_binary_op_on_counted_pairs_matches_exact_model",
        {"op": "pam_mul", "fmt_name": "bf16", "mode": "ftz"},
        BitMismatchError,
        1,
    ),
    _bug(
        pam_mul_missing_carry,
        "pam_mul",
        "check_binary_op_on_counted_pairs_matches_exact_model",
        {"op": "pam_mul", "fmt_name": "fp32", "mode": "ieee"},
        BitMismatchError,
        1,
    ),
    _bug(
        pam_mul_loses_sign_of_zero,
        "pam_mul",
        "check_binary_op_on_counted_pairs_matches_exact_model",
        {"op": "pam_mul", "fmt_name": "fp8_e5m2", "mode": "ieee"},
        BitMismatchError,
        1,
    ),
    _bug(
        pam_div_missing_borrow,
        "pam_div",
        "check_binary_op_on_counted_pairs_matches_exact_model",
        {"op": "pam_div", "fmt_name": "fp32", "mode": "ieee"},
        BitMismatchError,
        1,
    ),
    _bug(
        pam_mul_grad_ignores_carry,
        "pam_mul_grad",
        "check_binary_op_on_counted_pairs_matches_exact_model",
        {"op": "pam_mul_grad", "fmt_name": "bf16", "mode": "ieee"},
        BitMismatchError,
        1,
    ),
    _bug(
        pa_exp2_truncating_floor,
        "pa_exp2",
        "check_unary_op_on_counted_cases_matches_exact_model",
        {"op": "pa_exp2", "fmt_name": "fp16", "mode": "ieee"},
        BitMismatchError,
        1,
    ),
]
