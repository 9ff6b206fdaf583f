"""The data of every picture (no matplotlib): what :mod:`revcheck.plots.draw` draws, array for array.

Each function computes its numbers with revcheck's own checkers, so a picture
is a view of a real result, and the tests check these arrays (never pixels):

- :func:`pam_error_data`: the relative error of ``a ⊡ b`` (or ``a ⊘ b``) for
  every pair of significand fields ``(Ma, Mb)`` of a format, from the oracle;
- :func:`bdia_reconstruction_data`: reconstruction error against depth of a
  real :class:`revcheck.nn.BDIAStack` run (reversible backward) and of the same
  stack without the quantizer;
- :func:`coverage_from_pairs`, :func:`coverage_from_testfloat`,
  :func:`coverage_from_sweep`: which classes of input pairs were checked and
  where the mismatches are; :func:`audit_summary_data`: an audit report's
  verdict per format and mode;
- :func:`preservation_data`: the preservation matrix of
  :mod:`revcheck.bench.expand` (``measure()`` cells) as numbers per cell.
"""

# ruff: noqa: E741  (``l``, BDIA's grid exponent, is the name docs/spec.md §3 and the BDIA API use)
from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from revcheck import bits, enumeration, formats
from revcheck import strategies as rst
from revcheck.errors import UsageError
from revcheck.formats import FloatFormat
from revcheck.modes import check_mode

__all__ = [
    "LEVELS",
    "PAM_ERROR_OPS",
    "AuditSummaryData",
    "BDIAReconstructionData",
    "CoverageData",
    "PamErrorData",
    "PreservationData",
    "audit_summary_data",
    "bdia_reconstruction_data",
    "coverage_from_pairs",
    "coverage_from_sweep",
    "coverage_from_testfloat",
    "pam_error_data",
    "preservation_data",
    "signed_classes",
]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

# ---- PAM relative error over (Ma, Mb) ------------------------------------------------------------------

PAM_ERROR_OPS = ("pam_mul", "pam_div")


@dataclass(frozen=True)
class PamErrorData:
    """Relative error of the PA op on ``a = 1 + Ma``, ``b = 1 + Mb`` for every pair of significand fields.

    ``error[i, j]`` belongs to ``Ma = ma[i]``, ``Mb = mb[j]`` (rows: ``a``); it is
    ``(r - exact) / exact`` with ``r`` the oracle's result and ``exact`` the real
    product or quotient, in float64 (for ``⊡`` correctly rounded: ``r - a·b`` is
    exact there; for ``⊘`` within a few float64 ULPs).  ``worst`` is the extreme
    (the minimum for ``pam_mul``, the maximum for ``pam_div``) as an exact
    :class:`~fractions.Fraction`, at ``(worst_ma, worst_mb)``; ``bounds`` the
    interval of docs/spec.md F2.1 / F2.5.
    """

    fmt: str
    op: str
    ma: FloatArray
    mb: FloatArray
    error: FloatArray
    worst: Fraction
    worst_ma: Fraction
    worst_mb: Fraction
    bounds: tuple[Fraction, Fraction]


def pam_error_data(fmt: object = "bf16", op: str = "pam_mul") -> PamErrorData:
    """The relative error of ``op`` over all ``(Ma, Mb)`` of ``fmt``'s significand fields (exponent 0).

    Every result is normal (values in [1, 4) and [0.5, 2)), so docs/spec.md F2.7
    applies: the error is the PA function's own, ``[-1/9, 0]`` for ``⊡`` (worst
    at ``Ma = Mb = 1/2``) and ``[0, 1/8]`` for ``⊘``.

    Raises
    ------
    UsageError
        For an op other than :data:`PAM_ERROR_OPS`, or a format with more than 12
        significand bits (16.7 million cells: use fp16, bf16 or narrower).

    Examples
    --------
    >>> data = pam_error_data("bf16")
    >>> data.error.shape, data.worst, (data.worst_ma, data.worst_mb)
    ((128, 128), Fraction(-1, 9), (Fraction(1, 2), Fraction(1, 2)))
    """
    from revcheck.oracle import pam as oracle

    fmt_ = formats.get(fmt)
    if op not in PAM_ERROR_OPS:
        raise UsageError(f"unknown op {op!r} for an error map; use one of {', '.join(PAM_ERROR_OPS)}")
    if fmt_.mantissa_bits > 12:
        raise UsageError(
            f"{fmt_.name} has {fmt_.mantissa_bits} significand bits: too many cells; use fp16 or bf16"
        )
    fields = np.arange(1 << fmt_.mantissa_bits, dtype=np.int64)
    patterns = (fmt_.one | fields).astype(fmt_.uint_dtype)
    a, b = patterns[:, None], patterns[None, :]
    result = getattr(oracle, op)(a, b, fmt_)
    values = _values(result, fmt_)
    significands = 1.0 + fields / float(1 << fmt_.mantissa_bits)  # exact in float64
    x, y = significands[:, None], significands[None, :]
    exact = x * y if op == "pam_mul" else x / y
    # r and x*y are exact in float64 and r - x*y too (at most 2m + 2 bits): one rounding in the division.
    error = (values - exact) / exact
    index = np.unravel_index(int(np.argmin(error) if op == "pam_mul" else np.argmax(error)), error.shape)
    i, j = int(index[0]), int(index[1])
    scale = Fraction(1, 1 << fmt_.mantissa_bits)
    ma, mb = i * scale, j * scale
    true = (1 + ma) * (1 + mb) if op == "pam_mul" else (1 + ma) / (1 + mb)
    got = bits.to_fraction(int(result[i, j]), fmt_)
    bounds = (Fraction(-1, 9), Fraction(0)) if op == "pam_mul" else (Fraction(0), Fraction(1, 8))
    return PamErrorData(
        fmt_.name,
        op,
        (fields * float(scale)).astype(np.float64),
        (fields * float(scale)).astype(np.float64),
        error,
        (got - true) / true,
        ma,
        mb,
        bounds,
    )


def _values(patterns: np.ndarray[Any, Any], fmt: FloatFormat) -> FloatArray:
    """Exact float64 values of finite patterns (formats of at most 16 bits widen exactly)."""
    magnitude = (patterns & fmt.uint_dtype.type(fmt.magnitude_mask)).astype(np.int64)
    exponent = magnitude >> fmt.mantissa_bits
    fraction = magnitude & fmt.mantissa_mask
    significand = np.where(exponent > 0, fraction | (1 << fmt.mantissa_bits), fraction).astype(np.float64)
    scale = np.where(exponent > 0, exponent - fmt.bias, fmt.emin) - fmt.mantissa_bits
    values = np.ldexp(significand, scale.astype(np.int32))
    return np.where(bits.sign_bit(patterns, fmt), -values, values)


# ---- BDIA reconstruction error against depth --------------------------------------------------------------


@dataclass(frozen=True)
class BDIAReconstructionData:
    """Largest reconstruction error of each state ``x_k`` (k = 0 .. K-2), from the top down.

    ``quantized_error[k]``: ``max |x̂_k - x_k|`` of a real :class:`revcheck.nn.BDIAStack`
    (its reversible backward's reconstruction against the forward's trace; 0 means
    bit-identical codes).  ``float_error[k]``: the same for the identical stack,
    blocks and γ's without the quantizer, reconstructed by ``x_{k-1} = (x_{k+1} - y_k) / γ_k``
    in the compute dtype (docs/spec.md §3).  ``growth_per_block``: the float error's
    factor per block, ``2 ** slope`` of a least-squares fit of ``log2`` error against
    depth (docs/spec.md §3 says 2).
    """

    depth: int
    l: int
    dtype: str
    block_index: IntArray
    float_error: FloatArray
    quantized_error: FloatArray
    growth_per_block: float


def bdia_reconstruction_data(
    depth: int = 24, *, width: int = 64, batch: int = 8, l: int = 9, seed: int = 0
) -> BDIAReconstructionData:
    """Run a BDIA stack of ``depth`` MLP blocks (fp32) forward and back, with and without the quantizer.

    Reproducible: every random draw comes from ``seed`` (blocks, input, γ's).

    Examples
    --------
    >>> data = bdia_reconstruction_data(depth=8, width=16, batch=2)
    >>> bool((data.quantized_error == 0).all()), data.float_error.shape
    (True, (7,))
    """
    import torch

    from revcheck.nn.bdia import BDIAStack

    if depth < 3:
        raise UsageError(f"depth={depth}: a reconstruction needs at least 3 blocks")
    torch.manual_seed(seed)
    blocks = [
        torch.nn.Sequential(torch.nn.Linear(width, width), torch.nn.Tanh(), torch.nn.Linear(width, width))
        for _ in range(depth)
    ]
    with torch.no_grad():  # small residual updates keep the states O(1) over the whole depth
        for block in blocks:
            for parameter in block.parameters():
                parameter.mul_(0.5)
    stack = BDIAStack(blocks, l=l, mode="reversible", seed=seed)
    stack.train()
    stack.record_reconstruction = True
    x = torch.randn(batch, width, generator=torch.Generator().manual_seed(seed + 1), requires_grad=True)
    stack(x).square().sum().backward()
    signs = stack.last_gamma_signs
    assert signs is not None and stack.last_reconstruction is not None
    trace = stack.trace(x.detach(), gamma_signs=signs)
    step = 2.0**-l
    quantized = [
        float((rebuilt - forward).abs().max()) * step
        for rebuilt, forward in zip(stack.last_reconstruction[:-2], trace.codes[:-2], strict=True)
    ]
    float_error = _float_bdia_errors(blocks, x.detach(), signs)
    index = np.arange(depth - 1)
    positive = float_error > 0
    slope = np.polyfit(index[positive], np.log2(float_error[positive]), 1)[0] if positive.sum() > 1 else 0.0
    return BDIAReconstructionData(
        depth, l, "fp32", index, float_error, np.array(quantized), float(2.0**-slope)
    )


def _float_bdia_errors(blocks: Sequence[Any], x0: Any, signs: Any) -> FloatArray:
    """The BDIA recurrence in fp32 without the quantizer, then its inverse from the top two states."""
    import torch

    with torch.no_grad():
        gammas = [
            0.5 * signs[k - 1].to(torch.float32).reshape(-1, *([1] * (x0.dim() - 1)))
            for k in range(1, len(blocks))
        ]

        def y(k: int, x: Any) -> Any:
            gamma = gammas[k - 1]
            return (1 - gamma) * x + (1 + gamma) * blocks[k](x)

        states = [x0, x0 + blocks[0](x0)]
        for k in range(1, len(blocks)):
            states.append(gammas[k - 1] * states[k - 1] + y(k, states[k]))
        rebuilt = {len(blocks): states[-1], len(blocks) - 1: states[-2]}
        for k in range(len(blocks) - 1, 0, -1):
            rebuilt[k - 1] = (rebuilt[k + 1] - y(k, rebuilt[k])) / gammas[k - 1]
        return np.array([float((rebuilt[k] - states[k]).abs().max()) for k in range(len(blocks) - 1)])


# ---- coverage of input-pair classes ------------------------------------------------------------------------


def signed_classes(fmt: object) -> tuple[str, ...]:
    """The signed value classes of ``fmt`` in value order: ``-nan -inf -normal -subnormal -zero +zero ...``.

    >>> signed_classes("fp8_e4m3fnuz")
    ('-nan', '-normal', '-subnormal', '+zero', '+subnormal', '+normal')
    """
    order = ("nan", "inf", "normal", "subnormal", "zero")
    negative = [f"-{c}" for c in order if c in rst.format_classes(fmt, "-")]
    positive = [f"+{c}" for c in reversed(order) if c in rst.format_classes(fmt, "+")]
    return tuple(negative + positive)


@dataclass(frozen=True)
class CoverageData:
    """Checked input pairs and mismatches per pair of signed classes (rows: ``a``, columns: ``b``).

    ``mismatches`` counts the mismatching pairs known per class: all of them for
    :func:`coverage_from_pairs` and :func:`coverage_from_testfloat`; for a sweep
    only the recorded examples (at most 5 per chunk), while ``total_mismatches`` is
    the sweep's full count.
    """

    fmt: str
    op: str
    mode: str
    source: str
    classes: tuple[str, ...]
    checked: IntArray
    mismatches: IntArray
    total: int
    total_mismatches: int


def _signed_labels(patterns: np.ndarray[Any, Any], fmt: FloatFormat) -> npt.NDArray[np.str_]:
    signs = np.where(bits.sign_bit(patterns, fmt), "-", "+")
    return np.char.add(signs, bits.classify(patterns, fmt))


def coverage_from_pairs(
    fmt: object,
    op: str,
    mode: str,
    a: np.ndarray[Any, Any],
    b: np.ndarray[Any, Any],
    mismatched: npt.NDArray[np.bool_],
    source: str,
    *,
    total_mismatches: int | None = None,
) -> CoverageData:
    """Count the pairs ``(a[i], b[i])`` per signed class pair, and the ``mismatched`` ones."""
    fmt_ = formats.get(fmt)
    classes = signed_classes(fmt_)
    position = {name: i for i, name in enumerate(classes)}
    rows = np.array([position[name] for name in _signed_labels(a, fmt_)], dtype=np.int64)
    columns = np.array([position[name] for name in _signed_labels(b, fmt_)], dtype=np.int64)
    size = len(classes)
    cell = rows * size + columns
    checked = np.bincount(cell, minlength=size * size).reshape(size, size)
    wrong = np.bincount(cell[mismatched], minlength=size * size).reshape(size, size)
    count = int(mismatched.sum()) if total_mismatches is None else total_mismatches
    return CoverageData(fmt_.name, op, mode, source, classes, checked, wrong, int(a.size), count)


def coverage_from_testfloat(
    op: str, fmt: object, implementation: Callable[..., Any], *, mode: str = "ieee", level: int = 1
) -> CoverageData:
    """Run ``implementation`` (torch tensors in and out, like revcheck's kernels) on every
    :func:`revcheck.strategies.testfloat_pairs` pair of ``fmt`` and compare with the oracle.

    As in an audit (docs/spec.md D2.10), ``mode=`` is passed only to an
    implementation whose signature takes it (one without implements the one mode
    ``mode`` declares, and is compared with that mode's oracle), and ``fmt=`` for
    the formats without a torch dtype (D1.10).
    """
    from revcheck.audit.arguments import accepts_keyword
    from revcheck.oracle import pam as oracle
    from revcheck.testing import compare_bits

    fmt_ = formats.get(fmt)
    check_mode(mode)
    a, b = rst.testfloat_pairs(fmt_, level).bits()
    keywords: dict[str, object] = {}
    if accepts_keyword(implementation, "mode"):
        keywords["mode"] = mode
    if fmt_.torch_dtype_name is None:
        keywords["fmt"] = fmt_.name
    got = bits.to_bits(implementation(bits.to_torch(a, fmt_), bits.to_torch(b, fmt_), **keywords), fmt_)
    expected = getattr(oracle, op)(a, b, fmt_, mode=mode)
    differ = got != expected
    differ &= ~(bits.is_nan(got, fmt_) & bits.is_nan(expected, fmt_))  # NaN is one class (D1.4)
    assert compare_bits(got, expected, fmt=fmt_).mismatch_count == int(differ.sum())
    name = getattr(implementation, "__qualname__", repr(implementation))
    return coverage_from_pairs(fmt_, op, mode, a, b, differ, f"testfloat_pairs level {level}, {name}")


def coverage_from_sweep(state_dir: str | Path, key: str | None = None) -> CoverageData:
    """The coverage of a sweep from its state directory (``revcheck sweep ... --state-dir DIR``).

    Every recorded chunk's inputs are enumerated again (:mod:`revcheck.enumeration`)
    and counted per class pair; mismatches are the recorded examples.  ``key``
    picks one sweep where the directory holds several (the ``sweep`` field of its
    state files: ``op-format-mode-impl-chunkN``).

    Raises
    ------
    UsageError
        For a directory without state files, several sweeps and no ``key``, or a
        sweep of a unary op (this picture is of pairs).
    """
    from revcheck.audit import registry
    from revcheck.sweep.config import SweepConfig
    from revcheck.sweep.state import load_done

    directory = Path(state_dir)
    paths = sorted(directory.glob("*-shard*of*.json")) + sorted(directory.glob("*-shard*of*.jsonl"))
    keys = sorted({path.name.rsplit("-shard", 1)[0] for path in paths})
    if not keys:
        raise UsageError(
            f"no sweep state files in {directory}; run `revcheck sweep ... --state-dir {directory}`"
        )
    if key is None and len(keys) > 1:
        raise UsageError(f"{directory} holds several sweeps ({', '.join(keys)}); pick one with key=...")
    key = key or keys[0]
    if key not in keys:
        raise UsageError(f"no sweep {key!r} in {directory}; it holds {', '.join(keys)}")
    op, format_name, mode, impl, chunk_text = key.rsplit("-", 4)
    fmt = formats.get(format_name)
    chunk_bits = int(chunk_text.removeprefix("chunk"))
    arity = registry.get(op).arity
    if arity != 2:
        raise UsageError(f"{op} has {arity} operand(s); the coverage picture is of input pairs")
    # The sweep's own reader: every record checked, every shard's journal (docs: revcheck.sweep.state).
    config = SweepConfig(op, format_name, mode, impl, state_dir=directory, chunk_bits=chunk_bits, quiet=True)
    chunks = sorted(load_done(config).values(), key=lambda record: record.chunk)
    operands = [enumeration.chunk(fmt, arity, chunk_bits, record.chunk) for record in chunks]
    a = np.concatenate([o[0] for o in operands])
    b = np.concatenate([o[1] for o in operands])
    examples = [e for record in chunks for e in record.examples]
    mismatched = np.zeros(a.size, dtype=bool)
    if examples:
        known = {(int(e[0]), int(e[1])) for e in examples}
        mismatched = np.array(
            [(int(x), int(y)) in known for x, y in zip(a.tolist(), b.tolist(), strict=True)]
        )
    total = sum(record.mismatches for record in chunks)
    source = f"sweep {impl}, {len(chunks)} chunk(s) of 2^{chunk_bits} pairs"
    return coverage_from_pairs(fmt, op, mode, a, b, mismatched, source, total_mismatches=total)


# ---- audit summary --------------------------------------------------------------------------------------

STATUS_CODES = {"passed": 0, "failed": 1, "skipped": 2}


@dataclass(frozen=True)
class AuditSummaryData:
    """One cell per (format, mode) of an :class:`~revcheck.audit.AuditReport`.

    ``status[i, j]`` is :data:`STATUS_CODES` of format ``formats[i]`` in mode
    ``modes[j]`` (-1: not audited); ``text[i][j]`` what was checked (``"exhaustive
    65,536"``, ``"1,600 elements"``) and, for a failure, the counterexample's input classes.
    """

    op: str
    candidate: str
    formats: tuple[str, ...]
    modes: tuple[str, ...]
    status: IntArray
    text: tuple[tuple[str, ...], ...]


def audit_summary_data(report: Any) -> AuditSummaryData:
    """The verdict grid of an audit report (``revcheck.audit.audit(...)``'s result)."""
    results = list(report.results)
    names = tuple(dict.fromkeys(r.format for r in results))
    modes = tuple(dict.fromkeys(str(r.mode) for r in results))
    status = np.full((len(names), len(modes)), -1, dtype=np.int64)
    text = [["not audited"] * len(modes) for _ in names]
    for result in results:
        i, j = names.index(result.format), modes.index(str(result.mode))
        status[i, j] = STATUS_CODES[result.status]
        checked = f"exhaustive {result.elements:,}" if result.exhaustive else f"{result.elements:,} elements"
        if result.counterexample is not None:
            checked += "\n" + ", ".join(result.counterexample.labels)
        elif result.status == "skipped":
            checked = "skipped"
        text[i][j] = checked
    return AuditSummaryData(
        report.op, report.candidate, names, modes, status, tuple(tuple(row) for row in text)
    )


# ---- the preservation matrix (revcheck.bench.expand) -----------------------------------------------------

LEVELS = ("K bit-exact", "K bit-exact, not O", "O only", "R only", "broken in R, bits equal here", "broken")
"""Levels a growth reaches, best first (``revcheck.bench.expand.Cell.reached``); the heat map's scale."""


@dataclass(frozen=True)
class PreservationData:
    """The preservation matrix: ``level[i, j]`` indexes :data:`LEVELS` (-1: not measured).

    Rows are (transformation, ratio), columns (dtype, size, attention); ``text`` is
    the pivot table's cell (``Cell.code``: the level and the count that separates it).
    """

    rows: tuple[str, ...]
    columns: tuple[str, ...]
    level: IntArray
    text: tuple[tuple[str, ...], ...]
    header: str


def preservation_data(cells: Iterable[Any] | None = None, *, quick: bool = False) -> PreservationData:
    """The matrix from :func:`revcheck.bench.expand.measure` cells (measured now when ``cells`` is None).

    ``quick``: fp32, small, explicit attention only (12 rows, about a minute on 2 cores).
    """
    from revcheck.bench import expand

    if cells is None:
        options: dict[str, Any] = (
            {"dtypes": ("fp32",), "sizes": ("small",), "attentions": ("explicit",)} if quick else {}
        )
        cells = list(expand.measure(**options))
    cells = list(cells)
    row_keys = list(dict.fromkeys((c.growth.name, c.growth.ratio) for c in cells))
    column_keys = list(dict.fromkeys((c.dtype, c.size, c.attention) for c in cells))
    level = np.full((len(row_keys), len(column_keys)), -1, dtype=np.int64)
    text = [[""] * len(column_keys) for _ in row_keys]
    for cell in cells:
        i = row_keys.index((cell.growth.name, cell.growth.ratio))
        j = column_keys.index((cell.dtype, cell.size, cell.attention))
        level[i, j] = LEVELS.index(cell.reached)
        text[i][j] = cell.code
    return PreservationData(
        tuple(f"{name} {ratio}" for name, ratio in row_keys),
        tuple(f"{d} {s} {a}" for d, s, a in column_keys),
        level,
        tuple(tuple(row) for row in text),
        expand.header(),
    )
