"""The declared-order primitives of revcheck.oracle.ordered: order, zero-neutrality, exp accuracy (level R
bound against mpmath) and position independence."""

from __future__ import annotations

import mpmath
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from revcheck.oracle import ordered


def _ulps(value: np.floating, exact: mpmath.mpf) -> float:
    return float(abs(mpmath.mpf(float(value)) - exact) / mpmath.mpf(float(np.spacing(np.abs(value)))))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_exp_is_within_its_stated_bound(dtype: type) -> None:
    """binary64: at most 2 ulps (measured 1.07); binary32: at most 0.5 ulp plus one double rounding."""
    rng = np.random.default_rng(0)
    low, high = (-103.0, 88.7) if dtype is np.float32 else (-745.0, 709.7)
    x: np.ndarray = np.concatenate([rng.uniform(low, high, 3000), rng.uniform(-20, 20, 3000)]).astype(dtype)
    y = ordered.exp(x)
    bound = 2.0 if dtype is np.float64 else 0.5 + 2.0**-28
    with mpmath.workprec(200):
        worst = max(_ulps(v, mpmath.exp(mpmath.mpf(float(t)))) for t, v in zip(x, y, strict=True) if v > 0)
    assert worst <= bound, f"exp({dtype.__name__}) is {worst} ulps off, bound {bound}"


def test_exp_special_values() -> None:
    x = np.array([np.inf, -np.inf, np.nan, 710.0, -746.0, 0.0, -0.0], dtype=np.float64)
    got = ordered.exp(x)
    assert got[0] == np.inf and got[1] == 0 and np.isnan(got[2]) and got[3] == np.inf and got[4] == 0
    assert (got[5:] == 1.0).all()
    assert ordered.exp(np.array([89.0], dtype=np.float32))[0] == np.inf


@given(
    values=st.lists(st.floats(-800, 800, width=64), min_size=1, max_size=70),
    data=st.data(),
)
def test_exp_is_position_independent(values: list[float], data: st.DataObject) -> None:
    x = np.array(values, dtype=np.float64)
    whole = ordered.exp(x)
    start = data.draw(st.integers(0, len(values) - 1), label="slice start")
    assert (ordered.exp(x[start:]).view(np.uint64) == whole[start:].view(np.uint64)).all()
    reverse = ordered.exp(x[::-1].copy())
    assert (reverse[::-1].view(np.uint64) == whole.view(np.uint64)).all()


def test_matmul_runs_in_index_order() -> None:
    a = np.array([[1e8, 1.0, -1e8, 1.0]], dtype=np.float32)
    b = np.ones((4, 1), dtype=np.float32)
    assert ordered.matmul(a, b)[0, 0] == 1.0  # ((1e8 + 1) - 1e8) + 1 = 0 + 1
    assert ordered.sequential_sum(a[0]) == 1.0


@given(k=st.integers(1, 40), extra=st.integers(0, 40), seed=st.integers(0, 2**32 - 1))
def test_appended_zero_terms_are_bit_neutral(k: int, extra: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((3, k)).astype(np.float32)
    b = rng.standard_normal((k, 5)).astype(np.float32)
    grown_a = np.concatenate([a, rng.standard_normal((3, extra)).astype(np.float32)], axis=1)
    grown_b = np.concatenate([b, np.zeros((extra, 5), np.float32)], axis=0)
    assert (ordered.matmul(a, b).view(np.uint32) == ordered.matmul(grown_a, grown_b).view(np.uint32)).all()


def test_matmul_starts_at_plus_zero() -> None:
    assert (
        np.signbit(ordered.matmul(np.array([[-0.0]], dtype=np.float32), np.array([[1.0]], dtype=np.float32)))[
            0, 0
        ]
        == np.False_
    )


def test_softmax_of_a_fully_masked_row_is_nan() -> None:
    rows = np.array([[0.0, 1.0], [-np.inf, -np.inf]], dtype=np.float32)
    got = ordered.softmax(rows)
    assert np.isfinite(got[0]).all() and np.isnan(got[1]).all()


def test_no_silent_conversion() -> None:
    with pytest.raises(TypeError, match="float32 or float64"):
        ordered.exp([1.0])
    with pytest.raises(TypeError, match="one dtype"):
        ordered.matmul(np.array([[1.0]], dtype=np.float32), np.array([[1.0]], dtype=np.float64))
    with pytest.raises(ValueError, match="cannot multiply"):
        ordered.matmul(np.array([[1.0, 2.0]], dtype=np.float32), np.array([[1.0, 2.0]], dtype=np.float32))
