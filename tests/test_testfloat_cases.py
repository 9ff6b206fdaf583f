"""revcheck.strategies.testfloat_cases / testfloat_pairs: counted, ordered, labelled, every class reached."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest
from hypothesis import Phase, find, settings
from hypothesis.errors import InvalidArgument

from revcheck import formats
from revcheck import strategies as rst
from revcheck.formats import FloatFormat

ALL_FORMATS = [formats.get(name) for name in formats.names()]
LEVELS = (1, 2)
SEARCH = settings(max_examples=5_000, derandomize=True, database=None, phases=[Phase.generate, Phase.shrink])

# testfloat_cases' docstring documents these: level-1 cases, level-2 cases, level-1 pairs, level-2 pairs.
DOCUMENTED_COUNTS = {
    "fp64": (5_382, 847_872, 16_900, 28_965_924),
    "fp32": (2_366, 46_592, 16_900, 5_597_956),
    "fp16": (1_014, 2_496, 16_900, 1_028_196),
    "bf16": (702, 13_824, 16_900, 492_804),
    "fp8_e5m2": (104, 256, 10_816, 10_816),
    "fp8_e4m3fn": (176, 256, 12_100, 30_976),
    "fp8_e5m2fnuz": (96, 256, 9_216, 9_216),
    "fp8_e4m3fnuz": (192, 256, 14_400, 36_864),
    "fp6_e3m2fn": (56, 64, 3_136, 3_136),
    "fp6_e2m3fn": (64, 64, 1_600, 4_096),
    "fp4_e2m1fn": (16, 16, 256, 256),
}
# Iterating case objects is Python-speed: the biggest sequences are checked through .bits() arrays only.
ITERABLE = 60_000


def by_id(value: object) -> str:
    return getattr(value, "name", str(value))


def _ml_dtypes() -> Any:
    return pytest.importorskip(
        "ml_dtypes", reason="formats NumPy lacks are decoded independently by ml_dtypes (revcheck[ml_dtypes])"
    )


def float_view(patterns: np.ndarray, fmt: FloatFormat) -> np.ndarray:
    """The values, decoded by NumPy / ml_dtypes: a decoding independent of revcheck.bits."""
    dtype = (
        np.dtype(fmt.numpy_float_name)
        if fmt.numpy_float_name
        else np.dtype(getattr(_ml_dtypes(), fmt.ml_dtypes_name or ""))
    )
    return patterns.astype(fmt.uint_dtype).view(dtype)


def independent_classes(patterns: np.ndarray, fmt: FloatFormat) -> np.ndarray:
    with np.errstate(invalid="ignore"):  # signalling NaNs become quiet ones: still NaN
        values = float_view(patterns, fmt).astype(np.float64)  # exact: every format here widens exactly
    finfo = np.finfo if fmt.numpy_float_name else _ml_dtypes().finfo
    tiny = float(finfo(float_view(patterns[:1], fmt).dtype).smallest_normal)
    magnitude = np.abs(values)
    return np.select(
        [np.isnan(values), np.isinf(values), values == 0, magnitude < tiny],
        ["nan", "inf", "zero", "subnormal"],
        "normal",
    )


def named_exponents(fmt: FloatFormat) -> dict[str, int]:
    p = fmt.precision
    return {
        "0": 0, "1": 1, "-1": -1, "emin": fmt.emin, "emin+1": fmt.emin + 1, "-p": -p, "-(p+1)": -(p + 1),
        "p": p, "p+1": p + 1, "emax-1": fmt.emax - 1, "emax": fmt.emax,
    }  # fmt: skip


# ---- counts, order, labels --------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ALL_FORMATS, ids=by_id)
def test_counts_are_as_documented(fmt: FloatFormat) -> None:
    counts = tuple(len(rst.testfloat_cases(fmt, level)) for level in LEVELS)
    counts += tuple(len(rst.testfloat_pairs(fmt, level)) for level in LEVELS)
    assert counts == DOCUMENTED_COUNTS[fmt.name]
    for level in LEVELS:
        cases = rst.testfloat_cases(fmt, level)
        assert len(cases) == 2 * len(cases.rows) * len(cases.patterns) == cases.bits().size
        pairs = rst.testfloat_pairs(fmt, level)
        assert len(pairs) == len(pairs.first) * len(pairs.second)


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("fmt", ALL_FORMATS, ids=by_id)
def test_every_class_is_reached_with_both_signs(fmt: FloatFormat, level: int) -> None:
    cases = rst.testfloat_cases(fmt, level)
    # fnuz: no -0 and no +NaN (its one NaN is the pattern of -0).
    expected = {(name, sign) for sign in "+-" for name in rst.format_classes(fmt, sign)}
    if len(cases) <= ITERABLE:
        assert {(case.cls, case.sign) for case in cases} == expected
    patterns = cases.bits()
    signs = np.where(patterns >> (fmt.width - 1) == 1, "-", "+")
    assert set(zip(independent_classes(patterns, fmt).tolist(), signs.tolist(), strict=True)) == expected


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("fmt", ALL_FORMATS, ids=by_id)
def test_patterns_are_distinct_and_their_class_labels_are_right(fmt: FloatFormat, level: int) -> None:
    cases = rst.testfloat_cases(fmt, level)
    patterns = cases.bits()
    assert patterns.dtype == fmt.uint_dtype
    assert np.unique(patterns).size == patterns.size, "a pattern is listed twice"
    if len(cases) <= ITERABLE:
        labelled = np.array([case.cls for case in cases])
        mislabelled = np.flatnonzero(labelled != independent_classes(patterns, fmt))
        assert mislabelled.size == 0, [cases[int(i)] for i in mislabelled[:5]]
        assert [case.sign == "-" for case in cases] == (patterns >> (fmt.width - 1) == 1).tolist()


@pytest.mark.parametrize("fmt", ALL_FORMATS, ids=by_id)
def test_order_is_fixed_and_indexing_iteration_and_bits_agree(fmt: FloatFormat) -> None:
    cases = rst.testfloat_cases(fmt)
    listed = list(cases)
    rst._testfloat_cases.cache_clear()
    rebuilt = rst.testfloat_cases(fmt)
    assert rebuilt is not cases and list(rebuilt) == listed, (
        "the order must not depend on anything but the format"
    )
    assert [case.bits for case in listed] == cases.bits().tolist()
    assert [cases[i] for i in range(len(cases))] == listed
    assert cases[-1] == listed[-1] and cases[3:7] == listed[3:7]
    assert cases.bits(10, 20).tolist() == cases.bits()[10:20].tolist()
    # Simplest first: ±0, ±1.
    assert [case.bits for case in listed[:4]] == [0, fmt.sign_mask, fmt.one, fmt.sign_mask | fmt.one]
    with pytest.raises(IndexError, match="out of range"):
        cases[len(cases)]


@pytest.mark.parametrize("fmt", ALL_FORMATS, ids=by_id)
def test_rows_sit_where_their_names_say(fmt: FloatFormat) -> None:
    exponents = named_exponents(fmt)
    cases = rst.testfloat_cases(fmt)
    in_range = {name for name, e in exponents.items() if fmt.emin <= e <= fmt.emax}
    seen = set()
    for row, field in cases.rows:
        if row == "subnormal":
            assert field == 0
        elif row == "inf/nan":
            assert fmt.has_inf and field == fmt.max_biased_exponent
        else:
            for alias in row.removeprefix("E=").split("="):
                assert field == exponents[alias] + fmt.bias, (row, field)
                seen.add(alias)
    assert seen == in_range, "a named row in the format's range is missing"
    assert len({field for _, field in cases.rows}) == len(cases.rows)


@pytest.mark.parametrize("fmt", ALL_FORMATS, ids=by_id)
def test_level_one_holds_the_boundary_values(fmt: FloatFormat) -> None:
    values = set(rst.testfloat_cases(fmt).bits().tolist())
    ulp = 1
    wanted = {
        "±0": [0, fmt.sign_mask],  # in fnuz the pattern of -0 is the NaN: listed all the same
        "±1": [fmt.one, fmt.sign_mask | fmt.one],
        "min and max subnormal": [fmt.min_subnormal, fmt.max_subnormal],
        "min normal and its successor": [fmt.min_normal, fmt.min_normal + ulp],
        "max finite and its predecessor": [
            fmt.max_finite,
            fmt.max_finite - ulp,
            fmt.sign_mask | fmt.max_finite,
        ],
        "canonical NaN": [fmt.canonical_nan, fmt.sign_mask | fmt.canonical_nan] if fmt.has_nan else [],
        "2**±p, 2**±(p+1)": [
            (e + fmt.bias) << fmt.mantissa_bits
            for e in (fmt.precision, -fmt.precision, fmt.precision + 1, -(fmt.precision + 1))
            if fmt.emin <= e <= fmt.emax
        ],
    }
    if fmt.inf is not None:
        wanted["±inf"] = [fmt.inf, fmt.sign_mask | fmt.inf]
    for label, patterns in wanted.items():
        missing = [hex(p) for p in patterns if p not in values]
        assert not missing, f"{label}: {missing}"


@pytest.mark.parametrize("fmt", ALL_FORMATS, ids=by_id)
def test_fn_nan_is_never_a_normal(fmt: FloatFormat) -> None:
    for level in LEVELS:
        cases = rst.testfloat_cases(fmt, level)
        if len(cases) > ITERABLE:
            continue
        nans = {case.bits for case in cases if case.cls == "nan"}
        assert all(float_view(np.array([b]), fmt)[0] != float_view(np.array([b]), fmt)[0] for b in nans)
        if not fmt.has_inf:  # fn: S.1111.111 of both signs; fnuz: 0x80 alone; fp6, fp4: none
            every = np.arange(1 << fmt.width)
            all_nans = every[np.isnan(float_view(every, fmt).astype(np.float64))]
            assert nans == set(all_nans.tolist()) and len(nans) == fmt.nan_patterns_count()


def test_level_two_contains_level_one_and_is_exhaustive_where_every_significand_is_listed() -> None:
    for fmt in ALL_FORMATS:
        level1 = set(rst.testfloat_cases(fmt, 1).bits().tolist())
        level2 = rst.testfloat_cases(fmt, 2)
        assert level1 <= set(level2.bits().tolist()), fmt.name
        if len(level2.patterns) == 1 << fmt.mantissa_bits:
            assert len(level2) == 1 << fmt.width, f"{fmt.name}: level 2 should be every pattern"


def test_case_repr_and_label() -> None:
    case = rst.testfloat_cases("bf16")[2]
    assert repr(case) == "CountedCase(bits=0x3f80, cls='normal', sign='+', row='E=0', pattern='zero')"
    assert case.label == "+normal (row E=0, pattern zero)"
    assert repr(rst.testfloat_cases("fp16", level=2)) == "testfloat_cases('fp16', level=2)"
    assert repr(rst.testfloat_pairs("fp16")) == "testfloat_pairs('fp16', level=1)"
    e4m3_nan = [case for case in rst.testfloat_cases("fp8_e4m3fn") if case.bits == 0x7F]
    assert [c.label for c in e4m3_nan] == ["+nan (row E=emax, pattern all ones)"]


# ---- pairs ------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ALL_FORMATS, ids=by_id)
def test_pairs_index_like_their_bits(fmt: FloatFormat) -> None:
    pairs = rst.testfloat_pairs(fmt)
    a, b = pairs.bits()
    assert a.size == b.size == len(pairs)
    for i in (0, 1, 137, len(pairs) // 2, len(pairs) - 1):
        first, second = pairs[i]
        assert (first.bits, second.bits) == (int(a[i]), int(b[i]))
    assert list(itertools.islice(iter(pairs), 50)) == pairs[:50]
    chunk_a, chunk_b = pairs.bits(100, 200)
    assert chunk_a.tolist() == a[100:200].tolist() and chunk_b.tolist() == b[100:200].tolist()
    assert len(set(zip(a.tolist(), b.tolist(), strict=True))) == len(pairs)


@pytest.mark.parametrize("fmt", ALL_FORMATS, ids=by_id)
def test_pairs_straddle_underflow_and_overflow(fmt: FloatFormat) -> None:
    """Normal operands with Ea + Eb = emin - p, emin - p - 1 (results rounding to 0 or up), emax + 1."""

    def fields(patterns: np.ndarray) -> np.ndarray:
        exponent = patterns.astype(np.uint64) & np.uint64(fmt.exponent_mask)
        return (exponent >> np.uint64(fmt.mantissa_bits)).astype(np.int64)

    field_a, field_b = (fields(patterns) for patterns in rst.testfloat_pairs(fmt).bits())
    top = fmt.emax + fmt.bias
    both_normal = (field_a >= 1) & (field_a <= top) & (field_b >= 1) & (field_b <= top)
    sums = set((field_a + field_b - 2 * fmt.bias)[both_normal].tolist())
    for target in (fmt.emin - fmt.precision, fmt.emin - fmt.precision - 1, fmt.emin - 1, fmt.emax + 1):
        # Two normals reach [2 emin, 2 emax] only: fp6/fp4 (emin = 0 or -2) cannot go below emin - 1.
        if 2 * fmt.emin <= target <= 2 * fmt.emax:
            assert target in sums, f"no pair of normals with Ea + Eb = {target}"


# ---- strategy views ---------------------------------------------------------------------------


def test_case_strategy_shrinks_to_the_first_case_and_keeps_labels() -> None:
    cases = rst.testfloat_cases("fp16")
    assert find(cases.strategy(), lambda c: True, settings=SEARCH) == cases[0]
    nan = find(cases.strategy(), lambda c: c.cls == "nan", settings=SEARCH)
    assert nan.cls == "nan" and nan.row == "inf/nan" and nan.label.startswith("+nan")
    last = cases[len(cases) - 1]
    assert find(cases.strategy(), lambda c: c == last, settings=SEARCH) == last


def test_pair_strategy_draws_pairs_of_cases() -> None:
    # One condition per operand (a pair of two rare classes would be found by luck, or not): the other
    # operand shrinks on its own to the first case.
    pairs = rst.testfloat_pairs("bf16")
    found = find(pairs.strategy(), lambda p: p[0].cls == "inf", settings=SEARCH)
    assert (found[0].bits, found[1]) == (formats.get("bf16").inf, pairs.second[0]), "each shrinks on its own"
    found = find(pairs.strategy(), lambda p: p[1].cls == "inf", settings=SEARCH)
    assert (found[0], found[1].bits) == (pairs.first[0], formats.get("bf16").inf), "each shrinks on its own"


@pytest.mark.parametrize("fmt", ALL_FORMATS, ids=by_id)
def test_values_strategy_reaches_the_cases(fmt: FloatFormat) -> None:
    cases = rst.testfloat_cases(fmt)
    values = rst.testfloat_values(fmt)
    assert values.has_reusable_values
    assert find(values, lambda b: True, settings=SEARCH) == 0
    # Searching thousands of sampled values for one is slow: the narrow formats show every case is reachable.
    targets = (cases[len(cases) - 1].bits, cases[len(cases) // 2].bits) if len(cases) <= 1200 else ()
    for target in targets:
        assert find(values, lambda b, target=target: b == target, settings=SEARCH) == target  # type: ignore[misc]


@pytest.mark.parametrize(
    ("call", "advice"),
    [
        (lambda: rst.testfloat_cases("bf16", level=0), r"level=0 is not a TestFloat level here; use 1"),
        (lambda: rst.testfloat_cases("bf16", level=True), r"level=True is not a TestFloat level"),
        (lambda: rst.testfloat_pairs("bf16", level=3), r"use 1 \(the named exponent rows\) or 2"),
        (lambda: rst.testfloat_cases("fp4"), r"supported formats are fp64"),
    ],
)
def test_bad_arguments_say_what_to_use(call: Any, advice: str) -> None:
    with pytest.raises(InvalidArgument, match=advice):
        call()
