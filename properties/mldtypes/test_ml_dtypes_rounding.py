"""Rounding float64 values to every format: revcheck's oracle, its exact model and ml_dtypes' casts.

Three independent implementations of one cast, bit for bit (level O against a
separate, widely used implementation; the exact model decides R):

- :func:`revcheck.oracle.rounding.convert` (integer arithmetic on patterns),
- :func:`revcheck.exact.rounding.convert` (Fractions),
- ``x.astype(dtype)`` with ml_dtypes' dtypes (bf16, the fp8, fp6 and fp4
  formats) or NumPy's own (fp32, fp16, fp64).

Both follow round to nearest, ties to even, with gradual underflow, wherever
a format can hold the rounded value.  Where they cannot agree, the difference is
a documented decision (docs/spec.md D1.13), and the property checks that each
side does exactly what the decision says -- it never skips such inputs:

- NaN inputs: revcheck gives the canonical NaN (D1.2), ml_dtypes keeps the
  NaN's sign: compared as a class; into a format without NaN (fp6, fp4) revcheck
  raises ``ValueError`` (D1.8) while ml_dtypes writes a zero: both checked;
- overflow and ±inf into a format without infinity: revcheck saturates to
  ±max_finite (D1.1); ml_dtypes gives NaN in fp8_e4m3fn and the fnuz formats and
  ±max_finite in fp6 and fp4: both checked.

Every value class is drawn: float64 NaN payloads, ±inf, ±0, subnormals and
normals of any exponent, and values on and around the target format's own grid
-- exact ties, a fraction of an ULP either side, the subnormal range and the
overflow threshold.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

pytest.importorskip("ml_dtypes", reason="ml_dtypes is not installed (pip install 'revcheck[ml_dtypes]')")

from revcheck import bits, formats
from revcheck import strategies as rst
from revcheck.exact import rounding as exact
from revcheck.formats import FloatFormat
from revcheck.oracle import rounding as oracle
from revcheck.testing import assert_bit_exact

FP64 = formats.get("fp64")
FORMATS = formats.names()


class ReferenceDisagreement(AssertionError):
    """ml_dtypes did not do what docs/spec.md D1.13 says it does where it and revcheck differ."""


def grid_values(fmt: FloatFormat) -> st.SearchStrategy[float]:
    """float64 values on and near ``fmt``'s grid: a value of ``fmt`` plus k/2**j of its ULP, |k/2**j| <= 1.

    Every such value is exact in float64 (fmt has at most 24 significand bits and
    j <= 12); k/2**j = ±1/2 is an exact tie.  The ULP is that of the binade of the
    value (the subnormal quantum below 2**emin), so ``max_finite`` + 1/2 ULP is the
    overflow threshold.
    """

    def build(pattern: int, numerator: int, shift: int) -> float:
        value = exact.decode(pattern, fmt)
        magnitude = value.magnitude
        binade = max(exact.floor_log2(magnitude), fmt.emin) if magnitude else fmt.emin
        ulp = Fraction(2) ** (binade - fmt.mantissa_bits)
        offset = Fraction(numerator, 1 << shift) * ulp
        return float(value.signed + offset)  # exact: checked by the caller's round trip

    finite = rst.bit_patterns(fmt, classes=("zero", "subnormal", "normal"))
    offsets = st.builds(build, finite, st.integers(-(1 << 12), 1 << 12), st.integers(1, 12))
    ties = st.builds(build, finite, st.sampled_from([-1, 1]), st.just(1))
    # One float64 step either side of a tie: a cast that rounds twice (through fp32, say) sees a tie there.
    beside_ties = st.builds(
        lambda x, up: float(np.nextafter(x, np.inf if up else -np.inf)), ties, st.booleans()
    )
    return st.one_of(offsets, ties, beside_ties)


def float64_inputs(fmt: FloatFormat) -> st.SearchStrategy[np.ndarray]:
    """float64 bit patterns: any (every class of fp64), on ``fmt``'s grid, or of ``fmt``'s size."""
    near_grid = grid_values(fmt).map(lambda x: bits.to_bits(np.float64(x)))
    any_fp64 = rst.bit_patterns(FP64).map(lambda p: np.uint64(p))
    scaled = st.builds(
        lambda m, e: bits.to_bits(np.ldexp(np.float64(m), e)),
        st.floats(-2.0, 2.0, allow_nan=False),
        st.integers(fmt.emin - fmt.mantissa_bits - 4, fmt.emax + 4),
    )
    if fmt is FP64:
        return st.lists(any_fp64, min_size=1, max_size=32).map(lambda xs: np.array(xs, np.uint64))
    element = st.one_of(near_grid, any_fp64, scaled)
    return st.lists(element, min_size=1, max_size=32).map(lambda xs: np.array(xs, np.uint64))


def overflows(x: float, fmt: FloatFormat) -> bool:
    """Whether round to nearest even of |x| on an unbounded exponent range exceeds ``fmt``'s max finite."""
    if not np.isfinite(x):
        return bool(np.isinf(x))
    magnitude = abs(Fraction(x))
    largest = exact.max_finite_value(fmt)
    if magnitude <= largest:
        return False
    quantum = Fraction(2) ** (fmt.emax - fmt.mantissa_bits)
    return round(magnitude / quantum) * quantum > largest


def reference_cast(x_bits: np.ndarray, fmt: FloatFormat) -> np.ndarray:
    """ml_dtypes' (or NumPy's) cast of float64 patterns to ``fmt``, as ``fmt`` bit patterns."""
    with np.errstate(over="ignore", invalid="ignore"):
        return bits.to_bits(x_bits.view(np.float64).astype(bits.numpy_dtype(fmt)))


def conversion_agrees_with_ml_dtypes(data: st.DataObject, convert: object) -> None:
    """``convert(float64 bits, "fp64", fmt)`` against ml_dtypes' cast, reconciled as docs/spec.md D1.13."""
    __tracebackhide__ = True
    assert callable(convert)
    fmt = formats.get(data.draw(st.sampled_from(FORMATS), label="format"))
    x_bits = data.draw(float64_inputs(fmt), label="float64 bits")
    values = x_bits.view(np.float64)
    nan = np.isnan(values)
    theirs = reference_cast(x_bits, fmt)
    if not fmt.has_nan and nan.any():
        with pytest.raises(ValueError, match="has no NaN"):
            convert(x_bits, FP64, fmt)
        if not bits.is_zero(theirs[nan], fmt).all():
            raise ReferenceDisagreement(f"ml_dtypes cast NaN to {fmt.name} as {theirs[nan]!r}, not a zero")
        x_bits, values, theirs, nan = x_bits[~nan], values[~nan], theirs[~nan], nan[~nan]
        if x_bits.size == 0:
            return
    ours = convert(x_bits, FP64, fmt)
    # NaN as a class: ml_dtypes keeps the NaN's sign, revcheck's is canonical (D1.2).
    expected = reconciled(values, theirs, fmt)
    assert_bit_exact(ours, expected, fmt=fmt, msg=f"float64 -> {fmt.name}: revcheck vs ml_dtypes (D1.13)")


def reconciled(values: np.ndarray, theirs: np.ndarray, fmt: FloatFormat) -> np.ndarray:
    """ml_dtypes' cast of ``values`` (no NaN where ``fmt`` has none) with docs/spec.md D1.13 applied.

    Overflow and ±inf into a format without infinity become ±max_finite, after
    checking that ml_dtypes gave what D1.13 records (NaN where the format has NaN,
    ±max_finite where it has none); every other element is ml_dtypes' own.
    """
    if fmt.has_inf:
        return theirs
    over = np.array([overflows(float(x), fmt) for x in values], dtype=bool)
    saturated = np.where(np.signbit(values), fmt.sign_mask | fmt.max_finite, fmt.max_finite)
    if fmt.has_nan and not bits.is_nan(theirs[over], fmt).all():
        raise ReferenceDisagreement(f"ml_dtypes should give NaN on overflow in {fmt.name}: {theirs[over]!r}")
    if not fmt.has_nan and not (theirs[over] == saturated[over]).all():
        raise ReferenceDisagreement(f"ml_dtypes should saturate in {fmt.name}: {theirs[over]!r}")
    return np.where(over, saturated, theirs).astype(fmt.uint_dtype)


@given(data=st.data())
def test_oracle_rounding_agrees_with_ml_dtypes(data: st.DataObject) -> None:
    conversion_agrees_with_ml_dtypes(data, oracle.convert)


@given(data=st.data())
def test_oracle_rounding_equals_the_exact_model(data: st.DataObject) -> None:
    """Bit for bit, NaN bits too, both modes: the oracle's cast is the exact model's."""
    fmt = formats.get(data.draw(st.sampled_from(FORMATS), label="format"))
    mode = data.draw(st.sampled_from(("ieee", "ftz")), label="mode")
    x_bits = data.draw(float64_inputs(fmt), label="float64 bits")
    x_bits = x_bits[~np.isnan(x_bits.view(np.float64))] if not fmt.has_nan else x_bits
    ours = oracle.convert(x_bits, FP64, fmt, mode=mode)
    model = np.array([exact.convert(int(x), FP64, fmt, mode) for x in x_bits.tolist()], dtype=fmt.uint_dtype)
    assert_bit_exact(ours, model, fmt=fmt, nan="bits", msg=f"oracle vs exact model, float64 -> {fmt.name}")
