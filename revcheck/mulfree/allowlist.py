"""Which aten ops multiply: the allowlist of the multiplication-free certificate (docs/spec.md §7).

:func:`classify` gives one :class:`Verdict` per op call, from the op, its
arguments and its tensors' dtypes:

``data``
    moves, views, creates, selects, compares or re-signs values; no arithmetic
    (``view``, ``cat``, ``where``, ``amax``, ``floor``, ``neg``, ``_to_copy`` ...).
``add``
    floating-point addition, subtraction or summation with no hidden factor
    (``add``/``sub`` with ``alpha=1``, ``sum``, ``cumsum``, ``scatter_add`` ...).
    PyTorch's CPU ``add`` kernel executes a fused multiply-add whose multiplier
    is exactly 1 -- an exact operation; the certificate is semantic, at the
    level of aten ops, and says so rather than claim instruction-level freedom.
``integer``
    a known arithmetic op whose tensors are all integer or bool (an integer
    multiply is not a float multiply).
``pa``
    a registered piecewise-affine op of :mod:`revcheck.nn.mulfree`
    (``revcheck::pa_softmax`` ...), or an op the caller declared certified.
``multiply``
    a floating-point multiply, divide or transcendental, including those
    hidden in ops whose names look harmless (``add`` with ``alpha != 1``,
    ``lerp``, ``addcmul``, ``mean``, ``var``, norms, ``native_dropout``, float
    ``arange``/``linspace``, ``_softmax``, ``native_layer_norm``, ``mm``/``bmm``,
    ``exp``/``sqrt``/``pow``, ``sigmoid``/``gelu``, fused optimizers ...).
``unknown``
    not in the table: reported as an unknown op, never passed silently.

An op with a floating-point (or complex) tensor among its inputs or outputs
is a float op; an op listed as multiplying but with only integer tensors is
``integer``.  This module imports torch lazily (only to read tensor dtypes).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

__all__ = ["ALLOWED_KINDS", "Kind", "Verdict", "classify", "known_ops", "op_name"]


class Kind(StrEnum):
    """What an op call does arithmetically (see the module docstring)."""

    DATA = "data"
    ADD = "add"
    INTEGER = "integer"
    PA = "pa"
    MULTIPLY = "multiply"
    UNKNOWN = "unknown"

    def __str__(self) -> str:
        return self.value


ALLOWED_KINDS = frozenset({Kind.DATA, Kind.ADD, Kind.INTEGER, Kind.PA})


@dataclass(frozen=True)
class Verdict:
    """The classification of one op call: its kind and why."""

    kind: Kind
    reason: str
    escape: bool = False  # the value leaves for the host (.item()): Python arithmetic on it is unseen

    @property
    def allowed(self) -> bool:
        return self.kind in ALLOWED_KINDS


# ---- the table --------------------------------------------------------------------------------------------

_DATA_OPS = """
view _unsafe_view view_as reshape _reshape_alias _reshape_copy expand expand_as permute transpose t
unsqueeze squeeze flatten unflatten movedim moveaxis select slice narrow narrow_copy split split_with_sizes
unbind chunk tensor_split diagonal as_strided alias detach clone contiguous copy _copy_from
_copy_from_and_resize _to_copy to lift lift_fresh lift_fresh_copy empty empty_like empty_strided
empty_permuted new_empty new_empty_strided zeros zeros_like new_zeros ones ones_like new_ones full
full_like new_full scalar_tensor fill zero resize resize_as set cat stack hstack vstack index
_unsafe_index index_select gather take masked_select masked_fill masked_scatter where index_copy
index_fill embedding flip roll repeat tile tril triu eye select_scatter slice_scatter diagonal_scatter
as_strided_scatter constant_pad_nd neg negative abs absolute sign signbit floor ceil trunc fix clamp
clamp_min clamp_max clip relu hardtanh threshold threshold_backward max min amax amin aminmax maximum
minimum fmax fmin argmax argmin sort argsort topk msort cummax cummin eq ne lt le gt ge equal isnan
isinf isfinite isposinf isneginf logical_and logical_or logical_not logical_xor bitwise_and bitwise_or
bitwise_xor bitwise_not bitwise_left_shift bitwise_right_shift __and__ __or__ __xor__ __lshift__
__rshift__ __iand__ __ior__ __ixor__ __ilshift__ __irshift__ nonzero any all count_nonzero unique
_unique2 unique_consecutive unique_dim bincount randint random randperm item sym_size sym_stride
sym_numel sym_storage_offset _assert_async _assert_scalar _assert_tensor_metadata
sym_constrain_range sym_constrain_range_for_size nan_to_num copysign heaviside searchsorted bucketize
_pin_memory is_pinned alias_copy view_copy t_copy transpose_copy permute_copy expand_copy
unsqueeze_copy squeeze_copy select_copy slice_copy split_copy unbind_copy _neg_view conj _conj
resolve_conj resolve_neg _conj_physical conj_physical tril_indices triu_indices max_pool2d_with_indices
_foreach_copy _foreach_zero _foreach_neg _foreach_abs _foreach_maximum _foreach_minimum
_foreach_clamp_min _foreach_clamp_max _efficientzerotensor _has_compatible_shallow_copy_type
record_stream is_nonzero sgn slice_backward select_backward diagonal_backward
""".split()  # noqa: SIM905 (a word list reads best as text)

# Float summation ops; ``alpha`` (if any) is checked separately.
_ADD_OPS = [
    "add",
    "sub",
    "rsub",
    "sum",
    "nansum",
    "cumsum",
    "frac",
    "scatter_add",
    "trace",
    "_foreach_add",
    "_foreach_sub",
]

_MULTIPLY_OPS: dict[str, str] = {}


def _multiplying(reason: str, names: str) -> None:
    for name in names.split():
        _MULTIPLY_OPS[name] = reason


_multiplying(
    "multiplies floats",
    "mul multiply _foreach_mul addcmul _foreach_addcmul prod cumprod outer ger kron cross square"
    " hardswish leaky_relu rrelu prelu _prelu_kernel elu selu celu mish hardsigmoid softshrink_backward"
    " hardswish_backward leaky_relu_backward elu_backward hardsigmoid_backward",
)
_multiplying("interpolates: a + w·(b − a) multiplies", "lerp _foreach_lerp")
_multiplying(
    "a matrix product multiplies floats",
    "mm bmm addmm addmv addbmm baddbmm mv dot vdot matmul linear einsum tensordot _addmm_activation"
    " convolution _convolution conv1d conv2d conv3d convolution_backward mkldnn_convolution"
    " _mkldnn_linear mkldnn_linear _int_mm _weight_int8pack_mm",
)
_multiplying(
    "attention multiplies (QKᵀ, the scaling, the softmax, the product with V)",
    "scaled_dot_product_attention _scaled_dot_product_attention_math _scaled_dot_product_flash_attention"
    " _scaled_dot_product_efficient_attention _scaled_dot_product_cudnn_attention"
    " _scaled_dot_product_flash_attention_for_cpu _scaled_dot_product_flash_attention_for_cpu_backward"
    " _scaled_dot_product_flash_attention_backward _scaled_dot_product_efficient_attention_backward"
    " _fused_sdp_choice",
)
_multiplying(
    "divides floats",
    "div divide true_divide floor_divide remainder fmod reciprocal _foreach_div _foreach_reciprocal addcdiv"
    " _foreach_addcdiv",
)
_multiplying("a mean divides the sum by the count", "mean nanmean")
_multiplying("variance / deviation: squares and a division", "var std var_mean std_mean")
_multiplying(
    "a norm squares, takes a root or divides",
    "norm linalg_vector_norm linalg_norm frobenius_norm nuclear_norm renorm _weight_norm"
    " _weight_norm_interface dist cdist _cdist_forward _cdist_backward cosine_similarity pairwise_distance"
    " _euclidean_dist _foreach_norm normalize",
)
_multiplying(
    "a normalisation layer divides by a root of the variance and scales",
    "native_layer_norm native_layer_norm_backward layer_norm rms_norm _fused_rms_norm"
    " _fused_rms_norm_backward native_batch_norm native_batch_norm_backward _native_batch_norm_legit"
    " _native_batch_norm_legit_no_training batch_norm _batch_norm_impl_index native_group_norm"
    " native_group_norm_backward group_norm instance_norm",
)
_multiplying(
    "softmax: exponentials and a division",
    "softmax _softmax log_softmax _log_softmax _softmax_backward_data _log_softmax_backward_data logsumexp"
    " _safe_softmax",
)
_multiplying(
    "a loss with logs, squares, weights or a mean",
    "nll_loss nll_loss_forward nll_loss_backward nll_loss2d_forward nll_loss2d_backward cross_entropy_loss"
    " binary_cross_entropy binary_cross_entropy_backward binary_cross_entropy_with_logits kl_div mse_loss"
    " mse_loss_backward l1_loss smooth_l1_loss smooth_l1_loss_backward huber_loss huber_loss_backward"
    " ctc_loss _ctc_loss soft_margin_loss multi_margin_loss",
)
_multiplying(
    "dropout scales kept values by 1/(1-p) (and draws uniform floats)",
    "native_dropout native_dropout_backward dropout feature_dropout alpha_dropout feature_alpha_dropout",
)
_multiplying(
    "a float random draw scales random bits (and transforms them)",
    "bernoulli uniform normal rand rand_like randn randn_like exponential geometric cauchy log_normal"
    " multinomial poisson _standard_gamma",
)
_multiplying(
    "an exponential, logarithm, root, power or trigonometric function",
    "exp exp2 expm1 log log2 log10 log1p sqrt rsqrt pow float_power _foreach_pow _foreach_sqrt _foreach_exp"
    " _foreach_log _foreach_rsqrt sin cos tan asin acos atan atan2 arctan2 sinh cosh tanh asinh acosh atanh"
    " sigmoid logit gelu gelu_backward silu silu_backward erf erfc erfinv lgamma digamma polygamma"
    " mvlgamma i0 sinc xlogy logaddexp logaddexp2 sigmoid_backward tanh_backward logit_backward softplus"
    " softplus_backward log_sigmoid_forward log_sigmoid_backward hypot ldexp angle polar special_erf"
    " special_expit special_xlog1py special_entr special_logit special_ndtr special_ndtri special_i0e"
    " special_i1 special_i1e",
)
_multiplying(
    "a fused optimizer multiplies (β, step size, bias correction, square root)",
    "_fused_adam _fused_adamw _fused_sgd _fused_adagrad _foreach_addcmul_scalar",
)
_multiplying("isclose/allclose multiply the tolerance by |b|", "isclose allclose")


def _alpha_rule(bound: Mapping[str, Any]) -> tuple[bool, str]:
    alpha = bound.get("alpha", 1)
    if alpha is None or alpha == 1:
        return True, ""
    return False, f"alpha={alpha!r} multiplies the other operand by alpha"


def _float_range_rule(bound: Mapping[str, Any]) -> tuple[bool, str]:
    return False, "a float arange/linspace computes start + i·step (a multiply per element)"


def _round_rule(bound: Mapping[str, Any]) -> tuple[bool, str]:
    decimals = bound.get("decimals", 0)
    return (True, "") if not decimals else (False, f"round(decimals={decimals}) scales by 10**decimals")


def _embedding_backward_rule(bound: Mapping[str, Any]) -> tuple[bool, str]:
    if bound.get("scale_grad_by_freq"):
        return False, "scale_grad_by_freq divides each row by its count"
    return True, ""


def _scatter_rule(bound: Mapping[str, Any]) -> tuple[bool, str]:
    reduce = bound.get("reduce")
    if reduce in (None, "sum", "add", "amax", "amin"):
        return True, ""
    return False, f"scatter with reduce={reduce!r} multiplies or divides"


# Ops whose verdict depends on an argument: name -> (kind when the rule passes, rule).
_ARGUMENT_RULES: dict[str, tuple[Kind, Callable[[Mapping[str, Any]], tuple[bool, str]]]] = {
    "add": (Kind.ADD, _alpha_rule),
    "sub": (Kind.ADD, _alpha_rule),
    "rsub": (Kind.ADD, _alpha_rule),
    "_foreach_add": (Kind.ADD, _alpha_rule),
    "_foreach_sub": (Kind.ADD, _alpha_rule),
    "index_add": (Kind.ADD, _alpha_rule),
    "arange": (Kind.DATA, _float_range_rule),
    "linspace": (Kind.DATA, _float_range_rule),
    "logspace": (Kind.DATA, _float_range_rule),
    "range": (Kind.DATA, _float_range_rule),
    "round": (Kind.DATA, _round_rule),
    "embedding_dense_backward": (Kind.ADD, _embedding_backward_rule),
    "embedding_backward": (Kind.ADD, _embedding_backward_rule),
    "scatter": (Kind.DATA, _scatter_rule),
    "scatter_reduce": (Kind.ADD, _scatter_rule),
    "index_reduce": (Kind.ADD, _scatter_rule),
    "index_put": (Kind.ADD, lambda bound: (True, "")),
    "_index_put_impl": (Kind.ADD, lambda bound: (True, "")),
    "_unsafe_index_put": (Kind.ADD, lambda bound: (True, "")),
}


def known_ops() -> dict[str, str]:
    """Every aten base name the table knows, with its kind (for documentation and tests)."""
    table = {name: Kind.DATA.value for name in _DATA_OPS}
    table.update({name: Kind.ADD.value for name in _ADD_OPS})
    table.update({name: Kind.MULTIPLY.value for name in _MULTIPLY_OPS})
    table.update({name: f"{kind.value} (argument-dependent)" for name, (kind, _) in _ARGUMENT_RULES.items()})
    return table


_DATA_SET = frozenset(_DATA_OPS)
_ADD_SET = frozenset(_ADD_OPS)


# ---- classification -------------------------------------------------------------------------------------


# Caches keyed by id(): OpOverload.__hash__ is Python code, too slow for a per-op hot path.  The value
# keeps the op alive, so an id is never reused for another op.
_OP_NAMES: dict[int, tuple[Any, str]] = {}


def op_name(func: Any) -> str:
    """``"aten::add.Tensor"``: the qualified name and overload of an ``OpOverload``."""
    cached = _OP_NAMES.get(id(func))
    if cached is None:
        schema = func._schema
        overload = func._overloadname
        name = f"{schema.name}.{overload}" if overload and overload != "default" else schema.name
        cached = _OP_NAMES[id(func)] = (func, name)
    return cached[1]


def _base_name(func: Any) -> tuple[str, str]:
    namespace, _, name = func._schema.name.partition("::")
    # In-place variants ("add_", "_foreach_mul_") share the functional op's verdict; dunders do not.
    if name.endswith("_") and not name.endswith("__"):
        name = name[:-1]
    return namespace, name


def bind(func: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The call's arguments by schema name, defaults filled in."""
    bound: dict[str, Any] = {}
    for index, argument in enumerate(func._schema.arguments):
        if index < len(args) and not argument.kwarg_only:
            bound[argument.name] = args[index]
        elif argument.name in kwargs:
            bound[argument.name] = kwargs[argument.name]
        elif argument.has_default_value():
            bound[argument.name] = argument.default_value
    return bound


def _tensors(values: Any) -> list[Any]:
    import torch
    from torch.utils._pytree import tree_leaves

    return [leaf for leaf in tree_leaves(values) if isinstance(leaf, torch.Tensor)]


def tensor_dtypes(*values: Any) -> tuple[str, ...]:
    """Sorted names of the dtypes of every tensor in ``values`` (nested)."""
    return tuple(sorted({str(t.dtype).removeprefix("torch.") for t in _tensors(values)}))


def _is_float(values: Any) -> bool:
    """Whether a floating-point or complex tensor occurs in ``values`` (tuples, lists and dicts, nested)."""
    import torch

    if isinstance(values, torch.Tensor):
        return values.is_floating_point() or values.is_complex()
    if isinstance(values, (tuple, list)):
        return any(_is_float(value) for value in values)
    if isinstance(values, dict):
        return any(_is_float(value) for value in values.values())
    return False


_STATIC: dict[int, tuple[str, Any, Any]] = {}


def _static_category(func: Any) -> tuple[str, Any]:
    """What the op's name alone says (cached per op): a category and its payload."""
    cached = _STATIC.get(id(func))
    if cached is not None:
        return cached[0], cached[1]
    namespace, name = _base_name(func)
    category: tuple[str, Any]
    if namespace == "revcheck":
        category = ("revcheck", None)
    elif namespace == "profiler":
        category = ("verdict", Verdict(Kind.DATA, "profiler marker, no arithmetic"))
    elif namespace != "aten":
        reason = f"op of namespace {namespace!r}: the allowlist knows only aten and revcheck ops"
        category = ("verdict", Verdict(Kind.UNKNOWN, reason))
    elif name == "_local_scalar_dense":
        reason = "a value leaves for the host (.item()): Python arithmetic on it is not seen"
        category = ("verdict", Verdict(Kind.DATA, reason, escape=True))
    elif name in _ARGUMENT_RULES:
        category = ("rule", _ARGUMENT_RULES[name])
    elif name in _DATA_SET:
        category = ("verdict", Verdict(Kind.DATA, "no arithmetic"))
    elif name in _ADD_SET:
        category = ("arithmetic", Verdict(Kind.ADD, "float addition"))
    elif name in _MULTIPLY_OPS:
        category = ("arithmetic", Verdict(Kind.MULTIPLY, _MULTIPLY_OPS[name]))
    else:
        category = (
            "verdict",
            Verdict(Kind.UNKNOWN, "not in the allowlist: whether it multiplies is not known"),
        )
    _STATIC[id(func)] = (*category, func)
    return category


_INTEGER = Verdict(Kind.INTEGER, "integer arithmetic")
_NO_FACTOR = "no hidden factor"


def classify(
    func: Any,
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any],
    outputs: Any = None,
    *,
    pa_ops: Mapping[str, Any] | None = None,
    declared: Mapping[str, str] | None = None,
) -> Verdict:
    """The :class:`Verdict` of one call of ``func`` (an ``OpOverload``) with these arguments and outputs.

    ``pa_ops``: registered PA op names (default :data:`revcheck.nn.mulfree.PA_OPS`);
    ``declared``: extra op names (``"ns::op"``) the caller certified, with why.
    """
    category, payload = _static_category(func)
    if declared:
        qualified = func._schema.name
        if qualified in declared:
            return Verdict(Kind.PA, f"declared by the caller: {declared[qualified]}")
    if category == "verdict":
        return payload  # type: ignore[no-any-return]
    if category == "revcheck":
        qualified = func._schema.name
        if pa_ops is None:
            from revcheck.nn.mulfree import PA_OPS

            pa_ops = PA_OPS
        if qualified in pa_ops:
            return Verdict(Kind.PA, "a registered piecewise-affine op (revcheck.nn.mulfree)")
        return Verdict(Kind.UNKNOWN, "a revcheck op that is not a registered PA op")
    floating = _is_float(args) or _is_float(kwargs) or _is_float(outputs)
    if not floating:
        return _INTEGER
    if category == "arithmetic":
        return payload  # type: ignore[no-any-return]
    kind, rule = payload
    ok, why = rule(bind(func, args, kwargs))
    return Verdict(kind, _NO_FACTOR) if ok else Verdict(Kind.MULTIPLY, why)
