"""Backward passes of ``PAMMatmul``: what each one claims, checked bit for bit.

``"exact"``: dA[m, k] = Σ_n G[m, n] · slope(A[m, k], B[k, n]) summed from +0.0 in
order n = 0 … N−1 (and dB over m), where the slope is measured here from first
principles: the difference quotient of the exact piecewise-affine product (in
``Fraction`` s) over a step too small to leave the affine piece.

``"approx"``: dA = G ⊡@ Bᵀ and dB = Aᵀ ⊡@ G, compared with the oracle's
``pam_matmul`` of exactly those operands (B widened exactly to the accumulator
format), then rounded to the input format as the layer documents.

Each ``check_*`` body takes the autograd function under test (``matmul=``,
:class:`~revcheck.nn.pam.PAMMatmul` by default); tests/gallery/pam_torch_mutants.py
runs the same bodies against planted bugs.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from revcheck import bits, formats
from revcheck import strategies as rst
from revcheck.nn.pam import PAMMatmul
from revcheck.oracle import pam as oracle
from revcheck.testing import assert_bit_exact

# Formats whose accumulator result NumPy can round to the input format independently of torch.
NUMPY_FORMATS = ("fp64", "fp32", "fp16")
MODES = ("ieee", "ftz")


def exponent_and_fraction(value: Fraction) -> tuple[int, Fraction]:
    """E and M of |value| = 2**E (1 + M), exactly."""
    magnitude = abs(value)
    exponent = magnitude.numerator.bit_length() - magnitude.denominator.bit_length()
    if Fraction(2) ** exponent > magnitude:
        exponent -= 1
    return exponent, magnitude / Fraction(2) ** exponent - 1


def exact_pam(a: Fraction, b: Fraction) -> Fraction:
    """The real-valued PAM product of two nonzero values (docs/spec.md §2), unrounded."""
    ea, ma = exponent_and_fraction(a)
    eb, mb = exponent_and_fraction(b)
    if ma + mb < 1:
        magnitude = Fraction(2) ** (ea + eb) * (1 + ma + mb)
    else:
        magnitude = Fraction(2) ** (ea + eb + 1) * (ma + mb)
    return magnitude if (a < 0) == (b < 0) else -magnitude


def measured_slope(a: Fraction, b: Fraction) -> Fraction:
    """d(a ⊡ b)/da as a difference quotient, stepping |a| up by far less than any piece's width."""
    ea, _ = exponent_and_fraction(a)
    step = Fraction(2) ** (ea - 200) * (1 if a > 0 else -1)
    return (exact_pam(a + step, b) - exact_pam(a, b)) / step


def numpy_float(fmt: formats.FloatFormat) -> np.dtype:
    assert fmt.numpy_float is not None, f"{fmt.name} has no NumPy dtype"
    return fmt.numpy_float


def numpy_floats(bit_array: np.ndarray, fmt: formats.FloatFormat) -> np.ndarray:
    return bit_array.view(numpy_float(fmt))


def sequential_sum(terms: list[Fraction], acc: formats.FloatFormat) -> np.floating:
    """+0.0, then fl(acc + t) in order, by NumPy's IEEE addition; each term must be exact in ``acc``."""
    total = numpy_float(acc).type(0.0)
    for term in terms:
        as_float = numpy_float(acc).type(float(term))
        assert Fraction(float(as_float)) == term, f"term {term} not exact in {acc.name}: bad test data"
        total = total + as_float
    return total


def check_exact_backward_is_the_slope_of_the_affine_piece(
    data: st.DataObject, device: str = "cpu", matmul: type[PAMMatmul] = PAMMatmul
) -> None:
    fmt = formats.get(data.draw(st.sampled_from(NUMPY_FORMATS), label="format"))
    mode = data.draw(st.sampled_from(MODES), label="mode")
    acc = oracle.accumulator_format(fmt)
    m, k, n = (data.draw(st.integers(1, 3), label=name) for name in "MKN")
    a_bits = data.draw(
        rst.bit_arrays(fmt, (m, k), elements=rst.normals_near_one(fmt, binades=3), fill=st.nothing()),
        label="A bits",
    )
    b_bits = data.draw(
        rst.bit_arrays(fmt, (k, n), elements=rst.normals_near_one(fmt, binades=3), fill=st.nothing()),
        label="B bits",
    )
    g_bits = data.draw(
        rst.bit_arrays(acc, (m, n), elements=rst.normals_near_one(acc, binades=3), fill=st.nothing()),
        label="upstream gradient G bits",
    )
    a = bits.to_torch(a_bits, fmt, device).requires_grad_(True)
    b = bits.to_torch(b_bits, fmt, device).requires_grad_(True)
    matmul.apply(a, b, mode, "exact").backward(bits.to_torch(g_bits, acc, device))
    A = [[bits.to_fraction(int(v), fmt) for v in row] for row in a_bits]
    B = [[bits.to_fraction(int(v), fmt) for v in row] for row in b_bits]
    G = [[bits.to_fraction(int(v), acc) for v in row] for row in g_bits]
    expected_a = np.array(
        [
            [
                sequential_sum([G[i][j] * measured_slope(A[i][p], B[p][j]) for j in range(n)], acc)
                for p in range(k)
            ]
            for i in range(m)
        ]
    ).astype(numpy_float(fmt))
    expected_b = np.array(
        [
            [
                sequential_sum([G[i][j] * measured_slope(B[p][j], A[i][p]) for i in range(m)], acc)
                for j in range(n)
            ]
            for p in range(k)
        ]
    ).astype(numpy_float(fmt))
    assert a.grad is not None and b.grad is not None
    assert_bit_exact(a.grad, expected_a, msg=f"dA of the exact backward (mode={mode!r}) vs measured slopes")
    assert_bit_exact(b.grad, expected_b, msg=f"dB of the exact backward (mode={mode!r}) vs measured slopes")


def check_approx_backward_is_the_pam_matmuls_it_claims(
    data: st.DataObject, device: str = "cpu", matmul: type[PAMMatmul] = PAMMatmul
) -> None:
    fmt = formats.get(data.draw(st.sampled_from(NUMPY_FORMATS), label="format"))
    mode = data.draw(st.sampled_from(MODES), label="mode")
    acc = oracle.accumulator_format(fmt)
    m, k, n = (data.draw(st.integers(1, 3), label=name) for name in "MKN")
    a_bits = data.draw(rst.bit_arrays(fmt, (m, k)), label="A bits")
    b_bits = data.draw(rst.bit_arrays(fmt, (k, n)), label="B bits")
    g_bits = data.draw(rst.bit_arrays(acc, (m, n)), label="upstream gradient G bits")
    a = bits.to_torch(a_bits, fmt, device).requires_grad_(True)
    b = bits.to_torch(b_bits, fmt, device).requires_grad_(True)
    matmul.apply(a, b, mode, "approx").backward(bits.to_torch(g_bits, acc, device))

    def widened(bit_array: np.ndarray) -> np.ndarray:
        return numpy_floats(bit_array, fmt).astype(numpy_float(acc)).view(acc.uint_dtype)

    def rounded_to_input(acc_bits: np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore"):  # overflow to inf is the documented rounding
            return numpy_floats(acc_bits, acc).astype(numpy_float(fmt))

    expected_a = oracle.pam_matmul(g_bits, np.ascontiguousarray(widened(b_bits).T), acc, mode=mode)
    expected_b = oracle.pam_matmul(np.ascontiguousarray(widened(a_bits).T), g_bits, acc, mode=mode)
    assert a.grad is not None and b.grad is not None
    assert_bit_exact(a.grad, rounded_to_input(expected_a), msg=f"dA = G ⊡@ Bᵀ ({mode}) vs oracle")
    assert_bit_exact(b.grad, rounded_to_input(expected_b), msg=f"dB = Aᵀ ⊡@ G ({mode}) vs oracle")


@given(data=st.data())
def test_exact_backward_is_the_slope_of_the_affine_piece(data: st.DataObject, device: str) -> None:
    check_exact_backward_is_the_slope_of_the_affine_piece(data, device)


@given(data=st.data())
def test_approx_backward_is_the_pam_matmuls_it_claims(data: st.DataObject, device: str) -> None:
    check_approx_backward_is_the_pam_matmuls_it_claims(data, device)
