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
from revcheck.oracle import rounding

__all__ = [
    "IMPLEMENTATIONS",
    "elementwise_spec",
    "matmul_backward_approx_spec",
    "matmul_spec",
    "special_values",
]

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
    zero_is_exact_somewhere: bool = False,
    regions: Callable[[FloatFormat], list[int]] | None = None,
) -> OpSpec:
    """The spec of an elementwise op whose oracle is ``bit_oracle(*bit_arrays, fmt, mode=...)``.

    ``exponent_rule`` is +1 for ops whose result exponent is about Ea + Eb (multiply), -1 for
    Ea - Eb (divide), 0 otherwise; for the first two, some batches pair operands so that the
    result lands on the overflow and underflow boundaries, as TestFloat does.  The op's
    implementations are the functions called ``name`` in the modules of :data:`IMPLEMENTATIONS`.
    ``zero_is_exact_somewhere``: the op has exact zero results of nonzero finite inputs
    (``pa_log2(1) = +0``), so such a zero is no sign of underflow in a counterexample's labels.
    ``regions(fmt)``: input patterns of the op's own edges, counted first with the special values
    (:func:`_elementwise_examples`), so that each is reached in every format on its own.
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
        compare=partial(_elementwise_compare, arg_names, not zero_is_exact_somewhere),
        narrow=_narrow_elementwise,
        sample=partial(_elementwise_sample, arg_names),
        exhaustive=partial(_elementwise_exhaustive, arg_names),
        inputs=arg_names,
        bit_oracle=bit_oracle,
        implementations={impl: f"{module}:{name}" for impl, module in IMPLEMENTATIONS.items()},
        examples=partial(_elementwise_examples, arg_names, exponent_rule, regions),
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


def _boundary_targets(fmt: FloatFormat) -> list[int]:
    """Result exponents next to (and far beyond) overflow and underflow."""
    targets = [fmt.emax - 1, fmt.emax, fmt.emax + 1, fmt.emin - 1, fmt.emin, fmt.emin + 1]
    targets += [fmt.emin - fmt.mantissa_bits + delta for delta in (-2, -1, 0, 1)]
    # Far outside the range too: there a fast path's integer sum itself overflows its type.
    targets += [2 * fmt.emax, 2 * fmt.emax - 1, 2 * fmt.emin - fmt.mantissa_bits]
    return list(dict.fromkeys(targets))


def _build_boundary_pair(
    fmt: FloatFormat, exponent_rule: int, a: int, target: int, fraction: int, negative: bool
) -> tuple[int, int]:
    """Normal (a, b) with ``a``'s exponent moved so that some normal ``Eb`` gives ``Ea ± Eb = target``."""
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


def _boundary_pair(fmt: FloatFormat, exponent_rule: int) -> st.SearchStrategy[tuple[int, int]]:
    """Normal (a, b) whose result exponent Ea ± Eb is next to (or far beyond) overflow and underflow."""
    return st.builds(
        partial(_build_boundary_pair, fmt, exponent_rule),
        rst.bit_patterns(fmt, classes=("normal",)),
        st.sampled_from(_boundary_targets(fmt)),
        st.integers(0, fmt.mantissa_mask),
        st.booleans(),
    )


def _counted_boundary_pairs(fmt: FloatFormat, exponent_rule: int) -> list[tuple[int, int]]:
    """Every boundary target with a few significands of each operand (1.0, 1.5, all ones)."""
    half = 1 << (fmt.mantissa_bits - 1)
    significands = list(dict.fromkeys([0, half, fmt.mantissa_mask]))
    return [
        _build_boundary_pair(fmt, exponent_rule, fmt.one | a_fraction, target, b_fraction, negative)
        for target in _boundary_targets(fmt)
        for a_fraction in significands
        for b_fraction in significands
        for negative in (False, True)
    ]


def _values_near(fmt: FloatFormat, points: list[float], ulps: int) -> list[int]:
    """Patterns of each point (rounded to ``fmt``) and of the ``ulps`` patterns either side of it."""
    if fmt.torch_dtype_name is None:  # fp6, fp4: the oracle's cast (points are finite, D1.8 holds)
        from revcheck.oracle.rounding import convert

        centres = convert(_bits.to_bits(np.array(points, dtype=np.float64)), "fp64", fmt).astype(np.int64)
    else:
        import torch

        dtype = getattr(torch, fmt.torch_dtype_name)
        centres = _bits.to_bits(torch.tensor(points, dtype=torch.float64).to(dtype)).astype(np.int64)
    values = []
    for centre in centres.tolist():
        sign, magnitude = centre & fmt.sign_mask, centre & fmt.magnitude_mask
        for step in range(-ulps, ulps + 1):
            if 0 <= magnitude + step <= fmt.max_finite:
                values.append(sign | (magnitude + step))
    return values


def log2_region_values(fmt: FloatFormat) -> list[int]:
    """``pa_log2`` inputs its bugs hide behind: a few ULPs either side of 1 and of other powers of two
    (results with many leading zero bits, and E changing), of the largest finite and the smallest normal."""
    points = [1.0, 2.0, 0.5, -1.0, 2.0**fmt.emax, 2.0**fmt.emin, 2.0 ** (fmt.emin - fmt.mantissa_bits + 1)]
    return _values_near(fmt, points, 8)


def exp2_region_values(fmt: FloatFormat) -> list[int]:
    """``pa_exp2`` inputs around the edges of its result's range: results in the last binade above the
    underflow-to-zero threshold (``y`` in ``[emin - m - 1, emin - m)``), at the smallest normal, and
    next to overflow (``y`` in ``[emax, emax + 1)``), with fractions 0, tiny, 1/4, 1/2, 3/4, 1 - tiny."""
    m = fmt.mantissa_bits
    thresholds = [
        fmt.emin - m - 2,
        fmt.emin - m - 1,
        fmt.emin - m,
        fmt.emin - 1,
        fmt.emin,
        fmt.emax,
        fmt.emax + 1,
    ]
    fractions = [0.0, 2.0**-10, 0.25, 0.5, 0.75, 1 - 2.0**-10]
    return _values_near(fmt, [t + f for t in thresholds for f in fractions], 2)


def _elementwise_examples(
    arg_names: tuple[str, ...],
    exponent_rule: int,
    regions: Callable[[FloatFormat], list[int]] | None,
    fmt: FloatFormat,
) -> list[Case]:
    """Counted cases, run first under every seed, as one batch each.

    Unary ops: the special values (:func:`special_values`) and the op's own regions
    (:func:`log2_region_values`, :func:`exp2_region_values`), then every TestFloat level-1 case
    (:func:`revcheck.strategies.testfloat_cases`).  Binary ops: every pair of special values,
    (multiply, divide) the counted operand pairs whose result lands on the overflow and
    underflow edges, then every TestFloat level-1 pair (:func:`revcheck.strategies.testfloat_pairs`).
    Every class and row is thereby reached in every format on its own.
    """
    specials = special_values(fmt)
    own = regions(fmt) if regions is not None else []
    if len(arg_names) == 1:
        values = np.array(list(dict.fromkeys(specials + own)), dtype=fmt.uint_dtype)
        return [{arg_names[0]: values}, {arg_names[0]: rst.testfloat_cases(fmt).bits()}]
    table = np.array(specials, dtype=fmt.uint_dtype)
    first, second = (np.ascontiguousarray(v.reshape(-1)) for v in np.meshgrid(table, table, indexing="ij"))
    cases: list[Case] = [dict(zip(arg_names, (first, second), strict=True))]
    if exponent_rule:
        pairs = _counted_boundary_pairs(fmt, exponent_rule)
        cases.append(
            {
                name: np.array([pair[i] for pair in pairs], dtype=fmt.uint_dtype)
                for i, name in enumerate(arg_names)
            }
        )
    # TestFloat's level-1 pairs: every corner case of every exponent row against every other.
    cases.append(dict(zip(arg_names, rst.testfloat_pairs(fmt).bits(), strict=True)))
    return cases


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
    zero_means_underflow: bool,
    case: Case,
    expected: Outputs,
    actual: Outputs,
    fmt: FloatFormat,
    mode: str | None,
) -> Finding | None:
    index = vl.first_float_mismatch(expected["result"], actual["result"], fmt)
    if index is None:
        return None
    operands = [int(case[name][index]) for name in arg_names]
    inputs = tuple(vl.float_value(name, bits, fmt) for name, bits in zip(arg_names, operands, strict=True))
    want, got = int(expected["result"][index]), int(actual["result"][index])
    kinds = [vl.is_finite_nonzero(bits, fmt) for bits in operands]
    labels = [vl.label(bits, fmt) for bits in operands]
    labels += [
        tag
        for name, bits in zip(arg_names, operands, strict=True)
        for tag in vl.input_labels(name, bits, fmt)
    ]
    labels += vl.edge_labels(
        "result",
        want,
        fmt,
        from_finite=all(finite for finite, _ in kinds),
        from_nonzero=zero_means_underflow and all(nonzero for _, nonzero in kinds),
    )
    return Finding(
        index=index,
        inputs=inputs,
        expected=(vl.float_value("result", want, fmt),),
        actual=(vl.float_value("result", got, fmt),),
        labels=tuple(labels),
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
        examples=partial(_matmul_examples, LONG_REDUCTIONS[name]),
    )


# Reduction lengths at and around the blocking sizes of real kernels (vector lanes of 8 and 16,
# warps of 32, tiles of 256): every counted matmul case list visits each of them.
BLOCKING_EDGES = (1, 2, 7, 8, 15, 16, 31, 32, 33, 255, 256, 257)
# Long reductions, one counted case each (one row times one column).  The bound check is cheap at
# any K; the bit-exact check runs the oracle's sequential sum (about 0.4 ms per term), so it takes
# the shorter one.
LONG_REDUCTIONS = {"pam_matmul": (1024,), "pam_matmul_any_order": (1024, 4096)}
# The largest K the generated examples draw (log-uniformly), so that K > 32 is common.
MAX_DRAWN_K = 512


def special_values(fmt: FloatFormat) -> list[int]:
    """Patterns where PAM and its matmul break: ±0, ±1, 1.5, ±inf, NaN, subnormals, edges of the range.

    With 0.5 and 2.0 in the list, products of the list with itself reach the overflow edge
    (``max_finite ⊡ 2``) and the underflow edge (``min_normal ⊡ 0.5``) wherever the
    accumulator format lets a product overflow or be subnormal (docs/spec.md F2.10).
    """
    step = 1 << fmt.mantissa_bits
    half = 1 << (fmt.mantissa_bits - 1)
    sign = fmt.sign_mask
    values = [0, sign, fmt.one, sign | fmt.one, fmt.one | half, fmt.one - step, fmt.one + step]
    if fmt.inf is not None:
        values += [fmt.inf, sign | fmt.inf]
    if fmt.has_nan:  # fp6 and fp4 have none (docs/spec.md D1.7)
        values.append(fmt.canonical_nan)
    values += [fmt.min_subnormal, sign | fmt.max_subnormal]
    values += [fmt.min_normal, sign | fmt.min_normal, fmt.max_finite, sign | fmt.max_finite]
    values += [(fmt.emax + fmt.bias - 1) << fmt.mantissa_bits | half]  # 1.5 · 2^(emax-1): ⊡ 1.5 overflows
    return list(dict.fromkeys(values))


def _matmul_examples(long_reductions: tuple[int, ...], fmt: FloatFormat) -> list[Case]:
    """Counted matmul cases, run first under every seed: specials, blocking edges, long reductions.

    1. Every product of two special values (:func:`special_values`) at K = 1: ``A`` is the
       specials as a column, ``B`` as a row, so ``C[i, j] = +0 + s_i ⊡ s_j``.
    2. For each K of :data:`BLOCKING_EDGES`: values of similar size, with one special value per
       row of ``A`` (or, alternately, per column of ``B``) at a position that moves with K.
    3. For each K of ``long_reductions`` (:data:`LONG_REDUCTIONS`): one row of similar values
       times one column.
    """
    rng = np.random.default_rng(9)  # fixed: counted cases are the same in every run
    specials = np.array(special_values(fmt), dtype=fmt.uint_dtype)
    cases: list[Case] = [{"A": specials[:, np.newaxis].copy(), "B": specials[np.newaxis, :].copy()}]
    count = specials.size
    for position, k in enumerate(BLOCKING_EDGES):
        if position % 2 == 0:
            a, b = _moderate_values(fmt, rng, (count, k)), _moderate_values(fmt, rng, (k, 2))
            a[np.arange(count), (np.arange(count) * 7 + k // 2) % k] = specials
        else:
            a, b = _moderate_values(fmt, rng, (2, k)), _moderate_values(fmt, rng, (k, count))
            b[(np.arange(count) * 7 + k // 2) % k, np.arange(count)] = specials
        cases.append({"A": a, "B": b})
    for k in long_reductions:
        cases.append({"A": _moderate_values(fmt, rng, (1, k)), "B": _moderate_values(fmt, rng, (k, 1))})
    return cases


def _matmul_strategy(fmt: FloatFormat) -> st.SearchStrategy[Case]:
    # A and B are cut from one drawn (K, M + N) array: one strategy object, and shrinking acts on both.
    def split(table: np.ndarray[Any, Any], m: int) -> Case:
        return {"A": np.ascontiguousarray(table[:, :m].T), "B": np.ascontiguousarray(table[:, m:])}

    shapes = st.tuples(st.integers(1, 24), st.integers(2, 8))
    structured = st.tuples(rst.bit_arrays(fmt, shapes), st.integers(1, 4)).map(
        lambda pair: split(pair[0], min(pair[1], pair[0].shape[1] - 1))
    )
    # Values of similar size, where the order of a sum shows in its rounding (TestFloat-style values
    # span so many binades that one term usually dominates every sum); K up to MAX_DRAWN_K, and in
    # half of the draws a few special values sprinkled in.
    similar = st.integers(0, 2**32 - 1).map(lambda seed: _similar_matrices(fmt, np.random.default_rng(seed)))
    # Operand pairs whose products land on the accumulator's overflow and underflow edges.
    edges = st.lists(_boundary_pair(oracle.accumulator_format(fmt), 1), min_size=1, max_size=8).map(
        partial(_edge_matrices, fmt)
    )
    return st.one_of(structured, similar, edges)


def _edge_matrices(fmt: FloatFormat, pairs: list[tuple[int, int]]) -> Case:
    """``A (1, K)``, ``B (K, 1)`` from accumulator-format pairs, narrowed to ``fmt`` where they fit."""
    accumulator = oracle.accumulator_format(fmt)
    a = np.array([p[0] for p in pairs], dtype=accumulator.uint_dtype)
    b = np.array([p[1] for p in pairs], dtype=accumulator.uint_dtype)
    return {
        "A": _narrow_bits(a, accumulator, fmt)[np.newaxis, :],
        "B": _narrow_bits(b, accumulator, fmt)[:, None],
    }


def _narrow_bits(bits: np.ndarray[Any, Any], wide: FloatFormat, fmt: FloatFormat) -> np.ndarray[Any, Any]:
    """Patterns of ``wide`` rounded (RNE, saturating where ``fmt`` does) to ``fmt``."""
    if wide is fmt:
        return bits
    decoded = rounding.decode(bits, wide, "ieee")
    narrowed = rounding.round_to_format(
        decoded.negative,
        decoded.exponent,
        decoded.significand(wide),
        wide.mantissa_bits - fmt.mantissa_bits,
        fmt,
        "ieee",
    )
    narrowed = np.where(
        decoded.is_inf, rounding.special_bits(decoded.negative, fmt.overflow_magnitude, fmt), narrowed
    )
    return np.where(decoded.is_nan, fmt.uint_dtype.type(fmt.canonical_nan), narrowed).astype(fmt.uint_dtype)


def _similar_matrices(fmt: FloatFormat, rng: np.random.Generator) -> Case:
    k = int(np.exp(rng.uniform(0, np.log(MAX_DRAWN_K + 1))))
    m, n = (int(v) for v in rng.integers(1, [5, 5], endpoint=True))
    if k > 64:  # long reductions: few outputs, so that a case stays cheap for the oracle
        m, n = min(m, 2), min(n, 2)
    a, b = _moderate_values(fmt, rng, (m, k)), _moderate_values(fmt, rng, (k, n))
    if rng.integers(2):
        specials = np.array(special_values(fmt), dtype=fmt.uint_dtype)
        for target in (a, b):
            count = int(rng.integers(0, 3))
            flat = target.reshape(-1)
            flat[rng.integers(0, flat.size, size=count)] = rng.choice(specials, size=count)
    return {"A": a, "B": b}


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


def _matmul_labels(
    case: Case, index: tuple[int, ...], fmt: FloatFormat, mode: str | None, expected: int | None = None
) -> tuple[str, ...]:
    """Classes of the inputs involved, K, and magnitude labels (max finite, products at the range edges)."""
    row, column = index
    a_row, b_column = case["A"][row], case["B"][:, column]
    involved = np.concatenate([a_row, b_column])
    labels = sorted({vl.label(int(b), fmt) for b in involved})
    labels.append(f"K={case['A'].shape[1]}")
    for name, values in (("A", a_row), ("B", b_column)):
        if any(vl.input_labels(name, int(b), fmt) for b in values):
            labels.append(f"{name}: max finite")
    accumulator = oracle.accumulator_format(fmt)
    products = _row_products(a_row, b_column, fmt, mode)
    edges = set()
    for a, b, p in zip(a_row.tolist(), b_column.tolist(), products.tolist(), strict=True):
        finite_a, nonzero_a = vl.is_finite_nonzero(a, fmt)
        finite_b, nonzero_b = vl.is_finite_nonzero(b, fmt)
        edges.update(
            vl.edge_labels(
                "products",
                p,
                accumulator,
                from_finite=finite_a and finite_b,
                from_nonzero=nonzero_a and nonzero_b,
            )
        )
    labels += sorted(edges)
    if expected is not None:
        labels += vl.edge_labels(
            f"C[{row}, {column}]", expected, accumulator, from_finite=False, from_nonzero=False
        )
    return tuple(labels)


def _row_products(
    a_row: np.ndarray[Any, Any], b_column: np.ndarray[Any, Any], fmt: FloatFormat, mode: str | None
) -> np.ndarray[Any, Any]:
    """The K products ``A[i, k] ⊡ B[k, j]`` as the oracle forms them, in the accumulator format."""
    accumulator = oracle.accumulator_format(fmt)
    wide = [
        rounding.encode_exact(rounding.decode(v, fmt, mode or "ieee"), fmt, accumulator)
        for v in (a_row, b_column)
    ]
    return np.asarray(oracle.pam_mul(wide[0], wide[1], accumulator, mode=mode or "ieee"))


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
        labels=_matmul_labels(case, index, fmt, mode, want),
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
        labels=_matmul_labels(case, index, fmt, mode),
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


# ---- the approximate backward of the matrix product -------------------------------------------


def matmul_backward_approx_spec() -> OpSpec:
    """``pam_matmul_backward_approx``: the gradients of ``C = A ⊡@ B`` as ``PAMMatmul(backward="approx")``.

    Definition (docs/spec.md §2, "PAM matrix product"; :mod:`revcheck.nn.pam`): with ``acc`` the
    accumulator format of ``A``'s and ``B``'s format and ``G`` the upstream gradient (``acc``),

    * ``dA = G ⊡@ Bᵀ`` and ``dB = Aᵀ ⊡@ G``: ``A`` and ``B`` widened exactly to ``acc``, then the
      PAM matrix product in ``acc`` with the sequential order (over N for ``dA``, over the rows M
      for ``dB``) and the audited mode; in ``"ftz"`` the widened operands are flushed with the
      accumulator's subnormal range, as ``pam_matmul`` on ``acc`` tensors does;
    * each gradient then rounded once, to nearest even, to the format of ``A`` and ``B`` (what
      autograd requires); this conversion never flushes (as ``Tensor.to``), saturates in fp8_e4m3fn.
    """
    return OpSpec(
        name="pam_matmul_backward_approx",
        signature=(
            "candidate(A (M, K), B (K, N), G (M, N) in the accumulator dtype[, *, mode]) -> "
            "(dA (M, K), dB (K, N)) in the dtype of A and B"
        ),
        summary=(
            "approximate backward of the PAM matmul (PAMMatmul backward='approx'): dA = G ⊡@ Bᵀ, "
            "dB = Aᵀ ⊡@ G in the accumulator format, sequential order, rounded once to the input format"
        ),
        formats=ALL_FORMATS,
        modes=MODES,
        strategy=_backward_strategy,
        call=_backward_call,
        oracle=_backward_oracle,
        compare=_backward_compare,
        narrow=_narrow_backward,
        sample=_backward_sample,
        exhaustive=lambda fmt: None,
        inputs=("A", "B", "G"),
        examples=_backward_examples,
    )


def _with_gradient(fmt: FloatFormat, case: Case, gradient: np.ndarray[Any, Any]) -> Case:
    return {"A": case["A"], "B": case["B"], "G": gradient}


def _backward_strategy(fmt: FloatFormat) -> st.SearchStrategy[Case]:
    accumulator = oracle.accumulator_format(fmt)

    def add_gradient(case: Case) -> st.SearchStrategy[Case]:
        shape = (case["A"].shape[0], case["B"].shape[1])
        moderate = st.integers(0, 2**32 - 1).map(
            lambda seed: _moderate_values(accumulator, np.random.default_rng(seed), shape)
        )
        return st.one_of(rst.bit_arrays(accumulator, shape), moderate).map(partial(_with_gradient, fmt, case))

    return _matmul_strategy(fmt).flatmap(add_gradient)


def _backward_examples(fmt: FloatFormat) -> list[Case]:
    """The counted matmul cases (:func:`_matmul_examples`, long reductions left out), with a gradient
    of similar values; and every special value of the accumulator as a gradient at K = 1."""
    accumulator = oracle.accumulator_format(fmt)
    rng = np.random.default_rng(11)
    cases = []
    for case in _matmul_examples((), fmt):
        shape = (case["A"].shape[0], case["B"].shape[1])
        cases.append(_with_gradient(fmt, case, _moderate_values(accumulator, rng, shape)))
    specials = np.array(special_values(accumulator), dtype=accumulator.uint_dtype)
    ones = np.full((1, 1), fmt.one, dtype=fmt.uint_dtype)
    mixed = np.array(special_values(fmt), dtype=fmt.uint_dtype)
    cases.append(
        {"A": mixed[:, np.newaxis].copy(), "B": ones, "G": specials[: mixed.size, np.newaxis].copy()}
    )
    return cases


def _backward_call(
    candidate: Candidate, case: Case, fmt: FloatFormat, mode: str | None, device: str
) -> Outputs:
    accumulator = oracle.accumulator_format(fmt)
    keywords = {} if mode is None else {"mode": mode}
    result = candidate(
        tn.to_tensor(case["A"], fmt, device),
        tn.to_tensor(case["B"], fmt, device),
        tn.to_tensor(case["G"], accumulator, device),
        **keywords,
    )
    if not isinstance(result, (tuple, list)) or len(result) != 2:
        raise tn.BadOutput(f"the backward must return (dA, dB), got {type(result).__name__}")
    return {
        "dA": tn.output_bits(result[0], fmt, case["A"].shape, "dA"),
        "dB": tn.output_bits(result[1], fmt, case["B"].shape, "dB"),
    }


def _backward_oracle(case: Case, fmt: FloatFormat, mode: str | None) -> Outputs:
    accumulator = oracle.accumulator_format(fmt)
    a_wide, b_wide = (
        rounding.encode_exact(rounding.decode(case[name], fmt, "ieee"), fmt, accumulator)
        for name in ("A", "B")
    )
    chosen = mode or "ieee"
    grad_a = oracle.pam_matmul(case["G"], np.ascontiguousarray(b_wide.T), accumulator, mode=chosen)
    grad_b = oracle.pam_matmul(np.ascontiguousarray(a_wide.T), case["G"], accumulator, mode=chosen)
    return {"dA": _narrow_bits(grad_a, accumulator, fmt), "dB": _narrow_bits(grad_b, accumulator, fmt)}


def _backward_compare(
    case: Case, expected: Outputs, actual: Outputs, fmt: FloatFormat, mode: str | None
) -> Finding | None:
    accumulator = oracle.accumulator_format(fmt)
    for which, name in enumerate(("dA", "dB")):
        index = vl.first_float_mismatch(expected[name], actual[name], fmt)
        if index is None:
            continue
        row, column = index
        if name == "dA":  # dA[i, k] = Σ_n G[i, n] ⊡ B[k, n]
            inputs = (
                vl.array_value(f"G[{row}, :]", case["G"][row], accumulator),
                vl.array_value(f"B[{column}, :]", case["B"][column], fmt),
            )
            involved = [(case["G"][row], accumulator), (case["B"][column], fmt)]
        else:  # dB[k, j] = Σ_m A[m, k] ⊡ G[m, j]
            inputs = (
                vl.array_value(f"A[:, {row}]", case["A"][:, row], fmt),
                vl.array_value(f"G[:, {column}]", case["G"][:, column], accumulator),
            )
            involved = [(case["A"][:, row], fmt), (case["G"][:, column], accumulator)]
        want, got = int(expected[name][index]), int(actual[name][index])
        labels = sorted({vl.label(int(b), f) for values, f in involved for b in values})
        labels.append(name)
        labels += vl.edge_labels(f"{name}[{row}, {column}]", want, fmt, from_finite=False, from_nonzero=False)
        return Finding(
            index=(which, row, column),
            inputs=inputs,
            expected=(vl.float_value(f"{name}[{row}, {column}]", want, fmt),),
            actual=(vl.float_value(f"{name}[{row}, {column}]", got, fmt),),
            labels=tuple(labels),
            ulp_distance=vl.ulp(want, got, fmt),
        )
    return None


def _narrow_backward(case: Case, index: tuple[int, ...]) -> Case:
    which, row, column = index
    if which == 0:  # dA[row, column]: G's row and B's row `column`
        return {
            "A": case["A"][row : row + 1, column : column + 1],
            "B": case["B"][column : column + 1, :],
            "G": case["G"][row : row + 1, :],
        }
    return {  # dB[row, column]: A's column `row` and G's column
        "A": case["A"][:, row : row + 1],
        "B": case["B"][row : row + 1, column : column + 1],
        "G": case["G"][:, column : column + 1],
    }


def _backward_sample(fmt: FloatFormat, rng: np.random.Generator) -> Case:
    accumulator = oracle.accumulator_format(fmt)
    return {
        "A": _moderate_values(fmt, rng, (8, 64)),
        "B": _moderate_values(fmt, rng, (64, 8)),
        "G": _moderate_values(accumulator, rng, (8, 8)),
    }
