"""Properties of the BDIA oracle (revcheck.oracle.bdia), checked against an exact Fraction model.

The ``check_*`` functions hold each property's body; the tests wrap them, and
tests/gallery/bdia_bugs.py runs the same bodies against planted bugs.  Integer
codes that differ raise :class:`CodeMismatchError`, floats that differ
:class:`~revcheck.testing.BitMismatchError`.
"""

# ruff: noqa: E741  (``l``, the grid exponent, is the name docs/spec.md §3 and the API contract use)
from __future__ import annotations

import math
from collections.abc import Callable
from fractions import Fraction
from types import ModuleType
from typing import Any

import numpy as np
from hypothesis import assume, given
from hypothesis import strategies as st

from revcheck import formats
from revcheck.oracle import bdia
from revcheck.testing import assert_bit_exact

ORACLE: Any = bdia
"""The implementation under test; the catch tests hand a module of planted bugs in its place."""


class CodeMismatchError(AssertionError):
    """Integer codes (grid states X_k, side bits, quantized values) differ from what a property requires."""


def assert_codes_equal(got: Any, want: Any, message: str, *, dtype: type | None = None) -> None:
    """``got`` equals ``want`` (integer codes: same shape and values; ``dtype`` too if given).

    Raises :class:`CodeMismatchError` with the count and the first differing index.
    """
    __tracebackhide__ = True
    got_array, want_array = np.asarray(got), np.asarray(want)
    if (dtype is not None and got_array.dtype != dtype) or got_array.shape != want_array.shape:
        raise CodeMismatchError(
            f"{message}: got {got_array.dtype} codes of shape {got_array.shape}, "
            f"expected {np.dtype(dtype or want_array.dtype)} of shape {want_array.shape}"
        )
    if not np.array_equal(got_array, want_array):
        differ = np.argwhere(got_array != want_array)
        raise CodeMismatchError(
            f"{message}: {len(differ)} of {got_array.size} codes differ, first at {differ[0].tolist()}; "
            f"got {got_array.tolist()}, expected {want_array.tolist()}"
        )


_FLOAT_DTYPES = {"fp16": np.float16, "fp32": np.float32, "fp64": np.float64}
_COMPUTE = {"fp32": np.float32, "fp64": np.float64}


# ----------------------------------------------------------------------------- exact model


def round_to_format(value: Fraction, fmt_name: str) -> float:
    """``value`` rounded once, to nearest even, to the format (gradual underflow, overflow to inf)."""
    fmt = formats.get(fmt_name)
    if value == 0:
        return 0.0
    magnitude = abs(value)
    exponent = magnitude.numerator.bit_length() - magnitude.denominator.bit_length()
    if Fraction(2) ** exponent > magnitude:
        exponent -= 1
    exponent = max(exponent, fmt.emin)
    ulp = Fraction(2) ** (exponent - fmt.mantissa_bits)
    rounded = round(magnitude / ulp) * ulp  # round() of a Fraction is half-to-even
    if rounded >= Fraction(2) ** (fmt.emax + 1):
        return math.copysign(math.inf, value)
    return float(rounded) if value > 0 else -float(rounded)


def exact_quantize(value: float, l: int) -> int:
    """round_half_even(value * 2**l) with exact rational arithmetic."""
    return round(Fraction(value) * 2**l)


def exact_mix(x: float, h: float, gamma: float, fmt_name: str) -> float:
    """y = fl(fl((1-gamma) x) + fl((1+gamma) h)) of docs/spec.md §3, every operation rounded exactly once."""
    t1 = round_to_format((1 - Fraction(gamma)) * Fraction(x), fmt_name)
    t2 = round_to_format((1 + Fraction(gamma)) * Fraction(h), fmt_name)
    return round_to_format(Fraction(t1) + Fraction(t2), fmt_name)


# ----------------------------------------------------------------------------- strategies


def codes(max_bits: int = 61) -> st.SearchStrategy[int]:
    """Integer codes of every magnitude class: small, random bit lengths, and next to +-2**62."""
    near_limit = st.integers(1, 2**20).map(lambda d: bdia.CODE_LIMIT - d)
    by_length = st.integers(0, max_bits).flatmap(lambda b: st.integers(0, 2**b))
    magnitude = st.one_of(st.integers(0, 4096), by_length, *([near_limit] if max_bits >= 61 else []))
    return st.tuples(magnitude, st.booleans()).map(lambda ms: -ms[0] if ms[1] else ms[0])


def grid_values(l: int, dtype: type) -> st.SearchStrategy[float]:
    """Floats exactly on the 2**-l grid, exactly halfway between grid points (ties), and arbitrary."""
    fmt = formats.get(np.dtype(dtype).name)
    max_code = 2 ** min(fmt.mantissa_bits + 1, 60)
    on_grid = st.integers(-max_code, max_code).map(lambda k: k * 2.0**-l)
    ties = st.integers(-max_code, max_code).map(lambda k: (k + 0.5) * 2.0**-l)
    width = np.dtype(dtype).itemsize * 8
    bound = min(2.0 ** (60 - l), float(np.finfo(dtype).max))
    arbitrary = st.floats(min_value=-bound, max_value=bound, width=width)  # type: ignore[arg-type]
    return st.one_of(on_grid, ties, arbitrary).map(lambda v: float(np.asarray(v, dtype=dtype)))


# ----------------------------------------------------------------------------- property bodies


def check_quantize_is_round_half_even(data: st.DataObject, oracle: ModuleType = ORACLE) -> None:
    l = data.draw(st.integers(0, 30), label="l")
    dtype_name = data.draw(st.sampled_from(sorted(_FLOAT_DTYPES)), label="dtype")
    dtype = _FLOAT_DTYPES[dtype_name]
    values = data.draw(st.lists(grid_values(l, dtype), min_size=1, max_size=16), label="values")
    array = np.asarray(values, dtype=dtype)
    finite = [float(v) for v in array if np.isfinite(v)]
    assume(len(finite) == array.size)
    got = oracle.quantize(array, l)
    expected = np.array([exact_quantize(v, l) for v in finite], dtype=np.int64)
    assert_codes_equal(got, expected, f"quantize(l={l}) of {finite} vs exact RNE", dtype=np.int64)


def check_mix_is_three_rounded_operations(data: st.DataObject, oracle: ModuleType = ORACLE) -> None:
    fmt_name = data.draw(st.sampled_from(sorted(_COMPUTE)), label="compute dtype")
    dtype = _COMPUTE[fmt_name]
    l = data.draw(st.integers(0, 24), label="l")
    x_codes = data.draw(st.lists(codes(), min_size=1, max_size=8), label="state codes")
    size = len(x_codes)
    hs = data.draw(st.lists(grid_values(l, dtype), min_size=size, max_size=size), label="block outputs")
    gamma = data.draw(st.lists(st.sampled_from([0.5, -0.5]), min_size=size, max_size=size), label="gamma")
    x = oracle.dequantize(np.asarray(x_codes, dtype=np.int64), l, dtype)
    got = oracle.mix(x, np.asarray(hs, dtype=dtype), np.asarray(gamma), dtype)
    for i in range(size):
        want = exact_mix(float(x[i]), hs[i], gamma[i], fmt_name)
        assert_bit_exact(
            np.asarray(got[i], dtype=dtype),
            np.asarray(want, dtype=dtype),
            msg=f"y for x={float(x[i])!r}, h={hs[i]!r}, gamma={gamma[i]} vs fl(fl((1-g)x) + fl((1+g)h))",
        )


def tanh_block(
    rng: np.random.Generator, width: int, scale: float, dtype: type
) -> Callable[[np.ndarray], np.ndarray]:
    """A deterministic NumPy block ``scale * tanh(x W)`` in ``dtype``."""
    weight: np.ndarray = (rng.standard_normal((width, width)) / math.sqrt(width)).astype(dtype)
    return lambda x: (np.tanh(x.astype(dtype) @ weight) * dtype(scale)).astype(dtype)


def gamma_rows(data: st.DataObject, depth: int, batch: int) -> np.ndarray:
    """Per-sample gammas for blocks 1..K-1: all +, all -, alternating, or random patterns."""
    pattern = data.draw(st.sampled_from(["plus", "minus", "alternate", "random"]), label="gamma pattern")
    shape = (max(depth - 1, 0), batch)
    if pattern == "plus":
        return np.full(shape, 0.5)
    if pattern == "minus":
        return np.full(shape, -0.5)
    if pattern == "alternate":
        return np.fromfunction(lambda k, b: np.where((k + b) % 2 == 0, 0.5, -0.5), shape)
    seed = data.draw(st.integers(0, 2**32 - 1), label="gamma seed")
    return np.random.default_rng(seed).choice([0.5, -0.5], size=shape)


def depths() -> st.SearchStrategy[int]:
    """Depth 1..64, mostly shallow: deep stacks are slow and few examples suffice."""
    shallow = st.integers(1, 8)
    return st.one_of(shallow, shallow, shallow, shallow, st.integers(9, 64))


def check_inverse_of_forward(data: st.DataObject, oracle: ModuleType = ORACLE) -> None:
    fmt_name = data.draw(st.sampled_from(sorted(_COMPUTE)), label="compute dtype")
    dtype = _COMPUTE[fmt_name]
    depth = data.draw(depths(), label="depth")
    batch = data.draw(st.integers(1, 4), label="batch")
    width = data.draw(st.integers(1, 6), label="width")
    l = data.draw(st.integers(0, 24), label="l")
    scale = data.draw(st.sampled_from([2.0**e for e in range(-8, 12)]), label="block output scale")
    seed = data.draw(st.integers(0, 2**32 - 1), label="weights seed")
    rng = np.random.default_rng(seed)
    blocks = [tanh_block(rng, width, scale, dtype) for _ in range(depth)]
    x0 = data.draw(st.lists(codes(40), min_size=batch * width, max_size=batch * width), label="X0")
    X0 = np.asarray(x0, dtype=np.int64).reshape(batch, width)
    gammas = gamma_rows(data, depth, batch)
    trace = oracle.forward(X0, blocks, gammas, l, compute_dtype=dtype)
    rebuilt = oracle.inverse(
        trace.codes[-1], trace.codes[-2], blocks, gammas, trace.side_bits, l, compute_dtype=dtype
    )
    for k, (got, want) in enumerate(zip(rebuilt, trace.codes, strict=True)):
        assert_codes_equal(got, want, f"X_{k} reconstructed vs forward")


def check_inverse_near_code_limits(data: st.DataObject, oracle: ModuleType = ORACLE) -> None:
    """States within a hair of +-2**62 still reconstruct exactly (never through a float)."""
    fmt_name = data.draw(st.sampled_from(sorted(_COMPUTE)), label="compute dtype")
    dtype = _COMPUTE[fmt_name]
    depth = data.draw(st.integers(1, 6), label="depth")
    batch = data.draw(st.integers(1, 3), label="batch")
    l = data.draw(st.integers(0, 24), label="l")
    gap = data.draw(st.integers(1, 2**20).map(lambda e: 2**61 // e), label="distance below 2**62")
    signs = data.draw(st.lists(st.sampled_from([1, -1]), min_size=batch, max_size=batch), label="signs")
    jitter = data.draw(st.lists(st.integers(0, 2**20), min_size=batch, max_size=batch), label="jitter")
    X0 = np.asarray(
        [s * (bdia.CODE_LIMIT - gap - j) for s, j in zip(signs, jitter, strict=True)], dtype=np.int64
    ).reshape(batch, 1)
    outputs = data.draw(
        st.lists(grid_values(l, dtype), min_size=depth * batch, max_size=depth * batch), label="block outputs"
    )
    blocks = [
        np.asarray(outputs[k * batch : (k + 1) * batch], dtype=dtype).reshape(batch, 1) for k in range(depth)
    ]
    gammas = gamma_rows(data, depth, batch)
    try:
        trace = oracle.forward(X0, blocks, gammas, l, compute_dtype=dtype)
    except ValueError:
        assume(False)  # left the range: refusing is the correct answer there
        raise
    rebuilt = oracle.inverse(
        trace.codes[-1], trace.codes[-2], blocks, gammas, trace.side_bits, l, compute_dtype=dtype
    )
    for k, (got, want) in enumerate(zip(rebuilt, trace.codes, strict=True)):
        assert_codes_equal(got, want, f"X_{k} near the limit reconstructed vs forward")


def check_single_step_inverse(data: st.DataObject, oracle: ModuleType = ORACLE) -> None:
    """inverse_step(forward_step(...)) returns X_prev for any states in range and any finite h."""
    fmt_name = data.draw(st.sampled_from(sorted(_COMPUTE)), label="compute dtype")
    dtype = _COMPUTE[fmt_name]
    l = data.draw(st.integers(0, 30), label="l")
    size = data.draw(st.integers(1, 6), label="batch")
    X_prev = np.asarray(
        data.draw(st.lists(codes(), min_size=size, max_size=size), label="X_prev"), dtype=np.int64
    )
    X_cur = np.asarray(
        data.draw(st.lists(codes(), min_size=size, max_size=size), label="X_cur"), dtype=np.int64
    )
    h = np.asarray(
        data.draw(st.lists(grid_values(l, dtype), min_size=size, max_size=size), label="h"), dtype=dtype
    )
    gamma = np.asarray(
        data.draw(st.lists(st.sampled_from([0.5, -0.5]), min_size=size, max_size=size), label="gamma")
    )
    try:
        X_next, s_prev = oracle.forward_step(X_prev, X_cur, h, gamma, l, compute_dtype=dtype)
    except ValueError:
        assume(False)
        raise
    assert_codes_equal(s_prev, X_prev & 1, "side bits vs X_prev mod 2")
    back = oracle.inverse_step(X_next, X_cur, h, gamma, s_prev, l, compute_dtype=dtype)
    assert_codes_equal(back, X_prev, "inverse_step(forward_step(X_prev)) vs X_prev")


# ----------------------------------------------------------------------------- the tests


@given(data=st.data())
def test_quantize_is_round_half_even_of_exact_value(data: st.DataObject) -> None:
    check_quantize_is_round_half_even(data)


@given(data=st.data())
def test_mix_is_three_separately_rounded_operations(data: st.DataObject) -> None:
    check_mix_is_three_rounded_operations(data)


@given(data=st.data())
def test_inverse_of_forward_is_bit_exact(data: st.DataObject) -> None:
    check_inverse_of_forward(data)


@given(data=st.data())
def test_inverse_is_bit_exact_near_code_limits(data: st.DataObject) -> None:
    check_inverse_near_code_limits(data)


@given(data=st.data())
def test_inverse_step_undoes_forward_step(data: st.DataObject) -> None:
    check_single_step_inverse(data)
