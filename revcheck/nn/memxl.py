"""Transformer-XL with relative positional attention, skip-retain and cross-head (docs/spec.md §6).

:class:`MemTransformerXL` is the post-norm model of kimiyoung/transformer-xl
(``pytorch/mem_transformer.py``), batch-first, with the points where implementations disagree
settled the way the model Transformer-XL stands for needs them:

* **memories are the layer INPUTS**, detached, and **empty** at the start (``mems=None``); after a
  segment layer ``l`` keeps the last ``mem_len`` rows of ``[m_l ; h_l[:qlen - ext_len]]``;
* **relative attention** ``score(i, j) = ((q_i + u)·k_j + (q_i + v)·r_d) / sqrt(d_head)`` with
  ``d = pos(i) - pos(j)`` (kimiyoung's ``_rel_shift`` realises ``d = i + mlen - j``; here the distance
  table is built from positions and gathered, which also serves retained memories of any age),
  sinusoidal ``r`` projected per layer by ``W_R``, ``clamp_len`` capping ``d``;
* a :class:`Memory` carries, besides the hidden states, where its rows sit in the sequence, its
  block counter and the id of the model that made it, so memories from another model, batch,
  dtype or device are refused instead of silently attended.

Options of Skip Cross-head Transformer-XL (arXiv 2311.08123), active in training mode only:

* ``skip_retain``: layer ``l`` (1-based) of ``L`` is skipped with probability ``0.5 * l / L``, never the
  last; a skipped layer is the identity, keeps its memory and its block counter, and when the memory
  is used again its keys sit at their true positions: ``(c - m) * M`` further away for ``c, m`` the
  current and the memory's block counter and ``M`` the segment stride;
* ``ch_prob``: per attention call, with this probability one random head permutation ``π`` is applied
  to K, R and V together (head ``h`` of the queries, ``u`` and ``v`` meets head ``π[h]``).

Random decisions come from a ``torch.Generator`` the model owns, seeded at construction from torch's
global generator (so ``torch.manual_seed`` makes a run reproducible) -- no torch.distributed.
Dropout uses the global generator, as ``torch.nn.Dropout`` does.  :class:`TwoPhaseTrainer` runs
phase 1 with skip-retain and cross-head and phase 2 on the same weights without.
"""

from __future__ import annotations

import copy
import math
import secrets
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from revcheck.oracle import memxl as oracle
from revcheck.oracle.memxl import INIT_MEMORIES, MemoryMismatchError, MemXLConfig, MemXLConfigError

__all__ = [
    "INIT_MEMORIES",
    "DecoderLayer",
    "LayerMemory",
    "LayerTrace",
    "MemTransformerXL",
    "MemXLConfigError",
    "MemXLOutput",
    "Memory",
    "MemoryMismatchError",
    "PositionwiseFF",
    "RelMultiHeadAttention",
    "TwoPhaseTrainer",
    "segments",
    "skip_probabilities",
]


def skip_probabilities(n_layer: int) -> tuple[float, ...]:
    """Skip-retain probabilities: ``0.5 * l / L`` for layer ``l = 1 .. L``, and 0 for the last layer.

    Examples
    --------
    >>> skip_probabilities(4)
    (0.125, 0.25, 0.375, 0.0)
    """
    return tuple(0.0 if layer == n_layer else 0.5 * layer / n_layer for layer in range(1, n_layer + 1))


def segments(tokens: Tensor, segment_length: int) -> list[Tensor]:
    """``tokens (B, T)`` cut into consecutive segments of ``segment_length`` (the last may be shorter)."""
    if segment_length < 1:
        raise MemXLConfigError(f"segment_length={segment_length}: use a positive int")
    return list(tokens.split(segment_length, dim=1))


@dataclass(frozen=True)
class LayerMemory:
    """One layer's memory: ``hidden (B, mlen, d_model)`` (detached) and where its rows sit.

    Rows sit at absolute positions ``end - mlen .. end - 1``; the first ``padding`` rows are masked
    (zero memories that are not attended); ``block`` is the block counter when it was written.
    """

    hidden: Tensor
    padding: int
    end: int
    block: int


@dataclass(frozen=True)
class Memory:
    """Per-layer memories returned by :meth:`MemTransformerXL.forward`; pass them to the next segment.

    ``position`` is the absolute position of the next segment's first token, ``block`` the number of
    segments processed (the current block counter ``c``), ``owner`` the id of the model that made them.
    """

    layers: tuple[LayerMemory, ...]
    position: int
    block: int
    owner: str

    def __len__(self) -> int:
        return len(self.layers)

    def __getitem__(self, index: int) -> Tensor:
        return self.layers[index].hidden

    def to_oracle(self) -> oracle.OracleMemory:
        """The same memory for :mod:`revcheck.oracle.memxl` (NumPy arrays)."""
        return oracle.OracleMemory(
            tuple(m.hidden.detach().cpu().numpy().copy() for m in self.layers),
            tuple(m.padding for m in self.layers),
            tuple(m.end for m in self.layers),
            tuple(m.block for m in self.layers),
            self.position,
            self.block,
        )


@dataclass(frozen=True)
class LayerTrace:
    """What one layer did in one training-mode segment (``forward(..., return_trace=True)``).

    ``distances`` is the ``(qlen, klen)`` table of relative distances the layer's positional term
    used (keys ``[memory ; segment]``), ``None`` when the layer was skipped.
    """

    layer: int
    skipped: bool
    block: int  # c: segments processed before this one
    memory_block: int  # m: block counter of the memory the layer read
    memory_rows: int
    memory_end: int
    segment_start: int
    distances: Tensor | None
    head_permutation: tuple[int, ...] | None


@dataclass
class MemXLOutput:
    """``output (B, qlen, d_model)``, the new :class:`Memory`, each layer's input, and a trace if asked.

    Unpacks as ``output, mems = model(tokens, mems)``.
    """

    output: Tensor
    mems: Memory
    layer_inputs: list[Tensor] = field(default_factory=list)
    trace: list[LayerTrace] | None = None

    def __iter__(self) -> Iterator[Any]:
        return iter((self.output, self.mems))


class RelMultiHeadAttention(nn.Module):
    """Relative multi-head attention with memory, post-norm: ``LN(h + o(attn(h, [m ; h])))``.

    kimiyoung's ``RelPartialLearnableMultiHeadAttn``: ``qkv_net`` projects ``[memory ; h]`` (no bias),
    ``r_net`` projects the sinusoids (no bias), ``o_net`` maps the heads back (no bias).  The relative
    shift is :meth:`distances`: the positional term of query ``i`` and key ``j`` uses the sinusoid of
    ``pos(i) - pos(j)``, gathered from a table of every distance that occurs.
    """

    def __init__(
        self,
        n_head: int,
        d_model: int,
        d_head: int,
        dropout: float = 0.0,
        dropatt: float = 0.0,
        layer_norm_eps: float = 1e-5,
        clamp_len: int | None = None,
    ) -> None:
        super().__init__()
        self.n_head, self.d_model, self.d_head = n_head, d_model, d_head
        self.clamp_len = clamp_len
        self.qkv_net = nn.Linear(d_model, 3 * n_head * d_head, bias=False)
        self.r_net = nn.Linear(d_model, n_head * d_head, bias=False)
        self.o_net = nn.Linear(n_head * d_head, d_model, bias=False)
        self.layer_norm = nn.LayerNorm(d_model, eps=layer_norm_eps)
        self.drop = nn.Dropout(dropout)
        self.dropatt = nn.Dropout(dropatt)
        self.scale = 1.0 / math.sqrt(d_head)

    def distances(self, query_pos: Tensor, key_pos: Tensor) -> Tensor:
        """``pos(i) - pos(j)`` clamped to ``[0, clamp_len]``, ``(qlen, klen)``."""
        d = query_pos[:, None] - key_pos[None, :]
        return d.clamp(min=0, max=self.clamp_len)

    def sinusoid_table(self, n: int, like: Tensor) -> Tensor:
        """Sinusoids of the distances ``0 .. n-1``: ``(n, d_model)``, ``[sin ; cos]`` (kimiyoung's order)."""
        # Frequencies in float64, rounded once to the working dtype (kimiyoung keeps an fp32 buffer, so a
        # float64 model there runs on fp32-rounded frequencies).
        inv_freq = 1.0 / (10000 ** (torch.arange(0, self.d_model, 2, dtype=torch.float64) / self.d_model))
        pos = torch.arange(n, device=like.device, dtype=like.dtype)
        angles = torch.outer(pos, inv_freq.to(device=like.device, dtype=like.dtype))
        return torch.cat([angles.sin(), angles.cos()], dim=-1)

    def _heads(self, cat: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        B, klen, _ = cat.shape
        q, k, v = self.qkv_net(cat).chunk(3, dim=-1)
        shape = (B, klen, self.n_head, self.d_head)
        return q.reshape(shape), k.reshape(shape), v.reshape(shape)

    def scores(
        self,
        h: Tensor,
        memory: Tensor,
        query_pos: Tensor,
        key_pos: Tensor,
        r_w_bias: Tensor,
        r_r_bias: Tensor,
        *,
        head_permutation: Sequence[int] | None = None,
        stop_gradient: Tensor | None = None,
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """Unmasked scaled scores ``(B, H, qlen, klen)``, the values, and the stop-gradient values.

        Keys are ``[memory ; h]`` at positions ``key_pos``; queries are ``h`` at ``query_pos``.
        ``stop_gradient`` (bool ``(qlen, klen)``): keys read through a detached copy of the input there.
        """
        mlen, qlen = memory.shape[1], h.shape[1]
        cat = torch.cat([memory, h], dim=1)
        q, k, v = self._heads(cat)
        q = q[:, mlen:]
        distances = self.distances(query_pos, key_pos)
        table = self.sinusoid_table(int(distances.max()) + 1, h)
        r = self.r_net(table).reshape(table.shape[0], self.n_head, self.d_head)
        k_sg = v_sg = None
        if stop_gradient is not None:
            _, k_sg, v_sg = self._heads(cat.detach())
        if head_permutation is not None:
            order = torch.as_tensor(list(head_permutation), device=h.device)
            k, v, r = self._permute_heads(order, k, v, r)
            if k_sg is not None and v_sg is not None:
                k_sg, v_sg, _ = self._permute_heads(order, k_sg, v_sg, r)
        content = torch.einsum("bihd,bjhd->bhij", q + r_w_bias, k)
        if k_sg is not None and stop_gradient is not None:
            content_sg = torch.einsum("bihd,bjhd->bhij", q + r_w_bias, k_sg)
            content = torch.where(stop_gradient, content_sg, content)
        position_all = torch.einsum("bihd,nhd->bhin", q + r_r_bias, r)
        index = distances.expand(h.shape[0], self.n_head, qlen, mlen + qlen)
        position = position_all.gather(-1, index)
        return (content + position) * self.scale, v, v_sg

    def _permute_heads(self, order: Tensor, k: Tensor, v: Tensor, r: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Cross-head: head ``h`` of the queries meets head ``order[h]`` of K, V (dim 2) and R (dim 1)."""
        return k.index_select(2, order), v.index_select(2, order), r.index_select(1, order)

    def forward(
        self,
        h: Tensor,
        memory: Tensor,
        query_pos: Tensor,
        key_pos: Tensor,
        allowed: Tensor,
        r_w_bias: Tensor,
        r_r_bias: Tensor,
        *,
        head_permutation: Sequence[int] | None = None,
        stop_gradient: Tensor | None = None,
    ) -> Tensor:
        """``LN(h + o(softmax(masked scores) · V))``, ``(B, qlen, d_model)``; ``allowed`` (qlen, klen)."""
        score, v, v_sg = self.scores(
            h,
            memory,
            query_pos,
            key_pos,
            r_w_bias,
            r_r_bias,
            head_permutation=head_permutation,
            stop_gradient=stop_gradient,
        )
        score = score.masked_fill(~allowed, float("-inf"))
        prob = self.dropatt(torch.softmax(score, dim=-1))
        if v_sg is not None and stop_gradient is not None:
            vec = torch.einsum("bhij,bjhd->bihd", prob.masked_fill(stop_gradient, 0.0), v)
            vec = vec + torch.einsum("bhij,bjhd->bihd", prob.masked_fill(~stop_gradient, 0.0), v_sg)
        else:
            vec = torch.einsum("bhij,bjhd->bihd", prob, v)
        out = self.drop(self.o_net(vec.reshape(h.shape[0], h.shape[1], self.n_head * self.d_head)))
        return self.layer_norm(h + out)

    def permuted_heads(self, permutation: Sequence[int]) -> RelMultiHeadAttention:
        """A copy whose K, R and V projections have their head blocks permuted (Q, o unchanged).

        Head ``h`` of the copy's K/R/V is head ``permutation[h]`` of this module's, so the copy without
        permutation computes what this module computes with ``head_permutation=permutation``.
        """
        check_permutation(permutation, self.n_head)
        twin = copy.deepcopy(self)
        block = self.n_head * self.d_head
        rows = torch.arange(block).reshape(self.n_head, self.d_head)[list(permutation)].reshape(-1)
        with torch.no_grad():
            w = self.qkv_net.weight
            twin.qkv_net.weight.copy_(torch.cat([w[:block], w[block:][torch.cat([rows, block + rows])]]))
            twin.r_net.weight.copy_(self.r_net.weight[rows])
        return twin


def check_permutation(permutation: Sequence[int], n_head: int) -> tuple[int, ...]:
    """``permutation`` as a tuple if it is a permutation of ``range(n_head)``; else a usage error."""
    values = tuple(int(p) for p in permutation)
    if sorted(values) != list(range(n_head)):
        raise MemXLConfigError(
            f"head permutation {values} is not a permutation of 0..{n_head - 1}; "
            f"use e.g. {tuple(range(n_head))[::-1]}"
        )
    return values


class PositionwiseFF(nn.Module):
    """``LN(x + W2 dropout(relu(W1 x + b1)) + b2)`` (post-norm, kimiyoung's ``PositionwiseFF``)."""

    def __init__(
        self, d_model: int, d_inner: int, dropout: float = 0.0, layer_norm_eps: float = 1e-5
    ) -> None:
        super().__init__()
        self.ff1 = nn.Linear(d_model, d_inner)
        self.ff2 = nn.Linear(d_inner, d_model)
        self.drop = nn.Dropout(dropout)
        self.layer_norm = nn.LayerNorm(d_model, eps=layer_norm_eps)

    def forward(self, x: Tensor) -> Tensor:
        core = self.drop(self.ff2(self.drop(F.relu(self.ff1(x)))))
        return self.layer_norm(x + core)


class DecoderLayer(nn.Module):
    """Relative attention then the position-wise feed-forward."""

    def __init__(
        self,
        n_head: int,
        d_model: int,
        d_head: int,
        d_inner: int,
        dropout: float,
        dropatt: float,
        eps: float,
        clamp_len: int | None,
        attention_class: type[RelMultiHeadAttention] = RelMultiHeadAttention,
    ) -> None:
        super().__init__()
        self.attn = attention_class(n_head, d_model, d_head, dropout, dropatt, eps, clamp_len)
        self.ff = PositionwiseFF(d_model, d_inner, dropout, eps)

    def forward(self, h: Tensor, memory: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        return self.ff(self.attn(h, memory, *args, **kwargs))


class MemTransformerXL(nn.Module):
    """Transformer-XL language model over segments (see the module docstring).

    Parameters
    ----------
    n_token, n_layer, n_head, d_model : int
        Vocabulary, depth, heads, width (even: the sinusoids pair sin and cos).
    d_head, d_inner : int, optional
        Per-head width (default ``d_model // n_head``) and feed-forward width (default ``4 * d_model``).
    mem_len : int
        Memory rows kept per layer (0: no memory).
    ext_len : int
        Trailing rows of each segment left out of the memory (kimiyoung's extended context: the next
        segment re-reads them).  The recurrence-equals-full-pass checks need ``ext_len = 0``.
    same_length : bool
        Every query sees exactly the last ``mem_len`` keys (refused with ``mem_len = 0``).
    clamp_len : int or None
        Cap on the relative distance (None: no cap).
    max_segment_length : int or None
        Longest segment :meth:`forward` accepts (None: any).
    skip_retain : bool
        Skip-retain layer dropping in training mode.
    ch_prob : float
        Probability of a cross-head permutation per attention call in training mode.
    dropout, dropatt : float
        Dropout on hidden states and on attention probabilities.
    tie_weight : bool
        Share the output projection with the token embedding.

    Raises
    ------
    MemXLConfigError
        For a bad configuration (negative ``mem_len``, ``same_length`` with ``mem_len = 0``, ...).

    Examples
    --------
    >>> _ = torch.manual_seed(0)
    >>> model = MemTransformerXL(n_token=10, n_layer=2, n_head=2, d_model=8, mem_len=4).eval()
    >>> out, mems = model(torch.randint(0, 10, (1, 3)))           # first segment: empty memory
    >>> [tuple(m.shape) for m in mems]
    [(1, 3, 8), (1, 3, 8)]
    >>> out, mems = model(torch.randint(0, 10, (1, 3)), mems)      # keeps the last 4 rows
    >>> [tuple(m.shape) for m in mems]
    [(1, 4, 8), (1, 4, 8)]
    """

    attention_class: type[RelMultiHeadAttention] = RelMultiHeadAttention

    def __init__(
        self,
        n_token: int,
        n_layer: int,
        n_head: int,
        d_model: int,
        d_head: int | None = None,
        d_inner: int | None = None,
        *,
        mem_len: int,
        ext_len: int = 0,
        same_length: bool = False,
        clamp_len: int | None = None,
        max_segment_length: int | None = None,
        skip_retain: bool = False,
        ch_prob: float = 0.0,
        dropout: float = 0.0,
        dropatt: float = 0.0,
        layer_norm_eps: float = 1e-5,
        tie_weight: bool = True,
    ) -> None:
        super().__init__()
        if not isinstance(n_token, int) or n_token < 1:
            raise MemXLConfigError(f"n_token={n_token!r}: use a positive int")
        if isinstance(n_head, int) and n_head >= 1 and d_head is None:
            if d_model % n_head:
                raise MemXLConfigError(f"d_model={d_model} is not a multiple of n_head={n_head}; pass d_head")
            d_head = d_model // n_head
        self.config = MemXLConfig(
            n_layer=n_layer,
            n_head=n_head,
            d_model=d_model,
            d_head=d_head if d_head is not None else 0,
            d_inner=d_inner if d_inner is not None else 4 * d_model,
            mem_len=mem_len,
            ext_len=ext_len,
            same_length=same_length,
            clamp_len=clamp_len,
            layer_norm_eps=float(layer_norm_eps),
        )
        if max_segment_length is not None and (max_segment_length < 1 or max_segment_length <= ext_len):
            raise MemXLConfigError(
                f"max_segment_length={max_segment_length}: use None or an int > ext_len={ext_len}"
            )
        for name, p in (("ch_prob", ch_prob), ("dropout", dropout), ("dropatt", dropatt)):
            if not 0.0 <= p <= 1.0 or (name != "ch_prob" and p == 1.0):
                raise MemXLConfigError(
                    f"{name}={p}: use a probability in [0, 1{']' if name == 'ch_prob' else ')'}"
                )
        self.n_token = n_token
        self.max_segment_length = max_segment_length
        self.skip_retain = bool(skip_retain)
        self.ch_prob = float(ch_prob)
        cfg = self.config
        self.word_emb = nn.Embedding(n_token, d_model)
        nn.init.normal_(self.word_emb.weight, std=d_model**-0.5)
        self.emb_scale = math.sqrt(d_model)
        self.r_w_bias = nn.Parameter(torch.randn(cfg.n_head, cfg.d_head) * 0.1)
        self.r_r_bias = nn.Parameter(torch.randn(cfg.n_head, cfg.d_head) * 0.1)
        self.layers = nn.ModuleList(
            DecoderLayer(
                cfg.n_head,
                d_model,
                cfg.d_head,
                cfg.d_inner,
                dropout,
                dropatt,
                cfg.layer_norm_eps,
                cfg.clamp_len,
                self.attention_class,
            )
            for _ in range(cfg.n_layer)
        )
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(d_model, n_token)
        if tie_weight:
            self.out.weight = self.word_emb.weight
        # The model's own generator, seeded from torch's global one: reproducible under torch.manual_seed.
        self.generator = torch.Generator().manual_seed(int(torch.randint(0, 2**62, ()).item()))
        # Carried by every Memory this model (or a copy of it) makes; memories of other models are refused.
        self.memory_owner = secrets.token_hex(8)

    # ------------------------------------------------------------------ sizes and options
    @property
    def decoder_layers(self) -> list[DecoderLayer]:
        """The layers, typed."""
        return [cast(DecoderLayer, layer) for layer in self.layers]

    @property
    def mem_len(self) -> int:
        return self.config.mem_len

    @property
    def ext_len(self) -> int:
        return self.config.ext_len

    @property
    def same_length(self) -> bool:
        return self.config.same_length

    @property
    def clamp_len(self) -> int | None:
        return self.config.clamp_len

    @property
    def dtype(self) -> torch.dtype:
        return self.word_emb.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.word_emb.weight.device

    # ------------------------------------------------------------------ memories
    def init_memory(self, batch: int, init_memory: str = "empty") -> Memory:
        """The first segment's memory: ``"empty"`` (the default of :meth:`forward`), ``"zeros"``
        (``mem_len`` zero rows that are attended: a different model) or ``"zeros-masked"``."""
        if init_memory not in INIT_MEMORIES:
            raise MemXLConfigError(f"init_memory={init_memory!r}; use one of {INIT_MEMORIES}")
        rows = 0 if init_memory == "empty" else self.mem_len
        padding = rows if init_memory == "zeros-masked" else 0
        zeros = torch.zeros(batch, rows, self.config.d_model, dtype=self.dtype, device=self.device)
        layers = tuple(LayerMemory(zeros.clone(), padding, 0, 0) for _ in range(self.config.n_layer))
        return Memory(layers, 0, 0, self.memory_owner)

    def check_memory(self, mems: Memory, batch: int) -> None:
        """Raise :class:`MemoryMismatchError` unless ``mems`` was made by this model for this batch."""
        if not isinstance(mems, Memory):
            raise MemoryMismatchError(
                f"mems is a {type(mems).__name__}; pass the Memory the previous call returned, or None "
                "for the first segment"
            )
        if mems.owner != self.memory_owner:
            raise MemoryMismatchError(
                f"these memories were made by another model (owner {mems.owner}, this model "
                f"{self.memory_owner}); start with mems=None, or pass the memories this model returned"
            )
        if len(mems.layers) != self.config.n_layer:
            raise MemoryMismatchError(
                f"mems has {len(mems.layers)} layers; this model has {self.config.n_layer}"
            )
        for index, layer in enumerate(mems.layers):
            m = layer.hidden
            if m.dim() != 3 or m.shape[0] != batch or m.shape[2] != self.config.d_model:
                raise MemoryMismatchError(
                    f"memory of layer {index} has shape {tuple(m.shape)}; "
                    f"expected ({batch}, <= {self.mem_len}, "
                    f"{self.config.d_model}) for a batch of {batch}"
                )
            if m.shape[1] > self.mem_len:
                raise MemoryMismatchError(
                    f"memory of layer {index} has {m.shape[1]} rows, more than mem_len={self.mem_len}"
                )
            if m.dtype != self.dtype or m.device != self.device:
                raise MemoryMismatchError(
                    f"memory of layer {index} is {m.dtype} on {m.device}; the model is {self.dtype} on "
                    f"{self.device} (convert the model before the first segment, not the memories)"
                )

    def _memory_window(self, mlen: int, qlen: int) -> tuple[int, int]:
        """Rows ``begin:end`` of ``[memory ; segment]`` that become the new memory (kimiyoung's
        ``_update_mems`` with its arguments in the right order)."""
        end = mlen + max(0, qlen - self.ext_len)
        return max(0, end - self.mem_len), end

    def _memory_rows(self, layer_input: Tensor, layer_output: Tensor) -> Tensor:
        """What a layer remembers of this segment: its INPUT (docs/spec.md §6)."""
        return layer_input

    def _update_layer_memory(
        self, memory: LayerMemory, hidden: Tensor, start: int, block: int
    ) -> LayerMemory:
        mlen, qlen = memory.hidden.shape[1], hidden.shape[1]
        begin, end = self._memory_window(mlen, qlen)
        with torch.no_grad():
            rows = torch.cat([memory.hidden, hidden], dim=1)[:, begin:end].detach().clone()
        return LayerMemory(rows, max(0, memory.padding - begin), start + qlen - self.ext_len, block + 1)

    # ------------------------------------------------------------------ random decisions
    def _cross_head_active(self) -> bool:
        """Cross-head acts in training mode only, and only with ``ch_prob > 0``."""
        return self.training and self.ch_prob > 0

    def _memory_key_positions(self, memory: LayerMemory, start: int) -> Tensor:
        """Absolute positions of a layer's memory rows: where they were written (ending at ``memory.end``).

        For memory retained over skipped blocks that is ``(c - m) * M`` before ``start`` (docs/spec.md §6).
        """
        mlen = memory.hidden.shape[1]
        return torch.arange(memory.end - mlen, memory.end, device=self.device)

    def _retained_memory(
        self, memory: LayerMemory, layer_input: Tensor, start: int, block: int
    ) -> LayerMemory:
        """What a skipped layer keeps: its old memory, with its old block counter."""
        return memory

    def _draw_skips(self) -> tuple[bool, ...]:
        draws = torch.rand(self.config.n_layer, generator=self.generator)
        return tuple(
            bool(u < p) for u, p in zip(draws.tolist(), skip_probabilities(self.config.n_layer), strict=True)
        )

    def _draw_head_permutation(self) -> tuple[int, ...] | None:
        if float(torch.rand((), generator=self.generator)) >= self.ch_prob:
            return None
        return tuple(torch.randperm(self.config.n_head, generator=self.generator).tolist())

    def _run_layer(
        self,
        layer: DecoderLayer,
        h: Tensor,
        memory: Tensor,
        query_pos: Tensor,
        key_pos: Tensor,
        allowed: Tensor,
        *,
        head_permutation: Sequence[int] | None = None,
        stop_gradient: Tensor | None = None,
    ) -> Tensor:
        return layer(
            h,
            memory,
            query_pos,
            key_pos,
            allowed,
            self.r_w_bias,
            self.r_r_bias,
            head_permutation=head_permutation,
            stop_gradient=stop_gradient,
        )

    def _check_tokens(self, tokens: Tensor) -> None:
        if (
            not isinstance(tokens, Tensor)
            or tokens.dtype not in (torch.int64, torch.int32)
            or tokens.dim() != 2
        ):
            what = (
                f"{tokens.dtype} {tuple(tokens.shape)}"
                if isinstance(tokens, Tensor)
                else type(tokens).__name__
            )
            raise MemXLConfigError(f"tokens must be an int64 tensor (batch, time), got {what}")
        if tokens.shape[1] < 1 or tokens.shape[0] < 1:
            raise MemXLConfigError(f"tokens of shape {tuple(tokens.shape)}: need at least one token")
        if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= self.n_token):
            raise MemXLConfigError(f"token ids must lie in [0, {self.n_token})")

    def _embed(self, tokens: Tensor) -> Tensor:
        return self.drop(self.word_emb(tokens) * self.emb_scale)

    # ------------------------------------------------------------------ forward
    def forward(
        self, tokens: Tensor, mems: Memory | None = None, *, return_trace: bool = False
    ) -> MemXLOutput:
        """One segment: ``tokens (B, qlen)`` and the previous memories (None: the first segment).

        Returns a :class:`MemXLOutput`: ``output (B, qlen, d_model)`` (before the output layer), the new
        memories, each layer's input, and with ``return_trace`` a :class:`LayerTrace` per layer.

        Raises
        ------
        MemXLConfigError
            For bad tokens, a segment longer than ``max_segment_length`` or not longer than ``ext_len``.
        MemoryMismatchError
            For memories of another model, batch size, dtype or device.
        """
        self._check_tokens(tokens)
        B, qlen = tokens.shape
        if self.max_segment_length is not None and qlen > self.max_segment_length:
            raise MemXLConfigError(
                f"a segment of {qlen} tokens is longer than this model's max_segment_length="
                f"{self.max_segment_length}; cut the sequence with revcheck.nn.memxl.segments(tokens, "
                f"{self.max_segment_length})"
            )
        if qlen <= self.ext_len:
            raise MemXLConfigError(
                f"a segment of {qlen} tokens is not longer than ext_len={self.ext_len}: it would add nothing "
                "to the memory; use segments longer than ext_len"
            )
        if mems is None:
            mems = self.init_memory(B)
        self.check_memory(mems, B)
        start, block = mems.position, mems.block
        skips = self._draw_skips() if self.training and self.skip_retain else (False,) * self.config.n_layer
        query_pos = torch.arange(start, start + qlen, device=self.device)
        h = self._embed(tokens)
        layer_inputs: list[Tensor] = []
        new_layers: list[LayerMemory] = []
        trace: list[LayerTrace] = []
        for index, layer in enumerate(self.decoder_layers):
            memory = mems.layers[index]
            layer_inputs.append(h)
            if skips[index]:
                new_layers.append(self._retained_memory(memory, h, start, block))
                trace.append(
                    LayerTrace(
                        index,
                        True,
                        block,
                        memory.block,
                        memory.hidden.shape[1],
                        memory.end,
                        start,
                        None,
                        None,
                    )
                )
                continue
            mlen = memory.hidden.shape[1]
            key_pos = torch.cat([self._memory_key_positions(memory, start), query_pos])
            allowed = torch.as_tensor(
                oracle.segment_mask(qlen, mlen, self.mem_len, self.same_length, memory.padding),
                device=self.device,
            )
            permutation = self._draw_head_permutation() if self._cross_head_active() else None
            out = self._run_layer(
                layer, h, memory.hidden, query_pos, key_pos, allowed, head_permutation=permutation
            )
            new_layers.append(self._update_layer_memory(memory, self._memory_rows(h, out), start, block))
            trace.append(
                LayerTrace(
                    index,
                    False,
                    block,
                    memory.block,
                    mlen,
                    memory.end,
                    start,
                    layer.attn.distances(query_pos, key_pos) if return_trace else None,
                    permutation,
                )
            )
            h = out
        new_mems = Memory(tuple(new_layers), start + qlen - self.ext_len, block + 1, self.memory_owner)
        return MemXLOutput(self.drop(h), new_mems, layer_inputs, trace if return_trace else None)

    def full_pass(
        self, tokens: Tensor, allowed: Tensor | None = None, stop_gradient: Tensor | None = None
    ) -> Tensor:
        """One pass over the whole sequence ``tokens (B, T)`` with an explicit mask and no memory.

        ``allowed`` (bool ``(T, T)``, True = query ``t`` may see key ``s``; default causal): use
        :func:`revcheck.oracle.memxl.staircase_mask` for the mask equivalent to the recurrence.
        ``stop_gradient`` (bool ``(T, T)``): keys read through a detached copy of each layer's input
        there (:func:`revcheck.oracle.memxl.stop_gradient_mask`), which reproduces the recurrence's
        gradients.  Never skips layers or permutes heads.
        """
        self._check_tokens(tokens)
        T = tokens.shape[1]
        masks = {}
        for name, mask in (("allowed", allowed), ("stop_gradient", stop_gradient)):
            if mask is None:
                continue
            mask = torch.as_tensor(mask, device=self.device)
            if mask.dtype != torch.bool or tuple(mask.shape) != (T, T):
                raise MemXLConfigError(
                    f"{name} must be a bool ({T}, {T}) mask, got {mask.dtype} {tuple(mask.shape)}"
                )
            masks[name] = mask
        allowed_mask = masks.get("allowed", torch.ones(T, T, dtype=torch.bool, device=self.device).tril())
        if not bool(allowed_mask.any(dim=1).all()):
            raise MemXLConfigError("a row of `allowed` allows no key (its softmax would be NaN)")
        positions = torch.arange(T, device=self.device)
        h = self._embed(tokens)
        empty = h[:, :0]
        for layer in self.decoder_layers:
            h = self._run_layer(
                layer, h, empty, positions, positions, allowed_mask, stop_gradient=masks.get("stop_gradient")
            )
        return self.drop(h)

    def loss(self, tokens: Tensor, targets: Tensor, mems: Memory | None = None) -> tuple[Tensor, Memory]:
        """Mean cross-entropy of next-token ``targets (B, qlen)`` on one segment, and the new memories."""
        result = self(tokens, mems)
        logits = self.out(result.output)
        return F.cross_entropy(logits.reshape(-1, self.n_token), targets.reshape(-1)), result.mems

    # ------------------------------------------------------------------ the oracle's view
    def to_oracle(self) -> tuple[oracle.Weights, MemXLConfig]:
        """The parameters as :mod:`revcheck.oracle.memxl` weights (NumPy, the model's dtype) and config."""

        def a(t: Any) -> np.ndarray[Any, Any]:
            return t.detach().cpu().numpy().copy()

        layers = tuple(
            oracle.LayerWeights(
                a(layer.attn.qkv_net.weight),
                a(layer.attn.r_net.weight),
                a(layer.attn.o_net.weight),
                a(layer.attn.layer_norm.weight),
                a(layer.attn.layer_norm.bias),
                a(layer.ff.ff1.weight),
                a(layer.ff.ff1.bias),
                a(layer.ff.ff2.weight),
                a(layer.ff.ff2.bias),
                a(layer.ff.layer_norm.weight),
                a(layer.ff.layer_norm.bias),
            )
            for layer in self.decoder_layers
        )
        weights = oracle.Weights(a(self.word_emb.weight), a(self.r_w_bias), a(self.r_r_bias), layers)
        return weights, self.config


class TwoPhaseTrainer:
    """Skip Cross-head training: phase 1 with skip-retain (and cross-head), phase 2 the same weights without.

    ``step(tokens, targets)`` runs one optimizer step on the next segment of the stream (memories are
    carried from step to step; :meth:`reset_memory` starts a new stream).  After ``phase1_steps``
    steps the model's ``skip_retain`` is switched off and ``ch_prob`` set to 0; the weights, the
    optimizer state and the memories carry on.  Evaluation (``model.eval()``) never skips or permutes.
    """

    def __init__(
        self,
        model: MemTransformerXL,
        optimizer: torch.optim.Optimizer,
        *,
        phase1_steps: int,
        skip_retain: bool = True,
        ch_prob: float = 0.1,
    ) -> None:
        if phase1_steps < 0:
            raise MemXLConfigError(f"phase1_steps={phase1_steps}: use an int >= 0")
        if not 0.0 <= ch_prob <= 1.0:
            raise MemXLConfigError(f"ch_prob={ch_prob}: use a probability in [0, 1]")
        self.model = model
        self.optimizer = optimizer
        self.phase1_steps = phase1_steps
        self.steps_done = 0
        self.mems: Memory | None = None
        self._phase1 = (bool(skip_retain), float(ch_prob))
        if phase1_steps > 0:
            self._enter_phase1()
        else:
            self._enter_phase2()

    @property
    def phase(self) -> int:
        return 1 if self.steps_done < self.phase1_steps else 2

    def _enter_phase1(self) -> None:
        self.model.skip_retain, self.model.ch_prob = self._phase1

    def _enter_phase2(self) -> None:
        self.model.skip_retain, self.model.ch_prob = False, 0.0

    def reset_memory(self) -> None:
        self.mems = None

    def step(self, tokens: Tensor, targets: Tensor) -> float:
        """One training step on a segment; returns its loss.  Phase 2 begins after the last phase-1 step."""
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        loss, self.mems = self.model.loss(tokens, targets, self.mems)
        loss.backward()
        self.optimizer.step()
        self.steps_done += 1
        if self.steps_done == self.phase1_steps:
            self._enter_phase2()
        return float(loss.detach())
