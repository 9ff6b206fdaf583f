"""Audit a whole reversible BDIA stack: ``audit_stack(forward, reconstruct, backward=...)``.

The step audits (``bdia_forward_step`` ...) check one block's arithmetic; this one checks
a user's whole stack (docs/spec.md §3) as it runs, without hand-written glue: it builds
a family of blocks, draws the cases, maps the user's states to codes and replays
dropout, and compares

* **forward**: every state ``X_0 … X_K`` (codes) and every side bit ``s_{k-1}`` (where
  ``gamma_k != 0``) with :func:`revcheck.oracle.bdia.forward` on the same blocks;
* **reconstruction**: the states the user's ``reconstruct`` rebuilds from the top two
  (and the side bits) with :func:`revcheck.oracle.bdia.inverse` from the same top states;
* **backward** (optional): the gradients of the input and of every block parameter, bit
  for bit, with a stored-activation run of the same blocks
  (:class:`revcheck.nn.BDIAStack` ``mode="stored"``, ``eval()`` for gamma = 0), and the
  bytes the user's forward saves for backward, next to the stored run's.

Cases cycle through depths ``1 … max_depth``, gamma patterns (all ``+½``, all ``−½``,
alternating, random ``±½``, random with zeros, all zero: inference) and code magnitudes
from ``2**4`` up to ``2**58`` (the method allows ``|X| < 2**62``), with fresh block weights,
block-output scales and dropout seeds.  A case whose codes leave the allowed range is
counted as out of range, not checked.  The report groups the cases by the largest code
they reach (below ``2**24``, up to ``2**53``, beyond), so a stack that is exact only in a
band shows it; the first failure is shrunk to the smallest depth that still fails.

Candidate protocol (``B`` samples, width ``D``, ``K`` blocks; tensors in ``compute_dtype``)::

    forward(x0 (B, D), blocks, gammas (K-1, B), l, *, compute_dtype)
        -> (states, side_bits) or (states, side_bits, saved)
    reconstruct(top, below, blocks, gammas, side_bits, l, *, compute_dtype[, saved=...]) -> states
    backward(x0, blocks, gammas, l, *, compute_dtype) -> x_K with its autograd graph

``states`` are the ``K + 1`` states ``X_0 … X_K``, as int64 codes or as float grid values
(``x = X · 2**-l``); ``side_bits`` the ``K - 1`` tensors ``s_0 … s_{K-2}`` of 0/1
(``side_bits[k-1]`` is used by block ``k``).  ``gammas`` holds ``+0.5``, ``-0.5`` or ``0``
per sample and block ``1 … K-1``.  ``saved`` is anything the forward wants to hand to its
reconstruction (RNG states for dropout replay, say).  Block families:
``blocks(depth, width, seed, scale) -> list[nn.Module]`` (:func:`default_blocks`:
Linear, Tanh, Dropout, times ``scale``).
"""

# ruff: noqa: E741  (``l``, the grid exponent, is the name docs/spec.md §3 and the API contract use)
from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from revcheck import bits as _bits
from revcheck import formats
from revcheck.audit import values as vl
from revcheck.audit.target import load_target
from revcheck.errors import UsageError
from revcheck.oracle import bdia as oracle

__all__ = [
    "BANDS",
    "GAMMA_PATTERNS",
    "StackAuditReport",
    "StackCase",
    "StackFailure",
    "audit_stack",
    "default_blocks",
]

#: The gamma patterns the cases cycle through; "zeros" rows are inference samples (forward only).
GAMMA_PATTERNS = ("plus", "minus", "alternating", "random", "random with zeros", "inference")
#: Bit lengths of the input codes the cases cycle through (the largest is far enough below 2**62
#: that deep stacks, whose codes grow, mostly stay in range).
MAGNITUDE_BITS = (4, 12, 20, 23, 24, 25, 30, 40, 52, 53, 54, 58)
#: Bands of the largest code a case reaches: where fp32 and fp64 stop holding every integer.
BANDS = ("|X| < 2^24", "2^24 ≤ |X| < 2^53", "|X| ≥ 2^53")
CHECKS = ("forward", "reconstruction", "backward")
DEFAULT_CASES = len(GAMMA_PATTERNS) * len(MAGNITUDE_BITS)  # every (pattern, magnitude) pair once


def _band(largest: int) -> str:
    return BANDS[0] if largest < 1 << 24 else BANDS[1] if largest < 1 << 53 else BANDS[2]


# ---- the default block family -------------------------------------------------------------------


def default_blocks(depth: int, width: int, seed: int, scale: float) -> list[Any]:
    """``depth`` blocks ``x -> scale · dropout(tanh(W x + b))``, float32, weights from ``seed``.

    Dropout (p = 1/4) draws from the global RNG, which the audit seeds per case and
    replays: a stack that does not replay it reconstructs wrong states.
    """
    import torch
    from torch import nn

    class Scale(nn.Module):
        def __init__(self, factor: float) -> None:
            super().__init__()
            self.register_buffer("factor", torch.tensor(factor, dtype=torch.float32))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * self.factor  # type: ignore[operator]

    generator = torch.Generator().manual_seed(seed)
    blocks = []
    for _ in range(depth):
        linear = nn.Linear(width, width)
        with torch.no_grad():
            linear.weight.copy_(torch.randn(width, width, generator=generator) / width**0.5)
            linear.bias.copy_(torch.randn(width, generator=generator) * 0.1)
        blocks.append(nn.Sequential(linear, nn.Tanh(), nn.Dropout(0.25), Scale(scale)))
    return blocks


# ---- cases --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StackCase:
    """One drawn stack: depth, gamma pattern, input codes and the seeds of blocks, dropout, gradient."""

    depth: int
    pattern: str
    gammas: list[list[float]]
    input_bits: int
    block_seed: int
    dropout_seed: int
    scale: float
    gradient_seed: int

    def prefix(self, depth: int) -> StackCase:
        """The same stack cut to its first ``depth`` blocks (shrinking)."""
        return StackCase(
            depth,
            self.pattern,
            self.gammas[: depth - 1],
            self.input_bits,
            self.block_seed,
            self.dropout_seed,
            self.scale,
            self.gradient_seed,
        )

    @property
    def has_zero(self) -> bool:
        return any(g == 0 for row in self.gammas for g in row)

    @property
    def inference(self) -> bool:
        return self.pattern == "inference"


def _gamma_rows(pattern: str, depth: int, batch: int, rng: np.random.Generator) -> list[list[float]]:
    rows = []
    for k in range(1, depth):
        if pattern == "plus":
            row = [0.5] * batch
        elif pattern == "minus":
            row = [-0.5] * batch
        elif pattern == "alternating":
            row = [0.5 if (k + b) % 2 else -0.5 for b in range(batch)]
        elif pattern == "random":
            row = [float(v) for v in rng.choice([-0.5, 0.5], size=batch)]
        elif pattern == "random with zeros":
            row = [float(v) for v in rng.choice([-0.5, 0.0, 0.5], size=batch)]
        else:
            row = [0.0] * batch
        rows.append(row)
    return rows


def _draw_cases(count: int, max_depth: int, batch: int, l: int, seed: int) -> list[StackCase]:
    """``count`` cases: every (gamma pattern, magnitude) pair once, in a shuffled order, before any repeats;
    depths ``1 … max_depth`` in turn, then at random."""
    rng = np.random.default_rng(seed)
    combinations = [(p, b) for p in GAMMA_PATTERNS for b in MAGNITUDE_BITS]
    order = [combinations[i] for i in rng.permutation(len(combinations))]
    cases = []
    for index in range(count):
        pattern, bits = order[index % len(order)]
        depth = 1 + index % max_depth if index < 2 * max_depth else int(rng.integers(1, max_depth + 1))
        cases.append(
            StackCase(
                depth=depth,
                pattern=pattern,
                gammas=_gamma_rows(pattern, depth, batch, rng),
                input_bits=bits,
                block_seed=int(rng.integers(2**31)),
                dropout_seed=int(rng.integers(2**31)),
                # Block outputs up to the size of the states (x = X · 2**-l): h matters in y_k.
                scale=float(2.0 ** (bits - l - int(rng.integers(0, 7)))),
                gradient_seed=int(rng.integers(2**31)),
            )
        )
    return cases


# ---- findings and the report --------------------------------------------------------------------


@dataclass(frozen=True)
class StackFailure:
    """Where the candidate first differs in one case.

    ``check``: ``"forward"``, ``"reconstruction"`` or ``"backward"``; ``what``: the
    quantity (``"state X_3"``, ``"side bit s_1"``, ``"gradient of blocks[2].0.weight"``);
    ``index``: the element; ``labels``: gamma and magnitude labels.
    """

    check: str
    what: str
    index: tuple[int, ...]
    expected: str
    actual: str
    labels: tuple[str, ...] = ()
    note: str = ""

    def text(self) -> str:
        lines = [f"  {self.check}: {self.what} differs" + (f" at {self.index}" if self.index else "")]
        if self.note:
            lines.append(f"    note:     {self.note}")
        lines.append(f"    expected: {self.expected}")
        lines.append(f"    actual:   {self.actual}")
        if self.labels:
            lines.append(f"    class:    {', '.join(self.labels)}")
        return "\n".join(lines)


@dataclass
class CaseResult:
    """The verdict of every check on one case (``status`` per check: passed / failed / skipped)."""

    case: StackCase
    band: str
    status: dict[str, str] = field(default_factory=dict)
    failure: StackFailure | None = None
    saved_bytes: int | None = None
    stored_bytes: int | None = None
    largest_code: int = 0
    note: str = ""


@dataclass
class StackAuditReport:
    """All cases of one :func:`audit_stack` run, the bands table, the shrunk first failure, saved bytes."""

    candidate: str
    results: list[CaseResult]
    seed: int | None
    compute_dtype: str
    l: int
    shrunk: tuple[CaseResult, int] | None = None

    @property
    def checked(self) -> list[CaseResult]:
        return [r for r in self.results if r.band != "out of range"]

    @property
    def failures(self) -> list[CaseResult]:
        return [r for r in self.results if r.failure is not None]

    @property
    def verdict(self) -> str:
        if self.failures:
            return "failed"
        return "passed" if self.checked else "not checked"

    @property
    def passed(self) -> bool:
        return self.verdict == "passed"

    def band_table(self) -> str:
        """Cases checked and failed per check and band of the largest code reached."""
        header = ("band", *CHECKS)
        rows = []
        for band in BANDS:
            in_band = [r for r in self.checked if r.band == band]
            cells = [band]
            for check in CHECKS:
                ran = [r for r in in_band if r.status.get(check) in ("passed", "failed")]
                failed = [r for r in ran if r.status[check] == "failed"]
                cells.append(f"{len(ran) - len(failed)}/{len(ran)} passed" if ran else "-")
            rows.append(tuple(cells))
        widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
        lines = [
            "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
            for row in [header, *rows]
        ]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join(lines)

    def saved_table(self) -> str:
        """Saved-for-backward bytes of the candidate's backward and of the stored run, per depth."""
        by_depth: dict[int, CaseResult] = {}
        for result in self.results:
            if result.saved_bytes is not None and result.case.depth not in by_depth:
                by_depth[result.case.depth] = result
        if not by_depth:
            return "saved for backward: not measured (no backward given, or no case ran it)"
        lines = ["saved for backward, bytes (one case per depth):", "  depth  candidate  stored activations"]
        for depth in sorted(by_depth):
            result = by_depth[depth]
            lines.append(f"  {depth:>5}  {result.saved_bytes:>9}  {result.stored_bytes:>18}")
        return "\n".join(lines)

    def __str__(self) -> str:
        out_of_range = len(self.results) - len(self.checked)
        seed = "derandomized" if self.seed is None else str(self.seed)
        lines = [
            f"revcheck audit-stack of {self.candidate}: {self.verdict.upper()} ({len(self.failures)} of "
            f"{len(self.checked)} cases failed, {out_of_range} out of range; {self.compute_dtype}, "
            f"l = {self.l}; seed {seed})",
            "",
            self.band_table(),
        ]
        if self.checked:
            largest = max(r.largest_code for r in self.checked)
            depths = sorted({r.case.depth for r in self.checked})
            lines.append(
                f"(depths {depths[0]}..{depths[-1]}, gamma patterns {', '.join(GAMMA_PATTERNS)}; largest "
                f"code reached 2^{np.log2(max(largest, 1)):.1f}, the limit is 2^62; reconstruction is not "
                "defined where some gamma is 0, backward is compared where all gammas are ±1/2 or all are 0)"
            )
        lines += ["", self.saved_table()]
        exact_below = self._exact_below()
        if exact_below:
            lines += ["", exact_below]
        if self.shrunk is not None:
            result, original = self.shrunk
            assert result.failure is not None
            case = result.case
            lines += [
                "",
                f"first failure, shrunk from depth {original} to depth {case.depth}: gammas {case.pattern} "
                f"{case.gammas}, input codes of {case.input_bits} bits, block seed {case.block_seed}, "
                f"dropout seed {case.dropout_seed}, block output scale {case.scale:g}",
                result.failure.text(),
            ]
        return "\n".join(lines)

    def _exact_below(self) -> str:
        """ "exact only below 2^24" when every failure has codes >= 2^24 and cases below passed."""
        if not self.failures:
            return ""
        for limit, band in ((24, BANDS[0]), (53, BANDS[1])):
            below = [r for r in self.checked if BANDS.index(r.band) <= BANDS.index(band)]
            if below and all(r.failure is None for r in below):
                smallest = min(
                    (r for r in self.failures), key=lambda r: BANDS.index(r.band)
                )  # the first band that fails
                return (
                    f"exact only below 2^{limit} codes: every case whose codes stay below 2^{limit} passed "
                    f"({len(below)} cases); failures start in the band {smallest.band}"
                )
        return ""

    def raise_for_failures(self) -> None:
        """Raise ``AssertionError`` (with the report) unless every checked case passed."""
        if not self.passed:
            raise AssertionError(str(self))

    def to_dict(self) -> dict[str, Any]:
        return {
            "candidate": self.candidate,
            "verdict": self.verdict,
            "passed": self.passed,
            "seed": self.seed,
            "compute_dtype": self.compute_dtype,
            "l": self.l,
            "results": [asdict(r) for r in self.results],
            "shrunk": None
            if self.shrunk is None
            else {"depth_before": self.shrunk[1], **asdict(self.shrunk[0])},
        }

    def to_json(self, **dump_options: Any) -> str:
        dump_options.setdefault("indent", 2)
        return json.dumps(self.to_dict(), default=str, **dump_options)


# ---- running one case ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Setup:
    forward: Callable[..., Any]
    reconstruct: Callable[..., Any] | None
    backward: Callable[..., Any] | None
    family: Callable[..., Any]
    width: int
    batch: int
    l: int
    compute_dtype: Any  # torch dtype
    numpy_dtype: Any


class _OutOfRange(Exception):
    """The case's codes leave |X| < 2**62 (the oracle refuses it): not a verdict on the candidate."""


def _input(setup: _Setup, case: StackCase) -> Any:
    """x0 (B, D) in the compute dtype, on the grid, codes of about ``case.input_bits`` bits."""
    import torch

    rng = np.random.default_rng(case.block_seed ^ 0x5EED)
    significand_bits = formats.get(setup.compute_dtype).precision
    shift = max(case.input_bits - significand_bits, 0)
    top = 1 << min(case.input_bits, significand_bits)
    codes = rng.integers(top // 2, top, size=(setup.batch, setup.width), dtype=np.int64) << shift
    codes *= rng.choice(np.array([-1, 1], dtype=np.int64), size=codes.shape)
    values = np.ldexp(codes.astype(np.float64), -setup.l)
    return torch.from_numpy(values).to(setup.compute_dtype)


def _blocks(setup: _Setup, case: StackCase) -> list[Any]:
    blocks = list(setup.family(case.depth, setup.width, case.block_seed, case.scale))
    for block in blocks:
        block.train(not case.inference)
    return blocks


def _codes_of(state: Any, l: int, what: str) -> np.ndarray[Any, Any]:
    """A candidate's state as int64 codes: int64 as it is, float grid values times 2**l (exactly)."""
    import torch

    if not isinstance(state, torch.Tensor):
        raise _CandidateError(f"{what} is a {type(state).__name__}, not a tensor")
    if not state.is_floating_point():
        return np.asarray(state.detach().cpu().to(torch.int64).numpy())
    values = np.ldexp(state.detach().cpu().to(torch.float64).numpy(), l)
    if not np.all(np.isfinite(values)) or np.any(np.abs(values) >= 2.0**63):
        raise _CandidateError(f"{what} holds values that are no codes (NaN, inf or |x · 2**l| >= 2**63)")
    if np.any(values != np.rint(values)):
        raise _CandidateError(f"{what} holds values off the grid of step 2**-{l}")
    return values.astype(np.int64)


class _CandidateError(Exception):
    """The candidate returned something that cannot be compared (reported as a failure)."""


def _oracle_forward(setup: _Setup, case: StackCase, blocks: list[Any], x0: Any) -> tuple[Any, list[Any]]:
    """The oracle's trace on the same blocks, and the RNG state before each block (for the inverse)."""
    import torch

    rng_states: list[Any] = []

    def block_fn(index: int) -> Callable[[np.ndarray[Any, Any]], np.ndarray[Any, Any]]:
        def call(x: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
            rng_states.append(torch.get_rng_state())
            return _run_block(blocks[index], x, setup)

        return call

    X0 = oracle.quantize(x0.to(torch.float64).numpy(), setup.l)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(case.dropout_seed)
        try:
            trace = oracle.forward(
                X0, [block_fn(k) for k in range(case.depth)], _gamma_array(case, setup), setup.l,
                compute_dtype=setup.numpy_dtype,
            )  # fmt: skip
        except ValueError as error:
            raise _OutOfRange(str(error)) from None
    return trace, rng_states


def _gamma_array(case: StackCase, setup: _Setup) -> np.ndarray[Any, Any]:
    return np.array(case.gammas, dtype=np.float64).reshape(case.depth - 1, setup.batch)


def _run_block(block: Any, x: np.ndarray[Any, Any], setup: _Setup) -> np.ndarray[Any, Any]:
    """``h(x)`` as docs/spec.md D3.5 says: x in the block's dtype, the output back in the compute dtype."""
    import torch

    dtype = next((t.dtype for t in [*block.parameters(), *block.buffers()] if t.is_floating_point()), None)
    tensor = torch.from_numpy(np.ascontiguousarray(x)).to(setup.compute_dtype)
    with torch.no_grad():
        h = block(tensor.to(dtype or setup.compute_dtype)).to(setup.compute_dtype)
    return np.asarray(h.numpy())


def _labels(gamma: float | None, codes: dict[str, int]) -> tuple[str, ...]:
    labels = (
        [] if gamma is None else ["gamma=+1/2" if gamma > 0 else "gamma=-1/2" if gamma < 0 else "gamma=0"]
    )
    for name, code in codes.items():
        labels += vl.code_labels(name, code)
    return tuple(labels)


def _compare_states(
    check: str, expected: list[np.ndarray[Any, Any]], actual: list[np.ndarray[Any, Any]], case: StackCase
) -> StackFailure | None:
    for k, (want, got) in enumerate(zip(expected, actual, strict=True)):
        if want.shape != got.shape:
            return StackFailure(check, f"state X_{k}", (), f"shape {want.shape}", f"shape {got.shape}")
        wrong = want != got
        if wrong.any():
            index = tuple(int(i) for i in np.argwhere(wrong)[0])
            gamma = None if k < 2 else case.gammas[k - 2][index[0]]
            codes = {f"X_{k}": int(want[index])}
            if k >= 1:
                codes[f"X_{k - 1}"] = int(expected[k - 1][index])
            return StackFailure(
                check,
                f"state X_{k}",
                index,
                f"code {int(want[index])}",
                f"code {int(got[index])} (off by {int(got[index]) - int(want[index])})",
                _labels(gamma, codes),
            )
    return None


def _compare_side_bits(
    expected: list[np.ndarray[Any, Any]], actual: list[Any], case: StackCase
) -> StackFailure | None:
    import torch

    for k, (want, got) in enumerate(zip(expected, actual, strict=True)):
        if not isinstance(got, torch.Tensor) or got.is_floating_point() or tuple(got.shape) != want.shape:
            shown = f"{got.dtype} {tuple(got.shape)}" if isinstance(got, torch.Tensor) else type(got).__name__
            return StackFailure(
                "forward", f"side bit s_{k}", (), f"0/1 integers of shape {want.shape}", shown
            )
        got_array = got.detach().cpu().to(torch.int64).numpy()
        training = np.array(case.gammas[k]) != 0  # side bits of inference samples are not used
        wrong = (want.astype(np.int64) != got_array) & training[:, None]
        if wrong.any():
            index = tuple(int(i) for i in np.argwhere(wrong)[0])
            return StackFailure(
                "forward", f"side bit s_{k}", index, str(int(want[index])), str(int(got_array[index])),
                _labels(case.gammas[k][index[0]], {}),
            )  # fmt: skip
    return None


def _split_forward_output(output: Any, depth: int) -> tuple[list[Any], list[Any], Any]:
    if not isinstance(output, (tuple, list)) or len(output) not in (2, 3):
        raise _CandidateError(
            "forward must return (states, side_bits) or (states, side_bits, saved), got "
            f"{type(output).__name__}"
        )
    states, side_bits = list(output[0]), list(output[1])
    saved = output[2] if len(output) == 3 else None
    if len(states) != depth + 1:
        raise _CandidateError(
            f"forward returned {len(states)} states; a stack of {depth} blocks has {depth + 1}"
        )
    if len(side_bits) != depth - 1:
        raise _CandidateError(f"forward returned {len(side_bits)} side bits; {depth} blocks need {depth - 1}")
    return states, side_bits, saved


def _run_case(setup: _Setup, case: StackCase) -> CaseResult:
    import torch

    blocks = _blocks(setup, case)
    x0 = _input(setup, case)
    try:
        trace, rng_states = _oracle_forward(setup, case, blocks, x0)
    except _OutOfRange as error:
        return CaseResult(case, "out of range", note=str(error))
    largest = max(int(np.abs(codes).max()) for codes in trace.codes)
    result = CaseResult(case, _band(largest), largest_code=largest)
    gammas = torch.from_numpy(_gamma_array(case, setup)).to(setup.compute_dtype)
    keywords = {"compute_dtype": setup.compute_dtype}
    # forward
    try:
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            torch.manual_seed(case.dropout_seed)
            output = setup.forward(x0.clone(), blocks, gammas.clone(), setup.l, **keywords)
        states, side_bits, saved = _split_forward_output(output, case.depth)
        codes = [_codes_of(s, setup.l, f"state X_{k}") for k, s in enumerate(states)]
        failure = _compare_states("forward", trace.codes, codes, case) or _compare_side_bits(
            trace.side_bits, side_bits, case
        )
    except _CandidateError as error:
        failure = StackFailure("forward", "the output", (), "see the protocol", str(error))
    except Exception as error:  # what the user's forward raises is a finding
        failure = StackFailure("forward", "the call", (), "no error", f"{type(error).__name__}: {error}")
    result.status["forward"] = "failed" if failure else "passed"
    if failure:
        result.failure = failure
    # reconstruction: from the candidate's own top states, against the oracle's inverse from the same
    if setup.reconstruct is not None and not case.has_zero and case.depth >= 2 and failure is None:
        result.status["reconstruction"] = "passed"
        failure = _check_reconstruction(setup, case, blocks, states, side_bits, saved, codes, rng_states)
        if failure is not None:
            result.status["reconstruction"] = "failed"
            result.failure = failure
    else:
        result.status["reconstruction"] = "skipped"
    # backward
    if setup.backward is not None and (not case.has_zero or case.inference) and result.failure is None:
        failure, saved_bytes, stored_bytes = _check_backward(setup, case, blocks, x0, gammas)
        result.saved_bytes, result.stored_bytes = saved_bytes, stored_bytes
        result.status["backward"] = "failed" if failure else "passed"
        if failure is not None:
            result.failure = failure
    else:
        result.status["backward"] = "skipped"
    return result


def _check_reconstruction(
    setup: _Setup,
    case: StackCase,
    blocks: list[Any],
    states: list[Any],
    side_bits: list[Any],
    saved: Any,
    codes: list[np.ndarray[Any, Any]],
    rng_states: list[Any],
) -> StackFailure | None:
    import torch

    def replayed(index: int) -> Callable[[np.ndarray[Any, Any]], np.ndarray[Any, Any]]:
        def call(x: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
            torch.set_rng_state(rng_states[index])
            return _run_block(blocks[index], x, setup)

        return call

    bits = [b.detach().cpu().to(torch.int64).numpy().astype(np.uint8) for b in side_bits]
    with torch.random.fork_rng(devices=[]):
        try:
            expected = oracle.inverse(
                codes[-1], codes[-2], [None, *(replayed(k) for k in range(1, case.depth))],
                _gamma_array(case, setup), bits, setup.l, compute_dtype=setup.numpy_dtype,
            )  # fmt: skip
        except ValueError as error:
            return StackFailure("reconstruction", "the oracle's inverse", (), "states in range", str(error))
    gammas = torch.from_numpy(_gamma_array(case, setup)).to(setup.compute_dtype)
    keywords: dict[str, Any] = {"compute_dtype": setup.compute_dtype}
    if saved is not None:
        keywords["saved"] = saved
    try:
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            torch.manual_seed(case.dropout_seed)
            rebuilt = setup.reconstruct(
                states[-1], states[-2], blocks, gammas, side_bits, setup.l, **keywords
            )  # type: ignore[misc]
        rebuilt = list(rebuilt)
        if len(rebuilt) != case.depth + 1:
            raise _CandidateError(f"reconstruct returned {len(rebuilt)} states, expected {case.depth + 1}")
        got = [_codes_of(s, setup.l, f"reconstructed X_{k}") for k, s in enumerate(rebuilt)]
    except _CandidateError as error:
        return StackFailure("reconstruction", "the output", (), "see the protocol", str(error))
    except Exception as error:
        return StackFailure("reconstruction", "the call", (), "no error", f"{type(error).__name__}: {error}")
    return _compare_states("reconstruction", expected, got, case)


def _check_backward(
    setup: _Setup, case: StackCase, blocks: list[Any], x0: Any, gammas: Any
) -> tuple[StackFailure | None, int | None, int | None]:
    import torch

    from revcheck.bench.bdia import saved_for_backward
    from revcheck.nn import BDIAStack
    from revcheck.testing import compare_bits

    parameters = [
        (f"blocks[{i}].{name}", p) for i, b in enumerate(blocks) for name, p in b.named_parameters()
    ]
    generator = torch.Generator().manual_seed(case.gradient_seed)
    upstream = torch.randn(x0.shape, generator=generator, dtype=torch.float64).to(setup.compute_dtype)

    def gradients(run: Callable[[Any], Any]) -> tuple[Any, int]:
        leaf = x0.clone().requires_grad_()
        kept: list[Any] = []
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(case.dropout_seed)
            measured = saved_for_backward(
                lambda: kept.append(run(leaf)),
                [leaf, *(p for _, p in parameters), *(b for block in blocks for b in block.buffers())],
            )
        inputs = [leaf, *(p for _, p in parameters)]
        grads = torch.autograd.grad(kept[0], inputs, upstream, allow_unused=True)
        return grads, measured.nbytes

    stack = BDIAStack(blocks, l=setup.l, mode="stored", compute_dtype=setup.compute_dtype, seed=0)
    stack.train(not case.inference)
    signs = None if case.inference else torch.from_numpy(np.sign(_gamma_array(case, setup))).to(torch.int8)
    try:
        reference, stored_bytes = gradients(lambda leaf: stack(leaf, gamma_signs=signs))
    except ValueError as error:  # BDIARangeError: out of range for the reference
        return StackFailure("backward", "the stored-activation run", (), "in range", str(error)), None, None
    try:
        candidate, saved_bytes = gradients(
            lambda leaf: setup.backward(
                leaf, blocks, gammas.clone(), setup.l, compute_dtype=setup.compute_dtype
            )  # type: ignore[misc]
        )
    except Exception as error:
        return (
            StackFailure("backward", "the call", (), "no error", f"{type(error).__name__}: {error}"),
            None,
            None,
        )
    names = ["the input x_0", *(f"gradient of {name}" for name, _ in parameters)]
    for name, want, got in zip(names, reference, candidate, strict=True):
        if want is None or got is None:
            if (want is None) != (got is None):
                return (
                    StackFailure(
                        "backward",
                        name,
                        (),
                        str(want is not None),
                        str(got is not None),
                        note="gradient present",
                    ),
                    saved_bytes,
                    stored_bytes,
                )
            continue
        comparison = compare_bits(got, want)
        if not comparison.equal:
            index = comparison.indices[0] if comparison.indices else ()
            fmt = formats.get(want.dtype)
            from revcheck.bits import describe

            return (
                StackFailure(
                    "backward",
                    name if name.startswith("gradient") else f"gradient of {name}",
                    index,
                    describe(comparison.expected_bits[0], fmt)
                    if comparison.expected_bits
                    else comparison.expected_info,
                    describe(comparison.actual_bits[0], fmt)
                    if comparison.actual_bits
                    else comparison.actual_info,
                    note=f"{comparison.mismatch_count} of {comparison.total} elements differ",
                ),
                saved_bytes,
                stored_bytes,
            )
    return None, saved_bytes, stored_bytes


# ---- the entry point ----------------------------------------------------------------------------


def _resolve(candidate: Callable[..., Any] | str | None, what: str) -> Callable[..., Any] | None:
    if candidate is None:
        return None
    resolved = load_target(candidate) if isinstance(candidate, str) else candidate
    if not callable(resolved):
        raise UsageError(f"{what} {resolved!r} is not callable; pass the function itself or MODULE:FUNCTION")
    return resolved


def _name(candidate: Callable[..., Any] | str) -> str:
    if isinstance(candidate, str):
        return candidate
    module = getattr(candidate, "__module__", None)
    qualname = getattr(candidate, "__qualname__", None)
    return f"{module}:{qualname}" if module and qualname else repr(candidate)


def audit_stack(
    forward: Callable[..., Any] | str,
    reconstruct: Callable[..., Any] | str | None = None,
    *,
    backward: Callable[..., Any] | str | None = None,
    blocks: Callable[..., Any] | str | None = None,
    cases: int = DEFAULT_CASES,
    max_depth: int = 8,
    width: int = 8,
    batch: int = 3,
    l: int = oracle.PAPER_L,
    compute_dtype: str = "fp32",
    seed: int | None = None,
) -> StackAuditReport:
    """Audit a whole BDIA stack against the oracle's forward and inverse, and its gradients.

    The checks, the cases and the candidate protocol are in the module docstring.

    Parameters
    ----------
    forward, reconstruct, backward
        The candidate's functions (or ``"module:function"`` / ``"file.py:function"``
        texts), with the protocol of the module docstring.  ``reconstruct`` and
        ``backward`` are optional; what is not given is not checked.
    blocks
        The block family, ``blocks(depth, width, seed, scale) -> list[nn.Module]``
        (default :func:`default_blocks`).
    cases
        How many stacks to draw (depths cycle through ``1 … max_depth`` first).
    width, batch
        State shape ``(batch, width)``.
    l
        Grid exponent (step ``2**-l``); ``0 <= l <= 62``.
    compute_dtype
        The residual compute format, ``"fp32"`` or ``"fp64"``.
    seed
        None for the fixed default draws; an int draws other cases.

    Raises
    ------
    revcheck.errors.UsageError
        For arguments it cannot serve (a target that names nothing callable, a
        compute dtype other than fp32/fp64, sizes below 1, ``l`` out of range).

    Examples
    --------
    >>> from tests.gallery import audit_stacks as gallery
    >>> report = audit_stack(gallery.code_forward, gallery.code_reconstruct, cases=6, max_depth=3)
    >>> report.passed
    True
    """

    chosen = [
        _resolve(forward, "forward"),
        _resolve(reconstruct, "reconstruct"),
        _resolve(backward, "backward"),
    ]
    family = _resolve(blocks, "blocks") or default_blocks
    try:
        fmt = formats.get(compute_dtype)
    except formats.UnsupportedFormatError:
        raise UsageError(f"compute_dtype {compute_dtype!r} is not a format; use 'fp32' or 'fp64'") from None
    if fmt.name not in oracle.COMPUTE_FORMATS:
        raise UsageError(f"compute_dtype {fmt.name} is not a BDIA compute dtype; use 'fp32' or 'fp64'")
    for name, value, low in (
        ("cases", cases, 1),
        ("max_depth", max_depth, 1),
        ("width", width, 1),
        ("batch", batch, 1),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise UsageError(f"{name}={value!r} must be an int of at least {low}")
    if isinstance(l, bool) or not isinstance(l, int) or not 0 <= l <= oracle.MAX_L:
        raise UsageError(f"l={l!r} must be an int with 0 <= l <= {oracle.MAX_L}")
    assert chosen[0] is not None
    setup = _Setup(
        chosen[0], chosen[1], chosen[2], family, width, batch, l,
        _bits.torch_dtype(fmt), fmt.numpy_float,
    )  # fmt: skip
    drawn = _draw_cases(cases, max_depth, batch, l, 0 if seed is None else seed)
    results = [_run_case(setup, case) for case in drawn]
    report = StackAuditReport(_name(forward), results, seed, fmt.name, l)
    failing = [r for r in results if r.failure is not None]
    if failing:
        # The simplest failure: the smallest codes, then the fewest blocks; then shrunk in depth.
        first = min(failing, key=lambda r: (r.largest_code.bit_length(), r.case.depth))
        report.shrunk = (_shrink(setup, first), first.case.depth)
    return report


def _shrink(setup: _Setup, failing: CaseResult) -> CaseResult:
    """The failing case cut to the smallest depth that still fails (the same failure kind or another)."""
    for depth in range(1, failing.case.depth):
        result = _run_case(setup, failing.case.prefix(depth))
        if result.failure is not None:
            return result
    return failing
