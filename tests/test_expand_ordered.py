"""What ordered.py gained for the expansion oracle: erf, tanh, expm1, the GELUs and storage rounding.

Accuracy is a level-R bound measured against mpmath; position independence and
the storage rounding are bit-level facts.
"""

from __future__ import annotations

import mpmath
import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from revcheck.oracle import ordered

FUNCTIONS = {
    "erf": (ordered.erf, mpmath.erf),
    "tanh": (ordered.tanh, mpmath.tanh),
    "expm1": (ordered.expm1, mpmath.expm1),
}
# Largest binary64 error measured over the samples below (1.72, 1.83, 1.69 ulps), with margin.
BINARY64_BOUND_ULPS = {"erf": 2.0, "tanh": 2.5, "expm1": 2.0}


def _samples(rng: np.random.Generator) -> np.ndarray:
    return np.concatenate(
        [
            rng.uniform(-7, 7, 1500),
            rng.uniform(-0.2, 0.2, 500),
            10.0 ** rng.uniform(-300, 0, 300),
            -(10.0 ** rng.uniform(-300, 0, 300)),
            rng.uniform(-25, 25, 500),
        ]
    )


def _worst_ulps(function, exact, x: np.ndarray) -> float:
    worst = 0.0
    with mpmath.workprec(200):
        for value, got in zip(x, function(x), strict=True):
            reference = exact(mpmath.mpf(float(value)))
            if reference == 0:
                continue
            spacing = np.spacing(np.abs(np.asarray(float(reference), dtype=x.dtype)))
            worst = max(worst, float(abs(mpmath.mpf(float(got)) - reference) / mpmath.mpf(float(spacing))))
    return worst


@pytest.mark.parametrize("name", FUNCTIONS)
def test_binary64_accuracy_against_mpmath(name: str) -> None:
    function, exact = FUNCTIONS[name]
    x = _samples(np.random.default_rng(1))
    if name == "expm1":
        x = np.concatenate([x, np.random.default_rng(2).uniform(-50, 700, 500)])
    worst = _worst_ulps(function, exact, x)
    assert worst <= BINARY64_BOUND_ULPS[name], f"{name}: {worst} ulps"


@pytest.mark.parametrize("name", FUNCTIONS)
def test_binary32_is_the_binary64_result_rounded_once(name: str) -> None:
    function, exact = FUNCTIONS[name]
    x = _samples(np.random.default_rng(3)).astype(np.float32)
    x = x[np.abs(x) < 80]
    worst = _worst_ulps(function, exact, x)
    assert worst <= 0.5 + 2.0**-26, f"{name}: {worst} ulps in binary32"


def test_gelus_match_their_real_definitions() -> None:
    x = np.random.default_rng(4).uniform(-6, 6, 800)
    with mpmath.workprec(200):
        erf_gelu = [mpmath.mpf(v) / 2 * (1 + mpmath.erf(mpmath.mpf(v) / mpmath.sqrt(2))) for v in x]
        inner = [
            mpmath.sqrt(2 / mpmath.pi) * (mpmath.mpf(v) + mpmath.mpf("0.044715") * mpmath.mpf(v) ** 3)
            for v in x
        ]
        tanh_gelu = [mpmath.mpf(v) / 2 * (1 + mpmath.tanh(t)) for v, t in zip(x, inner, strict=True)]
    # absolute error relative to |x| (the 1 + erf cancellation for negative x is inherent to torch's formula)
    for got, reference in ((ordered.gelu(x), erf_gelu), (ordered.gelu_tanh(x), tanh_gelu)):
        error = max(
            abs(float(g) - float(r)) / max(abs(v), 1.0) for g, r, v in zip(got, reference, x, strict=True)
        )
        assert error < 2.0**-50


def test_special_values() -> None:
    x = np.array([np.inf, -np.inf, np.nan, 0.0, -0.0], dtype=np.float64)
    assert list(ordered.erf(x)[:2]) == [1.0, -1.0] and np.isnan(ordered.erf(x)[2])
    assert list(ordered.tanh(x)[:2]) == [1.0, -1.0] and np.isnan(ordered.tanh(x)[2])
    for function in (ordered.erf, ordered.tanh, ordered.expm1):
        zeros = function(x[3:])
        assert list(np.signbit(zeros)) == [False, True], function.__name__  # odd functions keep the sign of 0
    assert ordered.expm1(x)[0] == np.inf and ordered.expm1(x)[1] == -1.0


@given(values=st.lists(st.floats(-30, 30, width=64), min_size=1, max_size=70), data=st.data())
def test_position_independent(values: list[float], data: st.DataObject) -> None:
    x = np.array(values, dtype=np.float64)
    name = data.draw(st.sampled_from(["erf", "tanh", "expm1", "gelu", "gelu_tanh"]), label="function")
    function = getattr(ordered, name)
    whole = function(x)
    start = data.draw(st.integers(0, len(values) - 1), label="slice start")
    assert (function(x[start:]).view(np.uint64) == whole[start:].view(np.uint64)).all()
    reverse = function(x[::-1].copy())
    assert (reverse[::-1].view(np.uint64) == whole.view(np.uint64)).all()
    single = np.concatenate([function(x[i : i + 1]) for i in range(len(values))])
    assert (single.view(np.uint64) == whole.view(np.uint64)).all()


def test_erf_table_is_mpmath_correctly_rounded() -> None:
    with mpmath.workprec(300):
        for j, (a, b) in enumerate(ordered._ERF_CENTRES):
            c = mpmath.mpf(j) / 8
            assert float.fromhex(a) == float(mpmath.erf(c)), j
            assert float.fromhex(b) == float(2 / mpmath.sqrt(mpmath.pi) * mpmath.exp(-c * c)), j


@pytest.mark.parametrize("fmt, torch_dtype", [("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_round_to_storage_matches_torch_on_random_bit_patterns(fmt: str, torch_dtype: torch.dtype) -> None:
    bits = np.random.default_rng(5).integers(0, 2**32, 100_000, dtype=np.uint64).astype(np.uint32)
    specials = np.array(
        [0.0, -0.0, np.inf, -np.inf, 3.3895314e38, 3.4e38, 1e-41, -1e-45, 65504.0, 65520.0], dtype=np.float32
    )
    x = np.concatenate([bits.view(np.float32), specials])
    ours = ordered.round_to_storage(x, fmt)
    theirs = torch.from_numpy(x.copy()).to(torch_dtype).float().numpy()
    both_nan = np.isnan(ours) & np.isnan(theirs)
    assert ((ours.view(np.uint32) == theirs.view(np.uint32)) | both_nan).all()


def test_round_to_storage_refuses_what_it_cannot_do() -> None:
    with pytest.raises(ValueError, match="unknown storage format"):
        ordered.round_to_storage(np.array([1.0], dtype=np.float32), "fp8")
    with pytest.raises(TypeError, match="takes float32"):
        ordered.round_to_storage(np.array([1.0], dtype=np.float64), "bf16")
    same = np.array([1.5], dtype=np.float64)
    assert ordered.round_to_storage(same, "fp64") is same
