"""Unit tests of the BDIA oracle (revcheck.oracle.bdia): values, semantics, every bad-input error."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from revcheck.oracle import bdia

L = 9


def _codes(*values: int) -> np.ndarray:
    return np.asarray(values, dtype=np.int64).reshape(len(values), 1)


def _gamma(*values: float) -> np.ndarray:
    return np.asarray(values, dtype=np.float64)


# ------------------------------------------------------------------ quantize / dequantize / side bits


def test_quantize_rounds_ties_to_even() -> None:
    ties = np.asarray([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 3.5], dtype=np.float32)
    assert bdia.quantize(ties, 0).tolist() == [0, 2, 2, 0, -2, -2, 4]
    assert bdia.quantize(ties * 2.0**-L, L).tolist() == [0, 2, 2, 0, -2, -2, 4]


def test_quantize_scales_exactly_in_every_float_dtype() -> None:
    # 60000 * 2**9 overflows fp16, and 2**52 + 1 is not an fp32 value: the scaling must not go through them.
    assert bdia.quantize(np.float16(60000.0), L).tolist() == 60000 * 2**L
    assert bdia.quantize(np.float64(2.0**40 + 0.75), 2).tolist() == (2**40) * 4 + 3
    assert bdia.quantize(np.asarray([1e-300]), L).tolist() == [0]
    assert bdia.quantize(np.float32(-0.0), L).dtype == np.int64


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_quantize_rejects_non_finite(bad: float) -> None:
    with pytest.raises(ValueError, match="non-finite value"):
        bdia.quantize(np.asarray([1.0, bad]), L)


def test_quantize_rejects_codes_that_do_not_fit_int64() -> None:
    with pytest.raises(ValueError, match="does not fit an int64 code"):
        bdia.quantize(np.asarray([2.0 ** (63 - L)]), L)
    assert bdia.quantize(np.asarray([2.0 ** (62 - L)]), L).tolist() == [2**62]


def test_quantize_rejects_integers_and_bad_l() -> None:
    with pytest.raises(TypeError, match="floating-point array"):
        bdia.quantize(np.asarray([1, 2]), L)
    for bad_l, error in [(-1, ValueError), (63, ValueError), (1.5, TypeError), (True, TypeError)]:
        with pytest.raises(error, match="l must"):
            bdia.quantize(np.asarray([1.0]), bad_l)  # type: ignore[arg-type]


def test_dequantize_rounds_once_to_the_compute_dtype() -> None:
    # 2**60 + 2**36 + 1 rounds UP to 2**60 + 2**37 in fp32; via fp64 it would become a tie -> 2**60.
    got = bdia.dequantize(np.asarray([2**60 + 2**36 + 1]), 0, np.float32)
    assert got.tolist() == [float(2**60 + 2**37)]
    assert bdia.dequantize(np.asarray([3, -1]), 1, np.float64).tolist() == [1.5, -0.5]
    with pytest.raises(TypeError, match="integer array"):
        bdia.dequantize(np.asarray([1.0]), L)
    with pytest.raises(TypeError, match="float dtype"):
        bdia.dequantize(np.asarray([1]), L, np.int32)


def test_side_bits_are_parity_as_uint8() -> None:
    bits = bdia.side_bits(np.asarray([-4, -3, -1, 0, 1, 2, 2**62 - 1]))
    assert bits.dtype == np.uint8
    assert bits.tolist() == [0, 1, 1, 0, 1, 0, 1]
    with pytest.raises(TypeError, match="integer array"):
        bdia.side_bits(np.asarray([1.0]))


def test_mix_rounds_each_of_the_three_operations() -> None:
    # x = 1 + 2**-23 (fp32): 1.5 x needs 25 bits, so t1 rounds; an FMA would keep those bits.
    x = np.asarray([[np.float32(1 + 2**-23)]], dtype=np.float32)
    h = np.asarray([[np.float32(-(2**-25))]], dtype=np.float32)
    got = bdia.mix(x, h, _gamma(-0.5), np.float32)
    t1 = np.float32(1.5) * x
    t2 = np.float32(0.5) * h
    assert got.tobytes() == (t1 + t2).tobytes()
    fused = np.float32(1.5 * np.float64(x[0, 0]) + 0.5 * np.float64(h[0, 0]))
    assert got[0, 0] != fused, "test input must separate the rounded and the fused evaluation"


# ----------------------------------------------------------------------------- steps


def test_forward_step_matches_the_formula_and_inverts() -> None:
    X_prev, X_cur = _codes(7, -7), _codes(100, 3)
    h = np.asarray([[0.25], [-1.0]], dtype=np.float32)
    gamma = _gamma(0.5, -0.5)
    X_next, s_prev = bdia.forward_step(X_prev, X_cur, h, gamma, L)
    assert s_prev.tolist() == [[1], [1]]
    y = bdia.mix(bdia.dequantize(X_cur, L), h, gamma)
    expected = np.asarray([[(7 + 1) // 2], [(-7 + 1) // 2 * -1]]) + bdia.quantize(y, L)
    assert X_next.tolist() == expected.tolist()
    assert bdia.inverse_step(X_next, X_cur, h, gamma, s_prev, L).tolist() == X_prev.tolist()


def test_gamma_zero_rows_add_the_quantized_block_output_to_the_exact_code() -> None:
    # x_k = (2**24 + 1) * 2**-0 is not an fp32 value; X_k + R(h) keeps it, R(fl(x + h)) would not.
    X_cur = _codes(2**24 + 1, 5)
    h = np.asarray([[0.0], [2.5]], dtype=np.float32)
    X_next, _ = bdia.forward_step(_codes(0, 0), X_cur, h, _gamma(0.0, 0.0), 0)
    assert X_next.tolist() == [[2**24 + 1], [5 + 2]]


def test_forward_step_bad_inputs_have_clear_errors() -> None:
    ok = dict(X_prev=_codes(1), X_cur=_codes(2), h=np.zeros((1, 1), np.float32), gamma=_gamma(0.5), l=L)
    cases: list[tuple[dict[str, object], type[Exception], str]] = [
        (dict(X_prev=np.asarray([[1.0]])), TypeError, "integer array of codes"),
        (dict(X_cur=np.asarray([[1.0]])), TypeError, "integer array of codes"),
        (dict(X_prev=_codes(1, 2)), ValueError, "X_prev has shape"),
        (dict(h=np.zeros((1, 2), np.float32)), ValueError, "block output h has shape"),
        (dict(h=np.zeros((1, 1), np.int64)), TypeError, "block output h must be a float array"),
        (dict(h=np.full((1, 1), np.nan, np.float32)), ValueError, "non-finite"),
        (dict(gamma=_gamma(0.25)), ValueError, "accepted values are"),
        (dict(gamma=_gamma(0.5, 0.5)), ValueError, r"shape \(B,\)"),
        (dict(gamma=np.asarray(["a"])), TypeError, "real array"),
        (dict(X_cur=_codes(2**62)), ValueError, "outside the BDIA range"),
        (dict(X_prev=np.asarray([[2**63 - 1]], dtype=np.uint64)), ValueError, "codes >= 2..62"),
        (dict(X_cur=np.int64(3)), ValueError, "leading batch dimension"),
    ]
    for change, error, message in cases:
        with pytest.raises(error, match=message):
            bdia.forward_step(**{**ok, **change})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="compute_dtype must be float32 or float64"):
        bdia.forward_step(**ok, compute_dtype=np.float16)  # type: ignore[arg-type]


def test_forward_step_refuses_results_outside_the_range() -> None:
    # gamma (X_prev + s) = 2**61 and R(y) = 2**61: both in range, their sum is not.
    big = bdia.CODE_LIMIT - 1
    zero = np.zeros((1, 1), np.float64)
    with pytest.raises(ValueError, match=r"X_next \(result\)"):
        bdia.forward_step(_codes(big), _codes(big), zero, _gamma(0.5), 1, compute_dtype=np.float64)
    with pytest.raises(ValueError, match=r"R\(y\)"):
        bdia.forward_step(_codes(0), _codes(0), np.full((1, 1), 2.0**61, np.float64), _gamma(0.5), 1)


def test_inverse_step_bad_inputs_have_clear_errors() -> None:
    ok = dict(
        X_next=_codes(1),
        X_cur=_codes(2),
        h=np.zeros((1, 1), np.float32),
        gamma=_gamma(-0.5),
        s_prev=np.zeros((1, 1), np.uint8),
        l=L,
    )
    cases = [
        (dict(gamma=_gamma(0.0)), ValueError, "not invertible"),
        (dict(s_prev=np.zeros((2, 1), np.uint8)), ValueError, "s_prev has shape"),
        (dict(s_prev=np.full((1, 1), 2, np.uint8)), ValueError, "only 0 and 1"),
        (dict(s_prev=np.zeros((1, 1), np.float32)), TypeError, "side bits"),
        (dict(X_next=_codes(2**61 + 2**60)), ValueError, "was not produced by forward_step"),
        (dict(X_next=np.asarray([[0.5]])), TypeError, "integer array of codes"),
        (dict(X_next=_codes(1, 2)), ValueError, "X_next has shape"),
    ]
    for change, error, message in cases:
        with pytest.raises(error, match=message):
            bdia.inverse_step(**{**ok, **change})  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- whole stacks


def _blocks(depth: int, width: int, seed: int = 0) -> list:
    rng = np.random.default_rng(seed)
    weights = [rng.standard_normal((width, width)).astype(np.float32) for _ in range(depth)]
    return [lambda x, w=w: np.tanh(x @ w).astype(np.float32) for w in weights]


def test_forward_then_inverse_with_callables_and_outputs() -> None:
    depth, width = 7, 4
    X0 = bdia.quantize(np.random.default_rng(1).standard_normal((3, width)), L)
    gammas = np.random.default_rng(2).choice([0.5, -0.5], size=(depth - 1, 3))
    trace = bdia.forward(X0, _blocks(depth, width), gammas, L)
    assert len(trace.codes) == depth + 1 and len(trace.side_bits) == depth - 1
    assert (
        trace.codes[1].tolist()
        == (X0 + bdia.quantize(_blocks(depth, width)[0](bdia.dequantize(X0, L)), L)).tolist()
    )
    rebuilt = bdia.inverse(
        trace.codes[-1], trace.codes[-2], _blocks(depth, width), gammas, trace.side_bits, L
    )
    assert all(np.array_equal(a, b) for a, b in zip(rebuilt, trace.codes, strict=True))
    outputs = [None] + [
        blk(bdia.dequantize(c, L))
        for blk, c in zip(_blocks(depth, width)[1:], trace.codes[1:-1], strict=True)
    ]
    rebuilt = bdia.inverse(trace.codes[-1], trace.codes[-2], outputs, gammas, trace.side_bits, L)
    assert all(np.array_equal(a, b) for a, b in zip(rebuilt, trace.codes, strict=True))


def test_single_block_stack() -> None:
    X0 = _codes(5, -5)
    trace = bdia.forward(X0, [np.asarray([[1.0], [0.5]], np.float32)], np.zeros((0, 2)), 1)
    assert [c.tolist() for c in trace.codes] == [[[5], [-5]], [[7], [-4]]]
    assert bdia.inverse(trace.codes[1], trace.codes[0], [None], [], [], 1)[0].tolist() == X0.tolist()


def test_whole_stack_bad_inputs_have_clear_errors() -> None:
    X0 = _codes(1, 2)
    two = [np.zeros((2, 1), np.float32)] * 2
    with pytest.raises(ValueError, match="at least one block"):
        bdia.forward(X0, [], [], L)
    with pytest.raises(ValueError, match="one row of shape"):
        bdia.forward(X0, two, np.zeros((2, 2)), L)
    with pytest.raises(ValueError, match=r"block 1: output shape"):
        bdia.forward(X0, [two[0], np.zeros((3, 1), np.float32)], [_gamma(0.5, 0.5)], L)
    with pytest.raises(TypeError, match="block 1: output must be a float array"):
        bdia.forward(X0, [two[0], np.zeros((2, 1), np.int32)], [_gamma(0.5, 0.5)], L)
    with pytest.raises(ValueError, match=r"block 1: h_1\(x_1\) contains NaN/inf"):
        bdia.forward(X0, [two[0], np.full((2, 1), np.inf, np.float32)], [_gamma(0.5, 0.5)], L)
    with pytest.raises(ValueError, match=r"gammas\[0\] contains 0, which is not invertible"):
        bdia.inverse(X0, X0, [None, two[1]], [_gamma(0.0, 0.5)], [np.zeros((2, 1), np.uint8)], L)
    with pytest.raises(ValueError, match="K-1 = 1 arrays"):
        bdia.inverse(X0, X0, [None, two[1]], [_gamma(0.5, 0.5)], [], L)
    with pytest.raises(ValueError, match="block 1: no callable"):
        bdia.inverse(X0, X0, [None, None], [_gamma(0.5, 0.5)], [np.zeros((2, 1), np.uint8)], L)
    with pytest.raises(ValueError, match="must have one shape"):
        bdia.inverse(X0, _codes(1), [None, two[1]], [_gamma(0.5, 0.5)], [np.zeros((2, 1), np.uint8)], L)
    with pytest.raises(TypeError, match="X0 must be an integer array"):
        bdia.forward(np.asarray([[1.0]]), two[:1], [], L)


def test_oracle_never_imports_torch() -> None:
    code = "import sys, revcheck.oracle.bdia; sys.exit(1 if 'torch' in sys.modules else 0)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0, f"importing revcheck.oracle.bdia imported torch: {result.stderr}"
