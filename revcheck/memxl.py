"""Checks for memory-based transformers that users call on their own models (docs/spec.md §6).

Each check names the level it proves (docs/spec.md §0) and raises its own ``AssertionError``
subclass with the evidence; bad requests raise :class:`~revcheck.errors.UsageError` subclasses.

==================================  =========================================================  ======
check                               claim                                                      levels
==================================  =========================================================  ======
:func:`assert_recurrence_equivalent`  segment recurrence == one full pass with the staircase    O, R, K
                                    mask (forward), and its gradients == those of the full
                                    pass with stop-gradient on earlier segments
:func:`assert_relative`             the isolated positional score depends on ``i - j`` only    K, R
:func:`assert_cross_head_reparam`   a fixed head permutation of K/R/V == permuting the head    K
                                    blocks of the K/R/V projection weights
:func:`assert_cross_head_inactive`  identity permutation, ``ch_prob = 0`` and eval mode are    K
                                    plain attention
:func:`skip_retain_trace`           per layer and segment: skipped layers are the identity     K
                                    and keep their memory; memory age vs positions used
:func:`assert_memory_update`        the new memory is exactly the last ``mem_len`` rows of     K
                                    ``[m ; h[:qlen - ext_len]]``, detached; inputs untouched
:func:`assert_conforms_to_oracle`   the torch model computes the oracle's function             R (fp64 bound)
:func:`assert_phase_two_is_baseline`  phase 2 of the two-phase trainer == the plain model      K
==================================  =========================================================  ======

**The model protocol** (what :func:`assert_recurrence_equivalent` calls): ``model(tokens, mems)``
returns the segment's output and new memories (a tuple, or an object with ``.output`` and ``.mems``;
``mems=None`` is the first segment), and ``model.full_pass(tokens, allowed, stop_gradient)`` runs the
whole sequence with a bool ``(T, T)`` mask (True = allowed) and, for gradients, keys that enter
through stop-gradient where ``stop_gradient`` is True.  Build those masks for your own model with
:func:`revcheck.oracle.memxl.staircase_mask` and :func:`revcheck.oracle.memxl.stop_gradient_mask`.
``init_memory`` other than ``"empty"`` calls ``model.init_memory(batch, init_memory)``; level O calls
``model.to_oracle()``.  :class:`revcheck.nn.memxl.MemTransformerXL` implements all of it.

**Levels here.**  O: the NumPy oracle (:mod:`revcheck.oracle.memxl`) of the model's weights, bit for
bit, after the model is shown to conform to it.  R: a float64 copy of the model, every element within
:data:`FP64_BOUND` relative to the larger magnitude of the two sides -- a stated acceptance bound (the
measured float64 difference is ~1e-15; every planted bug differs by > 1e-4), not a derived one, and
the exact model (:mod:`revcheck.exact.memxl`) proves the real-number equality for the oracle's
composition.  K: the model as it is, on its device and dtype, bit for bit; a K failure where O
holds is a finding about the kernels (row lengths differ between the recurrence and the full pass).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch import Tensor

from revcheck.errors import UsageError
from revcheck.levels import Level, check_level
from revcheck.oracle import memxl as oracle
from revcheck.oracle.memxl import INIT_MEMORIES, staircase_mask, stop_gradient_mask
from revcheck.testing import Comparison, compare_bits

__all__ = [
    "FP64_BOUND",
    "CrossHeadInactiveError",
    "CrossHeadReparamError",
    "Deviation",
    "MemXLCheckError",
    "MemoryUpdateError",
    "OracleConformanceError",
    "PhaseTwoError",
    "RecurrenceMismatchError",
    "RecurrenceReport",
    "RelativePositionError",
    "SkipRetainError",
    "SkipRetainTrace",
    "StopGradientMismatchError",
    "assert_conforms_to_oracle",
    "assert_cross_head_inactive",
    "assert_cross_head_reparam",
    "assert_memory_update",
    "assert_phase_two_is_baseline",
    "assert_recurrence_equivalent",
    "assert_relative",
    "measure_deviation",
    "skip_retain_trace",
]

#: Level-R acceptance bound for float64 comparisons: ``|a - b| <= FP64_BOUND * max(|a|max, |b|max)``.
FP64_BOUND = 2.0**-30


# ----------------------------------------------------------------------------- errors


class MemXLCheckError(AssertionError):
    """Base of the memory-transformer check failures; ``level`` names the level that failed."""

    def __init__(self, message: str, level: Level | str) -> None:
        self.level = check_level(level)
        super().__init__(f"[level {self.level.value}] {message}")


class RecurrenceMismatchError(MemXLCheckError):
    """The segment recurrence is not the masked full pass (forward outputs differ)."""


class StopGradientMismatchError(RecurrenceMismatchError):
    """The recurrence's gradients differ from those of the full pass with stop-gradient on earlier ones."""


class OracleConformanceError(MemXLCheckError):
    """The torch model does not compute the oracle's function (float64, :data:`FP64_BOUND`)."""


class RelativePositionError(MemXLCheckError):
    """The isolated positional score is not a function of ``i - j`` alone (e.g. no relative shift)."""


class CrossHeadReparamError(MemXLCheckError):
    """A fixed cross-head permutation differs from permuting the K/R/V head blocks of the weights."""


class CrossHeadInactiveError(MemXLCheckError):
    """Cross-head changed the result where it must be plain attention (identity, ch_prob = 0, eval)."""


class SkipRetainError(MemXLCheckError):
    """A skipped layer was not the identity, changed its memory, or memory positions ignore its age."""


class MemoryUpdateError(MemXLCheckError):
    """The new memory is not the last mem_len rows of [m ; h[:qlen - ext_len]], detached, inputs untouched."""


class PhaseTwoError(MemXLCheckError):
    """Phase 2 of the two-phase trainer is not the plain model with the same weights."""


# ----------------------------------------------------------------------------- comparisons


@dataclass(frozen=True)
class Deviation:
    """How far two arrays are apart: bit mismatches and the largest absolute / relative difference."""

    mismatches: int
    total: int
    max_abs: float
    max_rel: float
    max_ulp: int | None
    first_index: tuple[int, ...] | None

    @property
    def bit_exact(self) -> bool:
        return self.mismatches == 0

    def text(self) -> str:
        if self.bit_exact:
            return f"bit-exact ({self.total} values)"
        # Beyond a million ULPs (e.g. across zero) the count says nothing the absolute difference does not.
        ulp = "" if self.max_ulp is None or self.max_ulp > 10**6 else f", max {self.max_ulp} ULP"
        return (
            f"{self.mismatches} / {self.total} values differ in their bits{ulp}; "
            f"max |Δ| = {self.max_abs:.3g}, "
            f"max |Δ| / scale = {self.max_rel:.3g}; first at index {self.first_index}"
        )


def _numpy(x: Any) -> np.ndarray[Any, Any]:
    if isinstance(x, Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def measure_deviation(actual: Any, expected: Any) -> Deviation:
    """Compare two float arrays/tensors: bit mismatches, max |Δ| and max |Δ| relative to the larger side."""
    a, e = _numpy(actual), _numpy(expected)
    if a.shape != e.shape:
        raise UsageError(f"cannot compare shapes {a.shape} and {e.shape}")
    comparison: Comparison = compare_bits(a, e, check_dtype=False)
    wide_a, wide_e = a.astype(np.float64), e.astype(np.float64)
    diff = np.abs(wide_a - wide_e)
    scale = max(float(np.max(np.abs(wide_a), initial=0.0)), float(np.max(np.abs(wide_e), initial=0.0)))
    max_abs = float(np.max(diff, initial=0.0)) if not np.isnan(diff).any() else float("nan")
    max_rel = max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else float("inf"))
    first = comparison.indices[0] if comparison.indices else None
    return Deviation(comparison.mismatch_count, int(a.size), max_abs, max_rel, comparison.max_ulp, first)


def _within_bound(deviation: Deviation) -> bool:
    return deviation.max_rel <= FP64_BOUND  # NaN compares False: a NaN is never within the bound


def _describe(x: Any) -> str:
    if isinstance(x, Tensor):
        return f"{x.device.type} {str(x.dtype).removeprefix('torch.')} {tuple(x.shape)}"
    return f"numpy {x.dtype} {x.shape}"


# ----------------------------------------------------------------------------- the model protocol


def _unpack(result: Any) -> tuple[Tensor, Any]:
    if hasattr(result, "output") and hasattr(result, "mems"):
        return result.output, result.mems
    if isinstance(result, (tuple, list)) and len(result) == 2:
        return result[0], result[1]
    raise UsageError(
        f"the model returned {type(result).__name__}; a segment call must return (output, mems) or an object "
        "with .output and .mems"
    )


def _run_recurrence(model: Any, tokens: Tensor, segment_length: int, init_memory: str) -> list[Tensor]:
    mems = None if init_memory == "empty" else model.init_memory(tokens.shape[0], init_memory)
    outputs = []
    for start in range(0, tokens.shape[1], segment_length):
        out, mems = _unpack(model(tokens[:, start : start + segment_length], mems))
        outputs.append(out)
    return outputs


def _check_tokens(tokens: Any) -> Tensor:
    if not isinstance(tokens, Tensor) or tokens.dim() != 2 or tokens.dtype not in (torch.int64, torch.int32):
        raise UsageError("tokens must be an integer tensor of shape (batch, time)")
    return tokens


def _float64_copy(model: Any) -> Any:
    twin = copy.deepcopy(model)
    return twin.double()


def _gradients(model: Any) -> dict[str, Tensor]:
    grads = {}
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            grads[name] = (
                parameter.grad.detach().clone() if parameter.grad is not None else torch.zeros_like(parameter)
            )
    return grads


# ----------------------------------------------------------------------------- recurrence


@dataclass
class RecurrenceReport:
    """What :func:`assert_recurrence_equivalent` checked and the figures it saw."""

    level: Level
    compared: str
    forward: Deviation
    gradients: dict[str, Deviation] = field(default_factory=dict)
    conformance: Deviation | None = None
    notes: list[str] = field(default_factory=list)
    gradient_scale: float = 0.0

    def __str__(self) -> str:
        lines = [f"recurrence == staircase full pass at level {self.level.value} ({self.compared})"]
        if self.conformance is not None:
            lines.append(f"  torch float64 vs oracle float64: max |Δ| / scale {self.conformance.max_rel:.3g}")
        lines.append(f"  forward: {self.forward.text()}")
        if self.gradients:
            worst = max(d.max_abs for d in self.gradients.values())
            exact = sum(d.bit_exact for d in self.gradients.values())
            lines.append(
                f"  gradients of {len(self.gradients)} parameters: {exact} bit-exact, max |Δ| {worst:.3g}"
                + (f" (largest gradient {self.gradient_scale:.3g})" if self.gradient_scale else "")
            )
        lines += [f"  {note}" for note in self.notes]
        return "\n".join(lines)


def assert_recurrence_equivalent(
    model: Any,
    tokens: Tensor,
    segment_length: int,
    mem_len: int,
    *,
    level: Level | str,
    init_memory: str = "empty",
    gradients: bool | None = None,
    seed: int = 0,
) -> RecurrenceReport:
    """Assert that processing ``tokens`` segment by segment is one pass with the staircase mask.

    The recurrence runs ``model`` on consecutive segments of ``segment_length`` tokens (memories
    carried, starting from ``init_memory``); the reference is ``model.full_pass`` over all tokens
    with :func:`~revcheck.oracle.memxl.staircase_mask` (band with ``model.same_length``).  With
    ``gradients`` (default: at levels R and K) the parameter gradients of ``sum(w * outputs)`` for a
    fixed random ``w`` must equal those of the full pass in which keys of earlier segments enter
    through stop-gradient.  The model runs in eval mode (restored afterwards).

    Parameters
    ----------
    model
        See the module docstring for the protocol.
    tokens : Tensor
        ``(batch, T)`` token ids.
    segment_length, mem_len : int
        Segment length and memory length (``mem_len`` must equal ``model.mem_len`` when it has one).
    level : {"O", "R", "K"}
        O: the oracle of ``model.to_oracle()`` in the model's dtype, bit for bit (after checking that
        a float64 copy of the model conforms to the float64 oracle); R: a float64 copy within
        :data:`FP64_BOUND`; K: the model itself, bit for bit.  B is refused (no bound is derived).
    init_memory : {"empty", "zeros", "zeros-masked"}
        How the recurrence's first memory is made.  ``"zeros"`` is the zero-initialised memory of
        kimiyoung's TF code, the Hugging Face port and the Skip Cross-head code: a different model,
        which this check reports as such.

    Returns
    -------
    RecurrenceReport

    Raises
    ------
    RecurrenceMismatchError
        Forward outputs differ (first index, segment, both values).
    StopGradientMismatchError
        Gradients differ (parameter, deviation).
    OracleConformanceError
        (level O) the model does not compute the oracle's function.
    UsageError
        Bad arguments: unknown level or init_memory, mem_len that disagrees with the model,
        ``ext_len > 0``, gradients at level O, a model without ``full_pass`` / ``to_oracle``.

    Examples
    --------
    >>> from revcheck.nn.memxl import MemTransformerXL
    >>> _ = torch.manual_seed(0)
    >>> model = MemTransformerXL(n_token=16, n_layer=2, n_head=2, d_model=8, mem_len=3)
    >>> tokens = torch.randint(0, 16, (1, 8))
    >>> print(assert_recurrence_equivalent(model, tokens, 4, 3, level="O"))   # doctest: +ELLIPSIS
    recurrence == staircase full pass at level O (oracle float32, declared order, 2 segments of 4, mem_len 3)
      torch float64 vs oracle float64: max |Δ| / scale ...
      forward: bit-exact (64 values)
      gradients: not checked at level O (the oracle has no backward); check them at level R or K
    """
    __tracebackhide__ = True
    level = check_level(level)
    if level is Level.B:
        raise UsageError(
            "no rigorous bound is derived for a whole transformer; use level='R' "
            "(float64 within FP64_BOUND), "
            "'O' (the oracle, bit for bit) or 'K' (the model's kernels, bit for bit)"
        )
    tokens = _check_tokens(tokens)
    if not isinstance(segment_length, int) or segment_length < 1:
        raise UsageError(f"segment_length={segment_length!r}: use a positive int")
    if not isinstance(mem_len, int) or mem_len < 0:
        raise UsageError(f"mem_len={mem_len!r}: use an int >= 0")
    if init_memory not in INIT_MEMORIES:
        raise UsageError(f"init_memory={init_memory!r}; use one of {INIT_MEMORIES}")
    model_mem_len = getattr(model, "mem_len", mem_len)
    if model_mem_len != mem_len:
        raise UsageError(
            f"mem_len={mem_len} but the model's mem_len is {model_mem_len}; pass {model_mem_len}"
        )
    if getattr(model, "ext_len", 0):
        raise UsageError(
            f"the model has ext_len={model.ext_len}: its segments re-read ext_len tokens, "
            "so no single full pass "
            "equals the recurrence (docs/spec.md §6); check ext_len = 0, and the memory update with "
            "assert_memory_update"
        )
    if not callable(getattr(model, "full_pass", None)):
        raise UsageError(
            "the model has no full_pass(tokens, allowed, stop_gradient); see revcheck.memxl's protocol"
        )
    if gradients is None:
        gradients = level is not Level.O
    if gradients and level is Level.O:
        raise UsageError(
            "the oracle has no backward: check gradients at level 'R' or 'K' (gradients=False here)"
        )
    same_length = bool(getattr(model, "same_length", False))
    T = tokens.shape[1]
    allowed = staircase_mask(T, segment_length, mem_len, same_length)
    shape_text = f"{-(-T // segment_length)} segments of {segment_length}, mem_len {mem_len}" + (
        ", same_length" if same_length else ""
    )
    was_training = model.training
    model.eval()
    try:
        if level is Level.O:
            return _recurrence_at_o(model, tokens, segment_length, init_memory, allowed, shape_text)
        subject = _float64_copy(model) if level is Level.R else model
        return _recurrence_in_torch(
            subject, tokens, segment_length, init_memory, allowed, shape_text, level, gradients, seed
        )
    finally:
        model.train(was_training)


def _recurrence_at_o(
    model: Any,
    tokens: Tensor,
    segment_length: int,
    init_memory: str,
    allowed: np.ndarray[Any, Any],
    shape_text: str,
) -> RecurrenceReport:
    __tracebackhide__ = True
    if not callable(getattr(model, "to_oracle", None)):
        raise UsageError("level O needs model.to_oracle() (oracle weights and config); use level 'R' or 'K'")
    dtype = next(model.parameters()).dtype
    if dtype not in (torch.float32, torch.float64):
        raise UsageError(
            f"the oracle computes in float32 or float64, the model is {dtype}; convert it, or use level 'K'"
        )
    ids = tokens.detach().cpu().numpy()
    twin = _float64_copy(model).eval()
    with torch.no_grad():
        torch_out = torch.cat(_run_recurrence(twin, tokens, segment_length, init_memory), dim=1)
    weights64, config = twin.to_oracle()
    oracle_out64 = oracle.ORACLE.recurrence(weights64, config, ids, segment_length, init_memory)[0]
    conformance = measure_deviation(torch_out, oracle_out64)
    if not _within_bound(conformance):
        raise OracleConformanceError(
            "the float64 copy of the model does not compute the oracle's function on this recurrence "
            f"(bound {FP64_BOUND:.3g} relative): {conformance.text()}; the O-level result would say nothing "
            "about this model",
            Level.R,
        )
    weights, config = model.to_oracle()
    recurrent, _ = oracle.ORACLE.recurrence(weights, config, ids, segment_length, init_memory)
    full = oracle.ORACLE.full_pass(weights, config, ids, allowed)
    forward = measure_deviation(recurrent, full)
    compared = f"oracle {recurrent.dtype}, declared order, {shape_text}"
    if not forward.bit_exact:
        raise RecurrenceMismatchError(
            _forward_evidence(forward, recurrent, full, segment_length, compared), Level.O
        )
    return RecurrenceReport(
        Level.O,
        compared,
        forward,
        conformance=conformance,
        notes=["gradients: not checked at level O (the oracle has no backward); check them at level R or K"],
    )


def _forward_evidence(
    deviation: Deviation, recurrent: Any, full: Any, segment_length: int, compared: str
) -> str:
    lines = [f"the recurrence is not the staircase full pass ({compared}): {deviation.text()}"]
    a, e = _numpy(recurrent).astype(np.float64), _numpy(full).astype(np.float64)
    diff = np.abs(a - e)
    if deviation.first_index is not None:
        b, t = deviation.first_index[0], deviation.first_index[1]
        lines.append(
            f"  first difference: batch {b}, token {t} (segment {t // segment_length}), feature "
            f"{deviation.first_index[2:]}: recurrence {a[deviation.first_index]:.9g}, full pass "
            f"{e[deviation.first_index]:.9g}"
        )
    per_segment = [
        float(np.max(diff[:, s : s + segment_length], initial=0.0))
        for s in range(0, a.shape[1], segment_length)
    ]
    lines.append("  max |Δ| per segment: " + ", ".join(f"{d:.3g}" for d in per_segment))
    lines.append(f"  max |value|: {float(np.max(np.abs(e), initial=0.0)):.3g}")
    if len(per_segment) > 1 and deviation.max_rel > 1e-3 and per_segment[0] == max(per_segment):
        lines.append(
            "  the first segment differs most: look at the initial memories "
            "(zero-initialised memories that are "
            "attended are a different model; start empty, or mask them)"
        )
    return "\n".join(lines)


def _recurrence_in_torch(
    model: Any,
    tokens: Tensor,
    segment_length: int,
    init_memory: str,
    allowed: np.ndarray[Any, Any],
    shape_text: str,
    level: Level,
    gradients: bool,
    seed: int,
) -> RecurrenceReport:
    __tracebackhide__ = True
    T = tokens.shape[1]
    device = next(model.parameters()).device
    allowed_t = torch.as_tensor(allowed, device=device)
    with torch.no_grad():
        recurrent = torch.cat(_run_recurrence(model, tokens, segment_length, init_memory), dim=1)
        full = model.full_pass(tokens, allowed_t, None)
    compared = (
        f"float64 copy, bound {FP64_BOUND:.3g} relative" if level is Level.R else "the model's kernels"
    ) + f", {_describe(recurrent)}, {shape_text}"
    forward = measure_deviation(recurrent, full)
    ok = _within_bound(forward) if level is Level.R else forward.bit_exact
    if not ok:
        message = _forward_evidence(forward, recurrent, full, segment_length, compared)
        if level is Level.K:
            message += (
                "\n  (a K failure where level O holds is a finding about the kernels, not about the model)"
            )
        raise RecurrenceMismatchError(message, level)
    report = RecurrenceReport(level, compared, forward)
    if not gradients:
        return report
    weights = torch.randn(
        recurrent.shape, generator=torch.Generator().manual_seed(seed), dtype=recurrent.dtype
    )
    weights = weights.to(device)
    model.zero_grad(set_to_none=True)
    outputs = _run_recurrence(model, tokens, segment_length, init_memory)
    (torch.cat(outputs, dim=1) * weights).sum().backward()
    from_recurrence = _gradients(model)
    model.zero_grad(set_to_none=True)
    sg = torch.as_tensor(stop_gradient_mask(T, segment_length), device=device)
    (model.full_pass(tokens, allowed_t, sg) * weights).sum().backward()
    from_full = _gradients(model)
    model.zero_grad(set_to_none=True)
    # One scale for all parameters: a gradient that is a cancellation of large terms (tiny here, tiny
    # there) is compared with the size of the gradients it cancels, not with itself.
    scale = max(
        (float(g.abs().max()) for grads in (from_recurrence, from_full) for g in grads.values() if g.numel()),
        default=0.0,
    )
    bad = []
    for name, grad in from_recurrence.items():
        deviation = measure_deviation(grad, from_full[name])
        report.gradients[name] = deviation
        within = deviation.max_abs <= FP64_BOUND * scale  # NaN compares False
        if not (within if level is Level.R else deviation.bit_exact):
            bad.append(f"  {name}: {deviation.text()} (largest gradient of any parameter: {scale:.3g})")
    if bad:
        raise StopGradientMismatchError(
            "the recurrence's gradients differ from those of the full pass with stop-gradient on earlier "
            f"segments ({compared}; loss sum(w * outputs), w ~ N(0, 1) seeded {seed}):\n" + "\n".join(bad),
            level,
        )
    report.gradient_scale = scale
    return report


# ----------------------------------------------------------------------------- conformance


def assert_conforms_to_oracle(
    model: Any, segments: Sequence[Tensor], *, init_memory: str = "empty", mems: Any = None
) -> Deviation:
    """Assert that a float64 copy of ``model`` computes what the oracle computes, segment by segment.

    Level R with the stated :data:`FP64_BOUND` (relative to the larger magnitude): an identity check
    of two implementations of one real function, for any ``ext_len``, ``same_length``, ``clamp_len``.
    In training mode the copy's skip-retain and cross-head decisions (read from its trace) are
    replayed in the oracle; dropout must then be 0.  Returns the largest deviation seen.

    Raises
    ------
    OracleConformanceError
        With the segment, the layer inputs' deviations and the output deviation.
    """
    __tracebackhide__ = True
    if not callable(getattr(model, "to_oracle", None)):
        raise UsageError("the model has no to_oracle(); conformance needs the oracle's weights")
    twin = _float64_copy(model)
    twin.train(model.training)
    if twin.training and any(isinstance(m, torch.nn.Dropout) and m.p > 0 for m in twin.modules()):
        raise UsageError(
            "conformance in training mode needs dropout 0 (the oracle has no dropout); call eval()"
        )
    weights, config = twin.to_oracle()
    if mems is None and init_memory != "empty":
        mems = twin.init_memory(segments[0].shape[0], init_memory)
    state = None
    if mems is not None:  # the same memories for the float64 copy and for the oracle
        mems = replace(mems, layers=tuple(replace(m, hidden=m.hidden.detach().double()) for m in mems.layers))
        state = mems.to_oracle()
    worst: Deviation | None = None
    for index, segment in enumerate(segments):
        with torch.no_grad():
            result = twin(segment, mems, return_trace=True)
        skips = [t.skipped for t in result.trace]
        permutations = [t.head_permutation for t in result.trace]
        expected = oracle.ORACLE.segment(
            weights, config, segment.detach().cpu().numpy(), state, skip=skips, permutations=permutations
        )
        deviation = measure_deviation(result.output, expected.output)
        if not _within_bound(deviation):
            inputs = [
                measure_deviation(a, b).max_rel
                for a, b in zip(result.layer_inputs, expected.layer_inputs, strict=True)
            ]
            raise OracleConformanceError(
                f"segment {index}: the model (float64 copy) does not compute the oracle's function "
                f"(bound {FP64_BOUND:.3g} relative): output {deviation.text()}; layer inputs max |Δ|/scale "
                + ", ".join(f"{x:.3g}" for x in inputs)
                + f"; skipped {skips}, permutations {permutations}",
                Level.R,
            )
        for layer, (mine, theirs) in enumerate(zip(result.mems.layers, expected.memory.hidden, strict=True)):
            if tuple(mine.hidden.shape) != theirs.shape or not _within_bound(
                measure_deviation(mine.hidden, theirs)
            ):
                raise OracleConformanceError(
                    f"segment {index}: memory of layer {layer} is {tuple(mine.hidden.shape)}, the oracle's "
                    f"{theirs.shape} (or their values differ beyond {FP64_BOUND:.3g})",
                    Level.R,
                )
        worst = deviation if worst is None or deviation.max_rel > worst.max_rel else worst
        mems, state = result.mems, expected.memory
    assert worst is not None
    return worst


# ----------------------------------------------------------------------------- relative positions


def _isolate_positional(attention: Any) -> Any:
    if not (hasattr(attention, "qkv_net") and hasattr(attention, "n_head") and hasattr(attention, "d_head")):
        raise UsageError(
            f"{type(attention).__name__} is not a revcheck RelMultiHeadAttention; pass isolate=, a function "
            "returning a copy whose queries are constant and whose content term is zero (e.g. W_q = W_k = 0)"
        )
    twin = copy.deepcopy(attention)
    block = attention.n_head * attention.d_head
    with torch.no_grad():
        twin.qkv_net.weight[: 2 * block].zero_()  # q = 0 (constant queries) and k = 0 (no content term)
    return twin


def assert_relative(
    attention: Any,
    *,
    qlen: int = 4,
    mlen: int = 3,
    start: int | None = None,
    isolate: Callable[[Any], Any] | None = None,
    level: Level | str = "K",
    seed: int = 0,
) -> int:
    """Assert that the isolated positional score depends on ``i - j`` only, on every allowed entry.

    The attention's content term is removed and its queries made constant (``isolate``; for revcheck's
    :class:`~revcheck.nn.memxl.RelMultiHeadAttention`: ``W_q = W_k = 0``), so the score of query ``i``
    and key ``j`` is ``v · r_{d(i, j)}`` and must agree along each diagonal ``i + mlen - j``.  A missing
    relative shift (every query using key ``j``'s positional term of the last query) breaks this; it
    needs at least 2 queries per segment to be visible, so ``qlen >= 2`` is required.

    Level K (default): equal bits along each diagonal (each entry is one dot product of identical
    operands).  Level R: a float64 copy, within :data:`FP64_BOUND`.  Returns the number of entries checked.

    The attention must provide ``scores(h, memory, query_pos, key_pos, r_w_bias, r_r_bias)`` returning
    ``(scores, ...)`` with scores ``(B, H, qlen, mlen + qlen)``.

    Raises
    ------
    RelativePositionError
        With the diagonal and two entries on it whose scores differ.
    """
    __tracebackhide__ = True
    level = check_level(level)
    if level not in (Level.K, Level.R):
        raise UsageError(f"assert_relative checks levels K and R, not {level.value}")
    if qlen < 2:
        raise UsageError(
            f"qlen={qlen}: with fewer than 2 queries per segment every score trivially depends on i - j only "
            "(a missing relative shift is invisible); use qlen >= 2"
        )
    if mlen < 0:
        raise UsageError(f"mlen={mlen}: use an int >= 0")
    isolated = (isolate or _isolate_positional)(attention)
    if level is Level.R:
        isolated = isolated.double()
    isolated.eval()
    parameter = next(isolated.parameters())
    dtype, device = parameter.dtype, parameter.device
    generator = torch.Generator().manual_seed(seed)
    d_model, n_head, d_head = isolated.d_model, isolated.n_head, isolated.d_head
    h = torch.randn(1, qlen, d_model, generator=generator, dtype=dtype).to(device)
    memory = torch.randn(1, mlen, d_model, generator=generator, dtype=dtype).to(device)
    u = torch.randn(n_head, d_head, generator=generator, dtype=dtype).to(device)
    v = torch.randn(n_head, d_head, generator=generator, dtype=dtype).to(device)
    first = mlen if start is None else start
    query_pos = torch.arange(first, first + qlen, device=device)
    key_pos = torch.arange(first - mlen, first + qlen, device=device)
    with torch.no_grad():
        scores = isolated.scores(h, memory, query_pos, key_pos, u, v)[0]
    scores_np = scores.detach().cpu().numpy()
    allowed = oracle.segment_mask(qlen, mlen, max(mlen, 1))
    checked = 0
    for delta in range(0, qlen + mlen):
        entries = [(i, i + mlen - delta) for i in range(qlen) if 0 <= i + mlen - delta < mlen + qlen]
        entries = [(i, j) for i, j in entries if allowed[i, j]]
        if len(entries) < 2:
            checked += len(entries)
            continue
        i0, j0 = entries[0]
        reference = scores_np[:, :, i0, j0]
        for i, j in entries[1:]:
            deviation = measure_deviation(scores_np[:, :, i, j], reference)
            ok = deviation.bit_exact if level is Level.K else _within_bound(deviation)
            if not ok:
                head = deviation.first_index[1] if deviation.first_index else 0
                raise RelativePositionError(
                    f"the positional score is not a function of i - j ({_describe(scores)}, "
                    f"qlen {qlen}, mlen {mlen}): on the diagonal i - j = {i - (j - mlen)} "
                    f"(distance {delta}) query {i0}, key {j0} scores "
                    f"{float(scores_np[0, head, i0, j0])!r} but query {i}, key {j} scores "
                    f"{float(scores_np[0, head, i, j])!r} (head {head}); "
                    "a missing relative shift gives every query "
                    "the positional term of the last one",
                    level,
                )
        checked += len(entries)
    return checked


# ----------------------------------------------------------------------------- cross-head


def _attention_inputs(
    attention: Any, qlen: int, mlen: int, batch: int, seed: int
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    parameter = next(attention.parameters())
    dtype, device = parameter.dtype, parameter.device
    generator = torch.Generator().manual_seed(seed)
    d_model, n_head, d_head = attention.d_model, attention.n_head, attention.d_head

    def draw(*shape: int) -> Tensor:
        return torch.randn(*shape, generator=generator, dtype=dtype).to(device)

    query_pos = torch.arange(mlen, mlen + qlen, device=device)
    key_pos = torch.arange(0, mlen + qlen, device=device)
    allowed = torch.as_tensor(oracle.segment_mask(qlen, mlen, max(mlen, 1)), device=device)
    return (
        draw(batch, qlen, d_model),
        draw(batch, mlen, d_model),
        query_pos,
        key_pos,
        allowed,
        draw(n_head, d_head),
        draw(n_head, d_head),
    )


def assert_cross_head_reparam(
    attention: Any,
    permutation: Sequence[int],
    *,
    qlen: int = 4,
    mlen: int = 3,
    batch: int = 2,
    reparametrize: Callable[[Any, Sequence[int]], Any] | None = None,
    seed: int = 0,
) -> None:
    """Assert (level K) that cross-head with a fixed ``permutation`` is a reparametrisation.

    ``attention(..., head_permutation=permutation)`` must equal, bit for bit, the same attention whose
    K, R and V projection weights have their head blocks permuted (``attention.permuted_heads`` or
    ``reparametrize(attention, permutation)``), run without permutation; Q, ``u`` and ``v`` keep
    their head index.  Checked in eval mode on random inputs drawn from ``seed``.

    Raises
    ------
    CrossHeadReparamError
        With the bit comparison (count, first indices, both values in hex and ULPs).
    """
    __tracebackhide__ = True
    from revcheck.nn.memxl import check_permutation

    permutation = check_permutation(permutation, attention.n_head)
    twin_builder = reparametrize or (lambda module, p: module.permuted_heads(p))
    was_training = attention.training
    attention.eval()
    try:
        twin = twin_builder(attention, permutation).eval()
        h, memory, query_pos, key_pos, allowed, u, v = _attention_inputs(attention, qlen, mlen, batch, seed)
        with torch.no_grad():
            permuted = attention(h, memory, query_pos, key_pos, allowed, u, v, head_permutation=permutation)
            reparametrised = twin(h, memory, query_pos, key_pos, allowed, u, v)
    finally:
        attention.train(was_training)
    comparison = compare_bits(permuted, reparametrised)
    if not comparison.equal:
        raise CrossHeadReparamError(
            f"cross-head with permutation {permutation} differs from the attention with permuted K/R/V head "
            f"blocks ({_describe(permuted)}, qlen {qlen}, mlen {mlen}):\n" + comparison.message(),
            Level.K,
        )


def assert_cross_head_inactive(model: Any, tokens: Tensor, *, segment_length: int | None = None) -> None:
    """Assert (level K) that cross-head is plain attention where it must be.

    Three comparisons, bit for bit, over consecutive segments of ``tokens``: (1) every layer's
    attention with the identity permutation equals it without; (2) a copy with ``ch_prob = 0`` in
    training mode equals the copy with cross-head removed; (3) a copy with ``ch_prob = 1`` in eval mode
    equals the plain copy in eval mode.  Skip-retain is off in all copies; dropout masks are replayed
    from one saved global RNG state.

    Raises
    ------
    CrossHeadInactiveError
        Naming the comparison that failed.
    """
    __tracebackhide__ = True
    tokens = _check_tokens(tokens)
    segment_length = segment_length or tokens.shape[1]
    n_head = model.config.n_head
    identity = tuple(range(n_head))
    for index, layer in enumerate(model.layers):
        attention = layer.attn
        was_training = attention.training
        attention.eval()
        try:
            h, memory, query_pos, key_pos, allowed, u, v = _attention_inputs(attention, 4, 3, 2, index)
            with torch.no_grad():
                plain = attention(h, memory, query_pos, key_pos, allowed, u, v)
                permuted = attention(h, memory, query_pos, key_pos, allowed, u, v, head_permutation=identity)
        finally:
            attention.train(was_training)
        comparison = compare_bits(permuted, plain)
        if not comparison.equal:
            raise CrossHeadInactiveError(
                f"layer {index}: the identity head permutation changed the attention:\n"
                + comparison.message(),
                Level.K,
            )

    def run(subject: Any, training: bool) -> Tensor:
        subject.train(training)
        state = torch.get_rng_state()
        mems, outputs = None, []
        try:
            with torch.no_grad():
                for start in range(0, tokens.shape[1], segment_length):
                    out, mems = _unpack(subject(tokens[:, start : start + segment_length], mems))
                    outputs.append(out)
        finally:
            torch.set_rng_state(state)
        return torch.cat(outputs, dim=1)

    plain = copy.deepcopy(model)
    plain.skip_retain, plain.ch_prob = False, 0.0
    for what, ch_prob, training in (
        ("ch_prob = 0 in training mode", 0.0, True),
        ("ch_prob = 1 in eval mode", 1.0, False),
    ):
        subject = copy.deepcopy(plain)
        subject.ch_prob = ch_prob
        comparison = compare_bits(run(subject, training), run(copy.deepcopy(plain), training))
        if not comparison.equal:
            raise CrossHeadInactiveError(
                f"{what}: the model differs from plain attention:\n" + comparison.message(), Level.K
            )


# ----------------------------------------------------------------------------- skip-retain


@dataclass(frozen=True)
class SkipRetainRecord:
    """One layer in one segment of a :func:`skip_retain_trace`."""

    segment: int
    layer: int
    skipped: bool
    block: int  # c
    memory_block: int  # m
    memory_rows: int
    extra_expected: int  # (c - m) * M
    extra_used: int | None  # the extra distance the layer's positional term used (None: skipped or no memory)
    problem: str = ""


@dataclass
class SkipRetainTrace:
    """Per layer and segment: skipped or not, memory age ``c - m`` and the positions the layer used."""

    stride: int
    records: list[SkipRetainRecord]

    @property
    def problems(self) -> list[SkipRetainRecord]:
        return [r for r in self.records if r.problem]

    def table(self) -> str:
        """One line per segment: for each layer ``skip`` or the memory age and the extra distance used."""
        lines = [f"stride M = {self.stride}; per layer: 'skip', or age c-m and extra distance used / (c-m)*M"]
        for segment in sorted({r.segment for r in self.records}):
            cells = []
            for r in (x for x in self.records if x.segment == segment):
                if r.skipped:
                    cells.append("skip")
                else:
                    used = "-" if r.extra_used is None else str(r.extra_used)
                    cells.append(f"age {r.block - r.memory_block}: {used}/{r.extra_expected}")
            lines.append(f"segment {segment:3d}: " + " | ".join(cells))
        return "\n".join(lines)

    def check(self) -> None:
        """Raise :class:`SkipRetainError` listing every problem found (level K: exact ints and bits)."""
        __tracebackhide__ = True
        if self.problems:
            raise SkipRetainError(
                "skip-retain is not what it claims:\n"
                + "\n".join(
                    f"  segment {r.segment}, layer {r.layer}: {r.problem}" for r in self.problems[:10]
                )
                + f"\n{self.table()}",
                Level.K,
            )


def _expected_distances(qlen: int, mlen: int, extra: int, clamp_len: int | None) -> np.ndarray[Any, Any]:
    i = np.arange(qlen)[:, None]
    j = np.arange(mlen + qlen)[None, :]
    d = i + mlen - j + np.where(j < mlen, extra, 0)
    return np.clip(d, 0, clamp_len)


def skip_retain_trace(
    model: Any, tokens: Tensor, segment_length: int, *, check: bool = True
) -> SkipRetainTrace:
    """Run ``model`` in training mode over segments of ``tokens`` and trace skip-retain.

    For every layer and segment the trace records whether the layer was skipped, the block counters
    ``c`` (segments processed) and ``m`` (of the memory it read) and the extra distance its memory keys
    were attended at.  Problems recorded (level K: bits and exact integers): a skipped layer that is
    not the identity (its output, the next layer's input, differs from its input), that changed its
    memory (rows, end, block counter), a skipped last layer, and positional distances that differ from
    ``i + mlen - j + (c - m) * M`` on memory keys (``M = segment_length - ext_len``, clamped to
    ``clamp_len``).  With ``check`` (default) problems raise :class:`SkipRetainError`.  Gradients are
    off; the model's mode is restored.
    """
    __tracebackhide__ = True
    tokens = _check_tokens(tokens)
    stride = segment_length - model.ext_len
    if stride < 1:
        raise UsageError(f"segment_length={segment_length} must exceed ext_len={model.ext_len}")
    records: list[SkipRetainRecord] = []
    was_training = model.training
    model.train()
    mems = None
    try:
        with torch.no_grad():
            starts = range(0, tokens.shape[1] - model.ext_len, stride)
            for segment, start in enumerate(starts):
                piece = tokens[:, start : start + segment_length]
                if piece.shape[1] <= model.ext_len:
                    break
                before = mems
                result = model(piece, mems, return_trace=True)
                n = len(result.trace)
                for t in result.trace:
                    problem = []
                    extra_expected = (t.block - t.memory_block) * stride
                    extra_used = None
                    if t.skipped:
                        if t.layer == n - 1:
                            problem.append("the last layer was skipped")
                        nxt = result.layer_inputs[t.layer + 1] if t.layer + 1 < n else result.output
                        if not compare_bits(nxt, result.layer_inputs[t.layer]).equal:
                            problem.append("skipped layer is not the identity (output != input)")
                        new = result.mems.layers[t.layer]
                        if before is not None:
                            old = before.layers[t.layer]
                            same = compare_bits(new.hidden, old.hidden).equal and (
                                new.end,
                                new.block,
                                new.padding,
                            ) == (old.end, old.block, old.padding)
                        else:
                            same = new.hidden.shape[1] == 0 or new.block == 0
                        if not same:
                            problem.append("skipped layer changed its memory or its block counter")
                    elif t.distances is not None and t.memory_rows > 0:
                        qlen = piece.shape[1]
                        expected = _expected_distances(qlen, t.memory_rows, extra_expected, model.clamp_len)
                        used = t.distances.detach().cpu().numpy()
                        allowed = oracle.segment_mask(qlen, t.memory_rows, model.mem_len, model.same_length)
                        # The extra distance actually used: first query against the newest memory row.
                        extra_used = int(used[0, t.memory_rows - 1]) - 1
                        wrong = allowed & (used != expected)
                        if wrong.any():
                            i, j = (int(x) for x in np.argwhere(wrong)[0])
                            problem.append(
                                f"memory age c - m = {t.block - t.memory_block} needs distance "
                                f"{int(expected[i, j])} "
                                f"for query {i}, key {j}, but {int(used[i, j])} was used"
                            )
                    records.append(
                        SkipRetainRecord(
                            segment,
                            t.layer,
                            t.skipped,
                            t.block,
                            t.memory_block,
                            t.memory_rows,
                            extra_expected,
                            extra_used,
                            "; ".join(problem),
                        )
                    )
                mems = result.mems
    finally:
        model.train(was_training)
    trace = SkipRetainTrace(stride, records)
    if check:
        trace.check()
    return trace


# ----------------------------------------------------------------------------- memory update


def assert_memory_update(model: Any, segments: Sequence[Tensor], *, mems: Any = None) -> int:
    """Assert (level K) that every memory update keeps exactly the last ``mem_len`` rows, detached.

    For each segment and each non-skipped layer the new memory must equal, bit for bit, the last
    ``mem_len`` rows of ``[old memory ; layer input[:, :qlen - ext_len]]``, must not require gradient
    (detached), and must sit at the right positions (end, block counter, padding); skipped layers keep
    their memory; the memories passed in must be left unchanged (no in-place writes).  Runs with
    gradients enabled, in the model's current mode.  Returns the number of layer updates checked.

    Raises
    ------
    MemoryUpdateError
        With the segment, the layer and what was wrong.
    """
    __tracebackhide__ = True
    mem_len, ext_len = model.mem_len, model.ext_len
    checked = 0
    for index, segment in enumerate(segments):
        snapshot = None if mems is None else [m.hidden.detach().clone() for m in mems.layers]
        old = mems if mems is not None else model.init_memory(segment.shape[0])
        result = model(segment, mems, return_trace=True)
        qlen = segment.shape[1]
        problems = []
        if snapshot is not None:
            for layer, (kept, now) in enumerate(zip(snapshot, mems.layers, strict=True)):
                if not compare_bits(now.hidden, kept).equal:
                    problems.append(
                        f"layer {layer}: the memory passed in was modified in place during forward"
                    )
        for layer, (t, new) in enumerate(zip(result.trace, result.mems.layers, strict=True)):
            previous = old.layers[layer]
            if t.skipped:
                kept = previous.hidden if snapshot is None else snapshot[layer]
                if not compare_bits(new.hidden, kept).equal or (new.end, new.block, new.padding) != (
                    previous.end,
                    previous.block,
                    previous.padding,
                ):
                    problems.append(f"layer {layer} was skipped but its memory changed")
                continue
            source = result.layer_inputs[layer].detach()[:, : max(0, qlen - ext_len)]
            cat = torch.cat([previous.hidden if snapshot is None else snapshot[layer], source], dim=1)
            expected = cat[:, max(0, cat.shape[1] - mem_len) :]
            if tuple(new.hidden.shape) != tuple(expected.shape):
                problems.append(
                    f"layer {layer}: new memory has {new.hidden.shape[1]} rows; "
                    f"the last mem_len={mem_len} rows of "
                    f"[memory ({previous.hidden.shape[1]}) ; input[:qlen - ext_len] ({source.shape[1]})] are "
                    f"{expected.shape[1]}"
                )
            else:
                comparison = compare_bits(new.hidden, expected)
                if not comparison.equal:
                    problems.append(
                        f"layer {layer}: new memory is not the last mem_len rows of [memory ; layer INPUT"
                        f"[:qlen - ext_len]]: {comparison.mismatch_count} / {comparison.total} values differ"
                    )
            if new.hidden.requires_grad or new.hidden.grad_fn is not None:
                problems.append(
                    f"layer {layer}: new memory is not detached (requires_grad, {new.hidden.grad_fn})"
                )
            want_end = old.position + qlen - ext_len
            if new.end != want_end or new.block != old.block + 1:
                problems.append(
                    f"layer {layer}: memory end {new.end}, block {new.block}; "
                    f"expected {want_end}, {old.block + 1}"
                )
            checked += 1
        if problems:
            raise MemoryUpdateError(
                f"segment {index} (qlen {qlen}, mem_len {mem_len}, ext_len {ext_len}):\n  "
                + "\n  ".join(problems),
                Level.K,
            )
        mems = result.mems
    return checked


# ----------------------------------------------------------------------------- two phases


def assert_phase_two_is_baseline(trainer: Any, tokens: Tensor) -> None:
    """Assert (level K) that in phase 2 the trainer's model is the plain model with the same weights.

    One training-mode forward of the trainer's model on ``tokens`` (with the trainer's memories) must
    equal, bit for bit, that of a copy with skip-retain and cross-head removed; dropout masks are
    replayed from one saved global RNG state.  Needs ``trainer.phase == 2``.

    Raises
    ------
    PhaseTwoError
        With the bit comparison.
    """
    __tracebackhide__ = True
    if trainer.phase != 2:
        raise UsageError(f"the trainer is in phase {trainer.phase}; run phase1_steps steps first")
    model = trainer.model
    baseline = copy.deepcopy(model)
    baseline.skip_retain, baseline.ch_prob = False, 0.0
    outputs = []
    for subject in (model, baseline):
        subject.train()
        state = torch.get_rng_state()
        with torch.no_grad():
            out, _ = _unpack(subject(tokens, trainer.mems))
        torch.set_rng_state(state)
        outputs.append(out)
    comparison = compare_bits(outputs[0], outputs[1])
    if not comparison.equal:
        raise PhaseTwoError(
            f"phase 2 (skip_retain={model.skip_retain}, ch_prob={model.ch_prob}) "
            "differs from the plain model "
            "with the same weights:\n" + comparison.message(),
            Level.K,
        )
