"""Unit tests of the NumPy PAM oracle: docs/spec.md §2 special cases, table-driven, and bad input.

Values are written as fp32 floats where fp32 can say them, converted to bit
patterns exactly; bf16/fp8 cases are written as patterns.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from revcheck import formats
from revcheck.exact import pam as exact
from revcheck.modes import MODES
from revcheck.oracle import pam as oracle
from revcheck.testing import assert_bit_exact

INF, NAN = math.inf, math.nan
FP32 = formats.get("fp32")
E4M3 = formats.get("fp8_e4m3fn")
TINY = float(np.float32(2.0**-149))  # smallest fp32 subnormal


def f32(value: float | np.ndarray) -> np.ndarray:
    return np.asarray(value, dtype=np.float32).view(np.uint32)


def check(op: str, args: tuple[float, ...], expected: float, mode: str = "ieee") -> None:
    result = getattr(oracle, op)(*(f32(x) for x in args), "fp32", mode=mode)
    assert_bit_exact(result, f32(expected), fmt="fp32", nan="bits", msg=f"{op}{args} (mode={mode})")


CANONICAL_NAN = float(np.uint32(FP32.canonical_nan).view(np.float32))

MUL_CASES = [
    ((1.5, 1.5), 2.0),  # worst case of the relative error: -1/9
    ((3.0, 3.0), 8.0),
    ((2.0, 3.0), 6.0),  # a power of two: exact
    ((-1.5, 1.25), -1.75),  # 2^0·(1 + 0.5 + 0.25)
    ((-2.0, -0.75), 1.5),
    ((NAN, 1.0), CANONICAL_NAN),
    ((1.0, -NAN), CANONICAL_NAN),
    ((INF, 0.0), CANONICAL_NAN),
    ((-0.0, INF), CANONICAL_NAN),
    ((INF, -2.0), -INF),
    ((-INF, -INF), INF),
    ((INF, TINY), INF),
    ((0.0, 5.0), 0.0),
    ((-0.0, 5.0), -0.0),
    ((0.0, -5.0), -0.0),
    ((-0.0, -0.0), 0.0),
    ((2.0**127, 4.0), INF),  # overflow
    ((-(2.0**127), 4.0), -INF),
    ((2.0**-100, 2.0**-100), 0.0),  # underflow below half the smallest subnormal
    ((-(2.0**-75), 2.0**-74), -TINY),
    ((2.0**-75, 2.0**-75), 0.0),  # exactly half the smallest subnormal: ties to even (0)
    ((1.5 * 2.0**-75, 2.0**-75), TINY),  # above half: rounds up
]

DIV_CASES = [
    ((2.0, 1.5), 1.5),  # Ma < Mb branch: 2^(0-0-1)·(2 + 0 - 0.5)
    ((3.0, 1.5), 2.0),
    ((1.5, 1.5), 1.0),
    ((-6.0, 2.0), -3.0),
    ((1.0, 0.0), INF),
    ((-1.0, 0.0), -INF),
    ((1.0, -0.0), -INF),
    ((INF, 0.0), INF),
    ((0.0, 0.0), CANONICAL_NAN),
    ((-0.0, 0.0), CANONICAL_NAN),
    ((INF, -INF), CANONICAL_NAN),
    ((1.0, INF), 0.0),
    ((-1.0, INF), -0.0),
    ((0.0, INF), 0.0),
    ((0.0, -3.0), -0.0),
    ((NAN, 0.0), CANONICAL_NAN),
    ((2.0**127, 2.0**-10), INF),
]

LOG2_CASES = [
    ((1.0,), 0.0),
    ((1.5,), 0.5),
    ((0.75,), -0.5),
    ((-1.5,), 0.5),  # the sign is ignored
    ((8.0,), 3.0),
    ((0.0,), -INF),
    ((-0.0,), -INF),
    ((INF,), INF),
    ((-INF,), INF),
    ((NAN,), CANONICAL_NAN),
    ((TINY,), -149.0),
]

EXP2_CASES = [
    ((0.0,), 1.0),
    ((-0.0,), 1.0),
    ((0.5,), 1.5),
    ((1.5,), 3.0),
    ((-1.5,), 0.375),  # 2^-2·(1 + 0.5)
    ((-1.0,), 0.5),
    ((3.0,), 8.0),
    ((-INF,), 0.0),
    ((INF,), INF),
    ((NAN,), CANONICAL_NAN),
    ((128.0,), INF),
    ((-149.0,), TINY),
    ((-200.0,), 0.0),
]

GRAD_CASES = [
    ((1.25, 1.25), 1.0),  # Ma + Mb < 1: 2^Eb
    ((1.5, 1.5), 2.0),  # Ma + Mb >= 1: 2^(Eb+1)
    ((1.0, -3.0), -2.0),
    ((-1.0, 3.0), 2.0),  # sign of b only
    ((NAN, 1.0), CANONICAL_NAN),
    ((INF, 0.0), CANONICAL_NAN),
    ((0.0, INF), CANONICAL_NAN),
    ((2.0, -0.0), -0.0),
    ((2.0, -INF), -INF),
    ((0.0, 1.5), 1.0),  # Ma = 0 for zero
    ((INF, 1.5), 1.0),  # and for infinity
]


@pytest.mark.parametrize(("args", "expected"), MUL_CASES)
def test_pam_mul_special_and_simple_cases(args: tuple[float, ...], expected: float) -> None:
    check("pam_mul", args, expected)


@pytest.mark.parametrize(("args", "expected"), DIV_CASES)
def test_pam_div_special_and_simple_cases(args: tuple[float, ...], expected: float) -> None:
    check("pam_div", args, expected)


@pytest.mark.parametrize(("args", "expected"), LOG2_CASES)
def test_pa_log2_cases(args: tuple[float, ...], expected: float) -> None:
    check("pa_log2", args, expected)


@pytest.mark.parametrize(("args", "expected"), EXP2_CASES)
def test_pa_exp2_cases(args: tuple[float, ...], expected: float) -> None:
    check("pa_exp2", args, expected)


@pytest.mark.parametrize(("args", "expected"), GRAD_CASES)
def test_pam_mul_grad_cases(args: tuple[float, ...], expected: float) -> None:
    check("pam_mul_grad", args, expected)


FTZ_CASES = [
    ("pam_mul", (TINY, 1.0), 0.0),  # subnormal input is +0
    ("pam_mul", (-TINY, 1.0), -0.0),  # of the same sign
    ("pam_mul", (2.0**-100, 2.0**-30), 0.0),  # exact result below the smallest normal
    ("pam_mul", (-(2.0**-100), 2.0**-27), -0.0),
    ("pam_mul", (2.0**-63, 2.0**-63), 2.0**-126),  # exactly the smallest normal survives
    ("pam_div", (1.0, TINY), INF),  # x / (flushed) 0
    ("pam_div", (TINY, 1.0), 0.0),
    ("pa_log2", (-TINY,), -INF),
    ("pa_exp2", (-127.0,), 0.0),  # 2^-127 is below the smallest normal
    ("pa_exp2", (-TINY,), 1.0),
    ("pam_mul_grad", (1.0, -TINY), -0.0),
]


@pytest.mark.parametrize(("op", "args", "expected"), FTZ_CASES)
def test_ftz_flushes_inputs_and_tiny_results_keeping_the_sign(
    op: str, args: tuple[float, ...], expected: float
) -> None:
    check(op, args, expected, mode="ftz")


def test_ieee_mode_keeps_the_same_cases_subnormal() -> None:
    check("pam_mul", (TINY, 1.0), TINY)
    check("pam_mul", (2.0**-100, 2.0**-30), 2.0**-130)
    check("pa_exp2", (-127.0,), 2.0**-127)


E4M3_CASES = [
    # (op, operand patterns, expected pattern): no infinity, saturate to ±448 = 0x7E / 0xFE.
    ("pam_mul", (0x7E, 0x40), 0x7E),  # 448 ⊡ 2 overflows
    ("pam_mul", (0xFE, 0x40), 0xFE),
    ("pam_div", (0x38, 0x00), 0x7E),  # 1 / +0
    ("pam_div", (0x38, 0x80), 0xFE),  # 1 / -0
    ("pam_div", (0x00, 0x00), 0x7F),  # 0 / 0: canonical NaN
    ("pam_mul", (0xFF, 0x38), 0x7F),  # NaN in (negative NaN) -> canonical NaN
    ("pa_log2", (0x00,), 0xFE),  # log2(0) = -448
    ("pa_exp2", (0x58,), 0x7E),  # exp2(16) saturates
    ("pa_exp2", (0x7E,), 0x7E),
    ("pam_mul_grad", (0x3C, 0x7E), 0x7E),  # Ma + Mb >= 1: 2^(8+1) saturates
    ("pam_mul", (0x3C, 0x3C), 0x40),  # 1.5 ⊡ 1.5 = 2
]


@pytest.mark.parametrize(("op", "args", "expected"), E4M3_CASES)
@pytest.mark.parametrize("mode", MODES)
def test_fp8_e4m3fn_saturates_instead_of_infinity(
    op: str, args: tuple[int, ...], expected: int, mode: str
) -> None:
    result = getattr(oracle, op)(*(np.uint8(x) for x in args), E4M3, mode=mode)
    assert_bit_exact(result, expected, fmt=E4M3, nan="bits", msg=f"{op}{tuple(hex(x) for x in args)}")


@pytest.mark.parametrize("fmt_name", formats.names())
def test_one_times_anything_normal_is_itself_in_every_format(fmt_name: str) -> None:
    fmt = formats.get(fmt_name)
    patterns = np.array(
        [fmt.one, fmt.min_normal, fmt.max_finite, fmt.sign_mask | fmt.one], dtype=fmt.uint_dtype
    )
    one = np.asarray(fmt.one, dtype=fmt.uint_dtype)
    assert_bit_exact(oracle.pam_mul(patterns, one, fmt), patterns, fmt=fmt, nan="bits")
    assert_bit_exact(oracle.pam_div(patterns, one, fmt), patterns, fmt=fmt, nan="bits")


def test_integer_identity_for_normal_operands_and_result() -> None:
    a = np.array([0x3FC00000, 0x40490FDB, 0xC1200000], dtype=np.uint32)
    b = np.array([0x3FC00000, 0x3F000001, 0x42C80000], dtype=np.uint32)
    magnitude = (a & 0x7FFFFFFF).astype(np.int64) + (b & 0x7FFFFFFF) - FP32.one
    expected = (magnitude | ((a ^ b) & 0x80000000)).astype(np.uint32)
    assert_bit_exact(oracle.pam_mul(a, b, FP32), expected, fmt=FP32)


def test_broadcasting_and_output_dtype() -> None:
    a = f32(np.array([[1.5], [2.0], [-3.0]], dtype=np.float32))
    b = f32(np.array([1.5, 0.5], dtype=np.float32))
    result = oracle.pam_mul(a, b, "fp32")
    assert result.shape == (3, 2) and result.dtype == np.uint32
    expected = f32(np.array([[2.0, 0.75], [3.0, 1.0], [-4.0, -1.5]], dtype=np.float32))
    assert_bit_exact(result, expected, fmt="fp32")


def test_zero_dimensional_inputs_give_zero_dimensional_bits() -> None:
    result = oracle.pam_mul(f32(1.5), f32(1.5), "fp32")
    assert result.shape == () and int(result) == int(f32(2.0))


def test_accumulator_formats() -> None:
    # The definition is revcheck.formats.accumulator_format (tests/test_formats.py); both models re-export it.
    assert oracle.accumulator_format("fp64").name == "fp64"
    for name in ("fp32", "fp16", "bf16", "fp8_e5m2", "fp8_e4m3fn"):
        assert oracle.accumulator_format(name).name == "fp32"
        assert exact.accumulator_format(name).name == "fp32"


# ---- pam_matmul -------------------------------------------------------------------------------


def test_matmul_sums_sequentially_from_plus_zero() -> None:
    # Products 1, 2^24, -2^24: sequentially (1 + 2^24) rounds to 2^24, then 0; another order gives 1.
    A = f32(np.array([[1.0, 2.0**12, -(2.0**12)]], dtype=np.float32))
    B = f32(np.array([[1.0], [2.0**12], [2.0**12]], dtype=np.float32))
    assert_bit_exact(oracle.pam_matmul(A, B, "fp32"), f32(np.array([[0.0]], dtype=np.float32)), fmt="fp32")
    one = f32(np.array([[1.0]], dtype=np.float32))
    assert oracle.within_bound(one, A, B, "fp32").all(), "the other order's result is a legitimate one"


def test_matmul_of_negative_zeros_is_plus_zero_and_empty_sum_is_plus_zero() -> None:
    A = f32(np.array([[-0.0, 0.0]], dtype=np.float32))
    B = f32(np.array([[1.0], [-1.0]], dtype=np.float32))
    assert int(oracle.pam_matmul(A, B, "fp32")[0, 0]) == 0
    empty = oracle.pam_matmul(np.zeros((2, 0), np.uint16), np.zeros((0, 3), np.uint16), "bf16")
    assert empty.shape == (2, 3) and empty.dtype == np.uint32 and not empty.any()


def test_matmul_widens_narrow_inputs_and_keeps_batch_dimensions() -> None:
    bf16_one_and_half = 0x3FC0
    A = np.full((2, 1, 3), bf16_one_and_half, dtype=np.uint16)
    B = np.full((1, 3, 2), bf16_one_and_half, dtype=np.uint16)
    result = oracle.pam_matmul(A, B, "bf16")
    assert result.shape == (2, 1, 2) and result.dtype == np.uint32
    assert_bit_exact(result, f32(np.full((2, 1, 2), 6.0, dtype=np.float32)), fmt="fp32")


def test_matmul_ftz_flushes_inputs_with_the_input_formats_subnormals() -> None:
    fp16_subnormal, fp16_one = 0x0001, 0x3C00
    A = np.array([[fp16_subnormal]], dtype=np.uint16)
    B = np.array([[fp16_one]], dtype=np.uint16)
    assert int(oracle.pam_matmul(A, B, "fp16", mode="ftz")[0, 0]) == 0
    assert_bit_exact(oracle.pam_matmul(A, B, "fp16"), f32(np.array([[2.0**-24]], np.float32)), fmt="fp32")


def test_within_bound_non_finite_cases() -> None:
    A = f32(np.array([[INF, 1.0], [INF, -INF], [NAN, 1.0]], dtype=np.float32))
    B = f32(np.array([[1.0], [1.0]], dtype=np.float32))
    inf, nan, one = f32(INF), f32(NAN), f32(1.0)
    assert oracle.within_bound(np.stack([inf, nan, nan])[:, None], A, B, "fp32").all()
    assert not oracle.within_bound(np.stack([one, inf, one])[:, None], A, B, "fp32").any()
    # Finite products whose sum may overflow in some order: +inf is a possible result.
    big = f32(np.array([[2.0**127, 2.0**127]], dtype=np.float32))
    ones = f32(np.array([[1.875], [1.875]], dtype=np.float32))
    assert oracle.within_bound(f32(np.array([[INF]], np.float32)), big, ones, "fp32").all()
    assert not oracle.within_bound(f32(np.array([[-INF]], np.float32)), big, ones, "fp32").any()


def test_matmul_bound_values() -> None:
    A = f32(np.array([[1.0, 1.0, 1.0]], dtype=np.float32))
    B = f32(np.array([[1.0], [2.0], [4.0]], dtype=np.float32))
    exact_sum, bound = oracle.pam_matmul_bound(A, B, "fp32")
    assert exact_sum[0, 0] == 7 and bound[0, 0] == oracle.gamma(2, FP32) * 7


# ---- bad input ----------------------------------------------------------------------------------


def test_wrong_uint_dtype_is_rejected_with_the_accepted_one() -> None:
    with pytest.raises(TypeError, match=r"b_bits has dtype uint16, but fp32 bit patterns must be uint32"):
        oracle.pam_mul(np.uint32(0), np.uint16(0), "fp32")


def test_float_arrays_are_not_silently_converted() -> None:
    with pytest.raises(TypeError, match=r"float32.*to_bits"):
        oracle.pam_mul(np.float32(1.0), np.uint32(0), "fp32")


def test_signed_and_python_ints_are_rejected() -> None:
    with pytest.raises(TypeError, match=r"int64.*uint16"):
        oracle.pa_log2(np.array([1], dtype=np.int64), "bf16")
    with pytest.raises(TypeError, match=r"x_bits is a int.*uint8"):
        oracle.pa_log2(0x38, "fp8_e4m3fn")


def test_mismatched_formats_are_rejected() -> None:
    bf16_bits = np.array([0x3F80], dtype=np.uint16)
    with pytest.raises(TypeError, match=r"fp32 bit patterns must be uint32"):
        oracle.pam_div(bf16_bits, bf16_bits, "fp32")
    with pytest.raises(TypeError, match=r"C_acc_bits has dtype uint16.*uint32"):
        oracle.within_bound(bf16_bits.reshape(1, 1), bf16_bits.reshape(1, 1), bf16_bits.reshape(1, 1), "bf16")


def test_unknown_format_mode_and_order_name_what_is_accepted() -> None:
    one = np.uint32(FP32.one)
    with pytest.raises(ValueError, match=r"unsupported float format 'fp12'.*fp32"):
        oracle.pam_mul(one, one, "fp12")
    with pytest.raises(ValueError, match=r"unknown mode 'daz'; use one of 'ieee', 'ftz'"):
        oracle.pam_mul(one, one, "fp32", mode="daz")
    A = np.zeros((1, 1), np.uint32)
    with pytest.raises(ValueError, match=r"unknown order 'pairwise'.*'sequential'.*within_bound"):
        oracle.pam_matmul(A, A, "fp32", order="pairwise")
    with pytest.raises(ValueError, match=r"unknown mode 'daz'; use one of 'ieee', 'ftz'"):
        exact.pam_mul(0, 0, "fp32", mode="daz")


def test_matmul_shape_errors_say_what_was_given() -> None:
    with pytest.raises(ValueError, match=r"inner dimensions differ.*\(2, 3\).*\(2, 2\)"):
        oracle.pam_matmul(np.zeros((2, 3), np.uint32), np.zeros((2, 2), np.uint32), "fp32")
    with pytest.raises(ValueError, match=r"\(..., M, K\).*got shapes \(3,\)"):
        oracle.pam_matmul(np.zeros(3, np.uint32), np.zeros((3, 1), np.uint32), "fp32")


# ---- exhaustive fp8 -----------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("fmt_name", ("fp8_e5m2", "fp8_e4m3fn"))
@pytest.mark.parametrize("op", ("pa_log2", "pa_exp2"))
def test_fp8_unary_exhaustive_against_exact_model(op: str, fmt_name: str, mode: str) -> None:
    fmt = formats.get(fmt_name)
    x = np.arange(256, dtype=np.uint8)
    expected = np.array([getattr(exact, op)(int(v), fmt, mode) for v in x], dtype=np.uint8)
    assert_bit_exact(getattr(oracle, op)(x, fmt, mode=mode), expected, fmt=fmt, nan="bits")


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("fmt_name", ("fp8_e5m2", "fp8_e4m3fn"))
@pytest.mark.parametrize("op", ("pam_mul", "pam_div", "pam_mul_grad"))
def test_fp8_all_pairs_exhaustive_against_exact_model(op: str, fmt_name: str, mode: str) -> None:
    fmt = formats.get(fmt_name)
    a = np.repeat(np.arange(256, dtype=np.uint8), 256)
    b = np.tile(np.arange(256, dtype=np.uint8), 256)
    expected = np.array(
        [getattr(exact, op)(int(x), int(y), fmt, mode) for x, y in zip(a, b, strict=True)], dtype=np.uint8
    )
    assert_bit_exact(getattr(oracle, op)(a, b, fmt, mode=mode), expected, fmt=fmt, nan="bits")
