"""The NumPy PAM oracle against the independent exact model, and the laws of docs/spec.md §2.

Every format, both modes.  "Exact" comparisons are bit for bit (NaN bits too:
both sides return the canonical NaN): the oracle (level O) equals the exact
model (level R, rounded once), on random draws and on every TestFloat level-1
case and pair (:func:`revcheck.strategies.testfloat_pairs`).  Laws are measured
with exact rationals (:mod:`revcheck.exact.rounding`), on inputs and results
away from underflow and overflow where the law says so; a law that fails raises
:class:`PamLawError`.

Each ``check_*`` body takes the oracle under test (``oracle=``, the module
:mod:`revcheck.oracle.pam` by default); tests/gallery/pam_oracle_mutants.py runs
the same bodies against planted bugs.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from revcheck import formats
from revcheck import strategies as rst
from revcheck.exact import pam as exact
from revcheck.exact import rounding as exact_rounding
from revcheck.oracle import pam as ORACLE
from revcheck.testing import assert_bit_exact

FORMATS = formats.names()
MODES = ("ieee", "ftz")
BINARY_OPS = ("pam_mul", "pam_div", "pam_mul_grad")
UNARY_OPS = ("pa_log2", "pa_exp2")
NORMAL = ("normal",)
FINITE_NONZERO = ("normal", "subnormal")
NON_NAN = ("zero", "subnormal", "normal", "inf")


class PamLawError(AssertionError):
    """A law of docs/spec.md §2 (error bounds, sign, commutativity, ...) does not hold for the oracle."""


def _fmt(name: str) -> formats.FloatFormat:
    return formats.get(name)


def _array(bits: int, fmt: formats.FloatFormat) -> np.ndarray:
    return np.asarray(bits, dtype=fmt.uint_dtype)


def _call(oracle: Any, op: str, fmt: formats.FloatFormat, mode: str, *operands: int) -> int:
    """One oracle call on 0-d arrays, result as a Python int."""
    return int(getattr(oracle, op)(*(_array(x, fmt) for x in operands), fmt, mode=mode))


def _law(holds: bool, message: str) -> None:
    __tracebackhide__ = True
    if not holds:
        raise PamLawError(message)


def _value(bits: int, fmt: formats.FloatFormat) -> Fraction:
    return exact_rounding.decode(bits, fmt).signed


def _is_normal(bits: int, fmt: formats.FloatFormat) -> bool:
    x = exact_rounding.decode(bits, fmt)
    return x.kind == "finite" and x.magnitude >= Fraction(2) ** fmt.emin


def _pa_product_is_normal(a: int, b: int, fmt: formats.FloatFormat) -> bool:
    """Whether the UNROUNDED a ⊡ b (finite nonzero operands) lies in the normal range: no rounding at all."""
    magnitude = abs(exact.pam_mul_value(a, b, fmt))
    return Fraction(2) ** fmt.emin <= magnitude <= exact_rounding.max_finite_value(fmt)


def moderate_normals(fmt: formats.FloatFormat) -> st.SearchStrategy[int]:
    """Normal patterns within 2^±4 of 1 (any significand), mixed with normals of any exponent.

    Laws that hold away from underflow and overflow would reject most draws of
    arbitrary exponents; these keep products and quotients in range.
    """
    return st.one_of(
        rst.normals_near_one(fmt, binades=min(4, fmt.emax - 1)), rst.bit_patterns(fmt, classes=NORMAL)
    )


def _finite_classes(fmt: formats.FloatFormat) -> tuple[str, ...]:
    return tuple(c for c in NON_NAN if c != "inf" or fmt.has_inf)


def _split(bits: int, fmt: formats.FloatFormat) -> tuple[int, Fraction]:
    return exact.split(exact_rounding.decode(bits, fmt).magnitude)


# ---- property bodies: oracle == exact model ------------------------------------------------------


def check_binary_op_matches_exact_model(
    data: st.DataObject, *, op: str, fmt_name: str, mode: str, oracle: Any = ORACLE
) -> None:
    fmt = _fmt(fmt_name)
    a = data.draw(rst.bit_patterns(fmt), label="a")
    b = data.draw(rst.bit_patterns(fmt), label="b")
    expected = getattr(exact, op)(a, b, fmt, mode)
    assert_bit_exact(
        getattr(oracle, op)(_array(a, fmt), _array(b, fmt), fmt, mode=mode),
        expected,
        fmt=fmt,
        nan="bits",
        msg=f"oracle {op}({a:#x}, {b:#x}) in {fmt.name}, mode={mode!r} differs from the exact model",
    )


def check_unary_op_matches_exact_model(
    data: st.DataObject, *, op: str, fmt_name: str, mode: str, oracle: Any = ORACLE
) -> None:
    fmt = _fmt(fmt_name)
    x = data.draw(rst.bit_patterns(fmt), label="x")
    assert_bit_exact(
        getattr(oracle, op)(_array(x, fmt), fmt, mode=mode),
        getattr(exact, op)(x, fmt, mode),
        fmt=fmt,
        nan="bits",
        msg=f"oracle {op}({x:#x}) in {fmt.name}, mode={mode!r} differs from the exact model",
    )


def check_binary_op_on_counted_pairs_matches_exact_model(
    *, op: str, fmt_name: str, mode: str, oracle: Any = ORACLE
) -> None:
    """Every TestFloat level-1 pair of the format (``testfloat_pairs``, ~17k), deterministically."""
    pairs = rst.testfloat_pairs(fmt_name)
    fmt = pairs.first.fmt
    a_bits, b_bits = pairs.bits()
    model = getattr(exact, op)
    expected = np.array(
        [model(a, b, fmt, mode) for a, b in zip(a_bits.tolist(), b_bits.tolist(), strict=True)],
        dtype=np.uint64,
    )
    assert_bit_exact(
        getattr(oracle, op)(a_bits, b_bits, fmt, mode=mode),
        expected.astype(fmt.uint_dtype),
        fmt=fmt,
        nan="bits",
        msg=f"oracle {op} on {pairs!r}, mode={mode!r} differs from the exact model",
    )


def check_unary_op_on_counted_cases_matches_exact_model(
    *, op: str, fmt_name: str, mode: str, oracle: Any = ORACLE
) -> None:
    """Every TestFloat level-1 case of the format (``testfloat_cases``), deterministically."""
    cases = rst.testfloat_cases(fmt_name)
    fmt = cases.fmt
    x_bits = cases.bits()
    model = getattr(exact, op)
    expected = np.array([model(x, fmt, mode) for x in x_bits.tolist()], dtype=np.uint64)
    assert_bit_exact(
        getattr(oracle, op)(x_bits, fmt, mode=mode),
        expected.astype(fmt.uint_dtype),
        fmt=fmt,
        nan="bits",
        msg=f"oracle {op} on {cases!r}, mode={mode!r} differs from the exact model",
    )


def check_vectorized_equals_elementwise(data: st.DataObject, *, oracle: Any = ORACLE) -> None:
    fmt = data.draw(rst.formats(), label="format")
    mode = data.draw(st.sampled_from(MODES), label="mode")
    a = data.draw(rst.bit_arrays(fmt, (3, 1)), label="a")
    b = data.draw(rst.bit_arrays(fmt, (1, 4)), label="b")
    for op in BINARY_OPS:
        whole = getattr(oracle, op)(a, b, fmt, mode=mode)
        _law(
            whole.shape == (3, 4) and whole.dtype == fmt.uint_dtype,
            f"{op}: shape/dtype {whole.shape} {whole.dtype}",
        )
        scalars = [
            [_call(oracle, op, fmt, mode, int(a[i, 0]), int(b[0, j])) for j in range(4)] for i in range(3)
        ]
        assert_bit_exact(
            whole,
            np.array(scalars, dtype=np.uint64).astype(fmt.uint_dtype),
            fmt=fmt,
            nan="bits",
            msg=f"broadcast {op} differs from the scalar calls",
        )


# ---- property bodies: laws of docs/spec.md §2 ------------------------------------------------------


def check_mul_relative_error_within_minus_one_ninth_and_zero(
    data: st.DataObject, *, fmt_name: str, oracle: Any = ORACLE
) -> None:
    fmt = _fmt(fmt_name)
    a = data.draw(rst.bit_patterns(fmt, classes=FINITE_NONZERO), label="a")
    b = data.draw(rst.bit_patterns(fmt, classes=FINITE_NONZERO), label="b")
    true = _value(a, fmt) * _value(b, fmt)
    # The PA value lies in [8/9·true, true]: from 2^(emin+1) up it is normal, below max finite it is finite,
    # so nothing is rounded.
    assume(Fraction(2) ** (fmt.emin + 1) <= abs(true) <= exact_rounding.max_finite_value(fmt))
    r = _call(oracle, "pam_mul", fmt, "ieee", a, b)
    relative = (_value(r, fmt) - true) / true
    _law(Fraction(-1, 9) <= relative <= 0, f"relative error {float(relative)} of {a:#x} ⊡ {b:#x}")


def check_mul_exact_iff_an_operand_is_power_of_two_or_zero(
    data: st.DataObject, *, fmt_name: str, mode: str, oracle: Any = ORACLE
) -> None:
    fmt = _fmt(fmt_name)
    a = data.draw(rst.bit_patterns(fmt, classes=("zero", "normal")), label="a")
    b = data.draw(rst.bit_patterns(fmt, classes=("zero", "normal")), label="b")
    if data.draw(st.booleans(), label="make a a power of two"):
        a &= ~fmt.mantissa_mask
    r = _call(oracle, "pam_mul", fmt, mode, a, b)
    a_value, b_value = _value(a, fmt), _value(b, fmt)
    assume(a_value == 0 or b_value == 0 or _pa_product_is_normal(a, b, fmt))
    simple = a_value == 0 or b_value == 0 or _split(a, fmt)[1] == 0 or _split(b, fmt)[1] == 0
    _law(
        (_value(r, fmt) == a_value * b_value) == simple,
        f"{a:#x} ⊡ {b:#x} = {r:#x}: exact={_value(r, fmt) == a_value * b_value}, "
        f"an operand ±2^k or 0={simple}",
    )


def check_mul_is_commutative(data: st.DataObject, *, fmt_name: str, mode: str, oracle: Any = ORACLE) -> None:
    fmt = _fmt(fmt_name)
    a = data.draw(rst.bit_patterns(fmt), label="a")
    b = data.draw(rst.bit_patterns(fmt), label="b")
    _law(
        _call(oracle, "pam_mul", fmt, mode, a, b) == _call(oracle, "pam_mul", fmt, mode, b, a),
        f"{a:#x} ⊡ {b:#x} != {b:#x} ⊡ {a:#x}",
    )


def check_mul_is_associative_without_under_or_overflow(
    data: st.DataObject, *, fmt_name: str, mode: str, oracle: Any = ORACLE
) -> None:
    fmt = _fmt(fmt_name)
    a, b, c = (data.draw(moderate_normals(fmt), label=name) for name in "abc")
    assume(_pa_product_is_normal(a, b, fmt) and _pa_product_is_normal(b, c, fmt))
    ab, bc = _call(oracle, "pam_mul", fmt, mode, a, b), _call(oracle, "pam_mul", fmt, mode, b, c)
    assume(_pa_product_is_normal(ab, c, fmt) and _pa_product_is_normal(a, bc, fmt))
    left, right = _call(oracle, "pam_mul", fmt, mode, ab, c), _call(oracle, "pam_mul", fmt, mode, a, bc)
    _law(
        left == right,
        f"({a:#x} ⊡ {b:#x}) ⊡ {c:#x} = {left:#x} but {a:#x} ⊡ ({b:#x} ⊡ {c:#x}) = {right:#x}",
    )


def check_div_undoes_mul_without_under_or_overflow(
    data: st.DataObject, *, fmt_name: str, mode: str, oracle: Any = ORACLE
) -> None:
    fmt = _fmt(fmt_name)
    a = data.draw(moderate_normals(fmt), label="a")
    b = data.draw(moderate_normals(fmt), label="b")
    assume(_pa_product_is_normal(a, b, fmt))
    product = _call(oracle, "pam_mul", fmt, mode, a, b)
    back = _call(oracle, "pam_div", fmt, mode, product, b)
    _law(back == a, f"({a:#x} ⊡ {b:#x}) ⊘ {b:#x} = {back:#x}, not {a:#x}")


def check_sign_is_xor_of_signs(
    data: st.DataObject, *, op: str, fmt_name: str, mode: str, oracle: Any = ORACLE
) -> None:
    fmt = _fmt(fmt_name)
    a = data.draw(rst.bit_patterns(fmt, classes=_finite_classes(fmt)), label="a")
    b = data.draw(rst.bit_patterns(fmt, classes=_finite_classes(fmt)), label="b")
    r = _call(oracle, op, fmt, mode, a, b)
    assume(exact_rounding.decode(r, fmt).kind != "nan")
    expected_sign = (a ^ b) & fmt.sign_mask
    if not fmt.has_negative_zero and r & fmt.magnitude_mask == 0:
        expected_sign = 0  # docs/spec.md D2.15: without -0 a zero result is +0
    _law(r & fmt.sign_mask == expected_sign, f"{op}({a:#x}, {b:#x}) = {r:#x} has the wrong sign")


def check_mul_is_monotone_in_each_argument(
    data: st.DataObject, *, fmt_name: str, mode: str, oracle: Any = ORACLE
) -> None:
    fmt = _fmt(fmt_name)
    classes = _finite_classes(fmt)
    low = data.draw(rst.bit_patterns(fmt, classes=classes), label="low")
    high = data.draw(rst.bit_patterns(fmt, classes=classes), label="high")
    other = data.draw(rst.bit_patterns(fmt, classes=classes), label="other")
    value = exact_rounding.value_of
    if value(high, fmt) < value(low, fmt):
        low, high = high, low
    slope_sign = value(other, fmt)
    for first in (True, False):
        lo = _call(oracle, "pam_mul", fmt, mode, *((low, other) if first else (other, low)))
        hi = _call(oracle, "pam_mul", fmt, mode, *((high, other) if first else (other, high)))
        assume(exact_rounding.decode(lo, fmt).kind != "nan" and exact_rounding.decode(hi, fmt).kind != "nan")
        lo_value, hi_value = value(lo, fmt), value(hi, fmt)
        ordered = lo_value <= hi_value if slope_sign >= 0 else lo_value >= hi_value
        _law(
            ordered, f"not monotone: {low:#x} <= {high:#x} but products with {other:#x} are {lo:#x}, {hi:#x}"
        )


def check_div_relative_error_within_zero_and_one_eighth(
    data: st.DataObject, *, fmt_name: str, oracle: Any = ORACLE
) -> None:
    fmt = _fmt(fmt_name)
    a = data.draw(rst.bit_patterns(fmt, classes=FINITE_NONZERO), label="a")
    b = data.draw(rst.bit_patterns(fmt, classes=FINITE_NONZERO), label="b")
    true = _value(a, fmt) / _value(b, fmt)
    # The PA value lies in [true, 9/8·true]: normal and finite, so not rounded.
    assume(
        Fraction(2) ** fmt.emin <= abs(true)
        and abs(true) * Fraction(9, 8) <= exact_rounding.max_finite_value(fmt)
    )
    r = _call(oracle, "pam_div", fmt, "ieee", a, b)
    relative = (_value(r, fmt) - true) / true
    _law(0 <= relative <= Fraction(1, 8), f"relative error {float(relative)} of {a:#x} ⊘ {b:#x}")


# ---- property bodies: matrix product -------------------------------------------------------------


def _spread_normals(fmt: formats.FloatFormat, shape: tuple[int, int], seed: int) -> np.ndarray:
    """Normal values within 2^±4 of 1, random signs and significands (seeded NumPy generator).

    Hypothesis' own integers favour boundary values, whose short sums are exact
    in any order; these make partial sums round, so the summation order shows.
    """
    rng = np.random.default_rng(seed)
    size = shape[0] * shape[1]
    spread = min(4, fmt.emax - 1)
    sign = rng.integers(0, 2, size).astype(np.uint64) << np.uint64(fmt.width - 1)
    exponent = rng.integers(fmt.bias - spread, fmt.bias + spread + 1, size).astype(np.uint64)
    significand = rng.integers(0, fmt.mantissa_mask, size, endpoint=True).astype(np.uint64)
    patterns = sign | exponent << np.uint64(fmt.mantissa_bits) | significand
    return patterns.astype(fmt.uint_dtype).reshape(shape)


def _matmul_operands(
    data: st.DataObject, fmt: formats.FloatFormat, kinds: tuple[str, ...]
) -> tuple[np.ndarray, ...]:
    """A (M×K) and B (K×N): any values, finite values, or spread normals (``kinds`` to choose from)."""
    m = data.draw(st.integers(1, 3), label="M")
    k = data.draw(st.integers(0, 5), label="K")
    n = data.draw(st.integers(1, 3), label="N")
    kind = data.draw(st.sampled_from(kinds), label="operand kind")
    if kind == "spread":
        seed = data.draw(st.integers(0, 2**32 - 1), label="seed")
        return _spread_normals(fmt, (m, k), seed), _spread_normals(fmt, (k, n), seed + 1)
    classes = ("zero", "subnormal", "normal") if kind == "finite" else None
    A = data.draw(rst.bit_arrays(fmt, (m, k), classes=classes), label="A")
    B = data.draw(rst.bit_arrays(fmt, (k, n), classes=classes), label="B")
    return A, B


def check_matmul_matches_exact_sequential_model(
    data: st.DataObject, *, fmt_name: str, mode: str, oracle: Any = ORACLE
) -> None:
    fmt = _fmt(fmt_name)
    A, B = _matmul_operands(data, fmt, ("any", "finite", "spread"))
    expected = np.asarray(exact.pam_matmul(A, B, fmt, mode), dtype=np.uint64).reshape(A.shape[0], B.shape[1])
    acc = oracle.accumulator_format(fmt)
    assert_bit_exact(
        oracle.pam_matmul(A, B, fmt, mode=mode),
        expected.astype(acc.uint_dtype),
        fmt=acc,
        nan="bits",
        msg=f"oracle pam_matmul ({fmt.name}, {mode}) differs from the exact sequential model",
    )


def _other_orders(A: np.ndarray, B: np.ndarray, fmt: formats.FloatFormat, mode: str) -> dict[str, np.ndarray]:
    """Results of the same products summed in other orders, computed with the exact model."""
    acc = exact.accumulator_format(fmt)
    m, k = A.shape
    n = B.shape[1]

    def widened(bits: int) -> int:
        x = exact_rounding.decode(int(bits), fmt, mode)
        if x.kind != "finite":
            return exact_rounding.encode_special(x.kind, x.negative, acc)
        return exact_rounding.round_fraction(x.negative, x.magnitude, acc)

    def pairwise(terms: list[int]) -> int:
        if not terms:
            return 0
        if len(terms) == 1:
            return terms[0]
        half = len(terms) // 2
        return exact.add(pairwise(terms[:half]), pairwise(terms[half:]), acc, mode)

    def reversed_order(terms: list[int]) -> int:
        total = 0
        for term in reversed(terms):
            total = exact.add(total, term, acc, mode)
        return total

    def rounded_once(terms: list[int]) -> int:
        if any(exact_rounding.decode(t, acc).kind in ("inf", "nan") for t in terms):
            return reversed_order(terms)
        exact_sum = sum((_value(t, acc) for t in terms), Fraction(0))
        return exact_rounding.round_fraction(exact_sum < 0, abs(exact_sum), acc, mode)

    results = {"reversed": reversed_order, "pairwise": pairwise, "rounded once": rounded_once}
    out = {name: np.zeros((m, n), dtype=acc.uint_dtype) for name in results}
    for i in range(m):
        for j in range(n):
            terms = [exact.pam_mul(widened(A[i, p]), widened(B[p, j]), acc, mode) for p in range(k)]
            for name, summation in results.items():
                out[name][i, j] = summation(terms)
    return out


def check_other_summation_orders_are_within_bound(
    data: st.DataObject, *, fmt_name: str, mode: str, oracle: Any = ORACLE
) -> None:
    fmt = _fmt(fmt_name)
    A, B = _matmul_operands(data, fmt, ("finite", "spread"))
    sequential = oracle.pam_matmul(A, B, fmt, mode=mode)
    _law(
        bool(oracle.within_bound(sequential, A, B, fmt, mode=mode).all()),
        "the sequential result is out of bound",
    )
    for name, result in _other_orders(A, B, fmt, mode).items():
        inside = oracle.within_bound(result, A, B, fmt, mode=mode)
        _law(bool(inside.all()), f"{name} summation is outside the bound at {np.argwhere(~inside).tolist()}")


def _next_value(bits: int, fmt: formats.FloatFormat, up: bool) -> int:
    """The neighbouring pattern above (``up``) or below, skipping the other zero."""
    negative, magnitude = bits & fmt.sign_mask, bits & fmt.magnitude_mask
    if up == (not negative):
        return negative | (magnitude + 1)
    if magnitude == 0:
        return (fmt.sign_mask if not up else 0) | 1
    return negative | (magnitude - 1)


def check_result_beyond_the_bound_is_rejected(
    data: st.DataObject, *, fmt_name: str, mode: str, oracle: Any = ORACLE
) -> None:
    fmt = _fmt(fmt_name)
    acc = oracle.accumulator_format(fmt)
    A, B = _matmul_operands(data, fmt, ("finite", "spread"))
    exact_sum, bound = oracle.pam_matmul_bound(A, B, fmt, mode=mode)
    assume(isinstance(exact_sum[0, 0], Fraction))
    above = data.draw(st.booleans(), label="perturb upwards")
    target = exact_sum[0, 0] + bound[0, 0] if above else exact_sum[0, 0] - bound[0, 0]
    # The representable value just beyond the bound, in the chosen direction.
    bits = exact_rounding.round_fraction(target < 0, abs(target), acc)
    while exact_rounding.decode(bits, acc).kind in ("finite", "zero") and (
        (_value(bits, acc) <= target) if above else (_value(bits, acc) >= target)
    ):
        bits = _next_value(bits, acc, above)
    assume(exact_rounding.decode(bits, acc).kind == "finite")
    perturbed = oracle.pam_matmul(A, B, fmt, mode=mode)
    perturbed[0, 0] = bits
    _law(
        not oracle.within_bound(perturbed, A, B, fmt, mode=mode)[0, 0],
        f"{exact_rounding.value_of(bits, acc)} is beyond exact sum {exact_sum[0, 0]} ± {bound[0, 0]} "
        "but within_bound accepted it",
    )


# ---- the tests ------------------------------------------------------------------------------------

every_format = pytest.mark.parametrize("fmt_name", FORMATS)
every_mode = pytest.mark.parametrize("mode", MODES)


@every_mode
@every_format
@pytest.mark.parametrize("op", BINARY_OPS)
@given(data=st.data())
def test_binary_op_matches_exact_model(op: str, fmt_name: str, mode: str, data: st.DataObject) -> None:
    check_binary_op_matches_exact_model(data, op=op, fmt_name=fmt_name, mode=mode)


@every_mode
@every_format
@pytest.mark.parametrize("op", UNARY_OPS)
@given(data=st.data())
def test_unary_op_matches_exact_model(op: str, fmt_name: str, mode: str, data: st.DataObject) -> None:
    check_unary_op_matches_exact_model(data, op=op, fmt_name=fmt_name, mode=mode)


@every_mode
@every_format
@pytest.mark.parametrize("op", BINARY_OPS)
def test_binary_op_on_counted_pairs_matches_exact_model(op: str, fmt_name: str, mode: str) -> None:
    check_binary_op_on_counted_pairs_matches_exact_model(op=op, fmt_name=fmt_name, mode=mode)


@every_mode
@every_format
@pytest.mark.parametrize("op", UNARY_OPS)
def test_unary_op_on_counted_cases_matches_exact_model(op: str, fmt_name: str, mode: str) -> None:
    check_unary_op_on_counted_cases_matches_exact_model(op=op, fmt_name=fmt_name, mode=mode)


@given(data=st.data())
def test_vectorized_equals_elementwise(data: st.DataObject) -> None:
    check_vectorized_equals_elementwise(data)


@every_format
@given(data=st.data())
def test_mul_relative_error_within_minus_one_ninth_and_zero(fmt_name: str, data: st.DataObject) -> None:
    check_mul_relative_error_within_minus_one_ninth_and_zero(data, fmt_name=fmt_name)


@every_mode
@every_format
@given(data=st.data())
def test_mul_exact_iff_an_operand_is_power_of_two_or_zero(
    fmt_name: str, mode: str, data: st.DataObject
) -> None:
    check_mul_exact_iff_an_operand_is_power_of_two_or_zero(data, fmt_name=fmt_name, mode=mode)


@every_mode
@every_format
@given(data=st.data())
def test_mul_is_commutative(fmt_name: str, mode: str, data: st.DataObject) -> None:
    check_mul_is_commutative(data, fmt_name=fmt_name, mode=mode)


@every_mode
@every_format
@given(data=st.data())
def test_mul_is_associative_without_under_or_overflow(fmt_name: str, mode: str, data: st.DataObject) -> None:
    check_mul_is_associative_without_under_or_overflow(data, fmt_name=fmt_name, mode=mode)


@every_mode
@every_format
@given(data=st.data())
def test_div_undoes_mul_without_under_or_overflow(fmt_name: str, mode: str, data: st.DataObject) -> None:
    check_div_undoes_mul_without_under_or_overflow(data, fmt_name=fmt_name, mode=mode)


@every_mode
@every_format
@pytest.mark.parametrize("op", ("pam_mul", "pam_div"))
@given(data=st.data())
def test_sign_is_xor_of_signs(op: str, fmt_name: str, mode: str, data: st.DataObject) -> None:
    check_sign_is_xor_of_signs(data, op=op, fmt_name=fmt_name, mode=mode)


@every_mode
@every_format
@given(data=st.data())
def test_mul_is_monotone_in_each_argument(fmt_name: str, mode: str, data: st.DataObject) -> None:
    check_mul_is_monotone_in_each_argument(data, fmt_name=fmt_name, mode=mode)


@every_format
@given(data=st.data())
def test_div_relative_error_within_zero_and_one_eighth(fmt_name: str, data: st.DataObject) -> None:
    check_div_relative_error_within_zero_and_one_eighth(data, fmt_name=fmt_name)


@every_mode
@every_format
@given(data=st.data())
def test_matmul_matches_exact_sequential_model(fmt_name: str, mode: str, data: st.DataObject) -> None:
    check_matmul_matches_exact_sequential_model(data, fmt_name=fmt_name, mode=mode)


@every_mode
@every_format
@given(data=st.data())
def test_other_summation_orders_are_within_bound(fmt_name: str, mode: str, data: st.DataObject) -> None:
    check_other_summation_orders_are_within_bound(data, fmt_name=fmt_name, mode=mode)


@every_mode
@every_format
@given(data=st.data())
def test_result_beyond_the_bound_is_rejected(fmt_name: str, mode: str, data: st.DataObject) -> None:
    check_result_beyond_the_bound_is_rejected(data, fmt_name=fmt_name, mode=mode)
