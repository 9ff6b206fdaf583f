"""A tiny pre-norm transformer with PA or standard arithmetic: one architecture, two sets of ops.

``arithmetic="pa"``: :class:`~revcheck.nn.mulfree.ops.PAMLinearOp` for every
linear map (QKV, output, MLP, head), PA attention (``pa_bmm`` for QKᵀ and for
the product with V, ``pa_scale`` by the PA ``head_dim ** -1/2``, ``pa_softmax``),
:class:`~revcheck.nn.mulfree.ops.PALayerNorm`, ReLU, :class:`~revcheck.nn.mulfree.ops.PADropout`,
``pa_cross_entropy`` (bits), and :class:`~revcheck.nn.mulfree.ops.PAAdam` with
``pa_clip_grad_norm_``.  ``arithmetic="standard"``: ``nn.Linear``, float
attention, ``nn.LayerNorm``, ``nn.Dropout``, ``F.cross_entropy`` (nats),
``torch.optim.Adam`` with ``clip_grad_norm_``.  Parameter names are the same,
so one state dict initialises both.

Embeddings are lookups (no arithmetic) and the positional embedding is added;
the causal mask is a ``masked_fill`` with -inf.  With ``head_dim`` a power of
four the PA attention scale is exact.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from revcheck.errors import UsageError
from revcheck.nn.mulfree import ops

__all__ = ["ARITHMETICS", "TinyTransformer", "make_optimizer", "training_step"]

ARITHMETICS = ("pa", "standard")


def _check_arithmetic(arithmetic: object) -> str:
    if arithmetic not in ARITHMETICS:
        raise UsageError(f"unknown arithmetic {arithmetic!r}; use one of {', '.join(map(repr, ARITHMETICS))}")
    return str(arithmetic)


class _Block(nn.Module):
    def __init__(
        self, d_model: int, heads: int, dropout: float, arithmetic: str, generator: torch.Generator | None
    ) -> None:
        super().__init__()
        pa = arithmetic == "pa"
        linear = ops.PAMLinearOp if pa else nn.Linear
        norm = ops.PALayerNorm if pa else nn.LayerNorm
        self.pa, self.heads, self.head_dim = pa, heads, d_model // heads
        self.ln1, self.ln2 = norm(d_model), norm(d_model)
        self.qkv, self.proj = linear(d_model, 3 * d_model), linear(d_model, d_model)
        self.fc1, self.fc2 = linear(d_model, 4 * d_model), linear(4 * d_model, d_model)
        self.drop = ops.PADropout(dropout, generator) if pa else nn.Dropout(dropout)
        self.scale: Tensor
        if pa:
            self.register_buffer("scale", ops.attention_scale(self.head_dim), persistent=False)
        else:
            self.scale_value = self.head_dim**-0.5

    def attention(self, x: Tensor, causal: Tensor) -> Tensor:
        batch, length, width = x.shape
        q, k, v = self.qkv(x).reshape(batch, length, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        if self.pa:
            scores = ops.pa_scale(ops.pa_bmm(q, k.transpose(-1, -2)), self.scale)
            weights = ops.pa_softmax(scores.masked_fill(~causal, float("-inf")), -1)
            out = ops.pa_bmm(weights, v)
        else:
            scores = (q @ k.transpose(-1, -2)) * self.scale_value
            out = F.softmax(scores.masked_fill(~causal, float("-inf")), -1) @ v
        return self.proj(out.transpose(1, 2).reshape(batch, length, width))

    def forward(self, x: Tensor, causal: Tensor) -> Tensor:
        x = x + self.drop(self.attention(self.ln1(x), causal))
        return x + self.drop(self.fc2(torch.relu(self.fc1(self.ln2(x)))))


class TinyTransformer(nn.Module):
    """A character-level pre-norm transformer (see the module docstring); ``loss`` is bits for PA, nats else.

    Examples
    --------
    >>> import torch
    >>> standard = TinyTransformer(11, 8, 2, 1, 4, arithmetic="standard")
    >>> pa = TinyTransformer(11, 8, 2, 1, 4, arithmetic="pa")
    >>> _ = pa.load_state_dict(standard.state_dict())
    >>> pa(torch.zeros(1, 4, dtype=torch.long)).shape
    torch.Size([1, 4, 11])
    """

    def __init__(
        self,
        vocab: int,
        d_model: int,
        heads: int,
        depth: int,
        seq_len: int,
        *,
        arithmetic: str = "pa",
        dropout: float = 0.0,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.arithmetic = _check_arithmetic(arithmetic)
        if d_model % heads:
            raise UsageError(f"d_model {d_model} is not a multiple of heads {heads}")
        self.seq_len = seq_len
        self.embed = nn.Embedding(vocab, d_model)
        self.position = nn.Parameter(torch.randn(seq_len, d_model) * 0.02)
        self.blocks = nn.ModuleList(
            _Block(d_model, heads, dropout, self.arithmetic, generator) for _ in range(depth)
        )
        self.norm = ops.PALayerNorm(d_model) if self.arithmetic == "pa" else nn.LayerNorm(d_model)
        self.head = ops.PAMLinearOp(d_model, vocab) if self.arithmetic == "pa" else nn.Linear(d_model, vocab)
        self.causal: Tensor
        self.register_buffer(
            "causal", torch.ones(seq_len, seq_len, dtype=torch.bool).tril(), persistent=False
        )

    def forward(self, tokens: Tensor) -> Tensor:
        length = tokens.shape[1]
        if length > self.seq_len:
            raise UsageError(f"sequence length {length} exceeds the model's {self.seq_len}")
        x = self.embed(tokens) + self.position[:length]
        causal = self.causal[:length, :length]
        for block in self.blocks:
            x = block(x, causal)
        return self.head(self.norm(x))

    def loss(self, tokens: Tensor, targets: Tensor) -> Tensor:
        logits = self(tokens).reshape(-1, self.head.out_features)
        if self.arithmetic == "pa":
            return ops.pa_cross_entropy(logits, targets.reshape(-1))
        return F.cross_entropy(logits, targets.reshape(-1))


def make_optimizer(model: TinyTransformer, lr: float) -> torch.optim.Optimizer:
    """PA Adam for the PA model, ``torch.optim.Adam`` for the standard one (same hyperparameters)."""
    if model.arithmetic == "pa":
        return ops.PAAdam(model.parameters(), lr=lr)
    return torch.optim.Adam(model.parameters(), lr=lr)


def training_step(
    model: TinyTransformer,
    optimizer: torch.optim.Optimizer,
    tokens: Tensor,
    targets: Tensor,
    *,
    clip: float = 1.0,
    optimizer_phase: Callable[[], AbstractContextManager[Any]] | None = None,
) -> Tensor:
    """zero_grad, loss, backward, gradient clipping (PA or torch), optimizer step; returns the detached loss.

    ``optimizer_phase``: a context factory wrapped around clipping and the step
    (e.g. ``lambda: mode.phase("optimizer")`` to attribute the clipping to the
    optimizer phase of a :class:`~revcheck.mulfree.MulFreeMode` report).
    """
    optimizer.zero_grad(set_to_none=True)
    loss = model.loss(tokens, targets)
    loss.backward()
    clip_fn: Any = ops.pa_clip_grad_norm_ if model.arithmetic == "pa" else torch.nn.utils.clip_grad_norm_
    with optimizer_phase() if optimizer_phase is not None else nullcontext():
        clip_fn(model.parameters(), clip)
        optimizer.step()
    return loss.detach()
