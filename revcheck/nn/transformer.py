"""A pre-norm transformer block written as ONE residual branch, and a tiny GPT built from it.

BDIA (docs/spec.md §3) needs every block of a stack to be a single residual branch
``h_k`` with ``x_{k+1} = x_k + h_k(x_k)`` in the ordinary (γ = 0) stack.  A textbook
pre-norm layer has two residual additions::

    a   = attn(ln1(x))
    x'  = x + a
    m   = mlp(ln2(x'))
    out = x' + m

so the branch of :class:`PreNormTransformerBlock` is ``h(x) = a + m`` with ``m`` computed
from ``ln2(x + a)``. Mathematically ``x + h(x) == out``. In floating point ``x + (a + m)``
and ``(x + a) + m`` are two different roundings and may differ in the last bits, by at most
``2·γ_2·(|x| + |a| + |m|)``, ``γ_2 = 2u / (1 − 2u)`` (docs/spec.md D3.12; fp32 reaches
3.82·u·(|x| + |a| + |m|), two units in the last place); the intermediate values ``a`` and
``m`` are bit-identical in both (``x + a`` is formed the same way), and
:meth:`PreNormTransformerBlock.textbook_layer` gives the two-addition form for comparison.
``tests/test_transformer.py`` checks exactly these facts.

Only deterministic CPU operations are used: attention is an explicit matmul / masked
softmax / matmul (no fused ``scaled_dot_product_attention``, whose backend choice may
differ between a no-grad forward and a recomputation with grad, which would break BDIA's
bit-identical recomputation).  Dropout is ordinary :class:`torch.nn.Dropout` drawing from
the global RNG, which is what ``torch.utils.checkpoint`` and ``BDIAStack`` save and replay.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

__all__ = [
    "STACK_KINDS",
    "CheckpointedResidualStack",
    "PreNormTransformerBlock",
    "ResidualStack",
    "TinyGPT",
]

StackKind = Literal["plain", "checkpoint", "bdia", "bdia-stored"]
STACK_KINDS: tuple[str, ...] = ("plain", "checkpoint", "bdia", "bdia-stored")


class PreNormTransformerBlock(nn.Module):
    """Residual branch of a pre-norm transformer layer: ``forward(x) = h(x)``, NOT ``x + h(x)``.

    ``h(x) = a + mlp(ln2(x + a))`` with ``a = attn(ln1(x))`` (see the module docstring), so
    that ``x + h(x)`` is a textbook pre-norm layer.  ``x`` has shape ``(batch, time, d_model)``.
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        d_ff: int | None = None,
        dropout: float = 0.0,
        causal: bool = True,
        *,
        bias: bool = True,
        norm_eps: float = 1e-5,
    ) -> None:
        super().__init__()
        if d_model <= 0 or n_heads <= 0 or d_model % n_heads != 0:
            raise ValueError(
                f"d_model={d_model}, n_heads={n_heads}: d_model must be a positive multiple of n_heads; "
                "use e.g. d_model=128, n_heads=4"
            )
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout={dropout} is not a probability in [0, 1); use e.g. 0.0 or 0.1")
        self.d_model = d_model
        self.n_heads = n_heads
        self.d_head = d_model // n_heads
        self.d_ff = 4 * d_model if d_ff is None else d_ff
        self.causal = causal
        self.norm1 = nn.LayerNorm(d_model, eps=norm_eps)
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=bias)
        self.attn_out = nn.Linear(d_model, d_model, bias=bias)
        self.norm2 = nn.LayerNorm(d_model, eps=norm_eps)
        self.mlp_in = nn.Linear(d_model, self.d_ff, bias=bias)
        self.mlp_out = nn.Linear(self.d_ff, d_model, bias=bias)
        self.attn_dropout = nn.Dropout(dropout)
        self.resid_dropout = nn.Dropout(dropout)

    def attention(self, x: Tensor) -> Tensor:
        """``a = attn(ln1(x))``: multi-head self-attention on the normalised input."""
        batch, time, _ = x.shape
        q, k, v = self.qkv(self.norm1(x)).split(self.d_model, dim=-1)
        # (batch, heads, time, d_head)
        q = q.view(batch, time, self.n_heads, self.d_head).transpose(1, 2)
        k = k.view(batch, time, self.n_heads, self.d_head).transpose(1, 2)
        v = v.view(batch, time, self.n_heads, self.d_head).transpose(1, 2)
        scores = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(self.d_head))
        if self.causal:
            future = torch.ones(time, time, dtype=torch.bool, device=x.device).triu(1)
            scores = scores.masked_fill(future, float("-inf"))
        weights = self.attn_dropout(scores.softmax(dim=-1))
        context = (weights @ v).transpose(1, 2).reshape(batch, time, self.d_model)
        return self.resid_dropout(self.attn_out(context))

    def mlp(self, x_mid: Tensor) -> Tensor:
        """``m = mlp(ln2(x_mid))`` where ``x_mid = x + a`` is the textbook layer's middle state."""
        return self.resid_dropout(self.mlp_out(F.gelu(self.mlp_in(self.norm2(x_mid)))))

    def branch_parts(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The two summands ``(a, m)`` of the branch; ``h(x) = a + m``."""
        a = self.attention(x)
        return a, self.mlp(x + a)

    def forward(self, x: Tensor) -> Tensor:
        """The residual branch ``h(x) = a + m`` (the caller adds ``x``)."""
        a, m = self.branch_parts(x)
        return a + m

    def textbook_layer(self, x: Tensor) -> Tensor:
        """The ordinary two-addition pre-norm layer ``(x + a) + m``, for comparison."""
        a = self.attention(x)
        x_mid = x + a
        return x_mid + self.mlp(x_mid)


class ResidualStack(nn.Module):
    """Ordinary residual stack ``x_{k+1} = x_k + h_k(x_k)``, everything kept by autograd."""

    def __init__(self, blocks: Sequence[nn.Module]) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: Tensor) -> Tensor:
        """Apply every block's residual update in order."""
        for block in self.blocks:
            x = x + block(x)
        return x


def _residual_update(block: nn.Module, x: Tensor) -> Tensor:
    return x + block(x)


class CheckpointedResidualStack(ResidualStack):
    """The same stack with ``torch.utils.checkpoint`` around every block (non-reentrant).

    Only each block's input is kept; the block is recomputed in backward with the saved RNG
    state, so gradients are bit-identical to :class:`ResidualStack` on a deterministic device.
    """

    def forward(self, x: Tensor) -> Tensor:
        """Apply every block's residual update, checkpointing each one."""
        for block in self.blocks:
            if torch.is_grad_enabled():
                x = checkpoint(_residual_update, block, x, use_reentrant=False)
            else:
                x = _residual_update(block, x)
        return x


def _make_stack(kind: str, blocks: list[nn.Module], *, l: int, seed: int | None) -> nn.Module:  # noqa: E741
    if kind == "plain":
        return ResidualStack(blocks)
    if kind == "checkpoint":
        return CheckpointedResidualStack(blocks)
    if kind in ("bdia", "bdia-stored"):
        from revcheck.nn.bdia import BDIAStack

        if kind == "bdia":
            return BDIAStack(blocks, l=l, mode="reversible", seed=seed)
        return BDIAStack(blocks, l=l, mode="stored", seed=seed)
    raise ValueError(f"stack={kind!r} is not a stack kind; use one of {', '.join(STACK_KINDS)}")


class TinyGPT(nn.Module):
    """A small decoder-only language model: embeddings, a residual stack of blocks, norm, head.

    ``stack`` selects how the residual stack is run and what it keeps for backward:
    ``"plain"`` (ordinary autograd), ``"checkpoint"`` (per-block ``torch.utils.checkpoint``),
    ``"bdia"`` (``BDIAStack`` in reversible mode, activation step ``2**-l``) or
    ``"bdia-stored"`` (``BDIAStack`` keeping ordinary autograd activations).  Models built with
    the same ``seed`` have identical parameters whatever the stack kind.

    Token embeddings are drawn with standard deviation 1 (not GPT-2's 0.02) so that the
    residual stream is large compared with BDIA's fixed-point grid ``2**-l``; the pre-norm
    blocks and the final norm make the model insensitive to that scale.
    """

    def __init__(
        self,
        vocab: int,
        d_model: int,
        n_heads: int,
        depth: int,
        seq_len: int,
        *,
        stack: StackKind | str = "plain",
        dropout: float = 0.0,
        d_ff: int | None = None,
        l: int = 9,  # noqa: E741 - the papers' name for the fixed-point exponent
        seed: int | None = 0,
    ) -> None:
        super().__init__()
        if stack not in STACK_KINDS:
            raise ValueError(f"stack={stack!r} is not a stack kind; use one of {', '.join(STACK_KINDS)}")
        if depth < 1 or vocab < 1 or seq_len < 1:
            raise ValueError(
                f"vocab={vocab}, depth={depth}, seq_len={seq_len} must all be >= 1; use e.g. depth=2"
            )
        self.vocab = vocab
        self.seq_len = seq_len
        self.stack_kind = stack
        self.token_embedding = nn.Embedding(vocab, d_model)
        self.position_embedding = nn.Embedding(seq_len, d_model)
        self.embedding_dropout = nn.Dropout(dropout)
        blocks: list[nn.Module] = [
            PreNormTransformerBlock(d_model, n_heads, d_ff, dropout, causal=True) for _ in range(depth)
        ]
        self.final_norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab, bias=False)
        self._init_parameters(blocks, depth, seed)
        self.stack = _make_stack(stack, blocks, l=l, seed=seed)

    @torch.no_grad()
    def _init_parameters(self, blocks: list[nn.Module], depth: int, seed: int | None) -> None:
        # A private generator: identical initialisation for every stack kind, and the global
        # RNG (used for dropout) is left alone.
        generator = torch.Generator().manual_seed(0 if seed is None else seed)

        def normal_(tensor: Tensor, std: float) -> None:
            tensor.copy_(torch.randn(tensor.shape, generator=generator) * std)

        normal_(self.token_embedding.weight, 1.0)
        normal_(self.position_embedding.weight, 0.1)
        normal_(self.head.weight, 0.02)
        for block in blocks:
            for name, parameter in block.named_parameters():
                if name.endswith("bias"):
                    parameter.zero_()
                elif name.startswith("norm"):
                    parameter.fill_(1.0)
                elif name.startswith(("attn_out", "mlp_out")):
                    # GPT-2's scaled init of the projections that feed the residual stream.
                    normal_(parameter, 0.02 / math.sqrt(2 * depth))
                else:
                    normal_(parameter, 0.02)

    @property
    def blocks(self) -> nn.ModuleList:
        """The residual branches ``h_k`` in order."""
        return self.stack.blocks  # type: ignore[return-value]

    def embed(self, idx: Tensor) -> Tensor:
        """Token plus position embeddings of ``idx`` (batch, time) -> (batch, time, d_model)."""
        if idx.dim() != 2 or idx.shape[1] > self.seq_len:
            raise ValueError(
                f"idx has shape {tuple(idx.shape)}; use (batch, time) with time <= seq_len={self.seq_len}"
            )
        positions = torch.arange(idx.shape[1], device=idx.device)
        return self.embedding_dropout(self.token_embedding(idx) + self.position_embedding(positions))

    def forward(self, idx: Tensor) -> Tensor:
        """Logits of shape (batch, time, vocab) for token ids ``idx`` of shape (batch, time)."""
        return self.head(self.final_norm(self.stack(self.embed(idx))))

    def loss(self, idx: Tensor, targets: Tensor) -> Tensor:
        """Mean next-token cross-entropy of ``targets`` (batch, time) given ``idx``."""
        logits = self(idx)
        return F.cross_entropy(logits.reshape(-1, self.vocab), targets.reshape(-1))
