"""Deliberately wrong Transformer-XLs: each a public bug (or one realistic slip) as a whole model.

Torch bugs subclass :class:`revcheck.nn.memxl.MemTransformerXL` (or its attention / trainer) and
override one method; oracle bugs subclass :class:`revcheck.oracle.memxl.MemXLOracle`.  Each
:data:`PLANTED_BUGS` record names the property body of properties/test_memxl.py (or the user-facing
check) that must catch it and the exact error type; tests/test_gallery.py runs every record against
the bug (must raise) and against the real implementation (must pass).

The public bugs (docs/spec.md §6): no relative shift (Skip Cross-head code), zero-initialised
unmasked memories (kimiyoung's TF code, the Hugging Face port, the Skip Cross-head code), memory of
layer outputs instead of inputs, kimiyoung's ``_update_mems`` argument swap (visible with
``ext_len > 0``), memory not detached, positional embeddings added to the memory in place.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from properties import test_memxl as props
from revcheck import memxl as checks
from revcheck.nn.memxl import LayerMemory, MemTransformerXL, RelMultiHeadAttention, TwoPhaseTrainer
from revcheck.oracle import memxl as oracle
from revcheck.testing import BitMismatchError
from tests.harness import PlantedBug

__all__ = ["PLANTED_BUGS"]


# ----------------------------------------------------------------------------- the six public bugs


class NoShiftAttention(RelMultiHeadAttention):
    """No relative shift: every query takes key j's positional term of the LAST query (klen - 1 - j)."""

    def distances(self, query_pos: Tensor, key_pos: Tensor) -> Tensor:
        return super().distances(query_pos[-1:].expand_as(query_pos), key_pos)


class NoRelativeShift(MemTransformerXL):
    attention_class = NoShiftAttention


class ZeroInitMemory(MemTransformerXL):
    """``mems=None`` starts from mem_len zero rows that are attended (the HF port's ``init_mems``)."""

    def init_memory(self, batch: int, init_memory: str = "empty") -> Any:
        return super().init_memory(batch, "zeros" if init_memory == "empty" else init_memory)


class OutputsAsMemory(MemTransformerXL):
    """Each layer remembers its OUTPUT instead of its input."""

    def _memory_rows(self, layer_input: Tensor, layer_output: Tensor) -> Tensor:
        return layer_output


class SwappedUpdateArguments(MemTransformerXL):
    """kimiyoung's ``_update_mems(hids, mems, qlen, mlen)`` called as ``(hids, mems, mlen, qlen)``."""

    def _memory_window(self, mlen: int, qlen: int) -> tuple[int, int]:
        return super()._memory_window(qlen, mlen)


class NotDetached(MemTransformerXL):
    """The new memory keeps its autograd graph: gradients leak into earlier segments."""

    def _update_layer_memory(
        self, memory: LayerMemory, hidden: Tensor, start: int, block: int
    ) -> LayerMemory:
        begin, end = self._memory_window(memory.hidden.shape[1], hidden.shape[1])
        rows = torch.cat([memory.hidden, hidden], dim=1)[:, begin:end]
        return LayerMemory(
            rows, max(0, memory.padding - begin), start + hidden.shape[1] - self.ext_len, block + 1
        )


class PositionsAddedToMemoryInPlace(MemTransformerXL):
    """Positional embeddings added to the cached memory with ``+=`` before attending."""

    def _run_layer(self, layer: Any, h: Tensor, memory: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        if memory.shape[1]:
            memory.add_(layer.attn.sinusoid_table(memory.shape[1], memory))
        return super()._run_layer(layer, h, memory, *args, **kwargs)


# ----------------------------------------------------------------------------- further slips


class MaskIgnoresPadding(MemTransformerXL):
    """``zeros-masked`` memories are attended anyway (the padding count is dropped)."""

    def init_memory(self, batch: int, init_memory: str = "empty") -> Any:
        mems = super().init_memory(batch, "zeros" if init_memory == "zeros-masked" else init_memory)
        return mems


class CrossHeadInEval(MemTransformerXL):
    """Cross-head permutations drawn in eval mode too."""

    def _cross_head_active(self) -> bool:
        return self.ch_prob > 0


class PermutesKVNotR(RelMultiHeadAttention):
    """Cross-head permutes K and V but leaves R (the positional keys) in place."""

    def _permute_heads(self, order: Tensor, k: Tensor, v: Tensor, r: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return k.index_select(2, order), v.index_select(2, order), r


class CrossHeadWithoutR(MemTransformerXL):
    attention_class = PermutesKVNotR


class RetainedMemoryNotAged(MemTransformerXL):
    """Retained memory attended as if it were fresh: positions just before the segment, age ignored."""

    def _memory_key_positions(self, memory: LayerMemory, start: int) -> Tensor:
        mlen = memory.hidden.shape[1]
        return torch.arange(start - mlen, start, device=self.device)


class SkippedLayerUpdatesMemory(MemTransformerXL):
    """A skipped layer still writes its input into its memory (and bumps its block counter)."""

    def _retained_memory(
        self, memory: LayerMemory, layer_input: Tensor, start: int, block: int
    ) -> LayerMemory:
        return self._update_layer_memory(memory, layer_input, start, block)


class PhaseTwoForgotten(TwoPhaseTrainer):
    """Phase 2 never switches skip-retain and cross-head off."""

    def _enter_phase2(self) -> None:
        pass


# ----------------------------------------------------------------------------- oracle bugs (level O)


class ZeroInitOracle(oracle.MemXLOracle):
    def initial_memory(self, weights: Any, config: Any, batch: int, init_memory: str = "empty") -> Any:
        return super().initial_memory(
            weights, config, batch, "zeros" if init_memory == "empty" else init_memory
        )


class NoShiftOracle(oracle.MemXLOracle):
    def distances(self, query_pos: Any, key_pos: Any, clamp_len: int | None) -> Any:
        return super().distances(np.full_like(query_pos, query_pos[-1]), key_pos, clamp_len)


class PaddingIgnoredOracle(oracle.MemXLOracle):
    def segment_mask(self, qlen: int, mlen: int, config: Any, padding: int) -> Any:
        return super().segment_mask(qlen, mlen, config, 0)


def _pairwise_sum(x: Any) -> Any:
    n = x.shape[-1]
    if n <= 1:
        return x[..., 0] if n else np.zeros(x.shape[:-1], dtype=x.dtype)
    return _pairwise_sum(x[..., : n // 2]) + _pairwise_sum(x[..., n // 2 :])


class PairwiseSoftmaxArithmetic(oracle.OrderedArithmetic):
    """Softmax sums in a balanced tree, whose shape depends on the row length (like a vectorised kernel)."""

    @staticmethod
    def softmax(x: Any) -> Any:  # type: ignore[override]
        with np.errstate(invalid="ignore"):
            e = oracle.ordered.exp(x - x.max(axis=-1, keepdims=True))
            return e / _pairwise_sum(e)[..., None]


class PairwiseSoftmaxOracle(oracle.MemXLOracle):
    """No declared order in the softmax: the O-level equivalence is lost, as with real kernels."""

    def __init__(self, arithmetic: Any = None) -> None:
        super().__init__(PairwiseSoftmaxArithmetic() if arithmetic is None else arithmetic)


# ----------------------------------------------------------------------------- records


def _bug(
    name: str, mistake: str, check: Any, wrong: Any, right: Any, error: type[BaseException], n: int
) -> PlantedBug:
    return PlantedBug(name, mistake, check, wrong, right, error, family="memxl", max_examples=n)


_M, _O = MemTransformerXL, oracle.MemXLOracle

PLANTED_BUGS = [
    # no relative shift
    _bug(
        "no relative shift",
        "positional term ignores the query",
        props.check_positional_score_depends_on_distance_only,
        NoRelativeShift,
        _M,
        checks.RelativePositionError,
        30,
    ),
    _bug(
        "no relative shift",
        "positional term ignores the query",
        props.check_torch_conforms_to_oracle,
        NoRelativeShift,
        _M,
        checks.OracleConformanceError,
        30,
    ),
    _bug(
        "oracle: no relative shift",
        "positional term ignores the query",
        props.check_oracle_recurrence_is_full_pass,
        NoShiftOracle,
        _O,
        BitMismatchError,
        50,
    ),
    _bug(
        "oracle: no relative shift",
        "positional term ignores the query",
        props.check_exact_recurrence_is_full_pass,
        NoShiftOracle,
        _O,
        checks.RecurrenceMismatchError,
        30,
    ),
    # zero-initialised memories
    _bug(
        "zero-initialised memories",
        "mems=None starts from attended zero rows",
        props.check_torch_recurrence_is_full_pass,
        ZeroInitMemory,
        _M,
        checks.RecurrenceMismatchError,
        30,
    ),
    _bug(
        "oracle: zero-initialised memories",
        "empty start replaced by attended zero rows",
        props.check_oracle_recurrence_is_full_pass,
        ZeroInitOracle,
        _O,
        BitMismatchError,
        50,
    ),
    _bug(
        "masked zeros attended",
        "the padding count of zero memories is dropped",
        props.check_zero_init_is_another_model,
        MaskIgnoresPadding,
        _M,
        checks.RecurrenceMismatchError,
        30,
    ),
    _bug(
        "oracle: masked zeros attended",
        "the mask ignores the padding rows",
        props.check_zero_memories_differ_unless_masked,
        PaddingIgnoredOracle,
        _O,
        BitMismatchError,
        50,
    ),
    # memory of layer outputs
    _bug(
        "memory of layer outputs",
        "each layer caches its output, not its input",
        props.check_memory_update_keeps_last_rows,
        OutputsAsMemory,
        _M,
        checks.MemoryUpdateError,
        30,
    ),
    _bug(
        "memory of layer outputs",
        "each layer caches its output, not its input",
        props.check_torch_recurrence_is_full_pass,
        OutputsAsMemory,
        _M,
        checks.RecurrenceMismatchError,
        30,
    ),
    # _update_mems argument swap
    _bug(
        "_update_mems argument swap",
        "(mlen, qlen) passed as (qlen, mlen); visible with ext_len > 0",
        props.check_memory_update_keeps_last_rows,
        SwappedUpdateArguments,
        _M,
        checks.MemoryUpdateError,
        50,
    ),
    _bug(
        "_update_mems argument swap",
        "(mlen, qlen) passed as (qlen, mlen); visible with ext_len > 0",
        props.check_torch_conforms_to_oracle,
        SwappedUpdateArguments,
        _M,
        checks.OracleConformanceError,
        50,
    ),
    # memory not detached
    _bug(
        "memory not detached",
        "gradients leak into earlier segments",
        props.check_gradients_match_stop_gradient_full_pass,
        NotDetached,
        _M,
        checks.StopGradientMismatchError,
        15,
    ),
    _bug(
        "memory not detached",
        "the new memory keeps its graph",
        props.check_memory_update_keeps_last_rows,
        NotDetached,
        _M,
        checks.MemoryUpdateError,
        30,
    ),
    # positional embeddings added in place
    _bug(
        "positions added to memory in place",
        "memory += pos_emb before attending",
        props.check_memory_update_keeps_last_rows,
        PositionsAddedToMemoryInPlace,
        _M,
        checks.MemoryUpdateError,
        30,
    ),
    _bug(
        "positions added to memory in place",
        "memory += pos_emb before attending",
        props.check_torch_recurrence_is_full_pass,
        PositionsAddedToMemoryInPlace,
        _M,
        checks.RecurrenceMismatchError,
        30,
    ),
    # the methods' own slips
    _bug(
        "cross-head in eval",
        "head permutations drawn in eval mode",
        props.check_cross_head_inactive_cases,
        CrossHeadInEval,
        _M,
        checks.CrossHeadInactiveError,
        15,
    ),
    _bug(
        "cross-head without R",
        "K and V permuted, R left in place",
        props.check_cross_head_is_reparametrisation,
        CrossHeadWithoutR,
        _M,
        checks.CrossHeadReparamError,
        30,
    ),
    # The trace (level K) sees this bug only where a layer its own run skipped is read later; in the
    # harness's fixed regime the oracle replay of the same check (level R) catches it first (example 5,
    # measured with `python -m tests.harness memxl`), before any trace that skipped does.
    _bug(
        "retained memory not aged",
        "memory of a skipped layer attended as if fresh",
        props.check_skip_retain_is_age_correct,
        RetainedMemoryNotAged,
        _M,
        checks.OracleConformanceError,
        20,
    ),
    _bug(
        "skipped layer updates memory",
        "a skipped layer writes its memory",
        props.check_skip_retain_is_age_correct,
        SkippedLayerUpdatesMemory,
        _M,
        checks.SkipRetainError,
        20,
    ),
    _bug(
        "phase 2 keeps the regularisers",
        "skip-retain and cross-head never switched off",
        props.check_phase_two_equals_baseline,
        PhaseTwoForgotten,
        TwoPhaseTrainer,
        checks.PhaseTwoError,
        15,
    ),
    _bug(
        "oracle: softmax without declared order",
        "pairwise sums whose tree depends on the row length",
        props.check_oracle_recurrence_is_full_pass,
        PairwiseSoftmaxOracle,
        _O,
        BitMismatchError,
        50,
    ),
]
