"""Transformer-XL in a declared order (docs/spec.md §6), pure NumPy: level O.

The model is the post-norm Transformer-XL of kimiyoung/transformer-xl (``pytorch/mem_transformer.py``):

* relative attention: for query ``i`` and key ``j`` of head ``h``
  ``score = ((q_i + u)·k_j + (q_i + v)·r_d) * (1/sqrt(d_head))`` with ``d = pos(i) - pos(j)`` (clamped to
  ``clamp_len``), ``r_d = W_R · sinusoid(d)``; masked entries are ``-inf``; softmax; ``P·V``; output
  projection; ``LN(h + attn)``; position-wise feed-forward ``LN(x + W2 relu(W1 x + b1) + b2)``;
* memories are the layer INPUTS: after a segment, layer ``l`` keeps the last ``mem_len`` rows of
  ``[m_l ; h_l[:qlen - ext_len]]``; initial memories are EMPTY.

Every reduction runs in the declared order of :mod:`revcheck.oracle.ordered` (sequential dot
products in index order, accumulator starting at ``+0``), and every elementwise function depends on
its argument alone.  Two consequences make the segment recurrence and the full pass over the
concatenated sequence bit-identical (docs/spec.md §6):

1. everything except attention is row-wise, so a token's projections have the same bits wherever
   the token sits;
2. in a softmax row and in ``P·V`` a masked key contributes ``exp(-inf) = +0`` and ``+0 · v = ±0``,
   and ``fl(acc + ±0) = acc`` for an accumulator that starts at ``+0`` (it can never become ``-0``);
   the keys a query may see come in the same (absolute) order in both computations.

The arithmetic is a parameter (:class:`OrderedArithmetic` here; an mpmath one in
:mod:`revcheck.exact.memxl`), so one composition serves levels O and R.

Layouts are batch-first: hidden states ``(B, time, d_model)``; weights as in ``torch.nn.Linear``
(``(out, in)``); ``qkv`` stacks the query, key and value projections (``3 * n_head * d_head`` rows,
head ``h`` of each block at rows ``h*d_head : (h+1)*d_head``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from revcheck.errors import UsageError
from revcheck.oracle import ordered

__all__ = [
    "INIT_MEMORIES",
    "ORACLE",
    "LayerWeights",
    "MemXLConfig",
    "MemXLConfigError",
    "MemXLOracle",
    "MemoryMismatchError",
    "OracleMemory",
    "OrderedArithmetic",
    "Weights",
    "full_pass",
    "recurrence",
    "segment_mask",
    "staircase_mask",
    "stop_gradient_mask",
]

Array = npt.NDArray[Any]

#: How the first segment's memories are made: ``"empty"`` (the model Transformer-XL stands for),
#: ``"zeros"`` (``mem_len`` zero rows that are attended: kimiyoung's TF code, the Hugging Face port and
#: the Skip Cross-head code -- a DIFFERENT model), ``"zeros-masked"`` (zero rows that are masked: the
#: empty-memory model again).
INIT_MEMORIES = ("empty", "zeros", "zeros-masked")


class MemXLConfigError(UsageError):
    """A Transformer-XL configuration or call that cannot be carried out; the message says what to use."""


class MemoryMismatchError(UsageError):
    """Memories that do not belong to this model or this batch (another model, shape, dtype, device)."""


@dataclass(frozen=True)
class MemXLConfig:
    """Sizes and options of a Transformer-XL; validated on construction.

    ``clamp_len=None`` means no clamping (kimiyoung's ``clamp_len=-1``).  ``same_length`` with
    ``mem_len=0`` is refused: it masks every key of every query (docs/spec.md §6).
    """

    n_layer: int
    n_head: int
    d_model: int
    d_head: int
    d_inner: int
    mem_len: int
    ext_len: int = 0
    same_length: bool = False
    clamp_len: int | None = None
    layer_norm_eps: float = 1e-5

    def __post_init__(self) -> None:
        for name in ("n_layer", "n_head", "d_model", "d_head", "d_inner"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise MemXLConfigError(f"{name}={value!r}: use a positive int")
        if self.d_model % 2:
            raise MemXLConfigError(
                f"d_model={self.d_model} is odd; the sinusoidal position table needs an even d_model"
            )
        for name in ("mem_len", "ext_len"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise MemXLConfigError(f"{name}={value!r}: use an int >= 0 (0 disables it)")
        if self.same_length and self.mem_len == 0:
            raise MemXLConfigError(
                "same_length=True with mem_len=0 masks every key of every query (each softmax row would be "
                "NaN); use same_length=False, or mem_len >= 1"
            )
        if self.clamp_len is not None and (
            not isinstance(self.clamp_len, int) or isinstance(self.clamp_len, bool) or self.clamp_len < 1
        ):
            raise MemXLConfigError(
                f"clamp_len={self.clamp_len!r}: use a positive int, or None for no clamping "
                "(kimiyoung's clamp_len=-1 means None)"
            )
        if not (isinstance(self.layer_norm_eps, float) and self.layer_norm_eps >= 0.0):
            raise MemXLConfigError(f"layer_norm_eps={self.layer_norm_eps!r}: use a float >= 0")

    @property
    def scale(self) -> float:
        return 1.0 / math.sqrt(self.d_head)


@dataclass(frozen=True)
class LayerWeights:
    """One decoder layer (shapes as ``torch.nn.Linear`` weights, ``(out, in)``; no bias on q/k/v/r/o)."""

    qkv: Array  # (3 * n_head * d_head, d_model)
    r: Array  # (n_head * d_head, d_model)
    o: Array  # (d_model, n_head * d_head)
    norm1_weight: Array  # (d_model,)
    norm1_bias: Array
    ff1_weight: Array  # (d_inner, d_model)
    ff1_bias: Array  # (d_inner,)
    ff2_weight: Array  # (d_model, d_inner)
    ff2_bias: Array  # (d_model,)
    norm2_weight: Array
    norm2_bias: Array

    def permuted_heads(self, permutation: Sequence[int], n_head: int) -> LayerWeights:
        """These weights with the head blocks of the K, R and V projections permuted (Q unchanged):
        head ``h`` of the result is head ``permutation[h]`` of these."""
        rows = np.arange(self.r.shape[0]).reshape(n_head, -1)[list(permutation)].reshape(-1)
        block = self.r.shape[0]
        qkv = np.concatenate([self.qkv[:block], self.qkv[block:][np.concatenate([rows, block + rows])]])
        return LayerWeights(
            qkv,
            self.r[rows],
            self.o,
            self.norm1_weight,
            self.norm1_bias,
            self.ff1_weight,
            self.ff1_bias,
            self.ff2_weight,
            self.ff2_bias,
            self.norm2_weight,
            self.norm2_bias,
        )


@dataclass(frozen=True)
class Weights:
    """All parameters: token embedding, the two attention biases shared by every layer, the layers."""

    embedding: Array  # (n_token, d_model)
    r_w_bias: Array  # u: (n_head, d_head)
    r_r_bias: Array  # v: (n_head, d_head)
    layers: tuple[LayerWeights, ...]


@dataclass(frozen=True)
class OracleMemory:
    """Per-layer memories and where they sit in the sequence.

    ``hidden[l]`` is ``(B, mlen_l, d_model)``; its first ``padding[l]`` rows are masked; ``ends[l]`` is
    the absolute position just after its last row (its rows sit at ``ends[l] - mlen_l ... ends[l] - 1``);
    ``blocks[l]`` the block counter when it was written; ``position`` the absolute position of the next
    segment's first token and ``block`` the number of segments processed.
    """

    hidden: tuple[Array, ...]
    padding: tuple[int, ...]
    ends: tuple[int, ...]
    blocks: tuple[int, ...]
    position: int = 0
    block: int = 0


@dataclass
class SegmentResult:
    """What one segment produces: the last layer's output, the new memory, each layer's input."""

    output: Array
    memory: OracleMemory
    layer_inputs: list[Array] = field(default_factory=list)


class OrderedArithmetic:
    """binary32 / binary64 arithmetic in the declared order of :mod:`revcheck.oracle.ordered` (level O)."""

    level = "O"

    def check(self, array: object, name: str) -> Array:
        return ordered.check_compute_array(array, name)

    def const(self, value: float, like: Array) -> Any:
        return like.dtype.type(value)

    def from_ints(self, values: Array, like: Array) -> Array:
        return values.astype(like.dtype)  # exact: positions stay far below 2**24

    def full(self, shape: tuple[int, ...], value: float, like: Array) -> Array:
        return np.full(shape, value, dtype=like.dtype)

    def log_const(self, value: float, like: Array) -> Any:
        return like.dtype.type(math.log(value))

    matmul = staticmethod(ordered.matmul)
    exp = staticmethod(ordered.exp)
    sqrt = staticmethod(ordered.sqrt)
    sin = staticmethod(ordered.sin)
    cos = staticmethod(ordered.cos)
    relu = staticmethod(ordered.relu)
    softmax = staticmethod(ordered.softmax)
    layer_norm = staticmethod(ordered.layer_norm)


def segment_mask(qlen: int, mlen: int, mem_len: int, same_length: bool = False, padding: int = 0) -> Array:
    """Which keys each query of a segment may see: bool ``(qlen, mlen + qlen)``, True = allowed.

    Keys are ``[memory (mlen rows) ; segment (qlen rows)]``.  Query ``i`` sees key ``j`` iff
    ``j <= i + mlen`` (all memory, causal in the segment); with ``same_length`` also
    ``j > i + mlen - mem_len`` (exactly the last ``mem_len`` keys, itself included: kimiyoung's
    ``triu(1 + mlen) + tril(-mask_shift_len)``).  The first ``padding`` memory rows are never seen.

    Examples
    --------
    >>> segment_mask(2, 2, 2).astype(int)
    array([[1, 1, 1, 0],
           [1, 1, 1, 1]])
    >>> segment_mask(2, 2, 2, same_length=True).astype(int)
    array([[0, 1, 1, 0],
           [0, 0, 1, 1]])
    """
    for name, value in (("qlen", qlen), ("mlen", mlen), ("mem_len", mem_len), ("padding", padding)):
        if value < 0:
            raise MemXLConfigError(f"{name}={value}: use an int >= 0")
    if padding > mlen:
        raise MemXLConfigError(f"padding={padding} exceeds the memory length {mlen}")
    if same_length and mem_len == 0:
        raise MemXLConfigError("same_length with mem_len=0 masks every key; use mem_len >= 1")
    i = np.arange(qlen)[:, None]
    j = np.arange(mlen + qlen)[None, :]
    allowed = (j <= i + mlen) & (j >= padding)
    if same_length:
        allowed &= j > i + mlen - mem_len
    return allowed


def staircase_mask(n_tokens: int, segment_length: int, mem_len: int, same_length: bool = False) -> Array:
    """The full-pass mask equivalent to the segment recurrence: bool ``(T, T)``, True = allowed.

    A query at absolute position ``t`` in the segment starting at ``S = (t // segment_length) *
    segment_length`` sees keys ``s`` with ``max(0, S - mem_len) <= s <= t`` (a segment-aligned
    staircase); with ``same_length`` the band ``t - mem_len < s <= t``.  Use it to build the full
    pass of your own model for :func:`revcheck.memxl.assert_recurrence_equivalent` (``ext_len = 0``).

    Examples
    --------
    >>> staircase_mask(6, 3, 2).astype(int)
    array([[1, 0, 0, 0, 0, 0],
           [1, 1, 0, 0, 0, 0],
           [1, 1, 1, 0, 0, 0],
           [0, 1, 1, 1, 0, 0],
           [0, 1, 1, 1, 1, 0],
           [0, 1, 1, 1, 1, 1]])
    """
    if n_tokens < 1 or segment_length < 1:
        raise MemXLConfigError(f"n_tokens={n_tokens}, segment_length={segment_length}: use positive ints")
    if mem_len < 0:
        raise MemXLConfigError(f"mem_len={mem_len}: use an int >= 0")
    if same_length and mem_len == 0:
        raise MemXLConfigError("same_length with mem_len=0 masks every key; use mem_len >= 1")
    t = np.arange(n_tokens)[:, None]
    s = np.arange(n_tokens)[None, :]
    if same_length:
        return (s <= t) & (s > t - mem_len)
    start = (t // segment_length) * segment_length
    return (s <= t) & (s >= start - mem_len)


def stop_gradient_mask(n_tokens: int, segment_length: int) -> Array:
    """bool ``(T, T)``: True where key ``s`` lies in an earlier segment than query ``t``.

    In the recurrence such a key enters only through the detached memory, so a full pass that
    reproduces the recurrence's gradients must read it through stop-gradient (docs/spec.md §6).
    """
    if n_tokens < 1 or segment_length < 1:
        raise MemXLConfigError(f"n_tokens={n_tokens}, segment_length={segment_length}: use positive ints")
    block = np.arange(n_tokens) // segment_length
    return block[None, :] < block[:, None]


class MemXLOracle:
    """The Transformer-XL composition over an arithmetic (declared-order floats by default).

    Subclass and override one method to build a deliberately wrong model (tests/gallery).
    """

    def __init__(self, arithmetic: Any = None) -> None:
        self.arithmetic = OrderedArithmetic() if arithmetic is None else arithmetic

    # ------------------------------------------------------------------ positions
    def sinusoid(self, distances: Array, d_model: int, like: Array) -> Array:
        """``[sin(d * f_k) ; cos(d * f_k)]``, ``f_k = 1 / exp((2k / d_model) ln 10000)``: ``(n, d_model)``.

        Each entry is a function of its distance alone (``d * f_k`` is one rounding of an exact
        integer), so a distance gets the same bits in every call.
        """
        A = self.arithmetic
        k = A.from_ints(np.arange(0, d_model, 2), like)
        exponent = (k / A.const(d_model, like)) * A.log_const(10000.0, like)
        inv_freq = A.const(1.0, like) / A.exp(exponent)
        angles = A.from_ints(distances, like)[:, None] * inv_freq[None, :]
        return np.concatenate([A.sin(angles), A.cos(angles)], axis=-1)

    def distances(self, query_pos: Array, key_pos: Array, clamp_len: int | None) -> Array:
        """``pos(i) - pos(j)`` as an int table ``(qlen, klen)``, clamped to ``[0, clamp_len]``.

        Negative distances are keys after the query (always masked); they are clamped to 0 so that
        the table stays small.
        """
        d = query_pos[:, None] - key_pos[None, :]
        return np.clip(d, 0, clamp_len if clamp_len is not None else None)

    def segment_mask(self, qlen: int, mlen: int, config: MemXLConfig, padding: int) -> Array:
        """:func:`segment_mask` for this configuration."""
        return segment_mask(qlen, mlen, config.mem_len, config.same_length, padding)

    # ------------------------------------------------------------------ one layer
    def attention(
        self,
        h: Array,
        memory: Array,
        layer: LayerWeights,
        weights: Weights,
        config: MemXLConfig,
        query_pos: Array,
        key_pos: Array,
        allowed: Array,
        permutation: Sequence[int] | None = None,
    ) -> Array:
        """``LN(h + o(attn))`` of one layer: relative attention of ``h`` over ``[memory ; h]``."""
        A = self.arithmetic
        B, qlen, _ = h.shape
        mlen = memory.shape[1]
        H, dh = config.n_head, config.d_head
        cat = np.concatenate([memory, h], axis=1)
        heads = A.matmul(cat, layer.qkv.T)  # (B, klen, 3 H dh)
        q = heads[:, mlen:, : H * dh].reshape(B, qlen, H, dh).transpose(0, 2, 1, 3)  # (B, H, qlen, dh)
        k = heads[:, :, H * dh : 2 * H * dh].reshape(B, mlen + qlen, H, dh).transpose(0, 2, 1, 3)
        v = heads[:, :, 2 * H * dh :].reshape(B, mlen + qlen, H, dh).transpose(0, 2, 1, 3)
        distance = self.distances(query_pos, key_pos, config.clamp_len)
        table = self.sinusoid(np.arange(int(distance.max()) + 1), config.d_model, h)
        r = A.matmul(table, layer.r.T).reshape(-1, H, dh).transpose(1, 0, 2)  # (H, D, dh)
        if permutation is not None:
            order = list(permutation)
            k, v, r = k[:, order], v[:, order], r[order]
        u = weights.r_w_bias[None, :, None, :]
        w = weights.r_r_bias[None, :, None, :]
        content = A.matmul(q + u, k.transpose(0, 1, 3, 2))  # (B, H, qlen, klen)
        position_all = A.matmul(q + w, r.transpose(0, 2, 1)[None])  # (B, H, qlen, D)
        index = np.broadcast_to(distance, (B, H, qlen, mlen + qlen))
        position = np.take_along_axis(position_all, index, axis=-1)
        scale = A.const(1.0, h) / A.sqrt(A.full((), config.d_head, h))
        score = (content + position) * scale
        score = np.where(allowed, score, A.full((), -math.inf, h))
        prob = A.softmax(score)
        vec = A.matmul(prob, v)  # (B, H, qlen, dh): sequential over keys, in key order
        vec = vec.transpose(0, 2, 1, 3).reshape(B, qlen, H * dh)
        out = A.matmul(vec, layer.o.T)
        return A.layer_norm(h + out, layer.norm1_weight, layer.norm1_bias, config.layer_norm_eps)

    def feed_forward(self, x: Array, layer: LayerWeights, config: MemXLConfig) -> Array:
        """``LN(x + W2 relu(W1 x + b1) + b2)``."""
        A = self.arithmetic
        inner = A.relu(A.matmul(x, layer.ff1_weight.T) + layer.ff1_bias)
        out = A.matmul(inner, layer.ff2_weight.T) + layer.ff2_bias
        return A.layer_norm(x + out, layer.norm2_weight, layer.norm2_bias, config.layer_norm_eps)

    def layer(
        self,
        h: Array,
        memory: Array,
        layer: LayerWeights,
        weights: Weights,
        config: MemXLConfig,
        query_pos: Array,
        key_pos: Array,
        allowed: Array,
        permutation: Sequence[int] | None = None,
    ) -> Array:
        attended = self.attention(h, memory, layer, weights, config, query_pos, key_pos, allowed, permutation)
        return self.feed_forward(attended, layer, config)

    def embed(self, tokens: Array, weights: Weights, config: MemXLConfig) -> Array:
        """``embedding[tokens] * sqrt(d_model)`` (kimiyoung's ``emb_scale``)."""
        A = self.arithmetic
        e = weights.embedding
        if not np.issubdtype(np.asarray(tokens).dtype, np.integer):
            raise TypeError(f"tokens must be an integer array, got {np.asarray(tokens).dtype}")
        tokens = np.asarray(tokens)
        if tokens.ndim != 2:
            raise MemXLConfigError(f"tokens must be (batch, time), got shape {tokens.shape}")
        if tokens.size and (tokens.min() < 0 or tokens.max() >= e.shape[0]):
            raise MemXLConfigError(
                f"token ids must lie in [0, {e.shape[0]}); got {tokens.min()}..{tokens.max()}"
            )
        return e[tokens] * A.sqrt(A.full((), config.d_model, e))

    # ------------------------------------------------------------------ memories
    def initial_memory(
        self, weights: Weights, config: MemXLConfig, batch: int, init_memory: str = "empty"
    ) -> OracleMemory:
        """The first segment's memory: empty, ``mem_len`` zero rows, or zero rows that are masked."""
        if init_memory not in INIT_MEMORIES:
            raise MemXLConfigError(f"init_memory={init_memory!r}; use one of {INIT_MEMORIES}")
        rows = 0 if init_memory == "empty" else config.mem_len
        zeros = self.arithmetic.full((batch, rows, config.d_model), 0.0, weights.embedding)
        padding = rows if init_memory == "zeros-masked" else 0
        n = config.n_layer
        return OracleMemory(tuple(zeros.copy() for _ in range(n)), (padding,) * n, (0,) * n, (0,) * n)

    def update_memory(
        self, memory: Array, hidden: Array, padding: int, mem_len: int, ext_len: int
    ) -> tuple[Array, int]:
        """The last ``mem_len`` rows of ``[memory ; hidden[:qlen - ext_len]]``, and how many are padding."""
        mlen, qlen = memory.shape[1], hidden.shape[1]
        end = mlen + max(0, qlen - ext_len)
        begin = max(0, end - mem_len)
        cat = np.concatenate([memory, hidden], axis=1)
        return cat[:, begin:end].copy(), max(0, padding - begin)

    # ------------------------------------------------------------------ segments
    def segment(
        self,
        weights: Weights,
        config: MemXLConfig,
        tokens: Array,
        memory: OracleMemory | None = None,
        *,
        skip: Sequence[bool] | None = None,
        permutations: Sequence[Sequence[int] | None] | None = None,
    ) -> SegmentResult:
        """One segment: outputs ``(B, qlen, d_model)``, the new memory and every layer's input.

        ``skip[l]`` makes layer ``l`` the identity and keeps its memory (skip-retain);
        ``permutations[l]`` applies a head permutation to K, R and V of layer ``l`` (cross-head).
        """
        self.check_weights(weights, config)
        h = self.embed(tokens, weights, config)
        B, qlen = h.shape[:2]
        if qlen <= config.ext_len:
            raise MemXLConfigError(f"a segment of {qlen} tokens is not longer than ext_len={config.ext_len}")
        if memory is None:
            memory = self.initial_memory(weights, config, B)
        self.check_memory(memory, config, h)
        L = config.n_layer
        skip = [False] * L if skip is None else list(skip)
        permutations = [None] * L if permutations is None else list(permutations)
        S = memory.position
        query_pos = np.arange(S, S + qlen)
        new_hidden, new_padding, new_ends, new_blocks = [], [], [], []
        layer_inputs = []
        for index, layer in enumerate(weights.layers):
            layer_inputs.append(h)
            mem = memory.hidden[index]
            if skip[index]:
                new_hidden.append(mem)
                new_padding.append(memory.padding[index])
                new_ends.append(memory.ends[index])
                new_blocks.append(memory.blocks[index])
                continue
            mlen, end = mem.shape[1], memory.ends[index]
            key_pos = np.concatenate([np.arange(end - mlen, end), query_pos])
            allowed = self.segment_mask(qlen, mlen, config, memory.padding[index])
            out = self.layer(h, mem, layer, weights, config, query_pos, key_pos, allowed, permutations[index])
            kept, padding = self.update_memory(mem, h, memory.padding[index], config.mem_len, config.ext_len)
            new_hidden.append(kept)
            new_padding.append(padding)
            new_ends.append(S + qlen - config.ext_len)
            new_blocks.append(memory.block + 1)
            h = out
        new_memory = OracleMemory(
            tuple(new_hidden),
            tuple(new_padding),
            tuple(new_ends),
            tuple(new_blocks),
            S + qlen - config.ext_len,
            memory.block + 1,
        )
        return SegmentResult(h, new_memory, layer_inputs)

    def recurrence(
        self,
        weights: Weights,
        config: MemXLConfig,
        tokens: Array,
        segment_length: int,
        init_memory: str = "empty",
    ) -> tuple[Array, list[OracleMemory]]:
        """Process ``tokens (B, T)`` segment by segment (the last may be shorter); outputs ``(B, T, d)``.

        Needs ``ext_len = 0`` (with ``ext_len > 0`` consecutive segments overlap and re-read tokens, so
        there is no single sequence to compare with).
        """
        if config.ext_len:
            raise MemXLConfigError(
                f"recurrence() needs ext_len=0 (got {config.ext_len}): with ext_len > 0 segments overlap; "
                "call segment() with your own overlapping segments instead"
            )
        if segment_length < 1:
            raise MemXLConfigError(f"segment_length={segment_length}: use a positive int")
        tokens = np.asarray(tokens)
        memory = self.initial_memory(weights, config, tokens.shape[0], init_memory)
        outputs, memories = [], []
        for start in range(0, tokens.shape[1], segment_length):
            result = self.segment(weights, config, tokens[:, start : start + segment_length], memory)
            outputs.append(result.output)
            memory = result.memory
            memories.append(memory)
        return np.concatenate(outputs, axis=1), memories

    def full_pass(self, weights: Weights, config: MemXLConfig, tokens: Array, allowed: Array) -> Array:
        """One pass over the whole sequence with an explicit ``(T, T)`` mask (True = allowed); no memory."""
        self.check_weights(weights, config)
        h = self.embed(tokens, weights, config)
        T = h.shape[1]
        allowed = np.asarray(allowed)
        if allowed.shape != (T, T) or allowed.dtype != np.bool_:
            raise MemXLConfigError(
                f"allowed must be a bool ({T}, {T}) array, got {allowed.dtype} {allowed.shape}"
            )
        if not allowed.any(axis=1).all():
            raise MemXLConfigError("a row of the mask allows no key (its softmax would be NaN)")
        positions = np.arange(T)
        empty = h[:, :0]
        for layer in weights.layers:
            h = self.layer(h, empty, layer, weights, config, positions, positions, allowed)
        return h

    # ------------------------------------------------------------------ validation
    def check_weights(self, weights: Weights, config: MemXLConfig) -> None:
        A = self.arithmetic
        emb = A.check(weights.embedding, "embedding")
        if len(weights.layers) != config.n_layer:
            raise MemXLConfigError(f"{len(weights.layers)} layers of weights for n_layer={config.n_layer}")
        H, dh, d, di = config.n_head, config.d_head, config.d_model, config.d_inner
        expected = {
            "qkv": (3 * H * dh, d),
            "r": (H * dh, d),
            "o": (d, H * dh),
            "ff1_weight": (di, d),
            "ff1_bias": (di,),
            "ff2_weight": (d, di),
        }
        for index, layer in enumerate(weights.layers):
            for name, value in vars(layer).items():
                A.check(value, f"layers[{index}].{name}")
                want = expected.get(name, (d,))
                if value.shape != want or value.dtype != emb.dtype:
                    raise MemXLConfigError(
                        f"layers[{index}].{name} is {value.dtype} {value.shape}; expected {emb.dtype} {want}"
                    )
        for name in ("r_w_bias", "r_r_bias"):
            value = A.check(getattr(weights, name), name)
            if value.shape != (H, dh) or value.dtype != emb.dtype:
                raise MemXLConfigError(
                    f"{name} is {value.dtype} {value.shape}; expected {emb.dtype} {(H, dh)}"
                )

    def check_memory(self, memory: OracleMemory, config: MemXLConfig, h: Array) -> None:
        if not isinstance(memory, OracleMemory):
            raise MemoryMismatchError(
                f"memory is a {type(memory).__name__}; pass the OracleMemory of the previous segment() or "
                "initial_memory()"
            )
        if len(memory.hidden) != config.n_layer:
            raise MemoryMismatchError(f"memory has {len(memory.hidden)} layers, the model {config.n_layer}")
        for index, mem in enumerate(memory.hidden):
            if (
                mem.dtype != h.dtype
                or mem.ndim != 3
                or mem.shape[0] != h.shape[0]
                or mem.shape[2] != h.shape[2]
            ):
                raise MemoryMismatchError(
                    f"memory of layer {index} is {mem.dtype} {mem.shape}; expected {h.dtype} "
                    f"({h.shape[0]}, <= {config.mem_len}, {h.shape[2]})"
                )
            if mem.shape[1] > config.mem_len:
                raise MemoryMismatchError(
                    f"memory of layer {index} has {mem.shape[1]} rows, more than mem_len={config.mem_len}"
                )


ORACLE = MemXLOracle()


def recurrence(
    weights: Weights, config: MemXLConfig, tokens: Array, segment_length: int, init_memory: str = "empty"
) -> Array:
    """:meth:`MemXLOracle.recurrence` of the declared-order oracle; outputs only."""
    return ORACLE.recurrence(weights, config, tokens, segment_length, init_memory)[0]


def full_pass(weights: Weights, config: MemXLConfig, tokens: Array, allowed: Array) -> Array:
    """:meth:`MemXLOracle.full_pass` of the declared-order oracle."""
    return ORACLE.full_pass(weights, config, tokens, allowed)
