"""revcheck.strategies: every class and boundary value of every format is reachable; errors explain."""

from __future__ import annotations

import unittest
from collections.abc import Callable

import numpy as np
import pytest
import torch
from hypothesis import Phase, find, given, settings
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument, NoSuchExample
from hypothesis.extra.numpy import array_shapes

from revcheck import bits, formats
from revcheck import strategies as rst
from revcheck.errors import UsageError
from revcheck.formats import FloatFormat

ALL_FORMATS = [formats.get(name) for name in formats.names()]
FORMAT_CLASS_PAIRS = [(fmt, name) for fmt in ALL_FORMATS for name in rst.format_classes(fmt)]
# Deterministic searches: a found-or-not answer must not depend on the seed.
SEARCH = settings(max_examples=20_000, derandomize=True, database=None, phases=[Phase.generate, Phase.shrink])
FIRST_VARIED = settings(max_examples=100, derandomize=True, database=None, phases=[Phase.generate])


def find_pattern(strategy: st.SearchStrategy[int], condition: Callable[[int], bool]) -> int:
    return find(strategy, condition, settings=SEARCH)


def class_of(pattern: int, fmt: FloatFormat) -> str:
    return str(bits.classify(np.array([pattern], dtype=fmt.uint_dtype), fmt)[0])


def boundary_values(fmt: FloatFormat) -> dict[str, int]:
    """Named patterns every bit-pattern strategy of ``fmt`` must be able to produce."""
    named = {
        "+0": 0,
        "-0 (fnuz: the NaN)": fmt.sign_mask,
        "+1": fmt.one,
        "-1": fmt.sign_mask | fmt.one,
        "min subnormal": fmt.min_subnormal,
        "-min subnormal": fmt.sign_mask | fmt.min_subnormal,
        "max subnormal": fmt.max_subnormal,
        "min normal": fmt.min_normal,
        "-min normal": fmt.sign_mask | fmt.min_normal,
        "max finite": fmt.max_finite,
        "-max finite": fmt.sign_mask | fmt.max_finite,
    }
    if fmt.has_nan:
        named["canonical NaN"] = fmt.canonical_nan
        named["negative NaN"] = fmt.sign_mask | fmt.canonical_nan
    if fmt.inf is not None:
        named["+inf"] = fmt.inf
        named["-inf"] = fmt.sign_mask | fmt.inf
        named["signalling NaN"] = fmt.exponent_mask | 1
    return named


@pytest.mark.parametrize(("fmt", "class_name"), FORMAT_CLASS_PAIRS, ids=lambda v: getattr(v, "name", v))
def test_every_class_of_every_format_is_produced(fmt: FloatFormat, class_name: str) -> None:
    found = find_pattern(rst.bit_patterns(fmt), lambda b: class_of(b, fmt) == class_name)
    assert class_of(found, fmt) == class_name


@pytest.mark.parametrize("fmt", ALL_FORMATS, ids=lambda f: f.name)
def test_every_boundary_value_is_produced(fmt: FloatFormat) -> None:
    strategy = rst.bit_patterns(fmt)
    for label, target in boundary_values(fmt).items():
        found = find_pattern(strategy, lambda b, target=target: b == target)  # type: ignore[misc]
        assert found == target, label


@pytest.mark.parametrize("fmt", ALL_FORMATS, ids=lambda f: f.name)
def test_boundary_exponents_with_testfloat_significands_are_produced(fmt: FloatFormat) -> None:
    # emin with a walking one, emax with all ones but the top: neither is a listed special value.
    at_emin = fmt.min_normal | 1 << (fmt.mantissa_bits // 2)
    at_emax = (fmt.emax + fmt.bias) << fmt.mantissa_bits | (fmt.mantissa_mask >> 1)
    strategy = rst.bit_patterns(fmt, classes=("normal",), sign="+")
    for target in (at_emin, at_emax):
        assert find_pattern(strategy, lambda b, target=target: b == target) == target  # type: ignore[misc]


@pytest.mark.parametrize("fmt", ALL_FORMATS, ids=lambda f: f.name)
def test_shrinks_to_positive_zero_then_one(fmt: FloatFormat) -> None:
    assert find(rst.bit_patterns(fmt), lambda b: True) == 0
    assert find(rst.bit_patterns(fmt, classes=("normal",)), lambda b: True) == fmt.one
    # fnuz has no -0: the smallest negative pattern, 0x80, is its NaN.
    assert find(rst.bit_patterns(fmt, sign="-"), lambda b: True) == fmt.sign_mask


@settings(database=None)
@given(data=st.data())
def test_patterns_have_the_requested_class_and_sign(data: st.DataObject) -> None:
    fmt = data.draw(rst.formats(), label="fmt")
    sign = data.draw(st.sampled_from(rst.SIGNS), label="sign")
    available = rst.format_classes(fmt, sign)  # fnuz: no -0, no +NaN
    chosen = data.draw(st.lists(st.sampled_from(available), min_size=1, unique=True), label="classes")
    pattern = data.draw(rst.bit_patterns(fmt, classes=chosen, sign=sign), label="pattern")
    assert 0 <= pattern < 1 << fmt.width, f"{pattern:#x} does not fit {fmt.width} bits"
    assert class_of(pattern, fmt) in chosen, f"{bits.describe(pattern, fmt)} is not one of {chosen}"
    negative = bool(pattern & fmt.sign_mask)
    if sign is not None:
        assert negative == (sign == "-"), f"{bits.describe(pattern, fmt)} has the wrong sign for {sign!r}"


def test_format_classes() -> None:
    assert rst.format_classes("fp8_e4m3fn") == ("nan", "zero", "subnormal", "normal")
    assert rst.format_classes("bf16") == bits.CLASSES
    assert rst.format_classes("fp8_e5m2fnuz") == ("nan", "zero", "subnormal", "normal")
    assert rst.format_classes("fp8_e5m2fnuz", sign="+") == ("zero", "subnormal", "normal")
    assert rst.format_classes("fp8_e5m2fnuz", sign="-") == ("nan", "subnormal", "normal")
    for name in ("fp6_e3m2fn", "fp6_e2m3fn", "fp4_e2m1fn"):
        assert rst.format_classes(name) == ("zero", "subnormal", "normal")


def test_significand_patterns_are_testfloat_style() -> None:
    patterns = rst.significand_patterns(4)
    assert patterns[:2] == [0b0000, 0b1111]
    for expected in (0b1000, 0b0001, 0b0111, 0b1110, 0b1100, 0b0011):  # walking one/zero, growing runs
        assert expected in patterns
    assert len(patterns) == len(set(patterns))


# ---- formats, arrays, tensors, devices ----------------------------------------------


def test_formats_strategy_covers_all_or_the_named_ones() -> None:
    assert find(rst.formats(), lambda f: f.name == "fp8_e4m3fn", settings=SEARCH).name == "fp8_e4m3fn"
    only = rst.formats(names=["bf16", torch.float16])
    assert find(only, lambda f: f.name == "fp16", settings=SEARCH) is formats.get("fp16")
    with pytest.raises(NoSuchExample):
        find(only, lambda f: f.name == "fp32", settings=SEARCH)


@settings(database=None)
@given(data=st.data())
def test_bit_arrays_shape_and_dtype(data: st.DataObject) -> None:
    fmt = data.draw(rst.formats(), label="fmt")
    array = data.draw(rst.bit_arrays(fmt, (2, 3)), label="fixed shape")
    assert array.dtype == fmt.uint_dtype and array.shape == (2, 3)
    assert data.draw(rst.bit_arrays(fmt, 4), label="int shape").shape == (4,)
    shaped = data.draw(rst.bit_arrays(fmt, array_shapes(max_dims=3, max_side=3)), label="drawn shape")
    assert shaped.ndim <= 3 and shaped.dtype == fmt.uint_dtype


def test_bit_arrays_reach_nan_and_negative_zero_in_one_array() -> None:
    fmt = formats.get("fp16")

    def has_both(array: np.ndarray) -> bool:
        return bool(bits.is_nan(array, fmt).any() and (array == fmt.sign_mask).any())

    found = find(rst.bit_arrays(fmt, 4), has_both, settings=SEARCH)
    assert has_both(found)


@settings(database=None, max_examples=20)
@given(data=st.data())
def test_tensors_hold_the_drawn_bits(data: st.DataObject) -> None:
    fmt = data.draw(rst.formats(), label="fmt")
    tensor = data.draw(rst.tensors(fmt, 3, device="cpu"), label="tensor")
    # Formats without a torch dtype (fp6, fp4) are uint8 tensors of bit patterns (docs/spec.md D1.10).
    assert tensor.dtype == getattr(torch, fmt.torch_dtype_name or "uint8") and tuple(tensor.shape) == (3,)
    assert tensor.device.type == "cpu"


def test_tensors_on_the_selected_device(device: str) -> None:
    tensor = find(rst.tensors("bf16", 2, device=device), lambda t: True)
    assert tensor.device.type == device


def test_devices() -> None:
    expected = {"cpu", "cuda"} if torch.cuda.is_available() else {"cpu"}
    seen = {find(rst.devices(), lambda d, name=name: d == name) for name in expected}  # type: ignore[misc]
    assert seen == expected


# ---- bad arguments say what to do instead, when drawn from --------------------------------


def draw_once(strategy: st.SearchStrategy[object]) -> object:
    return find(strategy, lambda _: True, settings=settings(max_examples=1, database=None))


BAD_ARGUMENTS = [
    (lambda: rst.bit_patterns("fp8_e4m3fn", classes=("inf",)), r"fp8_e4m3fn has no inf values"),
    (lambda: rst.bit_patterns("fp4_e2m1fn", classes=("nan",)), r"fp4_e2m1fn has no nan values \(no inf"),
    (lambda: rst.bit_patterns("fp8_e4m3fnuz", classes=("zero",), sign="-"), r"has no - zero values \(no inf"),
    (
        lambda: rst.bit_patterns("fp8_e4m3fnuz", classes=("nan",), sign="+"),
        r"its one NaN is the pattern of -0",
    ),
    (lambda: rst.bit_patterns("bf16", classes="nan"), r"pass a tuple of class names: classes=\('nan',\)"),
    (lambda: rst.bit_patterns("bf16", classes=("denormal",)), r"unknown classes \['denormal'\]; use"),
    (lambda: rst.bit_patterns("bf16", classes=()), r"classes is empty; pick some of"),
    (lambda: rst.bit_patterns("bf16", sign="positive"), r"use None \(both signs\), '\+' or '-'"),
    (lambda: rst.bit_patterns("bfloat8"), r"supported formats are fp64, fp32"),
    (lambda: rst.bit_arrays("bf16", -1), r"sizes must be >= 0"),
    (lambda: rst.bit_arrays("bf16", "3"), r"pass an int, a tuple of ints, or a strategy"),  # type: ignore[arg-type]
    (lambda: rst.bit_arrays("bf16", 3, sign="+", elements=rst.normals_near_one("bf16")), r"not both"),
    (lambda: rst.formats(names="bf16"), r"pass a sequence: names=\['bf16'\]"),
    (lambda: rst.formats(names=[]), r"names is empty"),
    (lambda: rst.tensors("bf16", 2, device="gpu"), r"use 'cpu', 'cuda', or draw from devices\(\)"),
    (lambda: rst.normals_near_one("bf16", binades=-1), r"pass an int >= 0"),
    (lambda: rst.normals_near_one("bf16", binades=2.5), r"pass an int >= 0"),  # type: ignore[arg-type]
    (lambda: rst.normals_near_one("bf16", sign=1), r"use None \(both signs\)"),  # type: ignore[arg-type]
    (lambda: rst.testfloat_values("bf16", level=3), r"use 1 \(the named exponent rows\) or 2"),
]


@pytest.mark.parametrize(("call", "advice"), BAD_ARGUMENTS)
def test_bad_arguments_raise_when_drawn_and_say_what_to_use(
    call: Callable[[], st.SearchStrategy[object]], advice: str
) -> None:
    strategy = call()  # building it must not raise: a module of @given tests has to import everywhere
    with pytest.raises(InvalidArgument, match=advice):
        draw_once(strategy)


def test_bad_arguments_raise_inside_the_test_run_not_at_decoration() -> None:
    @settings(database=None, max_examples=1)
    @given(x=rst.bit_patterns("fp8_e4m3fn", classes=("inf",)))
    def inner(x: int) -> None:
        raise AssertionError("never reached")

    with pytest.raises(InvalidArgument, match="fp8_e4m3fn has no inf values"):
        inner()


def test_cuda_tensors_without_cuda_raise_device_unavailable_when_drawn(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    strategy = rst.tensors("bf16", 2, device="cuda")  # no error yet
    with pytest.raises(
        rst.DeviceUnavailableError, match=r"use device='cpu', draw the device from devices\(\)"
    ):
        draw_once(strategy)
    assert issubclass(rst.DeviceUnavailableError, unittest.SkipTest)
    assert issubclass(rst.DeviceUnavailableError, UsageError)


CUDA_TENSOR_TESTS = """
from hypothesis import given, settings
from revcheck import strategies as rst
from revcheck.errors import UsageError

@settings(database=None, max_examples=5)
@given(x=rst.tensors("bf16", 2, device="cuda"))
def test_cuda_tensor(x):
    assert x.device.type == "cuda"

@settings(database=None, max_examples=5)
@given(x=rst.tensors("bf16", 2, device="cpu"))
def test_cpu_tensor(x):
    assert x.device.type == "cpu"
"""


def test_cuda_tensors_skip_at_run_time_without_cuda(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    pytester.makepyfile(CUDA_TENSOR_TESTS)
    result = pytester.runpytest("-rs", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(
        ["SKIPPED * device='cuda' but torch.cuda.is_available() is False; use device='cpu'*"]
    )


@pytest.mark.cuda
def test_cuda_tensors_are_drawn_where_there_is_cuda() -> None:
    assert draw_once(rst.tensors("bf16", 2, device="cuda")).device.type == "cuda"  # type: ignore[attr-defined]


def test_functions_named_test_are_not_collected_from_importing_modules(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        "from revcheck.strategies import testfloat_cases, testfloat_pairs, testfloat_values\n"
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes()


# ---- reprs and reusable values -------------------------------------------------------------


@pytest.mark.parametrize(
    ("strategy", "shown"),
    [
        (lambda: rst.bit_patterns("bf16"), "bit_patterns('bf16')"),
        (
            lambda: rst.bit_patterns("fp16", classes=("nan",), sign="-"),
            "bit_patterns('fp16', classes=('nan',), sign='-')",
        ),
        (lambda: rst.bit_arrays("bf16", (2, 3)), "bit_arrays(fmt='bf16', shape=(2, 3))"),
        (lambda: rst.tensors("bf16", 4, device="cuda"), "tensors(fmt='bf16', shape=4, device='cuda')"),
        (lambda: rst.formats(), "formats()"),
        (lambda: rst.formats(names=["bf16"]), "formats(names=['bf16'])"),
        (lambda: rst.devices(), "devices()"),
        (lambda: rst.normals_near_one("fp32", binades=4), "normals_near_one(fmt='fp32', binades=4)"),
        (lambda: rst.testfloat_values("fp16", level=2), "testfloat_values(fmt='fp16', level=2)"),
        (lambda: rst.testfloat_cases("fp16").strategy(), "testfloat_cases('fp16', level=1).__getitem__"),
        (lambda: rst.bit_patterns("bf16").map(hex), "bit_patterns('bf16').map(hex)"),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_repr_shows_the_call(strategy: Callable[[], st.SearchStrategy[object]], shown: str) -> None:
    built = strategy()
    assert shown in repr(built)
    if "cuda" not in shown:  # drawing from a CUDA strategy raises (or skips) where there is no GPU
        draw_once(built)
    assert shown in repr(built), "the repr must not change once the strategy has been drawn from"


def test_without_hypothesis_lazy_strategy_strategies_stay_lazy(monkeypatch: pytest.MonkeyPatch) -> None:
    # LazyStrategy is private to Hypothesis: should it move, st.deferred takes over.
    monkeypatch.setattr(rst, "_LazyStrategy", None)
    strategy = rst.bit_patterns("bf16", classes=("inf",), sign="-")
    assert repr(strategy) == "deferred(bit_patterns('bf16', classes=('inf',), sign='-'))"
    assert draw_once(strategy) == 0xFF80
    assert rst.bit_patterns("bf16").has_reusable_values
    with pytest.raises(InvalidArgument, match="fp8_e4m3fn has no inf values"):
        draw_once(rst.bit_patterns("fp8_e4m3fn", classes=("inf",)))


@settings(database=None, max_examples=50)
@given(data=st.data())
def test_bit_patterns_have_reusable_values(data: st.DataObject) -> None:
    fmt = data.draw(rst.formats(), label="fmt")
    sign = data.draw(st.sampled_from(rst.SIGNS), label="sign")
    classes = data.draw(
        st.lists(st.sampled_from(rst.format_classes(fmt, sign)), min_size=1, unique=True), label="classes"
    )
    assert rst.bit_patterns(fmt, classes=classes, sign=sign).has_reusable_values
    assert rst.normals_near_one(fmt, sign=sign).has_reusable_values
    assert rst.testfloat_values(fmt).has_reusable_values


def test_big_bit_arrays_are_filled_not_drawn_element_by_element() -> None:
    # With reusable elements Hypothesis draws some elements and fills the rest with one drawn value.  Drawn
    # element by element (the strategy before it had reusable values), 100,000 elements never fit
    # Hypothesis' choice buffer: that find() ended in Unsatisfiable, after minutes.
    def varied(array: np.ndarray) -> bool:  # the simplest draw is all zeros either way
        return np.unique(array).size > 3

    big = find(rst.bit_arrays("fp32", 100_000), varied, settings=FIRST_VARIED)
    assert big.shape == (100_000,)
    filled = find(rst.bit_arrays("fp32", 1000), varied, settings=FIRST_VARIED)
    dense = find(rst.bit_arrays("fp32", 1000, fill=st.nothing()), varied, settings=FIRST_VARIED)
    assert np.unique(filled).size < 200 < np.unique(dense).size, "fill=st.nothing() must draw every element"


@settings(database=None, max_examples=20)
@given(data=st.data())
def test_bit_arrays_of_other_elements(data: st.DataObject) -> None:
    fmt = data.draw(rst.formats(), label="fmt")
    array = data.draw(rst.bit_arrays(fmt, 8, elements=rst.normals_near_one(fmt, binades=2)), label="array")
    assert array.dtype == fmt.uint_dtype
    assert bits.is_normal(array, fmt).all()


# ---- normals near one ----------------------------------------------------------------------


def exponent_of(pattern: int, fmt: FloatFormat) -> int:
    return ((pattern & fmt.exponent_mask) >> fmt.mantissa_bits) - fmt.bias


@settings(database=None)
@given(data=st.data())
def test_normals_near_one_are_normal_and_within_the_binades(data: st.DataObject) -> None:
    fmt = data.draw(rst.formats(), label="fmt")
    binades = data.draw(st.integers(0, 2 * fmt.precision), label="binades")
    sign = data.draw(st.sampled_from(rst.SIGNS), label="sign")
    pattern = data.draw(rst.normals_near_one(fmt, binades, sign=sign), label="pattern")
    assert class_of(pattern, fmt) == "normal", bits.describe(pattern, fmt)
    assert max(-binades, fmt.emin) <= exponent_of(pattern, fmt) <= min(binades, fmt.emax)
    if sign is not None:
        assert bool(pattern & fmt.sign_mask) == (sign == "-")


@pytest.mark.parametrize("fmt", ALL_FORMATS, ids=lambda f: f.name)
def test_normals_near_one_reach_both_ends_and_shrink_to_one(fmt: FloatFormat) -> None:
    binades = 3
    strategy = rst.normals_near_one(fmt, binades)
    assert find(strategy, lambda b: True, settings=SEARCH) == fmt.one
    # Clamped to the format's exponent range (fp6 and fp4 reach only 2**emin .. 2**emax).
    lowest = (max(-binades, fmt.emin) + fmt.bias) << fmt.mantissa_bits
    highest = min(
        (min(binades, fmt.emax) + fmt.bias) << fmt.mantissa_bits | fmt.mantissa_mask, fmt.max_finite
    )
    for target in (lowest, highest, fmt.sign_mask | lowest, fmt.sign_mask | highest):
        assert find_pattern(strategy, lambda b, target=target: b == target) == target  # type: ignore[misc]


def test_normals_near_one_clamp_to_the_format() -> None:
    fmt = formats.get("fp8_e4m3fn")
    wide = rst.normals_near_one(fmt, binades=100, sign="+")
    assert find_pattern(wide, lambda b: b == fmt.max_finite) == fmt.max_finite
    assert find_pattern(wide, lambda b: b == fmt.min_normal) == fmt.min_normal
    with pytest.raises(NoSuchExample):
        find(wide, lambda b: b == fmt.canonical_nan, settings=SEARCH)
