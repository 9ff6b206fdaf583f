"""Planted bugs of the formats added in issue 14 (fnuz, fp6, fp4; docs/spec.md D1.6-D1.13, D2.15-D2.18).

Each is a mistake a kernel or cast author makes with these encodings, and each is
caught by a check of revcheck's own suites with :class:`BitMismatchError`:

* reading the fnuz NaN (``0x80``, the pattern of −0 elsewhere) as a zero;
* writing a zero result with the XOR sign in a fnuz format (``0x80``: a NaN);
* giving ``0 ⊘ 0`` the saturated ``max`` in fp4 instead of the zero of D2.16;
* casts that round ties away from zero, round twice (through fp32), or do not
  saturate (NaN on overflow, as ml_dtypes does: D1.13);
* a PAM matmul backward that rounds its fp32 gradients with torch's own cast,
  which gives NaN on overflow in fnuz (D2.17), caught by the audit
  (:class:`~revcheck.audit.AuditFailure`).
"""

from __future__ import annotations

from types import ModuleType, SimpleNamespace
from typing import Any

import numpy as np
import torch
from hypothesis import strategies as st

from revcheck import bits, formats
from revcheck.audit import AuditFailure
from revcheck.kernels import pam as kernels
from revcheck.oracle import rounding
from revcheck.strategies import testfloat_pairs
from revcheck.testing import BitMismatchError
from tests.harness import PlantedBug
from tests.test_formats_exhaustive import (
    BINARY_OPS,
    UNARY_OPS,
    every_pair,
    every_pattern,
    kernels_agree_with_oracle,
)

FNUZ = [f for f in map(formats.get, formats.names()) if not f.has_negative_zero]
E2M1 = formats.get("fp4_e2m1fn")


# ---- checks (the implementation is injected) ----------------------------------------------------------


def fnuz_kernels_agree_on_testfloat_pairs(implementation: ModuleType | Any) -> None:
    """Every op on the level-1 TestFloat pairs (and cases) of both fnuz formats, both modes, vs the oracle."""
    __tracebackhide__ = True
    for fmt in FNUZ:
        pairs = testfloat_pairs(fmt).bits()
        singles = every_pattern(fmt)
        for mode in ("ieee", "ftz"):
            kernels_agree_with_oracle(implementation, fmt, mode, pairs, singles)


def fp4_kernels_agree_on_every_input(implementation: ModuleType | Any) -> None:
    """Every op on all 256 fp4 pairs, both modes, vs the oracle."""
    __tracebackhide__ = True
    for mode in ("ieee", "ftz"):
        kernels_agree_with_oracle(implementation, E2M1, mode, every_pair(E2M1), every_pattern(E2M1))


def conversion_check(data: st.DataObject, convert: Any) -> None:
    """The ml_dtypes rounding property (``properties/mldtypes``), imported only where ml_dtypes is."""
    from properties.mldtypes.test_ml_dtypes_rounding import conversion_agrees_with_ml_dtypes

    conversion_agrees_with_ml_dtypes(data, convert)


conversion_check.__name__ = "conversion_agrees_with_ml_dtypes"


# ---- wrong kernels ------------------------------------------------------------------------------------


def _with(**replacements: Any) -> SimpleNamespace:
    """revcheck's torch kernels with some ops replaced."""
    ops = {name: getattr(kernels, name) for name in BINARY_OPS + UNARY_OPS}
    return SimpleNamespace(**(ops | replacements))


def _nan_as_zero(x: torch.Tensor) -> torch.Tensor:
    """The fnuz bug: 0x80 decoded as -0, i.e. a zero (int8 view: -128 -> 0)."""
    if x.dtype not in (torch.float8_e4m3fnuz, torch.float8_e5m2fnuz):
        return x
    as_int = x.view(torch.int8).clone()
    as_int[as_int == -128] = 0
    return as_int.view(x.dtype)


def _reads_nan_as_zero(op: str) -> Any:
    def wrong(*operands: torch.Tensor, **keywords: Any) -> torch.Tensor:
        return getattr(kernels, op)(*(_nan_as_zero(x) for x in operands), **keywords)

    return wrong


def _signed_zero_product(a: torch.Tensor, b: torch.Tensor, **keywords: Any) -> torch.Tensor:
    """pam_mul that ORs the XOR sign into every result, zeros included (0x80 in fnuz: a NaN)."""
    out = kernels.pam_mul(a, b, **keywords)
    if out.dtype not in (torch.float8_e4m3fnuz, torch.float8_e5m2fnuz):
        return out
    negative = (a.view(torch.int8) < 0) ^ (b.view(torch.int8) < 0)
    as_int = out.view(torch.int8).clone()
    as_int[(as_int == 0) & negative] = -128
    return as_int.view(out.dtype)


def _zero_over_zero_saturates(a: torch.Tensor, b: torch.Tensor, **keywords: Any) -> torch.Tensor:
    """pam_div that treats 0 ⊘ 0 in a format without NaN like x ⊘ 0: ±max (not D2.16's zero)."""
    out = kernels.pam_div(a, b, **keywords).clone()
    fmt = formats.get(keywords.get("fmt") or a.dtype)
    if fmt.has_nan:
        return out
    both_zero = ((a & fmt.magnitude_mask) == 0) & ((b & fmt.magnitude_mask) == 0)
    out[both_zero] = out[both_zero] | fmt.max_finite
    return out


# ---- wrong casts --------------------------------------------------------------------------------------


def _ties_away_from_zero(x_bits: np.ndarray, source: object, target: object, **keywords: Any) -> np.ndarray:
    """Every input nudged one float64 step away from zero first: ties round away from zero."""
    values = x_bits.view(np.float64)
    nudged = np.nextafter(values, np.copysign(np.inf, values))
    return rounding.convert(bits.to_bits(np.where(np.isfinite(values), nudged, values)), source, target)


def _double_rounding(x_bits: np.ndarray, source: object, target: object, **keywords: Any) -> np.ndarray:
    """fp64 -> fp32 -> target: the classic double rounding (a float64 step above a tie becomes a tie)."""
    return rounding.convert(rounding.convert(x_bits, source, "fp32"), "fp32", target)


def _nan_on_overflow(x_bits: np.ndarray, source: object, target: object, **keywords: Any) -> np.ndarray:
    """Overflow gives NaN in formats with NaN and no infinity (non-saturating, like ml_dtypes)."""
    fmt = formats.get(target)
    out = rounding.convert(x_bits, source, fmt)
    if fmt.has_inf or not fmt.has_nan:
        return out
    saturated = (out & fmt.magnitude_mask) == fmt.max_finite
    beyond = np.abs(x_bits.view(np.float64)) > float(2.0**fmt.emax * (2 - 2.0**-fmt.mantissa_bits))
    return np.where(saturated & beyond, np.uint8(fmt.canonical_nan), out).astype(fmt.uint_dtype)


def fnuz_matmul_backward_audit(implementation: Any) -> None:
    """``revcheck audit`` of a matmul backward as ``pam_matmul_backward_approx`` in both fnuz formats."""
    __tracebackhide__ = True
    from revcheck.audit import audit

    audit(
        implementation, "pam_matmul_backward_approx", formats=[f.name for f in FNUZ], max_examples=5, seed=0
    ).raise_for_failures()


def _approx_backward(rounding_to: Any) -> Any:
    """dA = G ⊡@ Bᵀ, dB = Aᵀ ⊡@ G in fp32 (as PAMMatmul), rounded to the inputs' dtype by ``rounding_to``."""

    def backward(a: torch.Tensor, b: torch.Tensor, g: torch.Tensor, *, mode: str) -> tuple[torch.Tensor, ...]:
        a_wide, b_wide = a.to(g.dtype), b.to(g.dtype)
        grad_a = kernels.pam_matmul(g, b_wide.t().contiguous(), mode=mode)
        grad_b = kernels.pam_matmul(a_wide.t().contiguous(), g, mode=mode)
        return rounding_to(grad_a, a.dtype), rounding_to(grad_b, b.dtype)

    return backward


def _pam_matmul_autograd(
    a: torch.Tensor, b: torch.Tensor, g: torch.Tensor, *, mode: str
) -> tuple[torch.Tensor, ...]:
    """The real backward: :class:`revcheck.nn.pam.PAMMatmul` (``backward="approx"``) under autograd."""
    from revcheck.nn.pam import PAMMatmul

    a, b = a.clone().requires_grad_(), b.clone().requires_grad_()
    return torch.autograd.grad(PAMMatmul.apply(a, b, mode, "approx"), (a, b), g)


PLANTED_BUGS = [
    PlantedBug(
        name="fnuz_nan_read_as_negative_zero",
        mistake="decodes 0x80 as -0 (a zero) in the fnuz formats, where it is the one NaN",
        check=fnuz_kernels_agree_on_testfloat_pairs,
        wrong=_with(**{op: _reads_nan_as_zero(op) for op in BINARY_OPS + UNARY_OPS}),
        right=kernels,
        error=BitMismatchError,
        family="formats",
        hypothesis=False,
    ),
    PlantedBug(
        name="fnuz_zero_product_keeps_the_sign",
        mistake="writes a zero product with the XOR sign in fnuz: 0x80, a NaN (docs/spec.md D2.15)",
        check=fnuz_kernels_agree_on_testfloat_pairs,
        wrong=_with(pam_mul=_signed_zero_product),
        right=kernels,
        error=BitMismatchError,
        family="formats",
        hypothesis=False,
    ),
    PlantedBug(
        name="fp4_zero_over_zero_saturates",
        mistake="gives 0 ⊘ 0 the saturated max in fp4 instead of the XOR-signed zero (docs/spec.md D2.16)",
        check=fp4_kernels_agree_on_every_input,
        wrong=_with(pam_div=_zero_over_zero_saturates),
        right=kernels,
        error=BitMismatchError,
        family="formats",
        hypothesis=False,
    ),
    PlantedBug(
        name="fnuz_backward_cast_gives_nan_on_overflow",
        mistake="rounds the fp32 gradients to fnuz with Tensor.to, NaN on overflow (docs/spec.md D2.17)",
        check=fnuz_matmul_backward_audit,
        wrong=_approx_backward(lambda x, dtype: x.to(dtype)),
        right=_pam_matmul_autograd,
        error=AuditFailure,
        family="formats",
        hypothesis=False,
    ),
    *(
        PlantedBug(
            name=name,
            mistake=mistake,
            check=conversion_check,
            wrong=wrong,
            right=rounding.convert,
            error=BitMismatchError,
            family="formats",
            requires=("ml_dtypes",),
            max_examples=200,
        )
        for name, mistake, wrong in (
            ("cast_ties_away_from_zero", "rounds ties away from zero, not to even", _ties_away_from_zero),
            ("cast_rounds_twice", "rounds float64 -> fp32 -> target (double rounding)", _double_rounding),
            ("cast_nan_on_overflow", "does not saturate: NaN on overflow (D1.13)", _nan_on_overflow),
        )
    ),
]
