"""Declared-order oracle of the reference transformer of the function-preserving expansions (docs/spec.md §4).

Pure NumPy (never torch).  One composition of the model, :func:`forward`, is
written once against a small *arithmetic* interface and run by three
arithmetics:

* :class:`OrderedArithmetic` (this module): level **O**.  Every reduction is
  sequential in index order (:func:`revcheck.oracle.ordered.matmul`), every
  elementwise function is position-independent, each operation's result is
  rounded once to the storage format (bf16 / fp16 values are computed in
  binary32 and rounded at the same points where torch rounds: after every
  operation).
* :class:`revcheck.oracle.enclosure.IntervalArithmetic`: level **B**, an
  enclosure of every floating-point evaluation of the model in any order.
* :class:`revcheck.exact.expand.ExactArithmetic` (mpmath): level **R**.

The model (docs/spec.md §4): token and learned absolute position embeddings,
``layers`` pre-norm (or post-norm) layers, no final norm, output head ``w_out``.
A pre-norm layer is ``x = x + MHA(Norm1(x)); x = x + MLP(Norm2(x))`` with
``MHA = [H_1 .. H_E] W_O``, ``H_e = softmax(Q_e K_e^T / sqrt(k)) V_e`` (or
SDPA's math path: ``Q_e`` and ``K_e`` each scaled by ``k**-1/4``) and
``MLP(x) = act(x W1 + b1) W2 + b2``.  RMSNorm is ``(x * rsqrt(mean(x*x) + eps)) * g``;
LayerNorm is ``((x - mu) * rsqrt(var + eps)) * g + b``.  Matrices are in the
math convention ``y = x @ W`` (``W`` has shape ``(in, out)``); head ``e`` owns
columns ``e*k .. e*k + k - 1`` of ``w_q`` / ``w_k`` (``e*v ..`` of ``w_v``) and the
same rows of ``w_o``.

Zero terms in a sequential reduction are bit-neutral wherever they stand, not
only at the end: the accumulator starts at ``+0`` and, rounding to nearest,
can never become ``-0`` (``+0 + -0 = +0``, ``x + -x = +0``), and ``acc + ±0 = acc``
for every other ``acc``.  This is why value-size growth, whose new zero rows of
``W_O`` sit inside each head's block, is O-exact too.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from revcheck.oracle import ordered

__all__ = [
    "ACTIVATIONS",
    "ATTENTIONS",
    "NORMS",
    "PLACEMENTS",
    "ConfigError",
    "ModelConfig",
    "OrderedArithmetic",
    "backward",
    "forward",
    "oracle_forward",
    "oracle_gradients",
    "parameter_shapes",
]

NORMS = ("rms", "layer")
ACTIVATIONS = ("relu", "gelu", "gelu_tanh")
ATTENTIONS = ("explicit", "sdpa")
PLACEMENTS = ("pre", "post")

FloatArray = npt.NDArray[np.floating[Any]]


class ConfigError(ValueError):
    """A model configuration that is not the reference architecture; the message says what to use."""


@dataclass(frozen=True)
class ModelConfig:
    """Sizes and choices of the reference transformer; every size independent of the others.

    ``hidden`` h, ``mlp`` p, ``heads`` E, ``qk`` k (key/query size per head),
    ``v`` (value size per head), ``layers`` N (0 allowed: embeddings and head only).
    ``eps`` is the norm epsilon (the paper's is 0).  ``attention="sdpa"`` is
    ``torch.nn.functional.scaled_dot_product_attention`` in the torch model and
    SDPA's math path (q and k each scaled by ``k**-1/4``) in the oracle.
    """

    vocab: int
    max_len: int
    hidden: int
    mlp: int
    heads: int
    qk: int
    v: int
    layers: int
    norm: str = "rms"
    eps: float = 0.0
    activation: str = "relu"
    attention: str = "explicit"
    placement: str = "pre"
    causal: bool = True

    def __post_init__(self) -> None:
        for name in ("vocab", "max_len", "hidden", "mlp", "heads", "qk", "v"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{name}={value!r} must be a positive int (e.g. {name}=8)")
        if not isinstance(self.layers, int) or isinstance(self.layers, bool) or self.layers < 0:
            raise ConfigError(f"layers={self.layers!r} must be an int >= 0")
        choices = {"norm": NORMS, "activation": ACTIVATIONS, "attention": ATTENTIONS, "placement": PLACEMENTS}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ConfigError(
                    f"{name}={getattr(self, name)!r} is not supported; use one of {', '.join(allowed)}"
                )
        if not isinstance(self.eps, float) or not (math.isfinite(self.eps) and self.eps >= 0.0):
            raise ConfigError(f"eps={self.eps!r} must be a finite float >= 0 (the paper's is 0.0)")
        if not isinstance(self.causal, bool):
            raise ConfigError(f"causal={self.causal!r} must be a bool")

    def replace(self, **changes: Any) -> ModelConfig:
        """A copy with ``changes`` applied (validated again)."""
        return replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def layer_parameter_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Shapes of one layer's parameters, by their name inside the layer."""
    h, p, e, k, v = config.hidden, config.mlp, config.heads, config.qk, config.v
    shapes: dict[str, tuple[int, ...]] = {"norm1.weight": (h,)}
    if config.norm == "layer":
        shapes["norm1.bias"] = (h,)
    shapes.update({"w_q": (h, e * k), "w_k": (h, e * k), "w_v": (h, e * v), "w_o": (e * v, h)})
    shapes["norm2.weight"] = (h,)
    if config.norm == "layer":
        shapes["norm2.bias"] = (h,)
    shapes.update({"w1": (h, p), "b1": (p,), "w2": (p, h), "b2": (h,)})
    return shapes


def parameter_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Every parameter of the model by its name (the torch module's ``named_parameters`` names).

    Examples
    --------
    >>> cfg = ModelConfig(vocab=5, max_len=4, hidden=8, mlp=16, heads=2, qk=3, v=4, layers=1)
    >>> parameter_shapes(cfg)["layers.0.w_q"], parameter_shapes(cfg)["layers.0.w_o"]
    ((8, 6), (8, 8))
    """
    shapes: dict[str, tuple[int, ...]] = {
        "tok_emb": (config.vocab, config.hidden),
        "pos_emb": (config.max_len, config.hidden),
    }
    for index in range(config.layers):
        for name, shape in layer_parameter_shapes(config).items():
            shapes[f"layers.{index}.{name}"] = shape
    shapes["w_out"] = (config.hidden, config.vocab)
    return shapes


def check_parameters(config: ModelConfig, params: Mapping[str, Any]) -> None:
    """Raise ``ConfigError`` unless ``params`` has exactly the names and shapes of ``config``."""
    expected = parameter_shapes(config)
    missing = sorted(set(expected) - set(params))
    extra = sorted(set(params) - set(expected))
    if missing or extra:
        raise ConfigError(
            f"parameters do not match the configuration: missing {missing or 'none'}, "
            f"unexpected {extra or 'none'}"
        )
    for name, shape in expected.items():
        got = tuple(np.shape(params[name]))
        if got != shape:
            raise ConfigError(f"parameter {name!r} has shape {got}, but the configuration needs {shape}")


def check_ids(config: ModelConfig, ids: object) -> npt.NDArray[np.int64]:
    """Token ids as an int64 array of shape (batch, time) with ``time <= max_len`` and ids in range."""
    array = np.asarray(ids)
    if array.dtype.kind not in "iu" or array.ndim != 2:
        raise ConfigError(
            f"token ids must be a 2-D integer array (batch, time), got dtype {array.dtype} and shape "
            f"{array.shape}"
        )
    if array.shape[1] > config.max_len or array.shape[1] == 0 or array.shape[0] == 0:
        raise ConfigError(f"time {array.shape[1]} must be in 1..max_len={config.max_len}; batch must be >= 1")
    if array.size and (array.min() < 0 or array.max() >= config.vocab):
        raise ConfigError(f"token ids must lie in 0..{config.vocab - 1}, got {array.min()}..{array.max()}")
    return array.astype(np.int64)


# ---- the ordered arithmetic (level O) --------------------------------------------------------------


_COMPUTE = {"fp64": np.float64, "fp32": np.float32, "bf16": np.float32, "fp16": np.float32}


class OrderedArithmetic:
    """Declared-order arithmetic in one storage format: each operation is one torch-level op.

    ``storage`` is ``"fp64"``, ``"fp32"``, ``"bf16"`` or ``"fp16"``.  Values are
    NumPy arrays of the compute dtype (float64 for fp64, float32 otherwise); for
    bf16 / fp16 every operation computes in binary32 and rounds its result once
    to the storage format (:func:`revcheck.oracle.ordered.round_to_storage`),
    which is where torch rounds a bf16 tensor op (matmuls accumulate in binary32,
    elementwise ops and softmax compute in binary32, then round).  Scalars
    (``1/sqrt(k)`` factors, ``eps``, ``1/h``) are values of the compute dtype.
    """

    level = "O"

    def __init__(self, storage: str = "fp32") -> None:
        if storage not in _COMPUTE:
            raise ValueError(f"storage={storage!r} is not supported; use one of {', '.join(_COMPUTE)}")
        self.storage = storage
        self.dtype = np.dtype(_COMPUTE[storage])
        self.tiny = {"fp64": 2.0**-1022, "fp32": 2.0**-126, "bf16": 2.0**-126, "fp16": 2.0**-14}[storage]
        self.subnormal_results = 0  # results of operations that were subnormal (see store)

    # conversion and structure
    def store(self, x: FloatArray) -> FloatArray:
        out = ordered.round_to_storage(x, self.storage) if self.storage in ("bf16", "fp16") else x
        # Power-of-two scalings are exact only in the normal range: count what left it (a condition).
        magnitude = np.abs(out)
        self.subnormal_results += int(np.count_nonzero((magnitude > 0) & (magnitude < self.tiny)))
        return out

    def param(self, name: str, value: object) -> FloatArray:
        array = np.asarray(value)
        if array.dtype != self.dtype:
            raise TypeError(
                f"parameter {name!r} is {array.dtype}; the {self.storage} oracle takes {self.dtype} arrays "
                "(convert exactly with revcheck.expand.oracle_parameters)"
            )
        if self.storage in ("bf16", "fp16"):
            rounded = self.store(array)
            if not np.array_equal(rounded.view(np.uint32), array.view(np.uint32)):
                raise TypeError(f"parameter {name!r} holds values that are not {self.storage} values")
        return array

    def scalar(self, value: float) -> FloatArray:
        return np.asarray(value, dtype=self.dtype)

    def sqrt_scalar(self, k: int) -> FloatArray:
        """``fl(sqrt(k))`` (binary64 and binary32 square roots are correctly rounded; double rounding
        from binary64 to binary32 is innocuous for sqrt, so torch's ``math.sqrt`` then cast agrees)."""
        return ordered.sqrt(np.asarray(float(k), dtype=self.dtype))

    def sdpa_scale(self, k: int) -> FloatArray:
        """SDPA's math path: ``sqrt(1 / sqrt(k))`` in binary64, then cast to the compute dtype."""
        return np.asarray(math.sqrt(1.0 / math.sqrt(k)), dtype=self.dtype)

    def take(self, table: FloatArray, index: npt.NDArray[np.int64]) -> FloatArray:
        return table[index]

    def reshape(self, x: FloatArray, shape: tuple[int, ...]) -> FloatArray:
        return x.reshape(shape)

    def swapaxes(self, x: FloatArray, a: int, b: int) -> FloatArray:
        return np.swapaxes(x, a, b)

    def mask_fill(self, x: FloatArray, mask: npt.NDArray[np.bool_], value: float) -> FloatArray:
        return np.where(mask, self.dtype.type(value), x)

    # arithmetic: each call is one rounding to the storage format
    def add(self, a: FloatArray, b: FloatArray) -> FloatArray:
        return self.store(a + b)

    def sub(self, a: FloatArray, b: FloatArray) -> FloatArray:
        return self.store(a - b)

    def mul(self, a: FloatArray, b: FloatArray) -> FloatArray:
        return self.store(a * b)

    def div(self, a: FloatArray, b: FloatArray) -> FloatArray:
        return self.store(a / b)

    def neg(self, a: FloatArray) -> FloatArray:
        return -a

    def matmul(self, a: FloatArray, b: FloatArray) -> FloatArray:
        return self.store(ordered.matmul(a, b))

    def sum_last(self, x: FloatArray) -> FloatArray:
        """Sequential sum over the last axis, kept as an axis of length 1."""
        return self.store(ordered.sequential_sum(x, axis=-1)[..., None])

    def mean_last(self, x: FloatArray) -> FloatArray:
        """``sequential_sum(x) / n`` over the last axis (one op: one rounding to storage)."""
        total = ordered.sequential_sum(x, axis=-1)[..., None]
        count: Any = self.dtype.type(x.shape[-1])
        return self.store(total / count)

    def sum_rows(self, x: FloatArray) -> FloatArray:
        """Sequential sum over every axis but the last (tokens in C order): bias and gain gradients."""
        return self.store(ordered.sequential_sum(x.reshape(-1, x.shape[-1]), axis=0))

    def rsqrt(self, x: FloatArray) -> FloatArray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return self.store(self.dtype.type(1.0) / ordered.sqrt(x))

    def center(self, x: FloatArray) -> FloatArray:
        """``x - mean(x)`` over the last axis (LayerNorm's first step): two ops."""
        return self.sub(x, self.mean_last(x))

    def normalize(self, x: FloatArray, eps: FloatArray) -> tuple[FloatArray, FloatArray]:
        """``(x * r, r)`` with ``r = rsqrt(mean(x * x) + eps)``: four ops in this order."""
        r = self.rsqrt(self.add(self.mean_last(self.mul(x, x)), eps))
        return self.mul(x, r), r

    def relu(self, x: FloatArray) -> FloatArray:
        return np.where(np.isnan(x), x, np.where(x > 0, x, self.dtype.type(0.0)))

    def gelu(self, x: FloatArray) -> FloatArray:
        return self.store(ordered.gelu(x))

    def gelu_tanh(self, x: FloatArray) -> FloatArray:
        return self.store(ordered.gelu_tanh(x))

    def softmax_last(self, x: FloatArray) -> FloatArray:
        return self.store(ordered.softmax(x, axis=-1))

    # derivatives (for the O-level backward)
    def relu_grad(self, u: FloatArray, dz: FloatArray) -> FloatArray:
        return np.where(u > 0, dz, self.dtype.type(0.0))

    def gelu_grad(self, u: FloatArray, dz: FloatArray) -> FloatArray:
        """torch's order: ``dz * (cdf + x * pdf)``, ``cdf = 0.5 (1 + erf(x/√2))``,
        ``pdf = beta * exp(-0.5 x x)``, ``beta = 1/sqrt(2 pi)``; computed in the compute dtype."""
        t = self.dtype.type
        cdf = t(0.5) * (t(1.0) + ordered.erf(u * t(ordered._SQRT1_2)))
        pdf = ordered.exp((u * u) * t(-0.5)) * t(_INV_SQRT_2PI)
        return self.store(dz * (cdf + u * pdf))

    def gelu_tanh_grad(self, u: FloatArray, dz: FloatArray) -> FloatArray:
        """torch's order for the tanh GELU's derivative, in the compute dtype."""
        t = self.dtype.type
        beta, kappa = t(ordered._GELU_TANH_BETA), t(ordered._GELU_TANH_KAPPA)
        square = u * u
        inner = beta * (u + kappa * (square * u))
        tanh_inner = ordered.tanh(inner)
        left = t(0.5) * u
        right = t(1.0) + tanh_inner
        left_derivative = t(0.5) * right
        right_derivative = (left * (t(1.0) - tanh_inner * tanh_inner)) * (
            beta * (t(1.0) + t(3.0) * kappa * square)
        )
        return self.store(dz * (left_derivative + right_derivative))

    def scatter_rows(self, index: npt.NDArray[np.int64], rows: FloatArray, count: int) -> FloatArray:
        """``out[index[t]] += rows[t]`` sequentially over tokens in C order (embedding gradient)."""
        flat_index = index.reshape(-1)
        flat_rows = rows.reshape(-1, rows.shape[-1])
        out = np.zeros((count, rows.shape[-1]), dtype=self.dtype)
        for token, row in zip(flat_index, flat_rows, strict=True):
            out[token] = self.store(out[token] + row)
        return out


_INV_SQRT_2PI = float.fromhex("0x1.9884533d43651p-2")  # torch's M_2_SQRTPI * M_SQRT1_2 * 0.5


# ---- the composition (shared by the O, B and R arithmetics) ---------------------------------------


def _future_mask(time: int) -> npt.NDArray[np.bool_]:
    return np.triu(np.ones((time, time), dtype=bool), 1)


def _norm(
    config: ModelConfig, A: Any, x: Any, gain: Any, bias: Any, eps: Any, tape: dict[str, Any] | None
) -> Any:
    centred = x if config.norm == "rms" else A.center(x)
    scaled, r = A.normalize(centred, eps)
    out = A.mul(scaled, gain)
    if bias is not None:
        out = A.add(out, bias)
    if tape is not None:
        tape.update(centred=centred, r=r, scaled=scaled)
    return out


def _attention(config: ModelConfig, A: Any, n: Any, p: Mapping[str, Any], tape: dict[str, Any] | None) -> Any:
    batch, time, _ = np.shape(n)
    e, k, v = config.heads, config.qk, config.v

    def heads(x: Any, size: int) -> Any:
        return A.swapaxes(A.reshape(x, (batch, time, e, size)), 1, 2)

    q = heads(A.matmul(n, p["w_q"]), k)
    key = heads(A.matmul(n, p["w_k"]), k)
    value = heads(A.matmul(n, p["w_v"]), v)
    if config.attention == "explicit":
        scale = None
        scores = A.div(A.matmul(q, A.swapaxes(key, -1, -2)), A.sqrt_scalar(k))
    else:
        scale = A.sdpa_scale(k)
        q, key = A.mul(q, scale), A.mul(key, scale)
        scores = A.matmul(q, A.swapaxes(key, -1, -2))
    if config.causal:
        scores = A.mask_fill(scores, _future_mask(time), -np.inf)
    weights = A.softmax_last(scores)
    context = A.matmul(weights, value)
    merged = A.reshape(A.swapaxes(context, 1, 2), (batch, time, e * v))
    out = A.matmul(merged, p["w_o"])
    if tape is not None:
        tape.update(q=q, key=key, value=value, weights=weights, merged=merged, sdpa_scale=scale)
    return out


def _mlp(config: ModelConfig, A: Any, n: Any, p: Mapping[str, Any], tape: dict[str, Any] | None) -> Any:
    u = A.add(A.matmul(n, p["w1"]), p["b1"])
    z = getattr(A, config.activation)(u)
    out = A.add(A.matmul(z, p["w2"]), p["b2"])
    if tape is not None:
        tape.update(u=u, z=z)
    return out


def _layer_params(params: Mapping[str, Any], index: int) -> dict[str, Any]:
    prefix = f"layers.{index}."
    return {name[len(prefix) :]: value for name, value in params.items() if name.startswith(prefix)}


def forward(
    config: ModelConfig,
    params: Mapping[str, Any],
    ids: object,
    arithmetic: Any,
    *,
    eps: Any = None,
    tape: list[dict[str, Any]] | None = None,
) -> Any:
    """Logits ``(batch, time, vocab)`` of the model with ``params`` on token ``ids``, in ``arithmetic``.

    ``params`` maps every name of :func:`parameter_shapes` to an array;
    ``arithmetic.param`` converts each.  ``eps`` overrides ``arithmetic.scalar(config.eps)``
    (the exact model passes an exactly rescaled eps).  With ``tape`` (a list), the
    intermediates the backward needs are appended to it.
    """
    check_parameters(config, params)
    ids = check_ids(config, ids)
    A = arithmetic
    P = {name: A.param(name, value) for name, value in params.items()}
    eps_value = A.scalar(config.eps) if eps is None else eps
    time = ids.shape[1]
    x = A.add(A.take(P["tok_emb"], ids), A.take(P["pos_emb"], np.arange(time)))
    if tape is not None:
        tape.append({"x0": x})
    for index in range(config.layers):
        p = _layer_params(P, index)
        record: dict[str, Any] | None = {} if tape is not None else None
        n1_tape: dict[str, Any] | None = {} if tape is not None else None
        n2_tape: dict[str, Any] | None = {} if tape is not None else None
        attn_tape: dict[str, Any] | None = {} if tape is not None else None
        mlp_tape: dict[str, Any] | None = {} if tape is not None else None
        x_in = x
        if config.placement == "pre":
            n1 = _norm(config, A, x, p["norm1.weight"], p.get("norm1.bias"), eps_value, n1_tape)
            x_mid = A.add(x, _attention(config, A, n1, p, attn_tape))
            n2 = _norm(config, A, x_mid, p["norm2.weight"], p.get("norm2.bias"), eps_value, n2_tape)
            x = A.add(x_mid, _mlp(config, A, n2, p, mlp_tape))
            norm_inputs = (x_in, x_mid)
            branch_inputs = (n1, n2)
        else:
            s1 = A.add(x, _attention(config, A, x, p, attn_tape))
            x_mid = _norm(config, A, s1, p["norm1.weight"], p.get("norm1.bias"), eps_value, n1_tape)
            s2 = A.add(x_mid, _mlp(config, A, x_mid, p, mlp_tape))
            x = _norm(config, A, s2, p["norm2.weight"], p.get("norm2.bias"), eps_value, n2_tape)
            norm_inputs = (s1, s2)
            branch_inputs = (x_in, x_mid)
        if tape is not None and record is not None:
            record.update(
                norm_inputs=norm_inputs,
                branch_inputs=branch_inputs,
                n1=n1_tape,
                n2=n2_tape,
                attn=attn_tape,
                mlp=mlp_tape,
            )
            tape.append(record)
    logits = A.matmul(x, P["w_out"])
    if tape is not None:
        tape.append({"x_final": x})
    return logits


# ---- backward (level O gradients) -----------------------------------------------------------------


def _tokens(x: FloatArray) -> FloatArray:
    return x.reshape(-1, x.shape[-1])


def _weight_grad(A: OrderedArithmetic, inputs: FloatArray, grad: FloatArray) -> FloatArray:
    """``X^T @ dY`` with the tokens (in C order) as the sequential reduction."""
    return A.matmul(np.ascontiguousarray(_tokens(inputs).T), _tokens(grad))


def _norm_backward(
    config: ModelConfig,
    A: OrderedArithmetic,
    gain: FloatArray,
    tape: dict[str, Any],
    dy: FloatArray,
    grads: dict[str, FloatArray],
    prefix: str,
) -> FloatArray:
    centred, r, scaled = tape["centred"], tape["r"], tape["scaled"]
    width = A.dtype.type(centred.shape[-1])
    t = A.dtype.type
    if config.norm == "layer":
        grads[prefix + ".bias"] = A.sum_rows(dy)
    grads[prefix + ".weight"] = A.sum_rows(A.mul(dy, scaled))
    d_scaled = A.mul(dy, gain)
    direct = A.mul(d_scaled, r)
    d_r = A.sum_last(A.mul(d_scaled, centred))
    r_cubed = A.mul(A.mul(r, r), r)
    d_mean = A.mul(A.mul(d_r, t(-0.5)), r_cubed)  # type: ignore[arg-type]
    d_square = A.div(d_mean, width)
    through_square = A.mul(d_square, A.mul(t(2.0), centred))  # type: ignore[arg-type]
    d_centred = A.add(direct, through_square)
    if config.norm == "rms":
        return d_centred
    d_mu = A.neg(A.sum_last(d_centred))
    return A.add(d_centred, A.div(d_mu, width))


def _attention_backward(
    config: ModelConfig,
    A: OrderedArithmetic,
    p: Mapping[str, FloatArray],
    n: FloatArray,
    tape: dict[str, Any],
    d_out: FloatArray,
    grads: dict[str, FloatArray],
    prefix: str,
) -> FloatArray:
    batch, time, _ = n.shape
    e, k, v = config.heads, config.qk, config.v
    q, key, value, weights, merged = tape["q"], tape["key"], tape["value"], tape["weights"], tape["merged"]
    grads[prefix + "w_o"] = _weight_grad(A, merged, d_out)
    d_merged = A.matmul(d_out, np.ascontiguousarray(p["w_o"].T))
    d_context = A.swapaxes(A.reshape(d_merged, (batch, time, e, v)), 1, 2)
    d_weights = A.matmul(d_context, A.swapaxes(value, -1, -2))
    d_value = A.matmul(A.swapaxes(weights, -1, -2), d_context)
    # softmax backward in torch's order: (dp - sum(dp * p)) * p
    d_scores = A.mul(A.sub(d_weights, A.sum_last(A.mul(d_weights, weights))), weights)
    if config.causal:
        d_scores = A.mask_fill(d_scores, _future_mask(time), 0.0)
    if config.attention == "explicit":
        d_scores = A.div(d_scores, A.sqrt_scalar(k))
    d_q = A.matmul(d_scores, key)
    d_key = A.matmul(A.swapaxes(d_scores, -1, -2), q)
    if config.attention == "sdpa":
        d_q, d_key = A.mul(d_q, tape["sdpa_scale"]), A.mul(d_key, tape["sdpa_scale"])

    def merge(x: FloatArray, size: int) -> FloatArray:
        return A.reshape(A.swapaxes(x, 1, 2), (batch, time, e * size))

    d_q, d_key, d_value = merge(d_q, k), merge(d_key, k), merge(d_value, v)
    grads[prefix + "w_q"] = _weight_grad(A, n, d_q)
    grads[prefix + "w_k"] = _weight_grad(A, n, d_key)
    grads[prefix + "w_v"] = _weight_grad(A, n, d_value)
    d_n = A.matmul(d_q, np.ascontiguousarray(p["w_q"].T))
    d_n = A.add(d_n, A.matmul(d_key, np.ascontiguousarray(p["w_k"].T)))
    return A.add(d_n, A.matmul(d_value, np.ascontiguousarray(p["w_v"].T)))


def _mlp_backward(
    config: ModelConfig,
    A: OrderedArithmetic,
    p: Mapping[str, FloatArray],
    n: FloatArray,
    tape: dict[str, Any],
    d_out: FloatArray,
    grads: dict[str, FloatArray],
    prefix: str,
) -> FloatArray:
    u, z = tape["u"], tape["z"]
    grads[prefix + "b2"] = A.sum_rows(d_out)
    grads[prefix + "w2"] = _weight_grad(A, z, d_out)
    d_z = A.matmul(d_out, np.ascontiguousarray(p["w2"].T))
    d_u = getattr(A, config.activation + "_grad")(u, d_z)
    grads[prefix + "b1"] = A.sum_rows(d_u)
    grads[prefix + "w1"] = _weight_grad(A, n, d_u)
    return A.matmul(d_u, np.ascontiguousarray(p["w1"].T))


def backward(
    config: ModelConfig,
    params: Mapping[str, Any],
    ids: object,
    grad_logits: FloatArray,
    arithmetic: OrderedArithmetic,
) -> dict[str, FloatArray]:
    """Gradients of ``sum(logits * grad_logits)`` with respect to every parameter, in declared order.

    The order (docs/spec.md §4): reverse of the forward; weight
    gradients ``X^T @ dY`` reduce over tokens in C order; bias and gain
    gradients are sequential sums over tokens; the embedding gradient adds token
    rows in C order; where a value has several uses their gradients are added in
    the order written here (residual first, then the branch; q, k, v).
    """
    A = arithmetic
    ids = check_ids(config, ids)
    tape: list[dict[str, Any]] = []
    forward(config, params, ids, A, tape=tape)
    P = {name: A.param(name, value) for name, value in params.items()}
    grad_logits = A.param("grad_logits", grad_logits)
    grads: dict[str, FloatArray] = {}
    x_final = tape[-1]["x_final"]
    grads["w_out"] = _weight_grad(A, x_final, grad_logits)
    dx = A.matmul(grad_logits, np.ascontiguousarray(P["w_out"].T))
    for index in range(config.layers - 1, -1, -1):
        record = tape[1 + index]
        p = _layer_params(P, index)
        prefix = f"layers.{index}."
        branch1, branch2 = record["branch_inputs"]
        if config.placement == "pre":
            d_n2 = _mlp_backward(config, A, p, branch2, record["mlp"], dx, grads, prefix)
            d_mid = A.add(
                dx, _norm_backward(config, A, p["norm2.weight"], record["n2"], d_n2, grads, prefix + "norm2")
            )
            d_n1 = _attention_backward(config, A, p, branch1, record["attn"], d_mid, grads, prefix)
            dx = A.add(
                d_mid,
                _norm_backward(config, A, p["norm1.weight"], record["n1"], d_n1, grads, prefix + "norm1"),
            )
        else:
            d_s2 = _norm_backward(config, A, p["norm2.weight"], record["n2"], dx, grads, prefix + "norm2")
            d_mid = A.add(d_s2, _mlp_backward(config, A, p, branch2, record["mlp"], d_s2, grads, prefix))
            d_s1 = _norm_backward(config, A, p["norm1.weight"], record["n1"], d_mid, grads, prefix + "norm1")
            dx = A.add(d_s1, _attention_backward(config, A, p, branch1, record["attn"], d_s1, grads, prefix))
    batch, time = ids.shape
    grads["tok_emb"] = A.scatter_rows(ids, dx, config.vocab)
    d_pos = np.zeros((config.max_len, config.hidden), dtype=A.dtype)
    acc = np.zeros((time, config.hidden), dtype=A.dtype)
    for b in range(batch):
        acc = A.add(acc, dx[b])
    d_pos[:time] = acc
    grads["pos_emb"] = d_pos
    return {name: grads[name] for name in parameter_shapes(config)}


# ---- convenience -------------------------------------------------------------------------------------


def oracle_forward(
    config: ModelConfig,
    params: Mapping[str, Any],
    ids: object,
    storage: str = "fp32",
    arithmetic: OrderedArithmetic | None = None,
) -> FloatArray:
    """Logits in the declared order (level O) for parameters stored in ``storage``.

    Examples
    --------
    >>> cfg = ModelConfig(vocab=3, max_len=2, hidden=2, mlp=2, heads=1, qk=1, v=1, layers=0)
    >>> params = {"tok_emb": np.float32([[1, 0], [0, 1], [1, 1]]), "pos_emb": np.zeros((2, 2), np.float32),
    ...           "w_out": np.float32([[1, 2, 3], [4, 5, 6]])}
    >>> oracle_forward(cfg, params, np.array([[0, 2]]))
    array([[[1., 2., 3.],
            [5., 7., 9.]]], dtype=float32)
    """
    with np.errstate(all="ignore"):  # inf and NaN are results here, reported by the checks
        arithmetic = arithmetic or OrderedArithmetic(storage)
        return forward(config, params, ids, arithmetic)  # type: ignore[no-any-return]


def oracle_gradients(
    config: ModelConfig,
    params: Mapping[str, Any],
    ids: object,
    grad_logits: FloatArray,
    storage: str = "fp32",
    arithmetic: OrderedArithmetic | None = None,
) -> dict[str, FloatArray]:
    """Parameter gradients of ``sum(logits * grad_logits)`` in the declared order (level O).

    Pass ``arithmetic`` to read its ``subnormal_results`` afterwards.
    """
    with np.errstate(all="ignore"):
        return backward(config, params, ids, grad_logits, arithmetic or OrderedArithmetic(storage))
