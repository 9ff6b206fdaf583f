"""Properties of the multiplication-free training family (docs/spec.md §7).

Every PA op of :mod:`revcheck.nn.mulfree` -- forward and backward -- equals its
oracle in :mod:`revcheck.oracle.mulfree` bit for bit over fp32, bf16, fp16 and
fp64 and over shapes (level O: the oracle fixes the reduction order; the torch
side is checked on the device under test).  On top:

* a PA softmax row is independent of the other rows of its batch (the public
  code's global-max shift fails this);
* the PA mean is exact exactly when the count is a power of two (level R:
  compared with the correctly rounded quotient of the same sum);
* PA Adam steps equal the oracle's steps bit for bit (level O);
* gradient scaling and clipping really change the gradients (the public
  code's rebinding bug fails this);
* the runtime certificate catches each hidden multiply of a gallery of ops and
  passes a step built only from allowed ops; the PA ops themselves run no
  float multiply, forward or backward.

Each property is a plain ``check_<what>(data, impl)`` with the implementation
injected (``impl`` is a namespace like :mod:`revcheck.nn.mulfree`; for the
certificate checks, a mode class like :class:`revcheck.mulfree.MulFreeMode`);
tests/gallery/mulfree_bugs.py plants one bug per check.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from revcheck import bits, formats
from revcheck import strategies as rst
from revcheck._profiles import scaled
from revcheck.mulfree import FloatMultiplyError, MulFreeMode, MulFreeViolation
from revcheck.nn import mulfree as real
from revcheck.nn.pam import PAMLinear
from revcheck.oracle import mulfree as oracle
from revcheck.testing import assert_bit_exact

FORMATS = oracle.SUPPORTED_FORMATS


class MeanExactnessError(AssertionError):
    """The PA mean was inexact for a power-of-two count, or exact where PA division must err."""


class HiddenMultiplyMissedError(AssertionError):
    """A certificate let a float multiply (hidden in a harmless-looking op) pass."""


class FalseAlarmError(AssertionError):
    """A certificate rejected a step built only from allowed ops."""


# ---- strategies --------------------------------------------------------------------------------------


def moderate_patterns(fmt: formats.FloatFormat, low: int = -6, high: int = 6) -> st.SearchStrategy[int]:
    """Normal values with exponents in [low, high]: the values a training step sees."""
    return st.builds(
        lambda negative, exponent, fraction: (
            (fmt.sign_mask if negative else 0) | (exponent + fmt.bias) << fmt.mantissa_bits | fraction
        ),
        st.booleans(),
        st.integers(low, high),
        st.integers(0, fmt.mantissa_mask),
    )


def pa_arrays(fmt: formats.FloatFormat, shape: tuple[int, ...], kind: str) -> st.SearchStrategy[np.ndarray]:
    """``kind``: "moderate" (normal values near 1), "mixed" (a few special values among them), "any"."""
    if kind == "any":
        return rst.bit_arrays(fmt, shape)
    element = moderate_patterns(fmt)
    if kind == "mixed":
        element = st.one_of(element, element, element, rst.bit_patterns(fmt))
    return hnp.arrays(fmt.uint_dtype, shape, elements=element)


def draw_format(data: st.DataObject) -> formats.FloatFormat:
    return formats.get(data.draw(st.sampled_from(FORMATS), label="format"))


def draw_values(
    data: st.DataObject,
    fmt: formats.FloatFormat,
    shape: tuple[int, ...],
    label: str,
    kinds: tuple[str, ...] = ("moderate", "mixed", "any"),
) -> np.ndarray:
    kind = data.draw(st.sampled_from(kinds), label=f"{label}: value kind")
    return data.draw(pa_arrays(fmt, shape, kind), label=label)


def tensor(bit_array: np.ndarray, fmt: formats.FloatFormat, device: str, grad: bool = False) -> torch.Tensor:
    t = bits.to_torch(bit_array, fmt, device).reshape(np.shape(bit_array))  # to_torch makes 0-d arrays 1-d
    return t.requires_grad_(True) if grad else t


def draw_matrix_shape(data: st.DataObject, max_rows: int = 4, max_cols: int = 9) -> tuple[int, int]:
    return (
        data.draw(st.integers(1, max_rows), label="rows"),
        data.draw(st.integers(1, max_cols), label="cols"),
    )


# ---- every op equals its oracle -------------------------------------------------------------------------


def check_softmax_matches_oracle(data: st.DataObject, impl: Any, device: str = "cpu") -> None:
    fmt = draw_format(data)
    shape = draw_matrix_shape(data)
    dim = data.draw(st.sampled_from([-1, 0]), label="dim")
    log = data.draw(st.booleans(), label="log-softmax")
    x_bits = draw_values(data, fmt, shape, "x")
    g_bits = draw_values(data, fmt, shape, "upstream gradient", ("moderate", "mixed"))
    x = tensor(x_bits, fmt, device, grad=True)
    forward = impl.pa_log_softmax if log else impl.pa_softmax
    oracle_forward = oracle.pa_log_softmax if log else oracle.pa_softmax
    oracle_backward = oracle.pa_log_softmax_backward if log else oracle.pa_softmax_backward
    y = forward(x, dim)
    assert_bit_exact(y, oracle_forward(x_bits, fmt, axis=dim), fmt=fmt, msg=f"{forward.__name__} forward")
    y.backward(tensor(g_bits, fmt, device))
    assert x.grad is not None
    expected = oracle_backward(g_bits, x_bits, fmt, axis=dim)
    assert_bit_exact(x.grad, expected, fmt=fmt, msg=f"{forward.__name__} backward")


def check_cross_entropy_matches_oracle(data: st.DataObject, impl: Any, device: str = "cpu") -> None:
    fmt = draw_format(data)
    rows, classes = draw_matrix_shape(data, max_rows=6)
    reduction = data.draw(st.sampled_from(oracle.REDUCTIONS), label="reduction")
    logits_bits = draw_values(data, fmt, (rows, classes), "logits", ("moderate", "mixed"))
    targets = np.array(
        data.draw(st.lists(st.integers(0, classes - 1), min_size=rows, max_size=rows), label="targets"),
        dtype=np.int64,
    )
    logits = tensor(logits_bits, fmt, device, grad=True)
    loss = impl.pa_cross_entropy(logits, torch.from_numpy(targets).to(device), reduction)
    assert_bit_exact(loss, oracle.pa_cross_entropy(logits_bits, targets, fmt, reduction=reduction), fmt=fmt)
    g_bits = draw_values(data, fmt, tuple(loss.shape), "upstream gradient", ("moderate",))
    loss.backward(tensor(g_bits, fmt, device))
    assert logits.grad is not None
    expected = oracle.pa_cross_entropy_backward(g_bits, logits_bits, targets, fmt, reduction=reduction)
    assert_bit_exact(logits.grad, expected, fmt=fmt, msg=f"pa_cross_entropy backward ({reduction})")


def check_mean_matches_oracle(data: st.DataObject, impl: Any, device: str = "cpu") -> None:
    fmt = draw_format(data)
    shape = draw_matrix_shape(data, max_cols=17)
    dim = data.draw(st.sampled_from([-1, 0]), label="dim")
    x_bits = draw_values(data, fmt, shape, "x")
    x = tensor(x_bits, fmt, device, grad=True)
    y = impl.pa_mean(x, dim)
    assert_bit_exact(y, oracle.pa_mean(x_bits, fmt, axis=dim), fmt=fmt, msg="pa_mean forward")
    g_bits = draw_values(data, fmt, tuple(y.shape), "upstream gradient", ("moderate", "mixed"))
    y.backward(tensor(g_bits, fmt, device))
    assert x.grad is not None
    assert_bit_exact(
        x.grad, oracle.pa_mean_backward(g_bits, x_bits, fmt, axis=dim), fmt=fmt, msg="pa_mean backward"
    )


def check_norms_match_oracle(data: st.DataObject, impl: Any, device: str = "cpu") -> None:
    fmt = draw_format(data)
    rows, n = draw_matrix_shape(data, max_rows=3, max_cols=12)
    rms = data.draw(st.booleans(), label="RMS norm (else layer norm)")
    eps = data.draw(st.sampled_from([1e-5, 1e-6, 0.0, 0.5]), label="eps")
    x_bits = draw_values(data, fmt, (rows, n), "x")
    g_bits = draw_values(data, fmt, (rows, n), "upstream gradient", ("moderate", "mixed"))
    with_weight = data.draw(st.booleans(), label="with weight")
    with_bias = not rms and data.draw(st.booleans(), label="with bias")
    w_bits = draw_values(data, fmt, (n,), "weight", ("moderate", "mixed")) if with_weight else None
    b_bits = draw_values(data, fmt, (n,), "bias", ("moderate", "mixed")) if with_bias else None
    x = tensor(x_bits, fmt, device, grad=True)
    w = None if w_bits is None else tensor(w_bits, fmt, device, grad=True)
    b = None if b_bits is None else tensor(b_bits, fmt, device, grad=True)
    if rms:
        y = impl.pa_rms_norm(x, w, eps)
        expected = oracle.pa_rms_norm(x_bits, w_bits, fmt, eps=eps)
        y.backward(tensor(g_bits, fmt, device))
        grads: tuple[Any, ...] = oracle.pa_rms_norm_backward(g_bits, x_bits, w_bits, fmt, eps=eps)
        actual: tuple[Any, ...] = (x.grad, None if w is None else w.grad)
    else:
        y = impl.pa_layer_norm(x, w, b, eps)
        expected = oracle.pa_layer_norm(x_bits, w_bits, b_bits, fmt, eps=eps)
        y.backward(tensor(g_bits, fmt, device))
        grads = oracle.pa_layer_norm_backward(g_bits, x_bits, w_bits, b_bits, fmt, eps=eps)
        actual = (x.grad, None if w is None else w.grad, None if b is None else b.grad)
    name = "pa_rms_norm" if rms else "pa_layer_norm"
    assert_bit_exact(y, expected, fmt=fmt, msg=f"{name} forward")
    for what, got, want in zip(("d x", "d weight", "d bias"), actual, grads, strict=False):
        assert (got is None) == (want is None), f"{name}: {what} present in one side only"
        if want is not None:
            assert_bit_exact(got, want, fmt=fmt, msg=f"{name} backward: {what}")


def check_scale_and_dropout_match_oracle(data: st.DataObject, impl: Any, device: str = "cpu") -> None:
    fmt = draw_format(data)
    acc = oracle.compute_format(fmt)
    shape = draw_matrix_shape(data)
    x_bits = draw_values(data, fmt, shape, "x")
    g_bits = draw_values(data, fmt, shape, "upstream gradient", ("moderate", "mixed"))
    x = tensor(x_bits, fmt, device, grad=True)
    if data.draw(st.booleans(), label="dropout (else scale)"):
        p = data.draw(st.sampled_from([0.5, 0.1, 0.25, 0.9, 1 / 3]), label="p")
        seed = data.draw(st.integers(0, 2**31 - 1), label="seed")
        y = impl.pa_dropout(x, p, generator=torch.Generator(device).manual_seed(seed))
        draws, _ = real.dropout_keep_mask(
            shape, p, generator=torch.Generator(device).manual_seed(seed), device=device
        )
        draws_np = draws.cpu().numpy()
        assert_bit_exact(y, oracle.pa_dropout(x_bits, draws_np, fmt, p=p), fmt=fmt, msg=f"pa_dropout(p={p})")
        y.backward(tensor(g_bits, fmt, device))
        assert x.grad is not None
        expected = oracle.pa_dropout_backward(g_bits, x_bits, draws_np, fmt, p=p)
        assert_bit_exact(x.grad, expected, fmt=fmt, msg="pa_dropout backward")
        return
    c_bits = data.draw(moderate_patterns(acc, -8, 8), label="scale c (compute-format bits)")
    c = bits.to_torch(np.array(c_bits, dtype=acc.uint_dtype), acc, device).reshape(())
    y = impl.pa_scale(x, c)
    c_array = np.array(c_bits, dtype=acc.uint_dtype)
    assert_bit_exact(y, oracle.pa_scale(x_bits, c_array, fmt), fmt=fmt, msg="pa_scale forward")
    y.backward(tensor(g_bits, fmt, device))
    assert x.grad is not None
    assert_bit_exact(
        x.grad, oracle.pa_scale_backward(g_bits, x_bits, c_array, fmt), fmt=fmt, msg="pa_scale backward"
    )


def check_products_match_oracle(data: st.DataObject, impl: Any, device: str = "cpu") -> None:
    fmt = draw_format(data)
    batch = data.draw(st.integers(1, 2), label="batch")
    m, k, n = (data.draw(st.integers(1, 5), label=name) for name in "MKN")
    a_bits = draw_values(data, fmt, (batch, m, k), "A")
    b_bits = draw_values(data, fmt, (batch, k, n), "B")
    g_bits = draw_values(data, fmt, (batch, m, n), "upstream gradient", ("moderate", "mixed"))
    a, b = tensor(a_bits, fmt, device, grad=True), tensor(b_bits, fmt, device, grad=True)
    y = impl.pa_bmm(a, b)
    assert_bit_exact(y, oracle.pa_bmm(a_bits, b_bits, fmt), fmt=fmt, msg="pa_bmm forward")
    y.backward(tensor(g_bits, fmt, device))
    g_a, g_b = oracle.pa_bmm_backward(g_bits, a_bits, b_bits, fmt)
    assert a.grad is not None and b.grad is not None
    assert_bit_exact(a.grad, g_a, fmt=fmt, msg="pa_bmm dA")
    assert_bit_exact(b.grad, g_b, fmt=fmt, msg="pa_bmm dB")
    # The registered linear layer: the oracle, and PAMLinear itself for the forward and dx, dW.
    x_bits, w_bits = a_bits[0], np.ascontiguousarray(np.swapaxes(b_bits[0], 0, 1))
    bias_bits = draw_values(data, fmt, (n,), "bias", ("moderate",))
    x = tensor(x_bits, fmt, device, grad=True)
    layer = impl.PAMLinearOp(k, n, device=device, dtype=x.dtype)
    reference = PAMLinear(k, n, device=device, dtype=x.dtype)
    with torch.no_grad():
        for module in (layer, reference):
            module.weight.copy_(tensor(w_bits, fmt, device))
            module.bias.copy_(tensor(bias_bits, fmt, device))
    y = layer(x)
    assert_bit_exact(y, oracle.pam_linear(x_bits, w_bits, bias_bits, fmt), fmt=fmt, msg="PAMLinearOp forward")
    x_ref = tensor(x_bits, fmt, device, grad=True)
    y_ref = reference(x_ref)
    assert_bit_exact(y, y_ref, msg="PAMLinearOp vs PAMLinear forward")
    g_bits = g_bits[0]
    y.backward(tensor(g_bits, fmt, device))
    y_ref.backward(tensor(g_bits, fmt, device))
    g_x, g_w, g_bias = oracle.pam_linear_backward(g_bits, x_bits, w_bits, bias_bits, fmt)
    assert_bit_exact(x.grad, g_x, fmt=fmt, msg="PAMLinearOp dx")
    assert_bit_exact(layer.weight.grad, g_w, fmt=fmt, msg="PAMLinearOp dW")
    assert_bit_exact(layer.bias.grad, g_bias, fmt=fmt, msg="PAMLinearOp db (sequential over rows)")
    assert_bit_exact(x.grad, x_ref.grad, msg="PAMLinearOp vs PAMLinear dx")
    assert_bit_exact(layer.weight.grad, reference.weight.grad, msg="PAMLinearOp vs PAMLinear dW")


def check_adam_matches_oracle(data: st.DataObject, impl: Any, device: str = "cpu") -> None:
    fmt = draw_format(data)
    acc = oracle.compute_format(fmt)
    size = data.draw(st.integers(1, 9), label="parameter size")
    lr = data.draw(st.sampled_from([1e-3, 3e-3, 0.1]), label="lr")
    beta1, beta2 = data.draw(st.sampled_from([(0.9, 0.999), (0.8, 0.99), (0.0, 0.5)]), label="betas")
    eps = data.draw(st.sampled_from([1e-8, 1e-6]), label="eps")
    weight_decay = data.draw(st.sampled_from([0.0, 0.01]), label="weight decay")
    steps = data.draw(st.integers(1, 4), label="steps")
    p_bits = draw_values(data, fmt, (size,), "initial parameter", ("moderate", "mixed"))
    param = torch.nn.Parameter(tensor(p_bits, fmt, device))
    optimizer = impl.PAAdam([param], lr=lr, betas=(beta1, beta2), eps=eps, weight_decay=weight_decay)
    m_bits = np.zeros(size, dtype=acc.uint_dtype)
    v_bits = np.zeros(size, dtype=acc.uint_dtype)
    for step in range(1, steps + 1):
        g_bits = draw_values(data, fmt, (size,), f"gradient of step {step}", ("moderate", "mixed"))
        param.grad = tensor(g_bits, fmt, device)
        optimizer.step()
        constants = oracle.adam_constants(
            step, fmt, lr=lr, beta1=beta1, beta2=beta2, eps=eps, weight_decay=weight_decay
        )
        p_bits, m_bits, v_bits = oracle.pa_adam_step(p_bits, g_bits, m_bits, v_bits, fmt, constants=constants)
        assert_bit_exact(param, p_bits, fmt=fmt, msg=f"PAAdam parameter after step {step}")
        assert_bit_exact(optimizer.state[param]["exp_avg"], m_bits, fmt=acc, msg=f"exp_avg after step {step}")
        assert_bit_exact(
            optimizer.state[param]["exp_avg_sq"], v_bits, fmt=acc, msg=f"exp_avg_sq, step {step}"
        )


def check_grad_norm_matches_oracle(data: st.DataObject, impl: Any, device: str = "cpu") -> None:
    """The whole-model sum of squares in the declared strided order, across the lane boundary (1024)."""
    fmt = draw_format(data)
    sizes = data.draw(
        st.lists(st.sampled_from([1, 3, 7, 1023, 1024, 1025, 2049]), min_size=1, max_size=3),
        label="gradient sizes",
    )
    grads = [
        draw_values(data, fmt, (n,), f"gradient {i}", ("moderate", "mixed")) for i, n in enumerate(sizes)
    ]
    params = [torch.nn.Parameter(torch.zeros(n, dtype=bits.torch_dtype(fmt), device=device)) for n in sizes]
    for param, g_bits in zip(params, grads, strict=True):
        param.grad = tensor(g_bits, fmt, device)
    acc = oracle.compute_format(fmt)
    assert_bit_exact(
        impl.pa_grad_sq_norm(params), oracle.pa_sq_norm(grads, fmt), fmt=acc, msg="pa_grad_sq_norm"
    )


# ---- row independence, mean exactness ----------------------------------------------------------------


def check_softmax_rows_independent(data: st.DataObject, impl: Any, device: str = "cpu") -> None:
    """Row i of a batch equals the same row alone, bit for bit, whatever the other rows hold."""
    fmt = draw_format(data)
    rows, n = data.draw(st.integers(2, 4), label="rows"), data.draw(st.integers(1, 8), label="row length")
    x_bits = draw_values(data, fmt, (rows, n), "batch", ("moderate", "mixed"))
    x = tensor(x_bits, fmt, device)
    # One row moved far up: every other row's entries sit far below the batch maximum.
    far = data.draw(st.integers(0, rows - 1), label="far row")
    offset = data.draw(st.sampled_from([8.0, 40.0, 100.0, 300.0]), label="offset of the far row")
    shifted = x.clone()
    shifted[far] = (x[far].to(torch.float64) + offset).to(x.dtype)
    log = data.draw(st.booleans(), label="log-softmax")
    op = impl.pa_log_softmax if log else impl.pa_softmax
    batch = op(shifted, -1)
    for row in range(rows):
        alone = op(shifted[row : row + 1], -1)
        assert_bit_exact(
            batch[row : row + 1], alone, msg=f"{op.__name__}: row {row} depends on the other rows"
        )


def check_mean_exact_iff_power_of_two(data: st.DataObject, impl: Any, device: str = "cpu") -> None:
    """Level R: for n = 2**k the PA mean is the correctly rounded quotient of the sequential sum; else
    the sum 1 (x = [1, 0, ...]) is a witness where the PA quotient 1 ⊘ n differs from 1/n."""
    __tracebackhide__ = True
    fmt = draw_format(data)
    acc = oracle.compute_format(fmt)
    acc_float = acc.numpy_float
    assert acc_float is not None  # the compute formats are fp32 and fp64
    n = data.draw(st.integers(1, 40), label="count")
    x_bits = draw_values(data, fmt, (n,), "x", ("moderate",))
    mean = bits.to_bits(impl.pa_mean(tensor(x_bits, fmt, device), -1))
    total = oracle.sequential_sum(x_bits, fmt).view(acc_float)
    with np.errstate(all="ignore"):
        exact = oracle.narrow(np.asarray(total / acc_float.type(n), dtype=acc_float), fmt)
    power_of_two = n & (n - 1) == 0
    if power_of_two and not np.array_equal(mean, exact):
        raise MeanExactnessError(
            f"n = {n} is a power of two, but the PA mean {mean} is not the exact {exact}"
        )
    if not power_of_two:
        witness = np.zeros(n, dtype=fmt.uint_dtype)
        witness[0] = fmt.one
        got = bits.to_bits(impl.pa_mean(tensor(witness, fmt, device), -1))
        true = oracle.narrow(np.asarray(acc_float.type(1) / acc_float.type(n)), fmt)
        if np.array_equal(got, true):
            raise MeanExactnessError(
                f"n = {n} is not a power of two, yet the mean of [1, 0, ...] is the correctly rounded 1/n: "
                "this is a true division, not the PA mean (sum ⊘ n)"
            )


# ---- gradient scaling -----------------------------------------------------------------------------------


def check_gradient_scaling_scales(data: st.DataObject, impl: Any, device: str = "cpu") -> None:
    """``pa_scale_grads_`` and ``pa_clip_grad_norm_`` change every ``p.grad`` in place, as the oracle says."""
    fmt = draw_format(data)
    acc = oracle.compute_format(fmt)
    sizes = data.draw(st.lists(st.integers(1, 6), min_size=1, max_size=3), label="parameter sizes")
    grads = [draw_values(data, fmt, (n,), f"gradient {i}", ("moderate",)) for i, n in enumerate(sizes)]
    params = [torch.nn.Parameter(torch.zeros(n, dtype=bits.torch_dtype(fmt), device=device)) for n in sizes]
    for param, g_bits in zip(params, grads, strict=True):
        param.grad = tensor(g_bits, fmt, device)
    if data.draw(st.booleans(), label="clip (else scale)"):
        # A bound well below the norm: the coefficient is < 1 and every gradient must shrink.
        max_norm = data.draw(st.sampled_from([1e-3, 0.01, 0.1]), label="max_norm")
        impl.pa_clip_grad_norm_(params, max_norm)
        sq_norm = oracle.pa_sq_norm(grads, fmt)
        coefficient = oracle.pa_clip_coefficient(sq_norm, fmt, max_norm=max_norm)
        what = f"pa_clip_grad_norm_(max_norm={max_norm})"
    else:
        coefficient = np.array(data.draw(moderate_patterns(acc, -4, -1), label="scale"), dtype=acc.uint_dtype)
        impl.pa_scale_grads_(params, bits.to_torch(coefficient, acc, device).reshape(()))
        what = "pa_scale_grads_"
    for i, (param, g_bits) in enumerate(zip(params, grads, strict=True)):
        assert_bit_exact(
            param.grad,
            oracle.pa_scale(g_bits, coefficient, fmt),
            fmt=fmt,
            msg=f"{what}: gradient {i} was not scaled",
        )


# ---- the certificate ---------------------------------------------------------------------------------


def _inputs() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return torch.rand(4, 4, generator=gen) + 0.5, torch.rand(4, 4, generator=gen) + 0.5


def _on(run: Callable[[torch.Tensor, torch.Tensor], Any]) -> Callable[[], Callable[[], Any]]:
    """A factory: the inputs are made OUTSIDE the certified region, ``run`` happens inside."""

    def make() -> Callable[[], Any]:
        a, b = _inputs()
        return lambda: run(a, b)

    return make


def _abs_backward() -> Callable[[], Any]:
    x = _inputs()[0].requires_grad_(True)
    y = torch.abs(x).sum()
    return lambda: torch.autograd.grad(y, x, retain_graph=True)


def _amax_backward() -> Callable[[], Any]:
    x = _inputs()[0].requires_grad_(True)
    y = torch.amax(x, dim=1).sum()
    return lambda: torch.autograd.grad(y, x, retain_graph=True)


def _foreach_optimizer() -> Callable[[], Any]:
    w = torch.nn.Parameter(_inputs()[0])
    w.grad = _inputs()[1]
    optimizer = torch.optim.SGD([w], lr=0.1, momentum=0.9, foreach=True)
    return optimizer.step


def _no_inputs(run: Callable[[], Any]) -> Callable[[], Callable[[], Any]]:
    return lambda: run


#: One factory per hidden multiply of docs/spec.md §7's list: ``make()`` prepares inputs (outside the
#: certified region) and returns the call that multiplies.  Backward-only multiplies run forward outside.
HIDDEN_MULTIPLIES: dict[str, Callable[[], Callable[[], Any]]] = {
    "add with alpha != 1": _on(lambda a, b: torch.add(a, b, alpha=2)),
    "sub with alpha != 1": _on(lambda a, b: torch.sub(a, b, alpha=0.5)),
    "lerp": _on(lambda a, b: torch.lerp(a, b, 0.25)),
    "addcmul": _on(lambda a, b: torch.addcmul(a, a, b)),
    "addcdiv": _on(lambda a, b: torch.addcdiv(a, a, b)),
    "mean": _on(lambda a, b: a.mean()),
    "var": _on(lambda a, b: a.var()),
    "std": _on(lambda a, b: a.std()),
    "vector norm": _on(lambda a, b: torch.linalg.vector_norm(a)),
    "native_dropout": _on(lambda a, b: torch.native_dropout(a, 0.1, True)),
    "functional dropout": _on(lambda a, b: F.dropout(a, 0.1, training=True)),
    "float arange": _no_inputs(lambda: torch.arange(0.0, 1.0, 0.125)),
    "linspace": _no_inputs(lambda: torch.linspace(0.0, 1.0, 5)),
    "softmax": _on(lambda a, b: torch.softmax(a, -1)),
    "log_softmax": _on(lambda a, b: torch.log_softmax(a, -1)),
    "layer_norm": _on(lambda a, b: F.layer_norm(a, (4,))),
    "mm": _on(torch.mm),
    "bmm": _on(lambda a, b: torch.bmm(a[None], b[None])),
    "addmm (nn.Linear)": _on(lambda a, b: F.linear(a, b, b[0])),
    "matmul": _on(lambda a, b: a @ b),
    "exp": _on(lambda a, b: torch.exp(a)),
    "log": _on(lambda a, b: torch.log(a)),
    "pow": _on(lambda a, b: a**2),
    "sqrt": _on(lambda a, b: torch.sqrt(a)),
    "rsqrt": _on(lambda a, b: torch.rsqrt(a)),
    "reciprocal": _on(lambda a, b: torch.reciprocal(a)),
    "sigmoid": _on(lambda a, b: torch.sigmoid(a)),
    "tanh": _on(lambda a, b: torch.tanh(a)),
    "gelu": _on(lambda a, b: F.gelu(a)),
    "erf": _on(lambda a, b: torch.erf(a)),
    "foreach optimizer": _foreach_optimizer,
    "abs backward (multiplies by sgn)": _abs_backward,
    "amax backward (divides among ties)": _amax_backward,
    "mse_loss": _on(F.mse_loss),
    "multiply by a Python float": _on(lambda a, b: a * 0.5),
    "integer tensor times a float": _no_inputs(lambda: torch.arange(4) * 0.5),
}


def check_certificate_catches_hidden_multiplies(mode_class: Any) -> None:
    """Each op of :data:`HIDDEN_MULTIPLIES`, under ``mode_class()`` (strict), raises FloatMultiplyError."""
    __tracebackhide__ = True
    missed = []
    for name, make in HIDDEN_MULTIPLIES.items():
        run = make()
        try:
            with mode_class():
                run()
        except FloatMultiplyError:
            continue
        missed.append(name)
    if missed:
        raise HiddenMultiplyMissedError(f"{len(missed)} hidden float multiplies passed: {', '.join(missed)}")


def pa_step(seed: int = 0, dtype: torch.dtype = torch.float32) -> Callable[[], torch.Tensor]:
    """A small training step built only from allowed ops and registered PA ops (and its state)."""
    generator = torch.Generator().manual_seed(seed)
    embed = torch.nn.Embedding(7, 8, dtype=dtype)
    layer = real.PAMLinearOp(8, 8, dtype=dtype)
    norm = real.PALayerNorm(8, dtype=dtype)
    head = real.PAMLinearOp(8, 7, dtype=dtype)
    params = [*embed.parameters(), *layer.parameters(), *norm.parameters(), *head.parameters()]
    optimizer = real.PAAdam(params, lr=1e-2)
    tokens = torch.randint(0, 7, (2, 4), generator=generator)
    scale = real.attention_scale(8, dtype)

    def step() -> torch.Tensor:
        optimizer.zero_grad()
        h = embed(tokens)
        q = layer(h)
        scores = real.pa_scale(real.pa_bmm(q, h.transpose(1, 2)), scale)
        causal = torch.ones(4, 4, dtype=torch.bool).tril()
        attention = real.pa_softmax(scores.masked_fill(~causal, float("-inf")), -1)
        h = h + real.pa_bmm(attention, h)
        h = torch.relu(norm(h))
        h = real.pa_dropout(h, 0.5, generator=generator)
        loss = real.pa_cross_entropy(head(h).reshape(8, 7), tokens.reshape(8))
        loss.backward()
        real.pa_clip_grad_norm_(params, 1.0)
        optimizer.step()
        return loss.detach()

    return step


def check_certificate_passes_allowed_step(mode_class: Any) -> None:
    """A step built only from allowed ops runs under ``mode_class()`` (strict) without a violation."""
    __tracebackhide__ = True
    step = pa_step()
    try:
        with mode_class():
            step()
    except MulFreeViolation as error:
        raise FalseAlarmError(f"an allowed step was rejected: {error}") from error


def check_pa_ops_are_multiplication_free(data: st.DataObject, impl: Any, device: str = "cpu") -> None:
    """Forward and backward of every PA op, descended into, run no float multiply (strict certificate)."""
    fmt = draw_format(data)
    dtype = bits.torch_dtype(fmt)
    shape = draw_matrix_shape(data, max_rows=3, max_cols=6)
    x_bits = draw_values(data, fmt, shape, "x", ("moderate", "mixed"))
    rows, n = shape
    ones, zeros = torch.ones(n, dtype=dtype, device=device), torch.zeros(n, dtype=dtype, device=device)
    ops: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
        "softmax": lambda x: impl.pa_softmax(x, -1),
        "log_softmax": lambda x: impl.pa_log_softmax(x, -1),
        "layer_norm": lambda x: impl.pa_layer_norm(x, ones, zeros),
        "rms_norm": lambda x: impl.pa_rms_norm(x, ones),
        "mean": lambda x: impl.pa_mean(x, -1),
        "scale": lambda x: impl.pa_scale(x, 0.3),
        "dropout": lambda x: impl.pa_dropout(x, 0.5, generator=torch.Generator(device).manual_seed(0)),
        "bmm": lambda x: impl.pa_bmm(x[None], x.t()[None]),
        "cross_entropy": lambda x: impl.pa_cross_entropy(
            x, torch.zeros(rows, dtype=torch.int64, device=device)
        ),
        "linear": lambda x: impl.pam_linear(x, torch.ones(2, n, dtype=dtype, device=device), None),
    }
    for name, op in ops.items():
        x = tensor(x_bits, fmt, device, grad=True)
        with MulFreeMode():
            y = op(x)
            y.backward(torch.ones_like(y))
        assert x.grad is not None, f"{name}: no gradient reached the input"


def check_step_is_multiplication_free(step: Callable[[], Any]) -> None:
    """``step()`` under a strict :class:`MulFreeMode`: a float multiply raises FloatMultiplyError."""
    with MulFreeMode():
        step()


def check_static_proof_certifies(make_step: Callable[[], Callable[[], Any]]) -> None:
    """The make_fx proof of ``make_step()`` holds: no float multiply in the parameter slice."""
    from revcheck.mulfree import prove_step

    prove_step(make_step()).assert_multiplication_free()


def pa_step_with_logging() -> Callable[[], torch.Tensor]:
    """:func:`pa_step` plus a logged loss in nats: a float multiply outside the parameter slice."""
    step = pa_step()

    def logged() -> torch.Tensor:
        return step() * math.log(2.0)

    return logged


# ---- thin tests -------------------------------------------------------------------------------------------


@scaled(0.3, minimum=3)
@given(data=st.data())
def test_softmax_and_log_softmax_match_oracle(data: st.DataObject, device: str) -> None:
    check_softmax_matches_oracle(data, real, device)


@scaled(0.2, minimum=3)
@given(data=st.data())
def test_cross_entropy_matches_oracle(data: st.DataObject, device: str) -> None:
    check_cross_entropy_matches_oracle(data, real, device)


@scaled(0.2, minimum=3)
@given(data=st.data())
def test_mean_matches_oracle(data: st.DataObject, device: str) -> None:
    check_mean_matches_oracle(data, real, device)


@scaled(0.3, minimum=3)
@given(data=st.data())
def test_layer_and_rms_norm_match_oracle(data: st.DataObject, device: str) -> None:
    check_norms_match_oracle(data, real, device)


@scaled(0.3, minimum=3)
@given(data=st.data())
def test_scale_and_dropout_match_oracle(data: st.DataObject, device: str) -> None:
    check_scale_and_dropout_match_oracle(data, real, device)


@scaled(0.15, minimum=3)
@given(data=st.data())
def test_products_match_oracle_and_pamlinear(data: st.DataObject, device: str) -> None:
    check_products_match_oracle(data, real, device)


@scaled(0.2, minimum=3)
@given(data=st.data())
def test_adam_steps_match_oracle(data: st.DataObject, device: str) -> None:
    check_adam_matches_oracle(data, real, device)


@scaled(0.1, minimum=3)
@given(data=st.data())
def test_grad_norm_matches_oracle_across_lane_boundaries(data: st.DataObject, device: str) -> None:
    check_grad_norm_matches_oracle(data, real, device)


@scaled(0.3, minimum=3)
@given(data=st.data())
def test_softmax_rows_are_independent(data: st.DataObject, device: str) -> None:
    check_softmax_rows_independent(data, real, device)


@scaled(0.3, minimum=3)
@given(data=st.data())
def test_pa_mean_is_exact_iff_the_count_is_a_power_of_two(data: st.DataObject, device: str) -> None:
    check_mean_exact_iff_power_of_two(data, real, device)


@scaled(0.2, minimum=3)
@given(data=st.data())
def test_gradient_scaling_scales(data: st.DataObject, device: str) -> None:
    check_gradient_scaling_scales(data, real, device)


@scaled(0.05, minimum=3)
@given(data=st.data())
def test_pa_ops_run_no_float_multiply(data: st.DataObject, device: str) -> None:
    check_pa_ops_are_multiplication_free(data, real, device)


def test_certificate_catches_every_hidden_multiply() -> None:
    check_certificate_catches_hidden_multiplies(MulFreeMode)


def test_certificate_passes_a_step_of_allowed_ops() -> None:
    check_certificate_passes_allowed_step(MulFreeMode)


def test_pa_step_is_multiplication_free_at_runtime() -> None:
    check_step_is_multiplication_free(pa_step())


def test_static_proof_holds_for_the_pa_step_with_logging() -> None:
    check_static_proof_certifies(pa_step_with_logging)


def test_hidden_multiply_gallery_covers_the_spec_list() -> None:
    # docs/spec.md §7 names these; each must have an entry above.
    spec_list = [
        "alpha",
        "lerp",
        "addcmul",
        "addcdiv",
        "mean",
        "var",
        "std",
        "norm",
        "dropout",
        "arange",
        "linspace",
        "softmax",
        "layer_norm",
        "mm",
        "bmm",
        "addmm",
        "matmul",
        "exp",
        "log",
        "pow",
        "sqrt",
        "rsqrt",
        "reciprocal",
        "sigmoid",
        "tanh",
        "gelu",
        "erf",
        "optimizer",
    ]
    names = " ".join(HIDDEN_MULTIPLIES)
    assert [item for item in spec_list if item not in names] == []
