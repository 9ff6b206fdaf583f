"""Op specs of the piecewise-affine family: elementwise PAM ops and the PAM matrix product."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import numpy as np
from hypothesis import strategies as st

from revcheck import bits as _bits
from revcheck import enumeration
from revcheck import formats as _formats
from revcheck import strategies as rst
from revcheck.audit import tensors as tn
from revcheck.audit import values as vl
from revcheck.audit.report import Finding, Value
from revcheck.audit.spec import Candidate, Case, ExhaustivePlan, OpSpec, Outputs
from revcheck.formats import FloatFormat
from revcheck.modes import MODES
from revcheck.oracle import pam as oracle

__all__ = ["IMPLEMENTATIONS", "elementwise_spec", "matmul_spec"]

ALL_FORMATS = _formats.names()
# revcheck's own implementations of the elementwise PAM ops: each module has a function of the op's name.
IMPLEMENTATIONS = {"torch": "revcheck.kernels.pam", "triton": "revcheck.kernels.triton_pam"}
# Elements per Hypothesis example: one kernel call checks a whole batch, and the
# counterexample is then narrowed to the first wrong element.
MAX_BATCH = 16
# Largest input space enumerated by default (8-bit binary ops, 16-bit unary ops).
DEFAULT_EXHAUSTIVE_LIMIT = 1 << 16
# Largest input space enumerated at all, with exhaustive=True (16-bit binary, 32-bit unary).
MAX_EXHAUSTIVE = 1 << 32
# log2 of the inputs per exhaustive chunk.
CHUNK_BITS = 22


# ---- elementwise ops --------------------------------------------------------------------------


def elementwise_spec(
    name: str,
    bit_oracle: Callable[..., np.ndarray[Any, Any]],
    arg_names: tuple[str, ...],
    summary: str,
    *,
    exponent_rule: int = 0,
) -> OpSpec:
    """The spec of an elementwise op whose oracle is ``bit_oracle(*bit_arrays, fmt, mode=...)``.

    ``exponent_rule`` is +1 for ops whose result exponent is about Ea + Eb (multiply), -1 for
    Ea - Eb (divide), 0 otherwise; for the first two, some batches pair operands so that the
    result lands on the overflow and underflow boundaries, as TestFloat does.  The op's
    implementations are the functions called ``name`` in the modules of :data:`IMPLEMENTATIONS`.
    """
    args = ", ".join(arg_names)
    return OpSpec(
        name=name,
        signature=f"candidate({args}[, *, mode]) -> Tensor (same dtype, shape and device as {arg_names[0]})",
        summary=summary,
        formats=ALL_FORMATS,
        modes=MODES,
        strategy=partial(_elementwise_strategy, arg_names, exponent_rule),
        call=partial(_elementwise_call, arg_names),
        oracle=partial(_elementwise_oracle, bit_oracle, arg_names),
        compare=partial(_elementwise_compare, arg_names),
        narrow=_narrow_elementwise,
        sample=partial(_elementwise_sample, arg_names),
        exhaustive=partial(_elementwise_exhaustive, arg_names),
        inputs=arg_names,
        bit_oracle=bit_oracle,
        implementations={impl: f"{module}:{name}" for impl, module in IMPLEMENTATIONS.items()},
    )


def _elementwise_strategy(
    arg_names: tuple[str, ...], exponent_rule: int, fmt: FloatFormat
) -> st.SearchStrategy[Case]:
    # One (batch, arity) array split into columns: a single strategy object, built once, keeps drawing cheap.
    shapes = st.integers(1, MAX_BATCH).map(lambda size: (size, len(arg_names)))
    columns = rst.bit_arrays(fmt, shapes).map(
        lambda table: {name: np.ascontiguousarray(table[:, i]) for i, name in enumerate(arg_names)}
    )
    if not exponent_rule:
        return columns
    pairs = st.lists(_boundary_pair(fmt, exponent_rule), min_size=1, max_size=MAX_BATCH).map(
        lambda rows: {
            name: np.array([row[i] for row in rows], dtype=fmt.uint_dtype) for i, name in enumerate(arg_names)
        }
    )
    return st.one_of(columns, pairs)


def _boundary_pair(fmt: FloatFormat, exponent_rule: int) -> st.SearchStrategy[tuple[int, int]]:
    """Normal (a, b) whose result exponent Ea ± Eb is next to (or far beyond) overflow and underflow."""
    targets = [fmt.emax - 1, fmt.emax, fmt.emax + 1, fmt.emin - 1, fmt.emin, fmt.emin + 1]
    targets += [fmt.emin - fmt.mantissa_bits + delta for delta in (-2, -1, 0, 1)]
    # Far outside the range too: there a fast path's integer sum itself overflows its type.
    targets += [2 * fmt.emax, 2 * fmt.emax - 1, 2 * fmt.emin - fmt.mantissa_bits]

    def build(a: int, target: int, fraction: int, negative: bool) -> tuple[int, int]:
        exponent_a = ((a & fmt.magnitude_mask) >> fmt.mantissa_bits) - fmt.bias
        # Move Ea where some normal Eb reaches the target: Eb = rule * (target - Ea) in [emin, emax].
        low, high = sorted((target - exponent_rule * fmt.emin, target - exponent_rule * fmt.emax))
        exponent_a = min(max(exponent_a, low, fmt.emin), high, fmt.emax)
        a = (a & ~fmt.exponent_mask) | (exponent_a + fmt.bias) << fmt.mantissa_bits
        a = (a & fmt.sign_mask) | min(a & fmt.magnitude_mask, fmt.max_finite)
        exponent_b = exponent_rule * (target - exponent_a)
        biased = min(max(exponent_b + fmt.bias, 1), fmt.emax + fmt.bias)
        magnitude = min(biased << fmt.mantissa_bits | fraction, fmt.max_finite)
        return a, magnitude | (fmt.sign_mask if negative else 0)

    return st.builds(
        build,
        rst.bit_patterns(fmt, classes=("normal",)),
        st.sampled_from(list(dict.fromkeys(targets))),
        st.integers(0, fmt.mantissa_mask),
        st.booleans(),
    )


def _elementwise_call(
    arg_names: tuple[str, ...],
    candidate: Candidate,
    case: Case,
    fmt: FloatFormat,
    mode: str | None,
    device: str,
) -> Outputs:
    tensors = [tn.to_tensor(case[name], fmt, device) for name in arg_names]
    keywords: dict[str, object] = {} if mode is None else {"mode": mode}
    if fmt.torch_dtype_name is None:  # uint8 bit patterns: the candidate is told their format
        keywords["fmt"] = fmt.name
    result = candidate(*tensors, **keywords)
    return {"result": tn.output_bits(result, fmt, case[arg_names[0]].shape, "the result")}


def _elementwise_oracle(
    bit_oracle: Callable[..., np.ndarray[Any, Any]],
    arg_names: tuple[str, ...],
    case: Case,
    fmt: FloatFormat,
    mode: str | None,
) -> Outputs:
    return {"result": np.asarray(bit_oracle(*(case[a] for a in arg_names), fmt, mode=mode or "ieee"))}


def _elementwise_compare(
    arg_names: tuple[str, ...],
    case: Case,
    expected: Outputs,
    actual: Outputs,
    fmt: FloatFormat,
    mode: str | None,
) -> Finding | None:
    index = vl.first_float_mismatch(expected["result"], actual["result"], fmt)
    if index is None:
        return None
    inputs = tuple(vl.float_value(name, int(case[name][index]), fmt) for name in arg_names)
    want, got = int(expected["result"][index]), int(actual["result"][index])
    return Finding(
        index=index,
        inputs=inputs,
        expected=(vl.float_value("result", want, fmt),),
        actual=(vl.float_value("result", got, fmt),),
        labels=tuple(vl.label(int(case[name][index]), fmt) for name in arg_names),
        ulp_distance=vl.ulp(want, got, fmt),
    )


def _narrow_elementwise(case: Case, index: tuple[int, ...]) -> Case:
    return {name: value[index][np.newaxis] for name, value in case.items()}


def _elementwise_sample(arg_names: tuple[str, ...], fmt: FloatFormat, rng: np.random.Generator) -> Case:
    return {
        name: rng.integers(0, 1 << fmt.width, size=4096, dtype=np.uint64).astype(fmt.uint_dtype)
        for name in arg_names
    }


def _elementwise_exhaustive(arg_names: tuple[str, ...], fmt: FloatFormat) -> ExhaustivePlan | None:
    size = 1 << enumeration.input_bits(fmt, len(arg_names))
    if size > MAX_EXHAUSTIVE:
        return None
    return ExhaustivePlan(
        size=size,
        by_default=size <= DEFAULT_EXHAUSTIVE_LIMIT,
        chunks=partial(_all_inputs, arg_names, fmt),
    )


def _all_inputs(arg_names: tuple[str, ...], fmt: FloatFormat) -> Iterator[Case]:
    chunk_bits = enumeration.chunk_bits_for(fmt, len(arg_names), CHUNK_BITS)
    for operands in enumeration.chunks(fmt, len(arg_names), chunk_bits):
        yield dict(zip(arg_names, operands, strict=True))


# ---- matrix product ---------------------------------------------------------------------------


def matmul_spec(*, any_order: bool) -> OpSpec:
    """``pam_matmul`` (sequential order, bit-exact) or ``pam_matmul_any_order`` (within the bound)."""
    if any_order:
        name = "pam_matmul_any_order"
        summary = (
            "PAM matrix product summed in any order: every element must lie within the oracle's "
            "rigorous error bound around the exact sum of the PAM products (no bit-exactness claim)"
        )
    else:
        name = "pam_matmul"
        summary = (
            "PAM matrix product: products in the accumulator format (fp32, fp64 for fp64), "
            "summed sequentially over k from +0.0; bit-exact"
        )
    return OpSpec(
        name=name,
        signature="candidate(A (M, K), B (K, N)[, *, mode]) -> Tensor (M, N) in the accumulator dtype",
        summary=summary,
        formats=ALL_FORMATS,
        modes=MODES,
        strategy=_matmul_strategy,
        call=_matmul_call,
        oracle=_matmul_bound_oracle if any_order else _matmul_oracle,
        compare=_matmul_bound_compare if any_order else _matmul_compare,
        narrow=_narrow_matmul,
        sample=_matmul_sample,
        exhaustive=lambda fmt: None,
        inputs=("A", "B"),
    )


def _matmul_strategy(fmt: FloatFormat) -> st.SearchStrategy[Case]:
    # A and B are cut from one drawn (K, M + N) array: one strategy object, and shrinking acts on both.
    def split(table: np.ndarray[Any, Any], m: int) -> Case:
        return {"A": np.ascontiguousarray(table[:, :m].T), "B": np.ascontiguousarray(table[:, m:])}

    shapes = st.tuples(st.integers(1, 24), st.integers(2, 8))
    structured = st.tuples(rst.bit_arrays(fmt, shapes), st.integers(1, 4)).map(
        lambda pair: split(pair[0], min(pair[1], pair[0].shape[1] - 1))
    )
    # Values of similar size, where the order of a sum shows in its rounding (TestFloat-style values
    # span so many binades that one term usually dominates every sum).
    similar = st.integers(0, 2**32 - 1).map(lambda seed: _similar_matrices(fmt, np.random.default_rng(seed)))
    return st.one_of(structured, similar)


def _similar_matrices(fmt: FloatFormat, rng: np.random.Generator) -> Case:
    m, k, n = (int(v) for v in rng.integers(1, [5, 25, 5], endpoint=True))
    return {"A": _moderate_values(fmt, rng, (m, k)), "B": _moderate_values(fmt, rng, (k, n))}


def _moderate_values(
    fmt: FloatFormat, rng: np.random.Generator, shape: tuple[int, int]
) -> np.ndarray[Any, Any]:
    """Random normal values within a few binades of 1, all significand bits random."""
    exponents = np.clip(rng.integers(-4, 5, size=shape) + fmt.bias, 1, fmt.max_biased_exponent - 1)
    mantissas = rng.integers(0, 1 << fmt.mantissa_bits, size=shape, dtype=np.uint64)
    signs = rng.integers(0, 2, size=shape, dtype=np.uint64)
    patterns = (signs << np.uint64(fmt.width - 1)) | (
        exponents.astype(np.uint64) << np.uint64(fmt.mantissa_bits)
    )
    patterns = np.minimum(
        patterns | mantissas, np.uint64(fmt.max_finite) | (signs << np.uint64(fmt.width - 1))
    )
    return patterns.astype(fmt.uint_dtype)


def _matmul_call(
    candidate: Candidate, case: Case, fmt: FloatFormat, mode: str | None, device: str
) -> Outputs:
    keywords: dict[str, object] = {} if mode is None else {"mode": mode}
    if fmt.torch_dtype_name is None:  # uint8 bit patterns: the candidate is told their format
        keywords["fmt"] = fmt.name
    result = candidate(tn.to_tensor(case["A"], fmt, device), tn.to_tensor(case["B"], fmt, device), **keywords)
    shape = (case["A"].shape[0], case["B"].shape[1])
    accumulator = oracle.accumulator_format(fmt)
    return {"C": tn.output_bits(result, accumulator, shape, "the product")}


def _matmul_oracle(case: Case, fmt: FloatFormat, mode: str | None) -> Outputs:
    return {
        "C": np.asarray(oracle.pam_matmul(case["A"], case["B"], fmt, order="sequential", mode=mode or "ieee"))
    }


def _matmul_bound_oracle(case: Case, fmt: FloatFormat, mode: str | None) -> Outputs:
    # Nothing to precompute: the comparison asks the oracle whether the candidate's result is in bounds.
    return {}


def _matmul_inputs(case: Case, index: tuple[int, ...], fmt: FloatFormat) -> tuple[Any, ...]:
    row, column = index
    return (
        vl.array_value(f"A[{row}, :]", case["A"][row], fmt),
        vl.array_value(f"B[:, {column}]", case["B"][:, column], fmt),
    )


def _matmul_labels(case: Case, index: tuple[int, ...], fmt: FloatFormat) -> tuple[str, ...]:
    row, column = index
    involved = np.concatenate([case["A"][row], case["B"][:, column]])
    labels = sorted({vl.label(int(b), fmt) for b in involved})
    return (*labels, f"K={case['A'].shape[1]}")


def _matmul_compare(
    case: Case, expected: Outputs, actual: Outputs, fmt: FloatFormat, mode: str | None
) -> Finding | None:
    accumulator = oracle.accumulator_format(fmt)
    index = vl.first_float_mismatch(expected["C"], actual["C"], accumulator)
    if index is None:
        return None
    want, got = int(expected["C"][index]), int(actual["C"][index])
    return Finding(
        index=index,
        inputs=_matmul_inputs(case, index, fmt),
        expected=(vl.float_value(f"C[{index[0]}, {index[1]}]", want, accumulator),),
        actual=(vl.float_value(f"C[{index[0]}, {index[1]}]", got, accumulator),),
        labels=_matmul_labels(case, index, fmt),
        ulp_distance=vl.ulp(want, got, accumulator),
    )


def _matmul_bound_compare(
    case: Case, expected: Outputs, actual: Outputs, fmt: FloatFormat, mode: str | None
) -> Finding | None:
    accumulator = oracle.accumulator_format(fmt)
    inside = np.asarray(oracle.within_bound(actual["C"], case["A"], case["B"], fmt, mode=mode or "ieee"))
    if inside.all():
        return None
    index = tuple(int(i) for i in np.unravel_index(int(np.argmin(inside)), inside.shape))
    got = int(actual["C"][index])
    exact, bound = oracle.pam_matmul_bound(case["A"], case["B"], fmt, mode=mode or "ieee")
    want_text = f"within {_scalar_text(bound, index)} of the exact sum {_scalar_text(exact, index)}"
    return Finding(
        index=index,
        inputs=_matmul_inputs(case, index, fmt),
        expected=(Value(f"C[{index[0]}, {index[1]}]", want_text, None, accumulator.name),),
        actual=(vl.float_value(f"C[{index[0]}, {index[1]}]", got, accumulator),),
        labels=_matmul_labels(case, index, fmt),
    )


def _scalar_text(values: Any, index: tuple[int, ...]) -> str:
    try:
        element = np.asarray(values, dtype=object)[index]
    except (IndexError, TypeError, ValueError):
        return str(values)
    try:
        return _bits.decimal_text(element)
    except (TypeError, ValueError):
        return str(element)


def _narrow_matmul(case: Case, index: tuple[int, ...]) -> Case:
    row, column = index
    return {"A": case["A"][row : row + 1, :], "B": case["B"][:, column : column + 1]}


def _matmul_sample(fmt: FloatFormat, rng: np.random.Generator) -> Case:
    return {"A": _moderate_values(fmt, rng, (8, 256)), "B": _moderate_values(fmt, rng, (256, 8))}
