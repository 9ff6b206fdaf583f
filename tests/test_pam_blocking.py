"""The blocked fast paths of ⊡ and ⊘ (oracle and torch kernel) at their block boundaries.

Both layers prove, block by block (``_FAST_BLOCK`` elements), that every operand and result is
normal before they apply the integer identity.  A blocking bug (a block left unproved, an
off-by-one at a boundary, a partial last block, a reshape) shows as a wrong element near a
boundary, so the sizes straddle the boundaries and one irregular value is planted at a time in
the first block, on both sides of a boundary and in the last element.

Levels: O (the blocked oracle equals the unblocked oracle, run on pieces shorter than one block,
which the exhaustive fp8 tests cover) and K on the CPU (the torch kernel equals the oracle).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch

from revcheck import bits, formats
from revcheck.kernels import pam as kernels
from revcheck.oracle import pam as oracle
from revcheck.testing import assert_bit_exact

BLOCK = oracle._FAST_BLOCK
assert kernels._FAST_BLOCK == BLOCK, "the tests below assume both layers block alike"

FORMATS = ["fp32", "bf16", "fp16", "fp8_e4m3fn"]
OPS: dict[str, tuple[Callable[..., Any], Callable[..., Any]]] = {
    "pam_mul": (oracle.pam_mul, kernels.pam_mul),
    "pam_div": (oracle.pam_div, kernels.pam_div),
}
SIZES = [BLOCK - 1, BLOCK, BLOCK + 1, 2 * BLOCK + 3]
LONG = 2 * BLOCK + 3
POSITIONS = {"first": 0, "end of block 0": BLOCK - 1, "start of block 1": BLOCK, "last": LONG - 1}


def regular_operands(fmt: formats.FloatFormat, shape: tuple[int, ...], seed: int) -> list[np.ndarray]:
    """Two arrays of patterns of magnitudes in [0.5, 2) with random signs: every ⊡ and ⊘ is normal."""
    rng = np.random.default_rng(seed)
    dtype = bits.torch_dtype(fmt)
    operands = []
    for _ in range(2):
        values = rng.uniform(0.5, 2.0, shape) * rng.choice([-1.0, 1.0], shape)
        operands.append(bits.to_bits(torch.from_numpy(values).to(dtype)))
    return operands


def irregular_values(fmt: formats.FloatFormat) -> dict[str, int]:
    """One pattern per way the range proof must fail (or take the zeros path), by name."""
    values = {
        "+0": 0,
        "-0": fmt.sign_mask,
        "subnormal": 1,
        "max finite (the result overflows)": fmt.max_finite,
        "min normal (the result underflows)": fmt.min_normal,
        "nan": fmt.canonical_nan,
    }
    if fmt.has_inf:
        values["inf"] = fmt.exponent_mask
    # Negative patterns are the largest unsigned integers, the smallest signed ones: a range proof
    # that reads the patterns in one order only misses a negative (or a positive) extreme.
    values["negative nan"] = fmt.sign_mask | fmt.canonical_nan
    return values


def unblocked(op: Callable[..., Any], a: np.ndarray, b: np.ndarray, fmt: str, mode: str) -> np.ndarray:
    """The oracle on pieces shorter than one block: its unblocked path, the reference here."""
    piece = BLOCK // 4 + 7
    flat_a, flat_b = a.reshape(-1), b.reshape(-1)
    parts = [
        op(flat_a[i : i + piece], flat_b[i : i + piece], fmt, mode=mode) for i in range(0, flat_a.size, piece)
    ]
    return np.concatenate(parts).reshape(a.shape)


def check_both_layers(
    op_name: str, a: np.ndarray, b: np.ndarray, fmt: formats.FloatFormat, mode: str
) -> None:
    __tracebackhide__ = True
    oracle_op, kernel_op = OPS[op_name]
    expected = unblocked(oracle_op, a, b, fmt.name, mode)
    assert_bit_exact(oracle_op(a, b, fmt.name, mode=mode), expected, fmt=fmt, msg=f"oracle {op_name}")
    actual = kernel_op(bits.to_torch(a, fmt), bits.to_torch(b, fmt), mode=mode)
    assert_bit_exact(actual, expected, fmt=fmt, msg=f"kernel {op_name}")


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("fmt_name", FORMATS)
@pytest.mark.parametrize("op_name", OPS)
def test_regular_operands_across_block_boundaries(op_name: str, fmt_name: str, size: int) -> None:
    fmt = formats.get(fmt_name)
    a, b = regular_operands(fmt, (size,), seed=size)
    check_both_layers(op_name, a, b, fmt, "ieee")


@pytest.mark.parametrize("fmt_name", FORMATS)
@pytest.mark.parametrize("op_name", OPS)
def test_regular_operands_of_two_dimensions(op_name: str, fmt_name: str) -> None:
    fmt = formats.get(fmt_name)
    a, b = regular_operands(fmt, (3, BLOCK // 2 + 5), seed=1)
    check_both_layers(op_name, a, b, fmt, "ieee")


def _extreme_partner(op_name: str, value_name: str, operand: int, fmt: formats.FloatFormat) -> int | None:
    """The partner that takes an extreme normal out of the normal range (None: any partner does)."""
    if not value_name.startswith(("max finite", "min normal")):
        return None
    grows = value_name.startswith("max finite")
    if op_name == "pam_div" and operand == 1:
        # A divisor at max finite sends 0.5 below the normals; one at min normal sends 8 above them
        # (e4m3fn: 8 · 2**6 = 512 > 448).
        factor = 0.5 if grows else 8.0
    else:
        # ⊡ with either operand: 2 · max finite, 0.5 · min normal; ⊘ with its dividend: ÷ 0.5, ÷ 2.
        factor = 2.0 if grows == (op_name == "pam_mul") else 0.5
    return int(bits.to_bits(torch.tensor([factor]).to(bits.torch_dtype(fmt)))[0])


def planted_operands(
    op_name: str, fmt: formats.FloatFormat, index: int
) -> list[tuple[str, int, np.ndarray, np.ndarray]]:
    """(value name, operand, a, b) for each irregular value planted at ``index`` of either operand."""
    regular = regular_operands(fmt, (LONG,), seed=index)
    cases = []
    for value_name, pattern in irregular_values(fmt).items():
        for operand in (0, 1):
            planted = [x.copy() for x in regular]
            planted[operand][index] = pattern
            partner = _extreme_partner(op_name, value_name, operand, fmt)
            if partner is not None:
                planted[1 - operand][index] = partner
            cases.append((value_name, operand, planted[0], planted[1]))
    return cases


@pytest.mark.parametrize("position", POSITIONS)
@pytest.mark.parametrize("fmt_name", ["fp32", "bf16", "fp8_e4m3fn"])
@pytest.mark.parametrize("op_name", OPS)
def test_one_irregular_value_in_one_block_oracle(op_name: str, fmt_name: str, position: str) -> None:
    fmt = formats.get(fmt_name)
    oracle_op = OPS[op_name][0]
    for value_name, operand, a, b in planted_operands(op_name, fmt, POSITIONS[position]):
        for mode in ("ieee", "ftz"):
            expected = unblocked(oracle_op, a, b, fmt.name, mode)
            msg = f"oracle {op_name} {mode}, {value_name} in operand {operand}"
            assert_bit_exact(oracle_op(a, b, fmt.name, mode=mode), expected, fmt=fmt, msg=msg)


@pytest.mark.parametrize("position", POSITIONS)
@pytest.mark.parametrize("fmt_name", ["fp32", "bf16", "fp8_e4m3fn"])
@pytest.mark.parametrize("op_name", OPS)
def test_one_irregular_value_in_one_block_ends_the_kernel_fast_path(
    op_name: str, fmt_name: str, position: str
) -> None:
    """The kernel's blocked path declines (None) for any irregular value in any block, except zeros
    in ⊡, which it answers exactly; declining sends the whole tensor to the general path, which
    the exhaustive suites cover (one end-to-end case per op follows)."""
    fmt = formats.get(fmt_name)
    oracle_op = OPS[op_name][0]
    for value_name, operand, a, b in planted_operands(op_name, fmt, POSITIONS[position]):
        fast = kernels._affine_regular(
            bits.to_torch(a, fmt), bits.to_torch(b, fmt), fmt, op_name == "pam_div"
        )
        msg = f"kernel {op_name}, {value_name} in operand {operand}"
        if op_name == "pam_mul" and value_name in ("+0", "-0"):
            assert fast is not None, msg + ": zeros should stay on the fast path"
            assert_bit_exact(fast, oracle_op(a, b, fmt.name), fmt=fmt, msg=msg)
        else:
            assert fast is None, msg + ": the range proof should have failed"


@pytest.mark.parametrize("op_name", OPS)
def test_subnormal_in_the_last_block_end_to_end(op_name: str) -> None:
    fmt = formats.get("fp32")
    (_, _, a, b) = next(case for case in planted_operands(op_name, fmt, LONG - 1) if case[0] == "subnormal")
    check_both_layers(op_name, a, b, fmt, "ieee")
