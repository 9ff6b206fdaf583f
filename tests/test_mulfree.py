"""Unit tests of the multiplication-free family: bad input, examples, special values, the certificate."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from torch.optim import optimizer as optimizer_module

from revcheck import bits
from revcheck.errors import UsageError
from revcheck.mulfree import (
    FloatMultiplyError,
    Kind,
    MulFreeMode,
    NotTraceableError,
    UnknownOpError,
    certify,
    prove_step,
)
from revcheck.mulfree.allowlist import _ADD_SET, _DATA_SET, _MULTIPLY_OPS, known_ops
from revcheck.nn import mulfree as M
from revcheck.oracle import mulfree as oracle
from revcheck.testing import assert_bit_exact

# ---- bad input ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float8_e4m3fn, torch.float8_e5m2])
def test_unsupported_float_dtype_says_which_dtypes_work(dtype: torch.dtype) -> None:
    with pytest.raises(oracle.PAFormatError, match="fp64, fp32, fp16, bf16"):
        M.pa_softmax(torch.zeros(2, 3).to(dtype))


def test_integer_input_is_rejected_with_a_hint() -> None:
    with pytest.raises(oracle.PAFormatError, match="integer dtype holds no PA values"):
        M.pa_layer_norm(torch.zeros(2, 3, dtype=torch.int32))
    with pytest.raises(TypeError, match=r"torch\.Tensor"):
        M.pa_softmax([1.0, 2.0])  # type: ignore[arg-type]


def test_oracle_rejects_floats_where_bit_patterns_are_expected() -> None:
    with pytest.raises(TypeError, match="bit patterns"):
        oracle.pa_softmax(np.array([1.0, 2.0], dtype=np.float32), "fp32")
    with pytest.raises(oracle.PAFormatError, match="not supported"):
        oracle.pa_softmax(np.zeros(2, np.uint8), "fp8_e4m3fn")


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: M.pa_softmax(torch.tensor(1.0)), "0-d"),
        (lambda: M.pa_softmax(torch.zeros(2, 0)), "empty"),
        (lambda: M.pa_softmax(torch.zeros(2, 3), 2), "out of range"),
        (lambda: M.pa_cross_entropy(torch.zeros(2, 3), torch.tensor([0, 3])), r"\[0, 3\)"),
        (lambda: M.pa_cross_entropy(torch.zeros(2, 3), torch.tensor([0, 1], dtype=torch.int32)), "int64"),
        (lambda: M.pa_cross_entropy(torch.zeros(2, 3), torch.tensor([0, 1]), "avg"), "reduction"),
        (lambda: M.pa_cross_entropy(torch.zeros(2, 3, 4), torch.zeros(2, dtype=torch.int64)), "flatten"),
        (lambda: M.pa_bmm(torch.zeros(2, 3, 4), torch.zeros(1, 4, 5)), "batch"),
        (lambda: M.pa_bmm(torch.zeros(3, 4), torch.zeros(4, 5, dtype=torch.float64)), "convert"),
        (lambda: M.pa_layer_norm(torch.zeros(2, 3), torch.ones(4)), r"shape \(3,\)"),
        (lambda: M.pa_dropout(torch.zeros(3), 1.5), r"\[0, 1\]"),
        (lambda: M.pa_scale(torch.zeros(3), torch.ones((), requires_grad=True)), "constant"),
        (lambda: M.pa_scale(torch.zeros(3), torch.ones(2)), "0-d"),
        (lambda: M.PAAdam([torch.nn.Parameter(torch.zeros(2))], betas=(1.0, 0.9)), r"\[0, 1\)"),
        (lambda: M.attention_scale(0), "positive"),
    ],
)
def test_bad_arguments_get_a_clear_usage_error(call, match: str) -> None:
    with pytest.raises(UsageError, match=match):
        call()


# ---- examples and special values --------------------------------------------------------------------------


def test_softmax_special_values() -> None:
    inf = float("inf")
    x = torch.tensor([[0.0, -inf, 1.0], [-inf, -inf, -inf], [0.0, inf, 1.0], [0.0, float("nan"), 1.0]])
    p = M.pa_softmax(x)
    assert p[0, 1].item() == 0.0 and not math.copysign(1.0, p[0, 1].item()) < 0  # -inf takes no weight: +0
    assert torch.isnan(p[1:]).all()  # fully masked, +inf, NaN rows are NaN, as in real numbers
    assert p[0, 0] > 0 and p[0, 2] > p[0, 0]


def test_softmax_shift_is_exact_for_integer_offsets() -> None:
    # The shift is floor(row max): adding an integer to a row (exactly representable) changes nothing.
    x = torch.tensor([[0.25, 1.5, -3.0, 0.75]])
    assert_bit_exact(M.pa_softmax(x), M.pa_softmax(x + 64.0))
    assert_bit_exact(M.pa_log_softmax(x) + 64.0, M.pa_log_softmax(x + 64.0) + 64.0)


def test_pa_softmax_rows_do_not_sum_to_one() -> None:
    # PA division errs in [0, 1/8]: the documented consequence, visible on a tiny example.
    p = M.pa_softmax(torch.tensor([[0.0, 1.0, 2.0]]))
    assert p.sum().item() != 1.0
    assert 1.0 <= p.sum().item() <= 1.125 * 1.0 + 1e-6


def test_attention_scale_is_exact_for_powers_of_four() -> None:
    for head_dim, expected in ((1, 1.0), (4, 0.5), (16, 0.25), (64, 0.125)):
        assert M.attention_scale(head_dim).item() == expected
    assert M.attention_scale(8).item() == 0.375  # PA approximation of 8**-0.5 = 0.3536


def test_dropout_half_is_an_exact_doubling_of_kept_values() -> None:
    x = torch.randn(64, 64, generator=torch.Generator().manual_seed(0))
    y = M.pa_dropout(x, 0.5, generator=torch.Generator().manual_seed(1))
    kept = y != 0
    assert_bit_exact(y[kept], (x * 2)[kept])  # x ⊡ 2 is exact: the same bits as the float product
    assert 0.45 < kept.float().mean().item() < 0.55
    assert M.pa_dropout(x, 0.5, training=False) is x


def test_dropout_threshold_and_scale_are_exact_rationals() -> None:
    assert oracle.dropout_threshold(0.5) == 1 << 23
    assert oracle.dropout_scale(0.5, "fp32") == 0x40000000  # 2.0
    assert oracle.dropout_scale(0.25, "fp32") == oracle.exact_constant(Fraction(4, 3), "fp32")


def test_exact_constant_rounds_once_to_nearest_even() -> None:
    rng = np.random.default_rng(0)
    for value in rng.standard_normal(200) * 10.0 ** rng.integers(-30, 30, 200):
        assert oracle.exact_constant(float(value), "fp32") == int(np.float32(value).view(np.uint32))
        if 2**-14 <= abs(value) <= 65504:  # NumPy's double -> half conversion is correctly rounded in range
            assert oracle.exact_constant(float(value), "fp16") == int(np.float16(value).view(np.uint16))
    assert oracle.exact_constant(-0.0, "fp32") == 0x80000000
    assert oracle.exact_constant(Fraction(1, 3), "bf16") == 0x3EAB
    assert oracle.exact_constant(2.0**-149, "fp32") == 1  # smallest subnormal
    assert oracle.exact_constant(2.0**-150, "fp32") == 0  # the tie rounds to even: zero
    assert oracle.exact_constant(1e39, "fp32") == 0x7F800000


def test_adam_bias_corrections_are_exact_rationals() -> None:
    c = oracle.adam_constants(3, "fp32", lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0)
    exact = 1 - Fraction(0.9) ** 3
    assert c["1-beta1^t"] == oracle.exact_constant(exact, "fp32")
    with pytest.raises(UsageError, match="positive int"):
        oracle.adam_constants(0, "fp32", lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0)


def test_paadam_declares_its_host_constants() -> None:
    w = torch.nn.Parameter(torch.ones(3))
    optimizer = M.PAAdam([w], lr=0.01)
    w.grad = torch.ones(3)
    optimizer.step()
    declared = optimizer.host_constants()
    assert list(declared) == ["fp32 step 1"]
    assert set(declared["fp32 step 1"]) == set(M.ADAM_CONSTANT_NAMES)
    assert declared["fp32 step 1"]["1-beta1^t"] == pytest.approx(0.1)


def test_clip_grad_norm_returns_the_pa_norm_and_scales() -> None:
    w = torch.nn.Parameter(torch.zeros(4))
    w.grad = torch.full((4,), 2.0)  # norm 4, exactly: PA squares and roots of powers of two are exact
    norm = M.pa_clip_grad_norm_([w], 1.0)
    assert norm.item() == 4.0
    assert torch.all(w.grad < 2.0)


# ---- the runtime certificate ---------------------------------------------------------------------------


def test_phases_are_detected_forward_backward_optimizer() -> None:
    w = torch.nn.Parameter(torch.ones(3))
    optimizer = torch.optim.SGD([w], lr=0.1)
    with MulFreeMode(record=True) as mode:
        loss = (w * w).sum()
        loss.backward()
        optimizer.step()
        with mode.phase("monitoring"):
            torch.exp(loss.detach())
    report = mode.report
    assert report.count(op="aten::mul.Tensor", phase="forward") == 1
    assert report.count(op="aten::mul.Tensor", phase="backward") >= 1  # d(w*w) = 2 * w * grad
    assert report.count(op="aten::add_.Tensor", phase="optimizer", kind="multiply") == 1  # alpha = -lr
    assert report.count(op="aten::exp", phase="monitoring") == 1
    assert report.phases()[:3] == ["forward", "backward", "optimizer"]


def test_strict_mode_raises_with_op_dtype_phase_and_user_stack() -> None:
    x = torch.ones(3, dtype=torch.bfloat16)
    with pytest.raises(FloatMultiplyError) as caught, MulFreeMode():
        torch.addcmul(x, x, x)
    record = caught.value.record
    assert record.op == "aten::addcmul" and record.phase == "forward" and record.dtypes == {"bfloat16"}
    assert any("test_mulfree.py" in line for line in record.stack), record.stack
    assert "multiplies" in str(caught.value)


def test_unknown_ops_are_reported_never_passed() -> None:
    x = torch.ones(4)
    with pytest.raises(UnknownOpError, match="histc"), MulFreeMode():
        torch.histc(x, bins=4)
    with MulFreeMode(record=True) as mode:
        torch.histc(x, bins=4)
    assert mode.report.count(kind=Kind.UNKNOWN) == 1


def test_declared_ops_and_integer_arithmetic_are_allowed() -> None:
    ints = torch.arange(6)
    with MulFreeMode(declared={"aten::histc": "certified elsewhere"}) as mode:
        torch.histc(torch.ones(4), bins=4)
        _ = ints * 3 // 2 + (ints << 1)
        _ = torch.ones(3) + torch.ones(3)  # float addition, alpha = 1
    assert mode.report.count(kind=Kind.INTEGER) >= 3
    assert mode.report.count(kind=Kind.ADD) == 1


def test_descend_checks_inside_pa_ops() -> None:
    x = torch.randn(2, 5)
    with MulFreeMode(record=True) as deep:
        M.pa_softmax(x)
    with MulFreeMode(record=True, descend=False) as shallow:
        M.pa_softmax(x)
    assert shallow.report.count() == 1 and shallow.report.count(kind=Kind.PA) == 1
    assert deep.report.count() > 50 and deep.report.count(kind=Kind.MULTIPLY) == 0


def test_report_counts_host_escapes_and_prints_a_table() -> None:
    with MulFreeMode(record=True) as mode:
        value = torch.ones(2).sum().item()
        torch.ones(2) * value
    assert mode.report.escapes == 1
    table = mode.report.table()
    assert "forward" in table and "mul.Tensor x1" in table
    assert "NOT multiplication-free" in mode.report.certificate()


def test_optimizer_hooks_are_removed_on_exit_even_after_an_error() -> None:
    before = len(optimizer_module._global_optimizer_pre_hooks)
    with pytest.raises(FloatMultiplyError), MulFreeMode():
        torch.ones(2) * 2.0
    assert len(optimizer_module._global_optimizer_pre_hooks) == before


def test_certify_returns_the_report() -> None:
    x = torch.randn(2, 3)
    report = certify(lambda: M.pa_softmax(x))
    assert report.count(kind=Kind.MULTIPLY) == 0 and report.count(kind=Kind.PA) == 1


def test_allowlist_sets_are_disjoint() -> None:
    assert (
        not (_DATA_SET & _ADD_SET)
        and not (_DATA_SET & set(_MULTIPLY_OPS))
        and not (_ADD_SET & set(_MULTIPLY_OPS))
    )
    assert known_ops()["mean"] == "multiply"


# ---- the static proof ------------------------------------------------------------------------------------


def test_static_proof_separates_monitoring_from_the_parameter_slice() -> None:
    w = torch.nn.Parameter(torch.ones(4))
    optimizer = M.PAAdam([w], lr=0.1)

    def step(x: torch.Tensor) -> torch.Tensor:
        optimizer.zero_grad()
        loss = M.pa_mean(M.pa_scale(w + x, 0.5), -1)
        loss.backward()
        optimizer.step()
        return torch.exp(loss.detach()) * 2.0  # logged only

    proof = prove_step(step, torch.ones(4))
    proof.assert_multiplication_free()
    assert proof.multiplication_free
    assert sorted(proof.monitoring_ops(kind="multiply")) == ["aten::exp", "aten::mul.Tensor"]
    assert any("parameter" in entry for entry in proof.updated)
    assert "revcheck::pa_adam_step" in proof.slice_ops()
    assert "violations in the slice: none" in proof.summary()


def test_static_proof_refuses_a_step_that_reads_values_on_the_host() -> None:
    w = torch.nn.Parameter(torch.ones(3))
    optimizer = torch.optim.Adam([w])  # its step counter is read with .item()

    def step() -> None:
        optimizer.zero_grad()
        (w + 1).sum().backward()
        optimizer.step()

    step()
    with pytest.raises(NotTraceableError, match="MulFreeMode"):
        prove_step(step)


def test_static_proof_needs_a_step_that_updates_something() -> None:
    proof = prove_step(lambda x: x + 1, torch.ones(2))
    assert not proof.multiplication_free
    with pytest.raises(UsageError, match="updates no persistent tensor"):
        proof.assert_multiplication_free()


def test_bits_of_pa_ops_do_not_depend_on_the_certificate() -> None:
    x = torch.randn(3, 6, generator=torch.Generator().manual_seed(2))
    plain = M.pa_layer_norm(x, torch.ones(6), torch.zeros(6))
    with MulFreeMode():
        certified = M.pa_layer_norm(x, torch.ones(6), torch.zeros(6))
    assert_bit_exact(certified, plain)
    assert bits.to_bits(plain).dtype == np.uint32
