"""Every input of every PAM operation in every format of at most 8 bits, both modes (docs/spec.md §2).

Pair spaces are at most 2**16, so nothing is sampled:

- the oracle against the independent exact model (level O against R) for the
  formats added after the first six (fnuz, fp6, fp4); the two fnuz formats take
  ~15 s each in the exact model and run under the ``slow`` marker, the fp6 and
  fp4 ones (4096 and 256 pairs) always;
- the torch kernels against the oracle (level K on this machine's CPU) for all
  seven formats of at most 8 bits, in both modes;
- the torch kernels on uint8 bit-pattern tensors broadcast and in a matrix
  product (fp6, fp4: no torch dtype, docs/spec.md D1.10).

The check functions take the implementation under test as a parameter, so the
planted-bug gallery (``tests/gallery/formats_bugs.py``) shows that each catches a
wrong kernel.  Triton: ``tests/triton/test_formats_triton.py``.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np
import pytest
import torch

from revcheck import bits, formats
from revcheck.exact import pam as exact
from revcheck.formats import FloatFormat
from revcheck.kernels import pam as kernels
from revcheck.modes import MODES
from revcheck.oracle import pam as oracle
from revcheck.testing import assert_bit_exact

BINARY_OPS = ("pam_mul", "pam_div", "pam_mul_grad")
UNARY_OPS = ("pa_log2", "pa_exp2")
SMALL_FORMATS = [f for f in map(formats.get, formats.names()) if f.width <= 8]
# The formats with an encoding the first six lack: no -0 (fnuz) or no NaN (fp6, fp4).
NEW_FORMATS = [f for f in SMALL_FORMATS if not (f.has_negative_zero and f.has_nan)]
# The exact model needs ~2.5 s per op and mode on 2**16 pairs: the 8-bit ones are slow.
EXACT_FAST = [f for f in NEW_FORMATS if f.width < 8]
EXACT_SLOW = [f for f in NEW_FORMATS if f.width == 8]


def every_pattern(fmt: FloatFormat) -> np.ndarray[Any, Any]:
    return np.arange(1 << fmt.width, dtype=np.uint64).astype(fmt.uint_dtype)


def every_pair(fmt: FloatFormat) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """(a, b) over all 2**(2·width) pairs, a major."""
    patterns = every_pattern(fmt)
    return np.repeat(patterns, patterns.size), np.tile(patterns, patterns.size)


def tensor_keywords(fmt: FloatFormat) -> dict[str, Any]:
    """``fmt=`` for the formats that travel as uint8 bit patterns (docs/spec.md D1.10)."""
    return {} if fmt.torch_dtype_name else {"fmt": fmt}


def kernels_agree_with_oracle(
    implementation: ModuleType | Any,
    fmt: FloatFormat,
    mode: str,
    pairs: tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]],
    singles: np.ndarray[Any, Any],
    device: str = "cpu",
) -> None:
    """Each op of ``implementation`` (a module of torch kernels) on ``pairs`` / ``singles`` vs the oracle.

    Raises :class:`revcheck.testing.BitMismatchError` (NaN bits compared too) on the first op that differs.
    """
    __tracebackhide__ = True
    a, b = pairs
    keywords = tensor_keywords(fmt)
    ta, tb = bits.to_torch(a, fmt, device), bits.to_torch(b, fmt, device)
    for op in BINARY_OPS:
        actual = getattr(implementation, op)(ta, tb, mode=mode, **keywords)
        expected = getattr(oracle, op)(a, b, fmt, mode=mode)
        assert_bit_exact(actual, expected, fmt=fmt, nan="bits", msg=f"{op} [{fmt.name}, {mode}] vs oracle")
    tx = bits.to_torch(singles, fmt, device)
    for op in UNARY_OPS:
        actual = getattr(implementation, op)(tx, mode=mode, **keywords)
        expected = getattr(oracle, op)(singles, fmt, mode=mode)
        assert_bit_exact(actual, expected, fmt=fmt, nan="bits", msg=f"{op} [{fmt.name}, {mode}] vs oracle")


def kernels_agree_exhaustively(implementation: ModuleType | Any, fmt: FloatFormat, mode: str) -> None:
    """Every pair and every single input of ``fmt``."""
    __tracebackhide__ = True
    kernels_agree_with_oracle(implementation, fmt, mode, every_pair(fmt), every_pattern(fmt))


def oracle_equals_exact_model(fmt: FloatFormat, mode: str) -> None:
    """The oracle and the exact model on every input, bit for bit (NaN bits too)."""
    __tracebackhide__ = True
    a, b = every_pair(fmt)
    pairs = list(zip(a.tolist(), b.tolist(), strict=True))
    for op in BINARY_OPS:
        model = getattr(exact, op)
        expected = np.array([model(x, y, fmt, mode) for x, y in pairs], dtype=fmt.uint_dtype)
        actual = getattr(oracle, op)(a, b, fmt, mode=mode)
        assert_bit_exact(
            actual, expected, fmt=fmt, nan="bits", msg=f"oracle {op} vs exact [{fmt.name}, {mode}]"
        )
    singles = every_pattern(fmt)
    for op in UNARY_OPS:
        model = getattr(exact, op)
        expected = np.array([model(x, fmt, mode) for x in singles.tolist()], dtype=fmt.uint_dtype)
        actual = getattr(oracle, op)(singles, fmt, mode=mode)
        assert_bit_exact(
            actual, expected, fmt=fmt, nan="bits", msg=f"oracle {op} vs exact [{fmt.name}, {mode}]"
        )


by_format = pytest.mark.parametrize("fmt", SMALL_FORMATS, ids=lambda f: f.name)
by_mode = pytest.mark.parametrize("mode", MODES)


@by_mode
@by_format
def test_torch_kernels_equal_the_oracle_on_every_input(fmt: FloatFormat, mode: str) -> None:
    kernels_agree_exhaustively(kernels, fmt, mode)


@by_mode
@pytest.mark.parametrize("fmt", EXACT_FAST, ids=lambda f: f.name)
def test_oracle_equals_exact_model_on_every_input(fmt: FloatFormat, mode: str) -> None:
    oracle_equals_exact_model(fmt, mode)


@pytest.mark.slow
@by_mode
@pytest.mark.parametrize("fmt", EXACT_SLOW, ids=lambda f: f.name)
def test_oracle_equals_exact_model_on_every_input_8_bit(fmt: FloatFormat, mode: str) -> None:
    oracle_equals_exact_model(fmt, mode)


# ---- bit-pattern tensors: broadcasting and the matrix product ---------------------------------


PATTERN_FORMATS = [f for f in SMALL_FORMATS if f.torch_dtype_name is None]


@pytest.mark.parametrize("fmt", PATTERN_FORMATS, ids=lambda f: f.name)
@pytest.mark.parametrize("op", BINARY_OPS)
def test_uint8_pattern_tensors_broadcast_like_the_oracle(op: str, fmt: FloatFormat) -> None:
    column = every_pattern(fmt).reshape(-1, 1)
    row = every_pattern(fmt)[::3]
    actual = getattr(kernels, op)(bits.to_torch(column, fmt), bits.to_torch(row, fmt), fmt=fmt)
    assert actual.dtype == torch.uint8 and tuple(actual.shape) == (column.size, row.size)
    assert_bit_exact(actual, getattr(oracle, op)(column, row, fmt), fmt=fmt, nan="bits")


@by_mode
@pytest.mark.parametrize("fmt", NEW_FORMATS, ids=lambda f: f.name)
def test_matmul_of_every_pattern_equals_the_oracle_and_the_exact_model(fmt: FloatFormat, mode: str) -> None:
    """A (2, 2**w) by (2**w, 3) product: every pattern of the format enters the sums (fp32 accumulator).

    Row 0 holds every pattern; row 1 the same with NaN (fnuz: 0x80) replaced by +0,
    so that some sums are numbers.
    """
    rng = np.random.default_rng(14)
    patterns = every_pattern(fmt)
    numbers = np.where(bits.is_nan(patterns, fmt), 0, patterns).astype(fmt.uint_dtype)
    A = np.stack([patterns, rng.permutation(numbers)])
    B = np.stack([rng.permutation(numbers) for _ in range(3)], axis=1)
    expected = oracle.pam_matmul(A, B, fmt, mode=mode)
    actual = kernels.pam_matmul(
        bits.to_torch(A, fmt), bits.to_torch(B, fmt), mode=mode, **tensor_keywords(fmt)
    )
    acc = formats.accumulator_format(fmt)
    assert_bit_exact(actual, expected, fmt=acc, nan="bits", msg=f"torch pam_matmul [{fmt.name}, {mode}]")
    model = np.array(exact.pam_matmul(A.tolist(), B.tolist(), fmt, mode), dtype=acc.uint_dtype)
    assert_bit_exact(expected, model, fmt=acc, nan="bits", msg=f"oracle vs exact pam_matmul [{fmt.name}]")
    assert not bits.is_nan(expected[1], acc).any()
