"""Op specs of the BDIA family: the activation quantizer and one forward / inverse block step.

Codes are int64 (``X = x · 2**l``), side bits 0/1, ``gamma`` one value of
±1/2 per sample (shape ``(B,)``).  The float format of an audit is the residual
compute dtype (the dtype of ``h`` and of the quantizer's input ``y``); the steps
are audited in the oracle's compute dtypes, :data:`revcheck.oracle.bdia.COMPUTE_DTYPES`
(docs/spec.md §3).  The limits of the method (``0 <= l <= MAX_L``, codes below
``CODE_LIMIT``) live in :mod:`revcheck.oracle.bdia`; the audit draws inside them.
"""

from __future__ import annotations

from collections.abc import Iterator
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
from revcheck.oracle import bdia as oracle

__all__ = ["forward_step_spec", "inference_step_spec", "inverse_step_spec", "quantize_spec", "tie_codes"]

# Formats of the quantizer's input y.
BDIA_FORMATS = ("fp32", "fp64", "fp16", "bf16")
# The steps run in the oracle's residual compute dtypes (fp32 unless configured).
STEP_FORMATS = tuple(_formats.get(dtype).name for dtype in oracle.COMPUTE_DTYPES)
# The largest grid exponent l the audit DRAWS (0..12 covers the paper's l = 9 and its neighbours);
# not the method's limit, which is revcheck.oracle.bdia.MAX_L.
DRAWN_L_MAX = 12
PAPER_L = 9
# Drawn |y| stays below 2**MAX_VALUE_EXPONENT, so |y · 2**l| < 2**(48 + 12) = 2**60: codes reach past
# 2**53 (where float64 stops holding every integer) and stay below the oracle's CODE_LIMIT (2**62).
MAX_VALUE_EXPONENT = 48
# Drawn state codes have at most this many bits: |X| <= 2**60, so that gamma (X + s) + R(y) with
# |y| <= 1.5 |x| + 1.5 |h| stays below 2**62.
MAX_CODE_BITS = 60
# Code sizes the step strategies draw: small ones, the exact-integer limits of fp32 (2**24) and fp64
# (2**53) and either side of them, and the top of the allowed range.
CODE_BITS = (4, 12, 23, 24, 25, 40, 52, 53, 54, 60)
# Precisions of the compute dtypes (fp32, fp64) whose roundings of a code can tie.
_CODE_PRECISIONS = (24, 53)
MAX_BATCH = 32


def _as_float64(bits: np.ndarray[Any, Any], fmt: FloatFormat) -> np.ndarray[Any, Any]:
    """Exact float64 values of patterns of any format up to fp64 (widening never rounds)."""
    import torch

    return tn.to_tensor(bits, fmt, "cpu").to(torch.float64).numpy()


def _as_numpy_float(bits: np.ndarray[Any, Any], fmt: FloatFormat) -> np.ndarray[Any, Any]:
    """The values as the oracle's float array: the format's own NumPy dtype, else exact float64."""
    if fmt.numpy_float is not None:
        return np.ascontiguousarray(bits).view(fmt.numpy_float)
    return _as_float64(bits, fmt)


def _exact_pattern(numerator: int, exponent: int, fmt: FloatFormat) -> int:
    """Pattern of ``numerator · 2**exponent``; it must be a normal number of ``fmt`` (or zero)."""
    negative = numerator < 0
    magnitude = abs(numerator)
    sign = int(negative) << (fmt.width - 1)
    if magnitude == 0:
        return sign
    shift = fmt.mantissa_bits - (magnitude.bit_length() - 1)
    if shift < 0:
        raise ValueError(f"{numerator} has more than {fmt.precision} significant bits")
    biased = exponent - shift + fmt.mantissa_bits + fmt.bias
    if not 1 <= biased <= fmt.emax + fmt.bias:
        raise ValueError(f"{numerator}·2**{exponent} is not a normal {fmt.name} number")
    return sign | biased << fmt.mantissa_bits | ((magnitude << shift) - (1 << fmt.mantissa_bits))


def _bounded_patterns(fmt: FloatFormat, max_exponent: int) -> st.SearchStrategy[int]:
    """Finite patterns with |value| < 2**max_exponent: TestFloat-style ones, filtered by size."""
    limit = (max_exponent + fmt.bias) << fmt.mantissa_bits
    return rst.bit_patterns(fmt, classes=("zero", "subnormal", "normal")).filter(
        lambda bits: bits & fmt.magnitude_mask < limit
    )


# ---- quantize -------------------------------------------------------------------------------------


def quantize_spec() -> OpSpec:
    return OpSpec(
        name="bdia_quantize",
        signature="candidate(y: float Tensor, l: int) -> int64 Tensor of codes round_half_even(y * 2**l)",
        summary="BDIA activation quantizer R(y): y on the grid of step 2**-l, ties to even",
        formats=BDIA_FORMATS,
        modes=(),
        strategy=_quantize_strategy,
        call=_quantize_call,
        oracle=_quantize_oracle,
        compare=_quantize_compare,
        narrow=_narrow_quantize,
        sample=_quantize_sample,
        exhaustive=_quantize_exhaustive,
        inputs=("y", "l"),
        examples=_quantize_examples,
    )


def _quantize_examples(fmt: FloatFormat) -> list[Case]:
    """Counted quantizer cases: TestFloat's level-1 values of ``fmt`` (the finite ones the audit draws
    from, |y| < 2**MAX_VALUE_EXPONENT) at l = 0, the paper's l = 9 and l = 12."""
    cases = rst.testfloat_cases(fmt).bits()
    limit = (MAX_VALUE_EXPONENT + fmt.bias) << fmt.mantissa_bits
    kept = cases[(cases & fmt.uint_dtype.type(fmt.magnitude_mask)) < limit]
    kept = kept[_bits.is_finite(kept, fmt)]
    return [{"y": kept.copy(), "l": l_value} for l_value in (0, PAPER_L, DRAWN_L_MAX)]


def _tie_patterns(fmt: FloatFormat, l_value: int) -> st.SearchStrategy[int]:
    """Values exactly halfway between two codes, ``(2k + 1) · 2**-(l + 1)``, and exact grid points."""
    limit = (1 << (fmt.precision - 1)) - 1
    return st.tuples(st.integers(-limit, limit), st.booleans()).map(
        lambda pair: (
            _exact_pattern(2 * pair[0] + 1, -(l_value + 1), fmt)
            if pair[1]
            else _exact_pattern(pair[0], -l_value, fmt)
        )
    )


def _quantize_strategy(fmt: FloatFormat) -> st.SearchStrategy[Case]:
    def for_l(l_value: int) -> st.SearchStrategy[Case]:
        element = st.one_of(_bounded_patterns(fmt, MAX_VALUE_EXPONENT), _tie_patterns(fmt, l_value))
        patterns = st.lists(element, min_size=1, max_size=MAX_BATCH)
        return patterns.map(lambda values: {"y": np.array(values, dtype=fmt.uint_dtype), "l": l_value})

    return st.integers(0, DRAWN_L_MAX).flatmap(for_l)


def _quantize_call(
    candidate: Candidate, case: Case, fmt: FloatFormat, mode: str | None, device: str
) -> Outputs:
    result = candidate(tn.to_tensor(case["y"], fmt, device), case["l"])
    return {"codes": tn.output_codes(result, case["y"].shape, "the codes")}


def _quantize_oracle(case: Case, fmt: FloatFormat, mode: str | None) -> Outputs:
    return {"codes": np.asarray(oracle.quantize(_as_numpy_float(case["y"], fmt), case["l"]), dtype=np.int64)}


def _quantize_labels(y_bits: int, l_value: int, fmt: FloatFormat) -> tuple[str, ...]:
    value = _bits.to_fraction(y_bits, fmt)
    scaled = value * (1 << l_value) if not isinstance(value, float) else None
    if scaled is None or scaled.denominator == 1:
        position = "on the grid"
    elif scaled.denominator == 2:
        position = "tie"
    else:
        position = "between codes"
    return (vl.label(y_bits, fmt), position)


def _quantize_compare(
    case: Case, expected: Outputs, actual: Outputs, fmt: FloatFormat, mode: str | None
) -> Finding | None:
    wrong = expected["codes"] != actual["codes"]
    if not wrong.any():
        return None
    index = tuple(int(i) for i in np.unravel_index(int(np.argmax(wrong)), wrong.shape))
    y_bits = int(case["y"][index])
    want = int(expected["codes"][index])
    return Finding(
        index=index,
        inputs=(vl.float_value("y", y_bits, fmt), vl.int_value("l", case["l"], "int")),
        expected=(vl.int_value("code", want),),
        actual=(vl.int_value("code", int(actual["codes"][index])),),
        labels=_quantize_labels(y_bits, case["l"], fmt) + tuple(vl.code_labels("code", want)),
        ulp_distance=abs(int(expected["codes"][index]) - int(actual["codes"][index])),
    )


def _narrow_quantize(case: Case, index: tuple[int, ...]) -> Case:
    return {"y": case["y"][index][np.newaxis], "l": case["l"]}


def _quantize_sample(fmt: FloatFormat, rng: np.random.Generator) -> Case:
    values = rng.standard_normal(4096) * 100
    import torch

    patterns = tn.to_tensor(np.zeros(1, fmt.uint_dtype), fmt, "cpu")
    tensor = torch.from_numpy(values).to(patterns.dtype)
    return {"y": _bits.to_bits(tensor), "l": PAPER_L}


def _quantize_exhaustive(fmt: FloatFormat) -> ExhaustivePlan | None:
    if fmt.width > 16:
        return None
    everything = enumeration.all_patterns(fmt)
    limit = (MAX_VALUE_EXPONENT + fmt.bias) << fmt.mantissa_bits
    small = (everything & fmt.uint_dtype.type(fmt.magnitude_mask)) < limit
    finite = everything[small & _bits.is_finite(everything, fmt)]

    def chunks() -> Iterator[Case]:
        yield {"y": finite, "l": PAPER_L}

    return ExhaustivePlan(size=int(finite.size), by_default=True, chunks=chunks)


# ---- one block step ---------------------------------------------------------------------------------


def tie_codes(max_bits: int = MAX_CODE_BITS) -> st.SearchStrategy[int]:
    """Codes whose conversion to fp32 or fp64 ties, exactly or after a first rounding.

    ``X = ±(2**e + j·2**(e-p+1) + 2**(e-p) + r)``: the bit ``e - p`` is the half-ulp of a
    ``p``-bit float (p = 24, 53), so ``X`` converts with a tie when ``r = 0``; with ``r`` in
    ``[1, 2**(e-53))``, a conversion through float64 first rounds ``r`` away and leaves an exact
    tie for fp32, which rounds to even where the single rounding of ``X`` rounds up: the
    double-rounding bug that shows only above ``2**53``.
    """

    def build(precision: int, exponent: int, odd: bool, residue: int, negative: bool) -> int:
        exponent = max(exponent, precision)
        magnitude = (1 << exponent) | (int(odd) << (exponent - precision + 1)) | (1 << (exponent - precision))
        below_float64 = exponent - 53
        if residue and below_float64 > 0:
            magnitude += 1 + residue % ((1 << below_float64) - 1 or 1)
        return -magnitude if negative else magnitude

    return st.builds(
        build,
        st.sampled_from(_CODE_PRECISIONS),
        st.integers(24, max_bits - 1),  # |X| < 2**max_bits, like the plain draws
        st.booleans(),
        st.integers(0, 1 << 62),
        st.booleans(),
    )


def _codes_strategy(code_bits: int) -> st.SearchStrategy[int]:
    plain = st.integers(-(1 << code_bits), 1 << code_bits)
    if code_bits <= 24:
        return plain
    return st.one_of(plain, tie_codes(min(code_bits, MAX_CODE_BITS)))


def _step_strategy(fmt: FloatFormat, kind: str) -> st.SearchStrategy[Case]:
    """Cases of one step: ``kind`` is ``"forward"``, ``"inverse"`` (X_next from the oracle's forward)
    or ``"inference"`` (gamma = 0: no X_prev, no gamma)."""

    def for_shape(shape: tuple[int, int, int, int]) -> st.SearchStrategy[Case]:
        batch, width, l_value, code_bits = shape
        codes = st.lists(_codes_strategy(code_bits), min_size=batch * width, max_size=batch * width).map(
            lambda values: np.array(values, dtype=np.int64).reshape(batch, width)
        )
        h = st.lists(_bounded_patterns(fmt, 20), min_size=batch * width, max_size=batch * width).map(
            lambda values: np.array(values, dtype=fmt.uint_dtype).reshape(batch, width)
        )
        if kind == "inference":
            return st.fixed_dictionaries({"X_cur": codes, "h": h, "l": st.just(l_value)})
        gamma_signs = st.lists(st.booleans(), min_size=batch, max_size=batch).map(
            lambda signs: np.array([-0.5 if s else 0.5 for s in signs], dtype=np.float64)
        )
        case = st.fixed_dictionaries(
            {"X_prev": codes, "X_cur": codes, "h": h, "gamma": gamma_signs, "l": st.just(l_value)}
        )
        return case.map(_with_forward_outputs(fmt)) if kind == "inverse" else case

    shapes = st.tuples(
        st.integers(1, 4), st.integers(1, 8), st.integers(0, DRAWN_L_MAX), st.sampled_from(CODE_BITS)
    )
    # Seeded random states with every bit of large codes and of h random: where the rounding of
    # x = X * 2**-l and of y_k shows (Hypothesis' integers favour small, round values).
    seeded = st.integers(0, 2**32 - 1).map(
        lambda seed: _random_step_case(fmt, np.random.default_rng(seed), kind)
    )
    return st.one_of(shapes.flatmap(for_shape), seeded)


def counted_codes() -> list[int]:
    """State codes every step audit checks first: the exact-integer limits of fp32 and fp64 and their
    neighbours, the top of the drawn range, and the tie patterns of :func:`tie_codes`, both signs."""
    codes = [0, 1, -1, 2, 3]
    for bits in (24, 53, MAX_CODE_BITS):
        codes += [(1 << bits) - 1, -((1 << bits) - 1)]
        if bits < MAX_CODE_BITS:
            codes += [1 << bits, (1 << bits) + 1, -((1 << bits) + 1)]
    for precision in _CODE_PRECISIONS:
        for exponent in (precision + 1, 40, 54, MAX_CODE_BITS - 1):
            if exponent <= precision:
                continue
            for odd in (0, 1):
                for residue in (0, 1):
                    magnitude = (
                        (1 << exponent) | odd << (exponent - precision + 1) | 1 << (exponent - precision)
                    )
                    magnitude += residue if exponent > 53 else 0
                    codes += [magnitude, -magnitude]
    return list(dict.fromkeys(codes))


def _step_examples(kind: str, fmt: FloatFormat) -> list[Case]:
    """Counted step cases, run first under every seed: :func:`counted_codes` as states, with ``h = 0``
    (so that ``y`` is ``(1 - gamma) x`` and shows how ``x = X · 2**-l`` was rounded) and with small
    ``h``; both signs of gamma; ``l = 0`` and the paper's ``l = 9``."""
    import torch

    codes = np.array(counted_codes(), dtype=np.int64)
    rows = np.stack([np.roll(codes, shift) for shift in range(4)])
    gamma = np.array([0.5, -0.5, -0.5, 0.5])
    dtype = _compute_dtype(fmt)
    small_h = torch.from_numpy(np.linspace(-3.0, 3.0, rows.size).reshape(rows.shape) * 2.0**-11).to(dtype)
    cases = []
    for l_value in (0, PAPER_L):
        for h in (torch.zeros(rows.shape, dtype=dtype), small_h):
            h_bits = _bits.to_bits(h)
            if kind == "inference":
                cases.append({"X_cur": rows.copy(), "h": h_bits, "l": l_value})
                continue
            case: Case = {
                "X_prev": np.roll(rows, 1, axis=1),
                "X_cur": rows.copy(),
                "h": h_bits,
                "gamma": gamma.copy(),
                "l": l_value,
            }
            cases.append(_with_forward_outputs(fmt)(case) if kind == "inverse" else case)
    return cases


def _random_step_case(fmt: FloatFormat, rng: np.random.Generator, kind: str) -> Case:
    import torch

    shape = (4, 32)
    code_bits = rng.integers(8, MAX_CODE_BITS + 1, size=shape)
    magnitudes = rng.integers(0, 1 << 62, size=shape, dtype=np.int64) >> (62 - code_bits)
    signs = rng.choice(np.array([-1, 1], dtype=np.int64), size=shape)
    h_values = rng.standard_normal(shape) * np.exp2(rng.integers(-8, 20, size=shape))
    h_bits = _bits.to_bits(torch.from_numpy(h_values).to(_compute_dtype(fmt)))
    l_value = int(rng.integers(0, DRAWN_L_MAX + 1))
    if kind == "inference":
        return {"X_cur": signs * magnitudes, "h": h_bits, "l": l_value}
    case: Case = {
        "X_prev": signs * magnitudes,
        "X_cur": rng.choice(np.array([-1, 1], dtype=np.int64), size=shape) * np.roll(magnitudes, 1, axis=1),
        "h": h_bits,
        "gamma": rng.choice(np.array([-0.5, 0.5]), size=shape[0]),
        "l": l_value,
    }
    return _with_forward_outputs(fmt)(case) if kind == "inverse" else case


def _with_forward_outputs(fmt: FloatFormat) -> Any:
    def complete(case: Case) -> Case:
        outputs = _forward_oracle(case, fmt, None)
        return {
            "X_next": outputs["X_next"],
            "X_cur": case["X_cur"],
            "h": case["h"],
            "gamma": case["gamma"],
            "s_prev": outputs["s_prev"],
            "l": case["l"],
        }

    return complete


def _gamma_tensor(gamma: np.ndarray[Any, Any], fmt: FloatFormat, device: str) -> Any:
    import torch

    return torch.from_numpy(gamma.copy()).to(_bits.torch_dtype(fmt)).to(device)


def _compute_dtype(fmt: FloatFormat) -> Any:

    return _bits.torch_dtype(fmt)


def _oracle_compute_dtype(fmt: FloatFormat) -> Any:
    return fmt.numpy_float


def _forward_call(
    candidate: Candidate, case: Case, fmt: FloatFormat, mode: str | None, device: str
) -> Outputs:
    result = candidate(
        tn.codes_to_tensor(case["X_prev"], device),
        tn.codes_to_tensor(case["X_cur"], device),
        tn.to_tensor(case["h"], fmt, device),
        _gamma_tensor(case["gamma"], fmt, device),
        case["l"],
        compute_dtype=_compute_dtype(fmt),
    )
    if not isinstance(result, (tuple, list)) or len(result) != 2:
        raise tn.BadOutput(f"forward_step must return (X_next, s_prev), got {type(result).__name__}")
    shape = case["X_cur"].shape
    x_next = tn.output_codes(result[0], shape, "X_next")
    side = _side_bits_output(result[1], shape)
    return {"X_next": x_next, "s_prev": side}


def _side_bits_output(result: object, shape: tuple[int, ...]) -> np.ndarray[Any, Any]:
    import torch

    if not isinstance(result, torch.Tensor) or result.dtype.is_floating_point or result.dtype.is_complex:
        raise tn.BadOutput(
            f"s_prev must be an integer or bool torch.Tensor, got {getattr(result, 'dtype', result)}"
        )
    if tuple(result.shape) != tuple(shape):
        raise tn.BadOutput(f"s_prev has shape {tuple(result.shape)}, expected {tuple(shape)}")
    return np.asarray(result.detach().cpu().to(torch.int64).numpy())


def _oracle_step_args(case: Case, fmt: FloatFormat) -> tuple[Any, ...]:
    return (_as_numpy_float(case["h"], fmt), case["gamma"].astype(_float_dtype(fmt)), case["l"])


def _float_dtype(fmt: FloatFormat) -> Any:
    return fmt.numpy_float if fmt.numpy_float is not None else np.float64


def _forward_oracle(case: Case, fmt: FloatFormat, mode: str | None) -> Outputs:
    h, gamma, l_value = _oracle_step_args(case, fmt)
    x_next, side = oracle.forward_step(
        case["X_prev"], case["X_cur"], h, gamma, l_value, compute_dtype=_oracle_compute_dtype(fmt)
    )
    return {"X_next": np.asarray(x_next, dtype=np.int64), "s_prev": np.asarray(side).astype(np.int64)}


def _step_inputs(
    case: Case, index: tuple[int, ...], fmt: FloatFormat, names: tuple[str, ...]
) -> tuple[Value, ...]:
    values: list[Value] = []
    for name in names:
        if name == "h":
            values.append(vl.float_value("h", int(case["h"][index]), fmt))
        elif name == "gamma":
            values.append(Value("gamma", repr(float(case["gamma"][index[0]])), None, "float"))
        elif name == "l":
            values.append(vl.int_value("l", case["l"], "int"))
        else:
            values.append(vl.int_value(name, int(case[name][index])))
    return tuple(values)


def _step_labels(case: Case, index: tuple[int, ...], names: tuple[str, ...]) -> tuple[str, ...]:
    if "gamma" in case:
        gamma = float(case["gamma"][index[0]])
        labels = ["gamma=+1/2" if gamma > 0 else "gamma=-1/2" if gamma < 0 else "gamma=0"]
    else:
        labels = ["gamma=0"]
    for name in names:
        if name.startswith("X_"):
            labels.append(f"{name} {'odd' if int(case[name][index]) % 2 else 'even'}")
    if "s_prev" in case:
        labels.append(f"s_prev={int(case['s_prev'][index])}")
    for name in names:
        if name.startswith("X_"):
            labels += vl.code_labels(name, int(case[name][index]))
    return tuple(labels)


def _output_labels(expected: Outputs, actual: Outputs, index: tuple[int, ...]) -> tuple[str, ...]:
    return tuple(
        f"{name} {'differs' if int(expected[name][index]) != int(actual[name][index]) else 'agrees'}"
        for name in expected
    )


def _first_code_mismatch(expected: Outputs, actual: Outputs) -> tuple[int, ...] | None:
    wrong = np.zeros(next(iter(expected.values())).shape, dtype=bool)
    for name in expected:
        wrong |= expected[name] != actual[name]
    if not wrong.any():
        return None
    return tuple(int(i) for i in np.unravel_index(int(np.argmax(wrong)), wrong.shape))


def _step_compare(names: tuple[str, ...]) -> Any:
    def compare(
        case: Case, expected: Outputs, actual: Outputs, fmt: FloatFormat, mode: str | None
    ) -> Finding | None:
        index = _first_code_mismatch(expected, actual)
        if index is None:
            return None
        return Finding(
            index=index,
            inputs=_step_inputs(case, index, fmt, names),
            expected=tuple(vl.int_value(name, int(value[index])) for name, value in expected.items()),
            actual=tuple(vl.int_value(name, int(value[index])) for name, value in actual.items()),
            labels=_step_labels(case, index, names) + _output_labels(expected, actual, index),
        )

    return compare


def _narrow_step(case: Case, index: tuple[int, ...]) -> Case:
    row, column = index
    narrowed: Case = {}
    for name, value in case.items():
        if name == "gamma":
            narrowed[name] = value[row : row + 1]
        elif isinstance(value, np.ndarray):
            narrowed[name] = value[row : row + 1, column : column + 1]
        else:
            narrowed[name] = value
    return narrowed


def _step_sample(fmt: FloatFormat, rng: np.random.Generator, kind: str) -> Case:
    import torch

    shape = (8, 512)
    h = torch.from_numpy(rng.standard_normal(shape)).to(_compute_dtype(fmt))
    if kind == "inference":
        return {
            "X_cur": rng.integers(-(1 << 12), 1 << 12, size=shape, dtype=np.int64),
            "h": _bits.to_bits(h),
            "l": PAPER_L,
        }
    case: Case = {
        "X_prev": rng.integers(-(1 << 12), 1 << 12, size=shape, dtype=np.int64),
        "X_cur": rng.integers(-(1 << 12), 1 << 12, size=shape, dtype=np.int64),
        "h": _bits.to_bits(h),
        "gamma": rng.choice(np.array([-0.5, 0.5]), size=shape[0]),
        "l": PAPER_L,
    }
    return _with_forward_outputs(fmt)(case) if kind == "inverse" else case


FORWARD_INPUTS = ("X_prev", "X_cur", "h", "gamma", "l")
INVERSE_INPUTS = ("X_next", "X_cur", "h", "gamma", "s_prev", "l")


def forward_step_spec() -> OpSpec:
    return OpSpec(
        name="bdia_forward_step",
        signature=(
            "candidate(X_prev, X_cur: int64 (B, D), h: float (B, D), gamma: float (B,) of ±1/2, l: int, *, "
            "compute_dtype) -> (X_next: int64 (B, D), s_prev: integer (B, D) of 0/1)"
        ),
        summary=(
            "one BDIA block forward: X_next = gamma (X_prev + s_prev) + R(y), "
            "y = fl(fl((1-g) x) + fl((1+g) h))"
        ),
        formats=STEP_FORMATS,
        modes=(),
        strategy=partial(_step_strategy, kind="forward"),
        examples=partial(_step_examples, "forward"),
        call=_forward_call,
        oracle=_forward_oracle,
        compare=_step_compare(FORWARD_INPUTS),
        narrow=_narrow_step,
        sample=partial(_step_sample, kind="forward"),
        exhaustive=lambda fmt: None,
        inputs=FORWARD_INPUTS,
    )


def _inverse_call(
    candidate: Candidate, case: Case, fmt: FloatFormat, mode: str | None, device: str
) -> Outputs:
    result = candidate(
        tn.codes_to_tensor(case["X_next"], device),
        tn.codes_to_tensor(case["X_cur"], device),
        tn.to_tensor(case["h"], fmt, device),
        _gamma_tensor(case["gamma"], fmt, device),
        _side_tensor(case["s_prev"], device),
        case["l"],
        compute_dtype=_compute_dtype(fmt),
    )
    return {"X_prev": tn.output_codes(result, case["X_cur"].shape, "X_prev")}


def _side_tensor(side: np.ndarray[Any, Any], device: str) -> Any:
    import torch

    return torch.from_numpy(np.ascontiguousarray(side, dtype=np.uint8).copy()).to(device)


def _inverse_oracle(case: Case, fmt: FloatFormat, mode: str | None) -> Outputs:
    h, gamma, l_value = _oracle_step_args(case, fmt)
    x_prev = oracle.inverse_step(
        case["X_next"],
        case["X_cur"],
        h,
        gamma,
        case["s_prev"].astype(np.uint8),
        l_value,
        compute_dtype=_oracle_compute_dtype(fmt),
    )
    return {"X_prev": np.asarray(x_prev, dtype=np.int64)}


def inverse_step_spec() -> OpSpec:
    return OpSpec(
        name="bdia_inverse_step",
        signature=(
            "candidate(X_next, X_cur: int64 (B, D), h: float (B, D), gamma: float (B,) of ±1/2, "
            "s_prev: uint8 (B, D), l: int, *, compute_dtype) -> X_prev: int64 (B, D)"
        ),
        summary="one BDIA block inverse: X_prev = (X_next - R(y)) / gamma - s_prev, exact integer arithmetic",
        formats=STEP_FORMATS,
        modes=(),
        strategy=partial(_step_strategy, kind="inverse"),
        examples=partial(_step_examples, "inverse"),
        call=_inverse_call,
        oracle=_inverse_oracle,
        compare=_step_compare(INVERSE_INPUTS),
        narrow=_narrow_step,
        sample=partial(_step_sample, kind="inverse"),
        exhaustive=lambda fmt: None,
        inputs=INVERSE_INPUTS,
    )


# ---- inference (gamma = 0) -----------------------------------------------------------------------------

INFERENCE_INPUTS = ("X_cur", "h", "l")


def _inference_call(
    candidate: Candidate, case: Case, fmt: FloatFormat, mode: str | None, device: str
) -> Outputs:
    result = candidate(
        tn.codes_to_tensor(case["X_cur"], device),
        tn.to_tensor(case["h"], fmt, device),
        case["l"],
        compute_dtype=_compute_dtype(fmt),
    )
    return {"X_next": tn.output_codes(result, case["X_cur"].shape, "X_next")}


def _inference_oracle(case: Case, fmt: FloatFormat, mode: str | None) -> Outputs:
    # gamma = 0 rows of the oracle's forward step (docs/spec.md D3.1): X_next = X_cur + R(h); X_prev unused.
    gamma = np.zeros(case["X_cur"].shape[0], dtype=_float_dtype(fmt))
    x_next, _ = oracle.forward_step(
        case["X_cur"],
        case["X_cur"],
        _as_numpy_float(case["h"], fmt),
        gamma,
        case["l"],
        compute_dtype=_oracle_compute_dtype(fmt),
    )
    return {"X_next": np.asarray(x_next, dtype=np.int64)}


def inference_step_spec() -> OpSpec:
    return OpSpec(
        name="bdia_inference_step",
        signature=(
            "candidate(X_cur: int64 (B, D), h: float (B, D), l: int, *, compute_dtype) "
            "-> X_next: int64 (B, D)"
        ),
        summary=(
            "one BDIA block at inference (gamma = 0, docs/spec.md D3.1): X_next = X_cur + R(h), "
            "not R(fl(x + h)), which rounds twice"
        ),
        formats=STEP_FORMATS,
        modes=(),
        strategy=partial(_step_strategy, kind="inference"),
        examples=partial(_step_examples, "inference"),
        call=_inference_call,
        oracle=_inference_oracle,
        compare=_step_compare(INFERENCE_INPUTS),
        narrow=_narrow_step,
        sample=partial(_step_sample, kind="inference"),
        exhaustive=lambda fmt: None,
        inputs=INFERENCE_INPUTS,
    )
