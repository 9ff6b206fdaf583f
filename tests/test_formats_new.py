"""The fnuz, fp6 and fp4 formats: their fields, and each special-case decision of docs/spec.md on every layer.

Every case is one input and the one output a decision fixes; each runs on the
oracle, the exact model and the torch kernels (Triton:
``tests/triton/test_formats_triton.py``).  Also: the patterns of a sub-byte
format must keep their padding bits zero (D1.9), and formats without a torch
dtype travel as uint8 patterns with ``fmt=`` (D1.10).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import pytest
import torch

from revcheck import bits, formats
from revcheck import strategies as rst
from revcheck.exact import pam as exact
from revcheck.exact import rounding as exact_rounding
from revcheck.formats import UnsupportedFormatError
from revcheck.kernels import pam as kernels
from revcheck.oracle import pam as oracle
from revcheck.oracle import rounding
from revcheck.testing import BitMismatchError, assert_bit_exact

E4M3FNUZ, E5M2FNUZ = formats.get("fp8_e4m3fnuz"), formats.get("fp8_e5m2fnuz")
E3M2, E2M3, E2M1 = formats.get("fp6_e3m2fn"), formats.get("fp6_e2m3fn"), formats.get("fp4_e2m1fn")


class Case(NamedTuple):
    decision: str
    fmt: str
    op: str
    mode: str
    inputs: tuple[int, ...]
    expected: int

    def __str__(self) -> str:
        operands = ", ".join(f"{x:#x}" for x in self.inputs)
        return f"{self.decision} {self.fmt} {self.op}({operands}) [{self.mode}] = {self.expected:#x}"


# fp8_e4m3fnuz: 1.0 = 0x40, -1.0 = 0xC0, max 240 = 0x7F, min normal 2^-7 = 0x08, min subnormal 2^-10 = 0x01,
# NaN = 0x80.  fp4_e2m1fn: 1.0 = 0x2, 1.5 = 0x3, 2.0 = 0x4, 6.0 = 0x7 (max), 0.5 = 0x1 (subnormal), -0 = 0x8.
CASES = [
    # D2.15: without -0 every zero result is +0 (writing 0x80 would be the NaN).
    Case("D2.15", "fp8_e4m3fnuz", "pam_mul", "ieee", (0xC0, 0x00), 0x00),  # -1 ⊡ +0
    Case("D2.15", "fp8_e4m3fnuz", "pam_mul", "ieee", (0x88, 0x08), 0x00),  # -2^-7 ⊡ 2^-7 underflows
    Case("D2.15", "fp8_e4m3fnuz", "pam_mul", "ftz", (0x81, 0x40), 0x00),  # -subnormal flushed
    Case("D2.15", "fp8_e4m3fnuz", "pam_div", "ieee", (0x00, 0xC0), 0x00),  # +0 ⊘ -1
    Case("D2.15", "fp8_e5m2fnuz", "pam_div", "ieee", (0x81, 0x7F), 0x00),  # -tiny ⊘ max
    Case(
        "D2.15", "fp8_e4m3fnuz", "pam_mul_grad", "ftz", (0x40, 0x81), 0x00
    ),  # b = -subnormal -> zero of b's sign
    Case("D2.15", "fp8_e4m3fnuz", "pa_exp2", "ieee", (0xFF,), 0x00),  # 2^-240: +0
    # D2.16: no NaN in fp6/fp4: 0 ⊘ 0 is the zero with the XOR sign.
    Case("D2.16", "fp4_e2m1fn", "pam_div", "ieee", (0x0, 0x0), 0x0),
    Case("D2.16", "fp4_e2m1fn", "pam_div", "ieee", (0x8, 0x0), 0x8),
    Case("D2.16", "fp4_e2m1fn", "pam_div", "ieee", (0x8, 0x8), 0x0),
    Case("D2.16", "fp4_e2m1fn", "pam_div", "ftz", (0x1, 0x9), 0x8),  # subnormals flushed: +0 ⊘ -0
    Case("D2.16", "fp6_e3m2fn", "pam_div", "ieee", (0x00, 0x20), 0x20),
    Case("D2.16", "fp6_e2m3fn", "pam_div", "ieee", (0x20, 0x20), 0x00),
    # D2.17: without infinity, every infinite result saturates to ±max finite.
    Case("D2.17", "fp8_e4m3fnuz", "pam_mul", "ieee", (0x7F, 0x7F), 0x7F),
    Case("D2.17", "fp8_e4m3fnuz", "pam_mul", "ieee", (0xFF, 0x7F), 0xFF),
    Case("D2.17", "fp8_e4m3fnuz", "pam_div", "ieee", (0x40, 0x00), 0x7F),  # 1 ⊘ +0
    Case("D2.17", "fp8_e4m3fnuz", "pam_div", "ieee", (0xC0, 0x00), 0xFF),  # -1 ⊘ +0
    Case("D2.17", "fp8_e4m3fnuz", "pa_log2", "ieee", (0x00,), 0xFF),  # log2(0) = -max
    Case("D2.17", "fp8_e4m3fnuz", "pa_exp2", "ieee", (0x7F,), 0x7F),  # 2^240 saturates
    Case("D2.17", "fp4_e2m1fn", "pam_div", "ieee", (0x2, 0x8), 0xF),  # 1 ⊘ -0 = -max = -6
    Case("D2.17", "fp4_e2m1fn", "pam_mul", "ieee", (0x7, 0x7), 0x7),
    Case("D2.17", "fp4_e2m1fn", "pa_log2", "ieee", (0x8,), 0xF),
    Case("D2.17", "fp6_e3m2fn", "pa_exp2", "ieee", (0x1F,), 0x1F),
    # D2.18: the fnuz NaN (0x80) is a NaN operand: NaN out, never read as -0.
    Case("D2.18", "fp8_e4m3fnuz", "pam_mul", "ieee", (0x80, 0x40), 0x80),
    Case("D2.18", "fp8_e4m3fnuz", "pam_mul", "ieee", (0x80, 0x00), 0x80),
    Case("D2.18", "fp8_e5m2fnuz", "pam_div", "ftz", (0x40, 0x80), 0x80),
    Case("D2.18", "fp8_e4m3fnuz", "pam_mul_grad", "ieee", (0x40, 0x80), 0x80),
    Case("D2.18", "fp8_e4m3fnuz", "pa_log2", "ieee", (0x80,), 0x80),
    Case("D2.18", "fp8_e5m2fnuz", "pa_exp2", "ieee", (0x80,), 0x80),
    Case("D2.18", "fp8_e4m3fnuz", "pam_div", "ieee", (0x00, 0x00), 0x80),  # 0 ⊘ 0 has a NaN here
    # F2.1 in every new format: 1.5 ⊡ 1.5 = 2 (the -1/9 worst case), 1 ⊘ 1.5 = 0.75 (+1/8).
    Case("F2.1", "fp4_e2m1fn", "pam_mul", "ieee", (0x3, 0x3), 0x4),
    Case("F2.1", "fp6_e2m3fn", "pam_mul", "ieee", (0x0C, 0x0C), 0x10),
    Case("F2.1", "fp6_e3m2fn", "pam_mul", "ieee", (0x0E, 0x0E), 0x10),
    Case("F2.1", "fp8_e5m2fnuz", "pam_mul", "ieee", (0x42, 0x42), 0x44),
    Case("F2.5", "fp4_e2m1fn", "pam_div", "ieee", (0x2, 0x3), 0x2),  # 0.75: a tie in fp4, to even 1.0
    Case("F2.5", "fp8_e4m3fnuz", "pam_div", "ieee", (0x40, 0x44), 0x3C),
]


def _oracle(case: Case) -> int:
    fmt = formats.get(case.fmt)
    operands = [np.array([x], dtype=fmt.uint_dtype) for x in case.inputs]
    return int(getattr(oracle, case.op)(*operands, fmt, mode=case.mode)[0])


def _exact(case: Case) -> int:
    return int(getattr(exact, case.op)(*case.inputs, case.fmt, case.mode))


def _torch(case: Case) -> int:
    fmt = formats.get(case.fmt)
    tensors = [bits.to_torch(np.array([x], dtype=fmt.uint_dtype), fmt) for x in case.inputs]
    result = getattr(kernels, case.op)(*tensors, mode=case.mode, fmt=fmt)
    return int(bits.to_bits(result, fmt)[0])


IMPLEMENTATIONS: dict[str, Callable[[Case], int]] = {"oracle": _oracle, "exact": _exact, "torch": _torch}


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("case", CASES, ids=str)
def test_decision(case: Case, implementation: str) -> None:
    got = IMPLEMENTATIONS[implementation](case)
    fmt = formats.get(case.fmt)
    assert got == case.expected, f"{case}: {implementation} gave {bits.describe(got, fmt)}"


def test_the_cases_cover_every_new_decision_and_format() -> None:
    assert {case.decision for case in CASES} >= {"D2.15", "D2.16", "D2.17", "D2.18"}
    new = {
        name
        for name in formats.names()
        if not (formats.get(name).has_negative_zero and formats.get(name).has_nan)
    }
    assert {case.fmt for case in CASES} == new


# ---- fields (docs/spec.md §1 table) ---------------------------------------------------------------


def test_fnuz_fields_and_landmarks() -> None:
    # bias 8 and 16: one more than OCP's e4m3fn (7) and e5m2 (15); 1.0 is 0x40 in both.
    for fmt, bias, largest in ((E4M3FNUZ, 8, 240.0), (E5M2FNUZ, 16, 57344.0)):
        assert fmt.bias == bias and fmt.one == 0x40 and (fmt.emin, fmt.emax) == (1 - bias, fmt.emax)
        assert (fmt.max_finite, fmt.canonical_nan, fmt.nan_patterns_count()) == (0x7F, 0x80, 1)
        assert float(exact_rounding.value_of(fmt.max_finite, fmt)) == largest
        assert not fmt.has_inf and fmt.has_nan and not fmt.has_negative_zero and fmt.saturates
    assert (E4M3FNUZ.emin, E4M3FNUZ.emax, E5M2FNUZ.emin, E5M2FNUZ.emax) == (-7, 7, -15, 15)


def test_mx_element_fields_and_landmarks() -> None:
    for fmt, largest, smallest in ((E3M2, 28.0, 0.0625), (E2M3, 7.5, 0.125), (E2M1, 6.0, 0.5)):
        assert not fmt.has_nan and not fmt.has_inf and fmt.has_negative_zero
        assert fmt.max_finite == fmt.magnitude_mask and fmt.nan_patterns_count() == 0
        assert float(exact_rounding.value_of(fmt.max_finite, fmt)) == largest
        assert float(exact_rounding.value_of(fmt.min_subnormal, fmt)) == smallest
        assert fmt.uint_dtype == np.uint8 and fmt.torch_dtype_name is None
        with pytest.raises(UnsupportedFormatError, match="has no NaN"):
            _ = fmt.canonical_nan
    values = [float(exact_rounding.value_of(p, E2M1)) for p in range(8)]
    assert values == [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0]


def test_every_pattern_of_the_new_formats_has_one_class() -> None:
    for fmt in (E4M3FNUZ, E5M2FNUZ, E3M2, E2M3, E2M1):
        patterns = np.arange(1 << fmt.width, dtype=fmt.uint_dtype)
        names = bits.classify(patterns, fmt)
        assert set(names) == set(rst.format_classes(fmt)), fmt.name
        assert (names == "nan").sum() == fmt.nan_patterns_count() and (names == "inf").sum() == 0
        assert (names == "zero").sum() == (2 if fmt.has_negative_zero else 1)


# ---- sub-byte patterns and uint8 tensors (D1.9, D1.10) -------------------------------------------


def test_padding_bits_are_refused_everywhere() -> None:
    bad = np.array([0x10], dtype=np.uint8)  # bit 4 of a 4-bit fp4 pattern
    with pytest.raises(ValueError, match=r"D1\.9"):
        oracle.pam_mul(bad, bad, E2M1)
    with pytest.raises(ValueError, match=r"mask them with & 0xf"):
        bits.to_bits(bad, E2M1)
    with pytest.raises(ValueError, match=r"D1\.9"):
        bits.classify(bad, E2M1)
    with pytest.raises(ValueError, match=r"D1\.9"):
        assert_bit_exact(bad, bad, fmt=E2M1)
    with pytest.raises(ValueError, match=r"D1\.9"):
        kernels.pam_mul(
            torch.tensor([0x40], dtype=torch.uint8), torch.tensor([0], dtype=torch.uint8), fmt=E3M2
        )


def test_uint8_pattern_tensors_need_fmt_and_a_matching_format() -> None:
    x = bits.to_torch([0x2, 0x3], E2M1)
    assert x.dtype == torch.uint8
    with pytest.raises(TypeError, match=r"torch.uint8 tensor; pass fmt=\.\.\."):
        kernels.pam_mul(x, x)
    with pytest.raises(TypeError, match=r"fmt=fp8_e4m3fnuz takes torch.float8_e4m3fnuz tensors"):
        kernels.pam_mul(x, x, fmt=E4M3FNUZ)
    with pytest.raises(TypeError, match=r"fmt=fp4_e2m1fn takes torch.uint8 \(bit patterns\)"):
        kernels.pam_mul(x.to(torch.float32), x.to(torch.float32), fmt=E2M1)
    assert_bit_exact(kernels.pam_mul(x, x, fmt=E2M1), [0x2, 0x4], fmt=E2M1)  # 1 ⊡ 1 = 1, 1.5 ⊡ 1.5 = 2
    fnuz = bits.to_torch([0x40], E4M3FNUZ)
    assert fnuz.dtype == torch.float8_e4m3fnuz
    assert_bit_exact(kernels.pam_mul(fnuz, fnuz, fmt="e4m3fnuz"), [0x40], fmt=E4M3FNUZ)


def test_packed_torch_fp4_says_how_to_unpack() -> None:
    with pytest.raises(UnsupportedFormatError, match=r"packs 2 fp4_e2m1fn values.*fmt='fp4_e2m1fn'"):
        formats.get(torch.float4_e2m1fn_x2)


# ---- conversion (revcheck.oracle.rounding.convert) ----------------------------------------------


def test_convert_saturates_and_refuses_nan_where_the_format_has_none() -> None:
    x = bits.to_bits(np.array([1e9, -np.inf, -0.0, 5.0, 0.25, 0.2500001]))
    assert rounding.convert(x, "fp64", E2M1).tolist() == [0x7, 0xF, 0x8, 0x6, 0x0, 0x1]
    assert rounding.convert(x, "fp64", E4M3FNUZ).tolist() == [0x7F, 0xFF, 0x00, 0x52, 0x30, 0x30]
    with pytest.raises(
        ValueError, match=r"1 NaN input\(s\) \(first at index \(1,\)\) but fp6_e2m3fn has no NaN"
    ):
        rounding.convert(bits.to_bits(np.array([1.0, np.nan])), "fp64", E2M3)
    assert rounding.convert(bits.to_bits(np.array([np.nan])), "fp64", E4M3FNUZ).tolist() == [0x80]


def test_ulp_distance_without_negative_zero() -> None:
    # docs/spec.md D1.11: -tiny, +0, +tiny; -max to +max is 2 * 0x7F steps.
    assert int(bits.ulp_distance(0x81, 0x01, E4M3FNUZ)[()]) == 2
    assert int(bits.ulp_distance(0xFF, 0x7F, E4M3FNUZ)[()]) == 2 * 0x7F
    assert int(bits.ulp_distance(0x80, 0x00, E4M3FNUZ)[()]) == -1  # NaN has no distance
    assert int(bits.ulp_distance(0x9, 0x1, E2M1)[()]) == 3  # fp4 has -0: -0.5, -0, +0, +0.5


def test_a_kernel_reading_the_fnuz_nan_as_negative_zero_is_caught() -> None:
    """The classic fnuz bug (decoding 0x80 as -0): an exhaustive comparison flags it."""

    def wrong_pam_mul(a: torch.Tensor, b: torch.Tensor, **keywords: Any) -> torch.Tensor:
        as_int = a.view(torch.int8).clone()
        as_int[as_int == -128] = 0  # "0x80 is -0, i.e. a zero"
        return kernels.pam_mul(as_int.view(a.dtype), b, **keywords)

    patterns = np.arange(256, dtype=np.uint8)
    a, b = np.repeat(patterns, 256), np.tile(patterns, 256)
    ta, tb = bits.to_torch(a, E4M3FNUZ), bits.to_torch(b, E4M3FNUZ)
    with pytest.raises(BitMismatchError, match=r"not bit-exact \(fp8_e4m3fnuz"):
        assert_bit_exact(wrong_pam_mul(ta, tb), oracle.pam_mul(a, b, E4M3FNUZ), fmt=E4M3FNUZ)


@pytest.mark.parametrize("fmt", [E4M3FNUZ, E5M2FNUZ], ids=lambda f: f.name)
@pytest.mark.parametrize("backward", ["approx", "exact"])
def test_elementwise_autograd_in_fnuz_keeps_zero_and_nan(fmt: formats.FloatFormat, backward: str) -> None:
    # The approximate backward of a ⊘ b negates the quotient: -(+0) must stay +0 (D2.15), not become
    # 0x80, the NaN; -(NaN) must stay the NaN (D2.18), not become +0.
    dtype = getattr(torch, fmt.torch_dtype_name or "")
    a = bits.to_torch(np.array([0x00, fmt.one, 0x80], np.uint8), fmt).requires_grad_(True)
    b = bits.to_torch(np.array([fmt.one, fmt.one, fmt.one], np.uint8), fmt).requires_grad_(True)
    out = kernels.pam_div(a, b, backward=backward)
    out.backward(torch.ones_like(out))
    assert a.grad is not None and b.grad is not None and a.grad.dtype == b.grad.dtype == dtype
    # d/db = -(a ⊘ b) ⊘ b (approx: +0, -1, NaN) or -sign(a) 2^(Ea - 2Eb - c) with c = [Ma <= Mb] = 1
    # (exact: +0 where a = 0, -1/2, NaN; docs/spec.md D2.12).
    minus = fmt.sign_mask | (fmt.one if backward == "approx" else fmt.one - (1 << fmt.mantissa_bits))
    assert_bit_exact(b.grad, np.array([0x00, minus, 0x80], np.uint8), fmt=fmt, nan="bits")
    # d/da = 1 ⊘ b (approx: a does not enter, so 1 at a = NaN too) or sign(b) 2^(-Eb - c) (exact: NaN there).
    at_nan = fmt.one if backward == "approx" else 0x80
    assert_bit_exact(a.grad, np.array([fmt.one, fmt.one, at_nan], np.uint8), fmt=fmt, nan="bits")


def test_a_broadcast_gradient_that_overflows_in_fnuz_saturates() -> None:
    # d(a ⊡ b)/da summed over the broadcast b: 3 · 240 overflows fp8_e4m3fnuz, saturates (D2.17), not NaN.
    a = bits.to_torch(np.array([E4M3FNUZ.one], np.uint8), E4M3FNUZ).requires_grad_(True)
    b = bits.to_torch(np.full(3, E4M3FNUZ.max_finite, np.uint8), E4M3FNUZ)
    kernels.pam_mul(a, b).backward(torch.ones(3, dtype=a.dtype))
    assert a.grad is not None
    assert_bit_exact(a.grad, np.array([E4M3FNUZ.max_finite], np.uint8), fmt=E4M3FNUZ, nan="bits")
