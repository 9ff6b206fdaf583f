"""The six function-preserving growth transformations of the reference transformer (docs/spec.md §4).

Each takes a :class:`~revcheck.nn.expand.ReferenceTransformer`, returns a NEW
model (the old one is untouched) and attaches a
:class:`~revcheck.expand.certificate.GrowthCertificate` to it:
``grown.growth_step`` (this step) and ``grown.growth_certificate`` (every step
since the first ungrown model, composed).  Unconstrained new parameters come
from ``init`` (default :func:`normal_init`), drawn from a private generator
seeded with ``seed``, or from torch's global RNG when ``seed`` is None (then
reproducible under ``torch.manual_seed``).  Constrained ones are set as docs/spec.md §4
says: zeros, and the two rescalings (``w_k`` by ``sqrt(k'/k)``; norm gains by
``sqrt(h/h')`` and eps by ``h/h'``).

What cannot be preserved is refused with :class:`GrowthRefused` (a
``UsageError``) saying why: LayerNorm under hidden growth, an eps that is not
rescaled, a layer inserted into a post-norm model, shrinking, an index out of
range, a model that is not the reference architecture.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np
import torch
from torch import Tensor

from revcheck.errors import UsageError
from revcheck.expand.certificate import (
    Block,
    GrownReduction,
    GrowthCertificate,
    ParameterMap,
    ScaledBlock,
    is_power_of,
)
from revcheck.levels import Level
from revcheck.nn.expand import ModelConfig, ReferenceTransformer, check_reference
from revcheck.oracle.expand import layer_parameter_shapes, parameter_shapes

__all__ = [
    "GrowthRefused",
    "Initializer",
    "add_heads",
    "expand_head_dim",
    "expand_hidden",
    "expand_mlp",
    "expand_qk_dim",
    "fingerprint",
    "insert_layer",
    "normal_init",
    "random_init",
    "zeros_init",
]

# init(role, shape, fan_in, generator) -> tensor of that shape; role is "weight", "bias" or "gain".
Initializer = Callable[[str, tuple[int, ...], int, "torch.Generator | None"], Tensor]

FINITE_CONDITION = (
    "finite activations whose scaled intermediates stay in the normal range "
    "(0·inf = NaN: a zero weight does not neutralise an inf/NaN activation)"
)


class GrowthRefused(UsageError):
    """A growth request that cannot preserve the function (or is malformed); nothing was built."""


def normal_init(role: str, shape: tuple[int, ...], fan_in: int, generator: torch.Generator | None) -> Tensor:
    """The default: weights ~ N(0, 1/fan_in), new biases 0, new gain entries 1."""
    if role == "gain":
        return torch.ones(shape, dtype=torch.float64)
    if role == "bias":
        return torch.zeros(shape, dtype=torch.float64)
    return torch.randn(shape, generator=generator, dtype=torch.float64) / math.sqrt(max(fan_in, 1))


def random_init(scale: float = 1.0) -> Initializer:
    """Every free entry (weights, biases and gains) ~ N(0, scale**2): the property suite's adversary."""

    def init(role: str, shape: tuple[int, ...], fan_in: int, generator: torch.Generator | None) -> Tensor:
        return torch.randn(shape, generator=generator, dtype=torch.float64) * scale

    return init


def zeros_init(role: str, shape: tuple[int, ...], fan_in: int, generator: torch.Generator | None) -> Tensor:
    """Every free entry 0 (gains too), as the paper's Table 1 does: preserving, but a dead start."""
    return torch.zeros(shape, dtype=torch.float64)


def fingerprint(model: ReferenceTransformer) -> str:
    """SHA-256 of the model's configuration, dtype and parameter bits: ties a certificate to its models."""
    digest = hashlib.sha256(repr(sorted(model.config.as_dict().items())).encode())
    digest.update(str(model.dtype).encode())
    for name, parameter in model.named_parameters():
        digest.update(name.encode())
        tensor = parameter.detach().cpu().contiguous()
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


# ---- the surgery --------------------------------------------------------------------------------


def _keep(n: int) -> np.ndarray[Any, Any]:
    return np.arange(n, dtype=np.int64)


def _per_head(heads: int, old: int, new: int) -> np.ndarray[Any, Any]:
    """Positions of the old entries of every head when each head's block grows from ``old`` to ``new``."""
    return np.array([e * new + i for e in range(heads) for i in range(old)], dtype=np.int64)


@dataclass(frozen=True)
class _Rule:
    """How one parameter of the new model is made."""

    new: str
    old: str | None  # None: a parameter with no old counterpart (inserted layer)
    index: tuple[np.ndarray[Any, Any], ...] = ()
    new_entries: str = ""  # "zero" or "free" (entries not covered by index)
    role: str = "weight"
    region: str = ""
    factor_squared: Fraction = Fraction(1)
    scaled_region: str = ""


class _Surgery:
    def __init__(
        self, model: ReferenceTransformer, new_config: ModelConfig, init: Initializer | None, seed: int | None
    ):
        self.model = model
        self.old = {name: p.detach() for name, p in model.named_parameters()}
        self.new_config = new_config
        self.shapes = parameter_shapes(new_config)
        self.init = init or normal_init
        self.generator = None if seed is None else torch.Generator().manual_seed(seed)
        self.params: dict[str, Tensor] = {}
        self.zeroed: list[Block] = []
        self.free: list[Block] = []
        self.scaled: list[ScaledBlock] = []
        self.mapping: dict[str, ParameterMap] = {}

    def _fresh(self, rule: _Rule, shape: tuple[int, ...]) -> Tensor:
        """The new entries' values (the whole shape; old entries are overwritten), in the model's dtype."""
        dtype = self.model.dtype
        if rule.new_entries == "zero":
            return torch.zeros(shape, dtype=dtype)
        fan_in = shape[0] if len(shape) == 2 else 1
        values = self.init(rule.role, shape, fan_in, self.generator)
        if not isinstance(values, Tensor) or tuple(values.shape) != shape:
            got = tuple(values.shape) if isinstance(values, Tensor) else type(values).__name__
            raise UsageError(
                f"init({rule.role!r}, {shape}, ...) returned {got}; it must return a tensor of shape {shape}"
            )
        values = values.detach().cpu().to(dtype)
        if not bool(torch.isfinite(values).all()):
            raise GrowthRefused(
                f"init returned values that are not finite in {dtype} for {rule.new}: a free block with "
                "inf/NaN "
                "cannot preserve the function (0·inf = NaN); the initialiser must return finite values"
            )
        return values

    def apply(self, rule: _Rule) -> None:
        shape = self.shapes[rule.new]
        dtype, device = self.model.dtype, self.model.device
        if rule.old is None:
            values = self._fresh(rule, shape)
            (self.zeroed if rule.new_entries == "zero" else self.free).append(
                Block(rule.new, "all", values.numel())
            )
            self.params[rule.new] = values.to(device)
            return
        old = self.old[rule.old]
        index = rule.index or tuple(_keep(n) for n in old.shape)
        covered = np.zeros(shape, dtype=bool)
        covered[np.ix_(*index)] = True
        where = tuple(torch.from_numpy(i) for i in np.ix_(*index))
        new_count = int((~covered).sum())
        if new_count:
            result = self._fresh(rule, shape)
            (self.zeroed if rule.new_entries == "zero" else self.free).append(
                Block(rule.new, rule.region, new_count)
            )
        else:
            result = torch.zeros(shape, dtype=dtype)
        placed = old.cpu()
        if rule.factor_squared != 1:
            factor = math.sqrt(float(rule.factor_squared))
            placed = (old.cpu().to(torch.float64) * factor).to(dtype)
            back = (placed.to(torch.float64) / factor).to(dtype)
            exact = bool(torch.isfinite(placed).all()) and torch.equal(
                back.view(_int_view(dtype)), old.cpu().view(_int_view(dtype))
            )
            power = is_power_of(rule.factor_squared, 4) or is_power_of(1 / rule.factor_squared, 4)
            self.scaled.append(
                ScaledBlock(
                    rule.new,
                    rule.scaled_region,
                    old.numel(),
                    rule.factor_squared,
                    factor,
                    power,
                    exact and power,
                )
            )
        result[where] = placed
        self.params[rule.new] = result.to(device)
        self.mapping[rule.old] = ParameterMap(rule.new, index, rule.factor_squared)

    def finish(
        self,
        transformation: str,
        rules: Sequence[_Rule],
        reductions: Sequence[GrownReduction],
        reasons: Sequence[str],
        *,
        eps_factor: Fraction = Fraction(1),
        eps_rescaled: bool = True,
        conditions: Sequence[str] = (),
    ) -> ReferenceTransformer:
        for rule in rules:
            self.apply(rule)
        missing = set(self.shapes) - set(self.params)
        assert not missing, f"internal: no rule made {sorted(missing)}"
        grown = ReferenceTransformer.from_parameters(self.new_config, self.params, dtype=self.model.dtype)
        grown.train(self.model.training)
        reasons = list(reasons)
        for block in self.scaled:
            if not block.exact and block.power_of_two:
                reasons.append(
                    f"scaling {block.parameter} by {block.factor} left the normal range for some entries"
                )
        level = Level.O if not reasons else Level.R
        certificate = GrowthCertificate(
            transformation=transformation,
            level=level,
            reasons=tuple(reasons),
            zeroed=tuple(self.zeroed),
            scaled=tuple(self.scaled),
            free=tuple(self.free),
            grown_reductions=tuple(reductions),
            eps_before=self.model.config.eps,
            eps_after=self.new_config.eps,
            eps_factor=eps_factor,
            eps_rescaled=eps_rescaled,
            parameter_map=dict(self.mapping),
            source=fingerprint(self.model),
            target=fingerprint(grown),
            conditions=(FINITE_CONDITION, *conditions),
        )
        previous = getattr(self.model, "growth_certificate", None)
        grown.growth_step = certificate  # type: ignore[assignment]
        if isinstance(previous, GrowthCertificate) and previous.target == certificate.source:
            grown.growth_certificate = previous.then(certificate)  # type: ignore[assignment]
        else:
            grown.growth_certificate = certificate  # type: ignore[assignment]
        return grown


def _int_view(dtype: torch.dtype) -> torch.dtype:
    return {torch.float64: torch.int64, torch.float32: torch.int32}.get(dtype, torch.int16)


def _check_size(what: str, old: int, new: object) -> int:
    if not isinstance(new, int) or isinstance(new, bool):
        raise GrowthRefused(f"new {what} must be an int, got {type(new).__name__}")
    if new < old:
        raise GrowthRefused(
            f"new {what} {new} is smaller than the current {old} (ratio {Fraction(new, old)} < 1): "
            "these transformations only grow; shrinking is not function-preserving"
        )
    return new


def _same(names: Sequence[str], done: set[str]) -> list[_Rule]:
    return [_Rule(name, name) for name in names if name not in done]


def _layer_names(config: ModelConfig, index: int) -> list[str]:
    return [f"layers.{index}.{name}" for name in layer_parameter_shapes(config)]


def _finish_rules(model: ReferenceTransformer, rules: list[_Rule]) -> list[_Rule]:
    """``rules`` plus identity copies of every old parameter they do not mention."""
    done = {rule.old for rule in rules if rule.old is not None}
    return rules + _same(list(parameter_shapes(model.config)), done)  # type: ignore[arg-type]


# ---- the six transformations ------------------------------------------------------------------


def expand_mlp(
    model: ReferenceTransformer, new_width: int, *, init: Initializer | None = None, seed: int | None = None
) -> ReferenceTransformer:
    """MLP width ``p -> new_width`` in every layer: new ``w1`` columns, ``b1`` entries free, ``w2`` rows 0.

    Level O for every ratio (only zero constraints: the new ``z @ w2`` terms are ``z · 0``).

    Examples
    --------
    >>> from revcheck.nn.expand import ModelConfig, ReferenceTransformer
    >>> config = ModelConfig(vocab=5, max_len=4, hidden=4, mlp=8, heads=1, qk=2, v=2, layers=1)
    >>> small = ReferenceTransformer(config)
    >>> grown = expand_mlp(small, 32, seed=0)
    >>> grown.config.mlp, grown.growth_step.level, small.config.mlp
    (32, <Level.O: 'O'>, 8)
    """
    model = check_reference(model)
    c = model.config
    p_new = _check_size("MLP width", c.mlp, new_width)
    h = c.hidden
    rules = []
    for i in range(c.layers):
        pre = f"layers.{i}."
        rules += [
            _Rule(
                pre + "w1", pre + "w1", (_keep(h), _keep(c.mlp)), "free", "weight", f"columns {c.mlp}:{p_new}"
            ),
            _Rule(pre + "b1", pre + "b1", (_keep(c.mlp),), "free", "bias", f"entries {c.mlp}:{p_new}"),
            _Rule(
                pre + "w2", pre + "w2", (_keep(c.mlp), _keep(h)), "zero", "weight", f"rows {c.mlp}:{p_new}"
            ),
        ]
    reductions = (
        [GrownReduction("layers.*: MLP output z @ w2", c.mlp, p_new, "appended last, z · 0")]
        if c.layers
        else []
    )
    surgery = _Surgery(model, c.replace(mlp=p_new), init, seed)
    return surgery.finish(f"expand_mlp(p {c.mlp} -> {p_new})", _finish_rules(model, rules), reductions, [])


def add_heads(
    model: ReferenceTransformer, new_heads: int, *, init: Initializer | None = None, seed: int | None = None
) -> ReferenceTransformer:
    """Heads ``E -> new_heads``: new heads' ``w_q``, ``w_k``, ``w_v`` columns free, their ``w_o`` rows 0.

    Level O for every count (the new heads' contexts meet zero rows of ``w_o``).
    """
    model = check_reference(model)
    c = model.config
    e_new = _check_size("head count", c.heads, new_heads)
    h, k, v = c.hidden, c.qk, c.v
    rules = []
    for i in range(c.layers):
        pre = f"layers.{i}."
        for name, size in (("w_q", k), ("w_k", k), ("w_v", v)):
            rules.append(
                _Rule(
                    pre + name,
                    pre + name,
                    (_keep(h), _keep(c.heads * size)),
                    "free",
                    "weight",
                    f"columns {c.heads * size}:{e_new * size} (heads {c.heads}..{e_new - 1})",
                )
            )
        rules.append(
            _Rule(
                pre + "w_o",
                pre + "w_o",
                (_keep(c.heads * v), _keep(h)),
                "zero",
                "weight",
                f"rows {c.heads * v}:{e_new * v} (heads {c.heads}..{e_new - 1})",
            )
        )
    reductions = (
        [
            GrownReduction(
                "layers.*: attention output merged @ w_o", c.heads * v, e_new * v, "appended last, H_e · 0"
            )
        ]
        if c.layers
        else []
    )
    surgery = _Surgery(model, c.replace(heads=e_new), init, seed)
    return surgery.finish(f"add_heads(E {c.heads} -> {e_new})", _finish_rules(model, rules), reductions, [])


def expand_head_dim(
    model: ReferenceTransformer, new_v: int, *, init: Initializer | None = None, seed: int | None = None
) -> ReferenceTransformer:
    """Value size per head ``v -> new_v``: new ``w_v`` columns of each head free, matching ``w_o`` rows 0.

    Level O for every ratio.  The new terms of ``merged @ w_o`` stand inside each
    head's block, not at the end: in a sequential sum a ``±0`` term is neutral
    wherever it stands (revcheck.oracle.expand); at level K it is measured.
    """
    model = check_reference(model)
    c = model.config
    v_new = _check_size("value size", c.v, new_v)
    h, e = c.hidden, c.heads
    index = _per_head(e, c.v, v_new)
    rules = []
    for i in range(c.layers):
        pre = f"layers.{i}."
        rules += [
            _Rule(
                pre + "w_v",
                pre + "w_v",
                (_keep(h), index),
                "free",
                "weight",
                f"columns {c.v}:{v_new} of each head's block",
            ),
            _Rule(
                pre + "w_o",
                pre + "w_o",
                (index, _keep(h)),
                "zero",
                "weight",
                f"rows {c.v}:{v_new} of each head's block",
            ),
        ]
    reductions = (
        [
            GrownReduction(
                "layers.*: attention output merged @ w_o", e * c.v, e * v_new, "inside each head's block"
            )
        ]
        if c.layers
        else []
    )
    surgery = _Surgery(model, c.replace(v=v_new), init, seed)
    return surgery.finish(f"expand_head_dim(v {c.v} -> {v_new})", _finish_rules(model, rules), reductions, [])


def expand_qk_dim(
    model: ReferenceTransformer, new_k: int, *, init: Initializer | None = None, seed: int | None = None
) -> ReferenceTransformer:
    """Key/query size ``k -> new_k``: new ``w_q`` columns free, new ``w_k`` columns 0, ``w_k`` x sqrt(k'/k).

    The factor compensates the new ``1/sqrt(k')``.  Level O iff ``k'/k`` is a power
    of 4 (explicit attention: ``sqrt(k'/k)`` is then a power of two) or of 16
    (SDPA's math path scales q and k each by ``k**-1/4``); any other ratio is R.

    Examples
    --------
    >>> from revcheck.nn.expand import ModelConfig, ReferenceTransformer
    >>> config = ModelConfig(vocab=5, max_len=4, hidden=4, mlp=8, heads=2, qk=2, v=2, layers=1)
    >>> small = ReferenceTransformer(config)
    >>> expand_qk_dim(small, 8, seed=0).growth_step.level, expand_qk_dim(small, 3, seed=0).growth_step.level
    (<Level.O: 'O'>, <Level.R: 'R'>)
    """
    model = check_reference(model)
    c = model.config
    k_new = _check_size("key/query size", c.qk, new_k)
    ratio = Fraction(k_new, c.qk)
    h, e = c.hidden, c.heads
    index = _per_head(e, c.qk, k_new)
    rules = []
    for i in range(c.layers):
        pre = f"layers.{i}."
        rules += [
            _Rule(
                pre + "w_q",
                pre + "w_q",
                (_keep(h), index),
                "free",
                "weight",
                f"columns {c.qk}:{k_new} of each head",
            ),
            _Rule(
                pre + "w_k",
                pre + "w_k",
                (_keep(h), index),
                "zero",
                "weight",
                f"columns {c.qk}:{k_new} of each head",
                factor_squared=ratio,
                scaled_region="old columns",
            ),
        ]
    base = 4 if c.attention == "explicit" else 16
    reasons = []
    if ratio != 1 and c.layers and not is_power_of(ratio, base):
        style = "explicit scores / sqrt(k)" if base == 4 else "SDPA's math path (q and k each x k**-1/4)"
        reasons.append(
            f"k'/k = {ratio} is not a power of {base}: with {style} the compensation is not a power of two, "
            "so the stored factors are rounded"
        )
    reductions = (
        [
            GrownReduction(
                "layers.*: attention scores q_e · k_e", c.qk, k_new, "appended last in each head, q · 0"
            )
        ]
        if c.layers
        else []
    )
    surgery = _Surgery(model, c.replace(qk=k_new), init, seed)
    return surgery.finish(
        f"expand_qk_dim(k {c.qk} -> {k_new})", _finish_rules(model, rules), reductions, reasons
    )


def expand_hidden(
    model: ReferenceTransformer,
    new_hidden: int,
    *,
    init: Initializer | None = None,
    seed: int | None = None,
    rescale_eps: bool = True,
) -> ReferenceTransformer:
    """Hidden size ``h -> new_hidden``: the residual stream becomes ``[x, 0]``.

    New columns of ``tok_emb``, ``pos_emb``, ``w_o``, ``w2`` and new ``b2`` entries
    are 0; new rows of ``w_q``, ``w_k``, ``w_v``, ``w1``, ``w_out`` and new gain
    entries are free; every gain is multiplied by ``sqrt(h/h')`` and eps by
    ``h/h'``.  Level O iff ``h'/h`` is a power of 4, else R.  Refused: LayerNorm
    (its mean over h' includes the zeros) and ``rescale_eps=False`` with eps > 0
    (then not even R-exact).
    """
    model = check_reference(model)
    c = model.config
    h_new = _check_size("hidden size", c.hidden, new_hidden)
    h = c.hidden
    if c.norm == "layer" and h_new != h:
        raise GrowthRefused(
            "expand_hidden cannot preserve a LayerNorm model: its mean over h' includes the new zero entries "
            "(mean and variance change for every token). Use norm='rms' (docs/spec.md §4)"
        )
    if c.eps != 0.0 and not rescale_eps and h_new != h:
        raise GrowthRefused(
            f"an unrescaled eps={c.eps!r} breaks preservation even in real numbers: the mean over "
            f"h'={h_new} is "
            f"the old mean x {Fraction(h, h_new)}, so eps must become eps x h/h'. Use rescale_eps=True "
            "(the default) "
            "or a model with eps=0"
        )
    ratio = Fraction(h, h_new)
    eps_new = c.eps * float(ratio) if rescale_eps else c.eps
    eps_exact = Fraction(eps_new) == Fraction(c.eps) * ratio
    rules = [
        _Rule("tok_emb", "tok_emb", (_keep(c.vocab), _keep(h)), "zero", "weight", f"columns {h}:{h_new}"),
        _Rule("pos_emb", "pos_emb", (_keep(c.max_len), _keep(h)), "zero", "weight", f"columns {h}:{h_new}"),
        _Rule("w_out", "w_out", (_keep(h), _keep(c.vocab)), "free", "weight", f"rows {h}:{h_new}"),
    ]
    for i in range(c.layers):
        pre = f"layers.{i}."
        for norm in ("norm1", "norm2"):
            rules.append(
                _Rule(
                    pre + norm + ".weight",
                    pre + norm + ".weight",
                    (_keep(h),),
                    "free",
                    "gain",
                    f"entries {h}:{h_new}",
                    factor_squared=ratio,
                    scaled_region="old entries",
                )
            )
        for name, width in (
            ("w_q", c.heads * c.qk),
            ("w_k", c.heads * c.qk),
            ("w_v", c.heads * c.v),
            ("w1", c.mlp),
        ):
            rules.append(
                _Rule(pre + name, pre + name, (_keep(h), _keep(width)), "free", "weight", f"rows {h}:{h_new}")
            )
        rules += [
            _Rule(
                pre + "w_o",
                pre + "w_o",
                (_keep(c.heads * c.v), _keep(h)),
                "zero",
                "weight",
                f"columns {h}:{h_new}",
            ),
            _Rule(pre + "w2", pre + "w2", (_keep(c.mlp), _keep(h)), "zero", "weight", f"columns {h}:{h_new}"),
            _Rule(pre + "b2", pre + "b2", (_keep(h),), "zero", "bias", f"entries {h}:{h_new}"),
        ]
    reasons = []
    if h_new != h and not is_power_of(Fraction(h_new, h), 4):
        reasons.append(
            f"h'/h = {Fraction(h_new, h)} is not a power of 4: the gain factor sqrt(h/h') and eps x h/h' "
            "are rounded"
        )
    elif not eps_exact:
        reasons.append(f"eps x h/h' = {eps_new!r} is not exact")
    reductions = []
    if h_new != h:
        reductions.append(
            GrownReduction("every norm: mean over the hidden entries", h, h_new, "appended last, 0 · 0")
        )
        reductions.append(
            GrownReduction(
                "every read of the residual stream (n @ w_q, w_k, w_v, w1; x @ w_out)",
                h,
                h_new,
                "appended last, 0 · free row",
            )
        )
    surgery = _Surgery(model, c.replace(hidden=h_new, eps=eps_new), init, seed)
    return surgery.finish(
        f"expand_hidden(h {h} -> {h_new})",
        _finish_rules(model, rules),
        reductions,
        reasons,
        eps_factor=ratio if rescale_eps else Fraction(1),
        eps_rescaled=eps_exact or c.eps == 0.0,
        conditions=("the residual stream's new entries are written only by zero blocks: they stay ±0",),
    )


def insert_layer(
    model: ReferenceTransformer, index: int, *, init: Initializer | None = None, seed: int | None = None
) -> ReferenceTransformer:
    """A new layer at ``index`` (0 = first, ``layers`` = after the last) with ``w_o``, ``w2``, ``b2`` = 0.

    The new layer adds ``+0`` to the residual stream twice; its norms, ``w_q``,
    ``w_k``, ``w_v``, ``w1``, ``b1`` are free.  Level O.  Refused for post-norm
    models (the new layer would return ``Norm(x) != x``).  With eps = 0 a residual
    row that is all zeros becomes NaN in the new layer's norm (0/0).
    """
    model = check_reference(model)
    c = model.config
    if not isinstance(index, int) or isinstance(index, bool):
        raise GrowthRefused(f"index must be an int in 0..{c.layers}, got {type(index).__name__}")
    if not 0 <= index <= c.layers:
        raise GrowthRefused(
            f"index {index} is out of range: a model with {c.layers} layers takes a new layer at "
            f"0..{c.layers} "
            f"({c.layers} appends; negative indices are refused so that 'append' is never ambiguous)"
        )
    if c.placement == "post":
        raise GrowthRefused(
            "insert_layer cannot preserve a post-norm model: the new layer returns Norm(x + 0) = Norm(x) "
            "!= x. "
            "Use placement='pre' (docs/spec.md §4)"
        )
    new_config = c.replace(layers=c.layers + 1)
    rules: list[_Rule] = []
    for old_index in range(c.layers):
        new_index = old_index if old_index < index else old_index + 1
        for name in layer_parameter_shapes(c):
            rules.append(_Rule(f"layers.{new_index}.{name}", f"layers.{old_index}.{name}"))
    zero_names = {"w_o", "w2", "b2"}
    for name in layer_parameter_shapes(new_config):
        role = (
            "gain"
            if name.endswith(".weight")
            else "bias"
            if name.endswith("bias") or name == "b1"
            else "weight"
        )
        rules.append(
            _Rule(f"layers.{index}.{name}", None, (), "zero" if name in zero_names else "free", role)
        )
    rules += [_Rule(name, name) for name in ("tok_emb", "pos_emb", "w_out")]
    conditions = []
    if c.eps == 0.0:
        conditions.append(
            "eps = 0: an all-zero residual row is 0/0 = NaN in the new layer's norm (with layers >= 1 the "
            "base model is NaN there already; with none, the inserted layer makes a finite model NaN)"
        )
    surgery = _Surgery(model, new_config, init, seed)
    return surgery.finish(
        f"insert_layer(index {index} of {c.layers + 1})", rules, [], [], conditions=conditions
    )
