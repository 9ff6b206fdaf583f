"""The reference transformer of the function-preserving expansions (docs/spec.md §4), in torch.

:class:`ReferenceTransformer` is the paper's model, configurable in every size
independently (:class:`~revcheck.oracle.expand.ModelConfig`): pre-norm (or
post-norm, to show what layer insertion refuses), RMSNorm with configurable eps
(default 0, the paper's) or LayerNorm (to show what hidden-size growth
refuses), a ReLU / GELU / tanh-GELU MLP with biases, attention without biases,
learned absolute positions, no final norm, an output head.  Attention is the
explicit ``softmax(Q K^T / sqrt(k)) V`` or torch's ``scaled_dot_product_attention``
(SDPA), which are different kernels with different bits (docs/spec.md §0).

Every operation is a plain torch op in the order the oracle
(:mod:`revcheck.oracle.expand`) declares, so that the two compute the same
real function; whether they give the same *bits* is a level-K question the
checks measure, never assume.  Matrices are stored in the math convention
``y = x @ W`` (shape ``(in, out)``); parameter names and shapes come from
:func:`revcheck.oracle.expand.parameter_shapes`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from revcheck.errors import UsageError
from revcheck.oracle.expand import ConfigError, ModelConfig, layer_parameter_shapes, parameter_shapes

__all__ = [
    "DTYPES",
    "ModelConfig",
    "ReferenceLayer",
    "ReferenceTransformer",
    "from_state_dict",
    "oracle_parameters",
    "storage_name",
]

DTYPES: dict[str, torch.dtype] = {
    "fp64": torch.float64,
    "fp32": torch.float32,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
}
_NAMES = {dtype: name for name, dtype in DTYPES.items()}


def storage_name(dtype: torch.dtype) -> str:
    """``"fp32"`` for ``torch.float32`` and so on; a ``UsageError`` for other dtypes."""
    try:
        return _NAMES[dtype]
    except KeyError:
        raise UsageError(
            f"dtype {dtype} is not supported; use one of {', '.join(map(str, DTYPES.values()))}"
        ) from None


class Norm(nn.Module):
    """RMSNorm ``(x * rsqrt(mean(x*x) + eps)) * g`` or LayerNorm ``((x - mu) * rsqrt(var + eps)) * g + b``.

    Written as separate torch ops in the oracle's order (not ``F.rms_norm``,
    whose fused kernel has its own order).
    """

    def __init__(self, width: int, kind: str, eps: float, dtype: torch.dtype, device: Any) -> None:
        super().__init__()
        self.kind = kind
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(width, dtype=dtype, device=device))
        if kind == "layer":
            self.bias = nn.Parameter(torch.zeros(width, dtype=dtype, device=device))

    def forward(self, x: Tensor) -> Tensor:
        centred = x if self.kind == "rms" else x - x.mean(-1, keepdim=True)
        r = torch.rsqrt((centred * centred).mean(-1, keepdim=True) + self.eps)
        out = (centred * r) * self.weight
        return out + self.bias if self.kind == "layer" else out


class ReferenceLayer(nn.Module):
    """One layer: attention (no biases) and MLP (with biases), pre-norm or post-norm."""

    w_q: nn.Parameter
    w_k: nn.Parameter
    w_v: nn.Parameter
    w_o: nn.Parameter
    w1: nn.Parameter
    b1: nn.Parameter
    w2: nn.Parameter
    b2: nn.Parameter

    def __init__(self, config: ModelConfig, dtype: torch.dtype, device: Any) -> None:
        super().__init__()
        self.config = config
        shapes = layer_parameter_shapes(config)
        self.norm1 = Norm(config.hidden, config.norm, config.eps, dtype, device)
        self.norm2 = Norm(config.hidden, config.norm, config.eps, dtype, device)
        for name in ("w_q", "w_k", "w_v", "w_o", "w1", "b1", "w2", "b2"):
            self.register_parameter(name, nn.Parameter(torch.zeros(shapes[name], dtype=dtype, device=device)))

    def attention(self, n: Tensor) -> Tensor:
        c = self.config
        batch, time, _ = n.shape

        def heads(x: Tensor, size: int) -> Tensor:
            return x.view(batch, time, c.heads, size).transpose(1, 2)

        q, k, v = heads(n @ self.w_q, c.qk), heads(n @ self.w_k, c.qk), heads(n @ self.w_v, c.v)
        if c.attention == "explicit":
            scores = (q @ k.transpose(-2, -1)) / math.sqrt(c.qk)
            if c.causal:
                future = torch.ones(time, time, dtype=torch.bool, device=n.device).triu(1)
                scores = scores.masked_fill(future, float("-inf"))
            context = torch.softmax(scores, dim=-1) @ v
        else:
            context = F.scaled_dot_product_attention(q, k, v, is_causal=c.causal)
        return context.transpose(1, 2).reshape(batch, time, c.heads * c.v) @ self.w_o

    def mlp(self, n: Tensor) -> Tensor:
        u = n @ self.w1 + self.b1
        if self.config.activation == "relu":
            z = torch.relu(u)
        else:
            z = F.gelu(u, approximate="tanh" if self.config.activation == "gelu_tanh" else "none")
        return z @ self.w2 + self.b2

    def forward(self, x: Tensor) -> Tensor:
        if self.config.placement == "pre":
            x = x + self.attention(self.norm1(x))
            return x + self.mlp(self.norm2(x))
        x = self.norm1(x + self.attention(x))
        return self.norm2(x + self.mlp(x))


class ReferenceTransformer(nn.Module):
    """The reference model: ``logits = layers(tok_emb[ids] + pos_emb[:T]) @ w_out``.

    Parameters
    ----------
    config
        Sizes and choices (:class:`~revcheck.oracle.expand.ModelConfig`).
    dtype, device
        Where the parameters live; every op runs in ``dtype``.
    seed
        Initialisation from a private ``torch.Generator`` seeded with ``seed``
        (the global RNG is untouched); ``None`` draws from the global RNG
        (reproducible under ``torch.manual_seed``).  Embeddings ~ N(0, 1),
        matrices ~ N(0, 1/fan_in), biases 0, gains 1.

    Examples
    --------
    >>> cfg = ModelConfig(vocab=11, max_len=8, hidden=16, mlp=32, heads=2, qk=4, v=8, layers=2)
    >>> model = ReferenceTransformer(cfg, seed=0)
    >>> model(torch.tensor([[1, 2, 3]])).shape
    torch.Size([1, 3, 11])
    """

    def __init__(
        self,
        config: ModelConfig,
        *,
        dtype: torch.dtype = torch.float32,
        device: Any = None,
        seed: int | None = 0,
    ) -> None:
        super().__init__()
        if not isinstance(config, ModelConfig):
            raise UsageError(f"config must be a revcheck.nn.expand.ModelConfig, got {type(config).__name__}")
        storage_name(dtype)
        self.config = config
        self.tok_emb = nn.Parameter(torch.zeros(config.vocab, config.hidden, dtype=dtype, device=device))
        self.pos_emb = nn.Parameter(torch.zeros(config.max_len, config.hidden, dtype=dtype, device=device))
        self.layers = nn.ModuleList([ReferenceLayer(config, dtype, device) for _ in range(config.layers)])
        self.w_out = nn.Parameter(torch.zeros(config.hidden, config.vocab, dtype=dtype, device=device))
        self._initialise(seed)

    @property
    def dtype(self) -> torch.dtype:
        return self.tok_emb.dtype

    @property
    def device(self) -> torch.device:
        return self.tok_emb.device

    @torch.no_grad()
    def _initialise(self, seed: int | None) -> None:
        generator = None if seed is None else torch.Generator().manual_seed(seed)
        for name, parameter in self.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            if name in ("tok_emb", "pos_emb"):
                std = 1.0 if name == "tok_emb" else 0.1
            elif leaf in ("b1", "b2", "bias") or leaf == "weight":
                continue
            else:
                std = 1.0 / math.sqrt(parameter.shape[0])
            draw = torch.randn(parameter.shape, generator=generator, dtype=torch.float64) * std
            parameter.copy_(draw.to(parameter.dtype))

    def check_ids(self, ids: Tensor) -> None:
        """Raise ``UsageError`` unless ``ids`` is an integer (batch, time) tensor the model can take."""
        if not isinstance(ids, Tensor) or ids.dtype not in (torch.int64, torch.int32) or ids.dim() != 2:
            got = (
                f"{ids.dtype} tensor of shape {tuple(ids.shape)}"
                if isinstance(ids, Tensor)
                else type(ids).__name__
            )
            raise UsageError(f"token ids must be an int64 tensor of shape (batch, time), got {got}")
        if not 1 <= ids.shape[1] <= self.config.max_len or ids.shape[0] < 1:
            raise UsageError(f"time {ids.shape[1]} must be in 1..max_len={self.config.max_len}")
        if int(ids.min()) < 0 or int(ids.max()) >= self.config.vocab:
            raise UsageError(f"token ids must lie in 0..{self.config.vocab - 1}")

    def forward(self, ids: Tensor) -> Tensor:
        self.check_ids(ids)
        x = self.tok_emb[ids] + self.pos_emb[: ids.shape[1]]
        for layer in self.layers:
            x = layer(x)
        return x @ self.w_out

    def loss(self, ids: Tensor, targets: Tensor) -> Tensor:
        """Mean cross-entropy of next-token prediction (for training examples)."""
        logits = self(ids)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1))

    def extra_repr(self) -> str:
        c = self.config
        return (
            f"h={c.hidden}, p={c.mlp}, E={c.heads}, k={c.qk}, v={c.v}, N={c.layers}, {c.norm}norm "
            f"eps={c.eps}, "
            f"{c.activation}, {c.attention} attention, {c.placement}-norm"
        )

    @classmethod
    def from_parameters(
        cls, config: ModelConfig, params: Mapping[str, Tensor], *, dtype: torch.dtype | None = None
    ) -> ReferenceTransformer:
        """A model whose parameters are copies of ``params`` (names and shapes as "
        ":func:`parameter_shapes`)."""
        try:
            from revcheck.oracle.expand import check_parameters

            check_parameters(config, params)
        except ConfigError as error:
            raise UsageError(str(error)) from None
        first = next(iter(params.values()))
        model = cls(config, dtype=dtype or first.dtype, device=first.device, seed=0)
        with torch.no_grad():
            for name, parameter in model.named_parameters():
                parameter.copy_(params[name])
        return model


def check_reference(model: object, what: str = "model") -> ReferenceTransformer:
    """``model`` if it is exactly a :class:`ReferenceTransformer` in a consistent state, else "
    "``UsageError``."""
    if type(model) is not ReferenceTransformer:
        raise UsageError(
            f"{what} is a {type(model).__name__}, not revcheck.nn.ReferenceTransformer: the "
            "transformations and "
            "the oracle know only the reference architecture (docs/spec.md §4). Convert your model with "
            "revcheck.nn.expand.from_state_dict(config, state_dict, mapping), or check two arbitrary modules "
            "at level K (assert_function_preserved(..., level='K'))"
        )
    shapes = parameter_shapes(model.config)
    named = dict(model.named_parameters())
    if set(named) != set(shapes):
        raise UsageError(f"{what}'s parameters {sorted(set(named) ^ set(shapes))} do not match its config")
    for name, shape in shapes.items():
        if tuple(named[name].shape) != shape:
            raise UsageError(
                f"{what}'s parameter {name!r} has shape {tuple(named[name].shape)}, its config needs "
                f"{shape}: "
                "the model was edited by hand; rebuild it with ReferenceTransformer.from_parameters"
            )
    dtypes = {p.dtype for p in named.values()}
    if len(dtypes) != 1:
        raise UsageError(
            f"{what} mixes parameter dtypes {sorted(map(str, dtypes))}; use one dtype (model.to(dtype))"
        )
    norms = [m for m in model.modules() if isinstance(m, Norm)]
    if any(m.eps != model.config.eps or m.kind != model.config.norm for m in norms):
        raise UsageError(f"{what}'s norm modules disagree with its config (eps or kind edited by hand)")
    return model


def oracle_parameters(model: ReferenceTransformer) -> dict[str, np.ndarray[Any, Any]]:
    """The model's parameters as NumPy arrays for the oracle, bit for bit (bf16 / fp16 widened to float32)."""
    out = {}
    for name, parameter in model.named_parameters():
        tensor = parameter.detach().cpu()
        if tensor.dtype in (torch.bfloat16, torch.float16):
            tensor = tensor.float()  # exact
        out[name] = tensor.numpy().copy()
    return out


def from_state_dict(
    config: ModelConfig,
    state_dict: Mapping[str, Tensor],
    mapping: Mapping[str, str | tuple[str, bool]],
    *,
    dtype: torch.dtype | None = None,
) -> ReferenceTransformer:
    """A reference model built from another model's parameters, given where each reference parameter is.

    ``mapping[name]`` is the other model's key for reference parameter ``name``
    (:func:`parameter_shapes`), or ``(key, transpose)`` where ``transpose=True``
    takes an ``nn.Linear`` weight of shape ``(out, in)``.  Every reference
    parameter must be mapped; this is how an audit reaches a user's own model
    (and how the audit's findings carry back to it).

    Examples
    --------
    >>> cfg = ModelConfig(vocab=3, max_len=2, hidden=2, mlp=2, heads=1, qk=1, v=1, layers=0)
    >>> theirs = {"emb.weight": torch.ones(3, 2), "pos": torch.zeros(2, 2), "head.weight": torch.ones(3, 2)}
    >>> model = from_state_dict(cfg, theirs, {"tok_emb": "emb.weight", "pos_emb": "pos",
    ...                                      "w_out": ("head.weight", True)})
    >>> model.w_out.shape
    torch.Size([2, 3])
    """
    shapes = parameter_shapes(config)
    missing = sorted(set(shapes) - set(mapping))
    if missing:
        raise UsageError(
            f"mapping lacks reference parameters {missing}; map every name of parameter_shapes(config)"
        )
    params = {}
    for name in shapes:
        entry = mapping[name]
        key, transpose = (entry, False) if isinstance(entry, str) else entry
        if key not in state_dict:
            raise UsageError(f"mapping[{name!r}] = {key!r} is not a key of the state dict")
        tensor = state_dict[key].detach()
        params[name] = tensor.t() if transpose else tensor
    return ReferenceTransformer.from_parameters(config, params, dtype=dtype)
