"""Transformer-XL (revcheck.nn.memxl, .oracle.memxl, revcheck.memxl): bad input, examples, edge cases."""

from __future__ import annotations

import copy
import re

import mpmath
import numpy as np
import pytest
import torch

from revcheck import memxl as checks
from revcheck.errors import UsageError
from revcheck.nn.memxl import (
    MemoryMismatchError,
    MemTransformerXL,
    MemXLConfigError,
    TwoPhaseTrainer,
    segments,
    skip_probabilities,
)
from revcheck.oracle import memxl as oracle
from revcheck.oracle import ordered
from revcheck.testing import assert_bit_exact
from tests.gallery.memxl_bugs import ZeroInitMemory


def model(**overrides: object) -> MemTransformerXL:
    torch.manual_seed(0)
    kwargs: dict[str, object] = dict(n_token=12, n_layer=2, n_head=2, d_model=8, mem_len=3)
    kwargs.update(overrides)
    return MemTransformerXL(**kwargs)  # type: ignore[arg-type]


TOKENS = torch.randint(0, 12, (2, 12), generator=torch.Generator().manual_seed(1))


# ----------------------------------------------------------------------------- bad configurations


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"mem_len": -1}, "mem_len=-1"),
        ({"ext_len": -2}, "ext_len=-2"),
        ({"same_length": True, "mem_len": 0}, "masks every key"),
        ({"clamp_len": 0}, "clamp_len=0"),
        ({"clamp_len": -1}, "means None"),
        ({"d_model": 7, "n_head": 1}, "odd"),
        ({"d_model": 8, "n_head": 3}, "not a multiple"),
        ({"max_segment_length": 2, "ext_len": 2}, "max_segment_length=2"),
        ({"ch_prob": 1.5}, "ch_prob=1.5"),
    ],
)
def test_bad_configuration_is_refused(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(MemXLConfigError, match=message):
        model(**overrides)


def test_config_errors_are_usage_errors() -> None:
    assert issubclass(MemXLConfigError, UsageError) and issubclass(MemoryMismatchError, UsageError)


def test_segment_longer_than_allowed_is_refused() -> None:
    m = model(max_segment_length=4)
    m(TOKENS[:, :4])
    with pytest.raises(
        MemXLConfigError, match=r"longer than this model's max_segment_length=4.*segments\(tokens, 4\)"
    ):
        m(TOKENS[:, :5])


def test_segment_not_longer_than_ext_len_is_refused() -> None:
    with pytest.raises(MemXLConfigError, match="not longer than ext_len=2"):
        model(ext_len=2)(TOKENS[:, :2])


@pytest.mark.parametrize(
    "tokens", [torch.zeros(2, 3), torch.zeros(3, dtype=torch.long), torch.full((1, 3), 12), "abc"]
)
def test_bad_tokens_are_refused(tokens: object) -> None:
    with pytest.raises(MemXLConfigError):
        model()(tokens)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- bad memories


def test_memories_from_another_model_are_refused() -> None:
    a, b = model(), model()
    _, mems = a(TOKENS[:, :4])
    with pytest.raises(MemoryMismatchError, match="made by another model"):
        b(TOKENS[:, 4:8], mems)
    twin = copy.deepcopy(a)  # a copy is the same model: it accepts the original's memories
    twin(TOKENS[:, 4:8], mems)


def test_memories_of_another_batch_dtype_or_kind_are_refused() -> None:
    m = model()
    _, mems = m(TOKENS[:, :4])
    with pytest.raises(MemoryMismatchError, match="for a batch of 1"):
        m(TOKENS[:1, 4:8], mems)
    with pytest.raises(MemoryMismatchError, match="pass the Memory"):
        m(TOKENS[:, 4:8], [layer.hidden for layer in mems.layers])  # type: ignore[arg-type]
    m.double()
    with pytest.raises(
        MemoryMismatchError, match=re.escape("torch.float32 on cpu; the model is torch.float64")
    ):
        m(TOKENS[:, 4:8], mems)


def test_memory_with_too_many_rows_is_refused() -> None:
    m = model()
    _, mems = m(TOKENS[:, :4])
    layer = mems.layers[0]
    longer = type(layer)(torch.cat([layer.hidden, layer.hidden], 1), 0, layer.end, layer.block)
    bad = type(mems)((longer, *mems.layers[1:]), mems.position, mems.block, mems.owner)
    with pytest.raises(MemoryMismatchError, match="more than mem_len=3"):
        m(TOKENS[:, 4:8], bad)


def test_oracle_refuses_bad_memory_and_weights() -> None:
    weights, config = model().to_oracle()
    tokens = TOKENS.numpy()
    with pytest.raises(oracle.MemoryMismatchError):
        oracle.ORACLE.segment(weights, config, tokens, memory=[np.zeros((2, 1, 8), np.float32)])  # type: ignore[arg-type]
    wrong = oracle.Weights(
        weights.embedding.astype(np.float64), weights.r_w_bias, weights.r_r_bias, weights.layers
    )
    with pytest.raises(oracle.MemXLConfigError, match="expected float64"):
        oracle.ORACLE.segment(wrong, config, tokens)
    with pytest.raises(oracle.MemXLConfigError, match="ext_len=0"):
        oracle.ORACLE.recurrence(weights, oracle.MemXLConfig(2, 2, 8, 4, 32, 3, ext_len=1), tokens, 4)


# ----------------------------------------------------------------------------- the model


def test_memories_are_detached_layer_inputs_and_start_empty() -> None:
    m = model(mem_len=5)
    result = m(TOKENS[:, :4])
    assert all(
        layer.hidden.shape == (2, 4, 8) and not layer.hidden.requires_grad for layer in result.mems.layers
    )
    assert torch.equal(result.mems.layers[1].hidden, result.layer_inputs[1].detach())
    result = m(TOKENS[:, 4:8], result.mems)
    assert [layer.hidden.shape[1] for layer in result.mems.layers] == [5, 5]
    assert (result.mems.position, result.mems.block) == (8, 2)


def test_ext_len_leaves_the_last_rows_out_of_the_memory() -> None:
    m = model(mem_len=10, ext_len=2).eval()
    result = m(TOKENS[:, :5])
    assert torch.equal(result.mems.layers[0].hidden, result.layer_inputs[0][:, :3].detach())
    # kimiyoung's swapped call keeps all 5 rows on the first segment (mlen = 0 < ext_len)
    assert checks.assert_memory_update(m, segments(TOKENS, 5)[:2]) == 4


def test_skip_probabilities_follow_the_paper() -> None:
    assert skip_probabilities(1) == (0.0,)
    assert skip_probabilities(4) == (0.125, 0.25, 0.375, 0.0)


def test_skip_retain_and_cross_head_are_reproducible_under_manual_seed() -> None:
    def run() -> list[tuple[bool, tuple[int, ...] | None]]:
        m = model(n_layer=4, skip_retain=True, ch_prob=0.5).train()
        mems, seen = None, []
        for piece in segments(TOKENS, 3):
            result = m(piece, mems, return_trace=True)
            mems = result.mems
            seen += [(t.skipped, t.head_permutation) for t in result.trace]
        return seen

    first, second = run(), run()
    assert first == second
    assert any(skipped for skipped, _ in first) and any(p is not None for _, p in first)
    assert not torch.distributed.is_available() or not torch.distributed.is_initialized()


def test_eval_never_skips_or_permutes() -> None:
    m = model(n_layer=4, skip_retain=True, ch_prob=1.0).eval()
    result = m(TOKENS[:, :4], return_trace=True)
    assert result.trace is not None
    assert not any(t.skipped or t.head_permutation for t in result.trace)


def test_two_phase_trainer_switches_off_the_regularisers() -> None:
    m = model(n_layer=3)
    trainer = TwoPhaseTrainer(m, torch.optim.SGD(m.parameters(), lr=0.1), phase1_steps=2, ch_prob=0.3)
    assert trainer.phase == 1 and m.skip_retain and m.ch_prob == 0.3
    for piece in segments(TOKENS, 4)[:2]:
        trainer.step(piece, piece.roll(-1, 1))
    assert trainer.phase == 2 and not m.skip_retain and m.ch_prob == 0.0
    checks.assert_phase_two_is_baseline(trainer, TOKENS[:, 8:])
    fresh = TwoPhaseTrainer(m, torch.optim.SGD(m.parameters(), lr=0.1), phase1_steps=3)
    with pytest.raises(UsageError, match="phase 1"):
        checks.assert_phase_two_is_baseline(fresh, TOKENS)


# ----------------------------------------------------------------------------- the checks


def test_zero_initialised_memories_are_a_different_model() -> None:
    m = model()
    checks.assert_recurrence_equivalent(m, TOKENS, 4, 3, level="R")
    checks.assert_recurrence_equivalent(m, TOKENS, 4, 3, level="O")
    checks.assert_recurrence_equivalent(m, TOKENS, 4, 3, level="O", init_memory="zeros-masked")
    with pytest.raises(checks.RecurrenceMismatchError, match=r"segment 0\)") as caught:
        checks.assert_recurrence_equivalent(m, TOKENS, 4, 3, level="R", init_memory="zeros")
    assert caught.value.level == "R"
    zero_init = ZeroInitMemory(n_token=12, n_layer=2, n_head=2, d_model=8, mem_len=3)
    zero_init.load_state_dict(m.state_dict())
    with pytest.raises(checks.RecurrenceMismatchError, match=re.escape("max |Δ| per segment")):
        checks.assert_recurrence_equivalent(zero_init, TOKENS, 4, 3, level="R")
    with pytest.raises(checks.OracleConformanceError, match="does not compute the oracle's function"):
        checks.assert_recurrence_equivalent(zero_init, TOKENS, 4, 3, level="O")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"level": "B"}, "no rigorous bound"),
        ({"level": "exact"}, "unknown level"),
        ({"level": "O", "gradients": True}, "no backward"),
        ({"level": "R", "init_memory": "ones"}, "init_memory='ones'"),
    ],
)
def test_recurrence_check_refuses_bad_requests(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        checks.assert_recurrence_equivalent(model(), TOKENS, 4, 3, **kwargs)  # type: ignore[arg-type]


def test_recurrence_check_refuses_mismatched_mem_len_and_ext_len() -> None:
    with pytest.raises(UsageError, match="pass 3"):
        checks.assert_recurrence_equivalent(model(), TOKENS, 4, 2, level="R")
    with pytest.raises(UsageError, match="ext_len=1"):
        checks.assert_recurrence_equivalent(model(ext_len=1), TOKENS, 4, 3, level="R")
    with pytest.raises(UsageError, match="full_pass"):
        checks.assert_recurrence_equivalent(torch.nn.Linear(2, 2), TOKENS, 4, 3, level="K")


def test_recurrence_check_restores_training_mode() -> None:
    m = model().train()
    checks.assert_recurrence_equivalent(m, TOKENS, 4, 3, level="R", gradients=False)
    assert m.training


def test_relative_check_needs_two_queries() -> None:
    with pytest.raises(UsageError, match=r"fewer than 2 queries"):
        checks.assert_relative(model().layers[0].attn, qlen=1)
    with pytest.raises(UsageError, match="isolate="):
        checks.assert_relative(torch.nn.Linear(2, 2))


def test_cross_head_check_refuses_a_non_permutation() -> None:
    with pytest.raises(MemXLConfigError, match="not a permutation"):
        checks.assert_cross_head_reparam(model().layers[0].attn, (0, 0))


def test_errors_name_their_level() -> None:
    error = checks.SkipRetainError("x", "K")
    assert str(error).startswith("[level K]") and isinstance(error, AssertionError)


# ----------------------------------------------------------------------------- masks and primitives


def test_masks() -> None:
    assert (
        oracle.staircase_mask(6, 3, 2, same_length=True) == np.tril(np.triu(np.ones((6, 6)), -1)).astype(bool)
    ).all()
    assert (
        oracle.stop_gradient_mask(4, 2).astype(int)
        == [[0, 0, 0, 0], [0, 0, 0, 0], [1, 1, 0, 0], [1, 1, 0, 0]]
    ).all()
    assert (oracle.segment_mask(2, 3, 3, padding=2).astype(int) == [[0, 0, 1, 1, 0], [0, 0, 1, 1, 1]]).all()
    with pytest.raises(oracle.MemXLConfigError):
        oracle.staircase_mask(4, 2, 0, same_length=True)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sin_cos_are_accurate_and_position_independent(dtype: type) -> None:
    specials = np.array([0.0, -0.0, 1e-300, np.pi], dtype=np.float64)
    x: np.ndarray = np.concatenate([np.linspace(-2000, 2000, 4001), specials]).astype(dtype)
    s, c = ordered.sin(x), ordered.cos(x)
    with mpmath.workprec(120):
        worst = max(
            max(
                abs(float(mpmath.sin(mpmath.mpf(float(t)))) - float(a)),
                abs(float(mpmath.cos(mpmath.mpf(float(t)))) - float(b)),
            )
            for t, a, b in zip(x[::7], s[::7], c[::7], strict=True)
        )
    assert worst <= (4e-16 if dtype is np.float64 else 1.2e-7)
    assert_bit_exact(ordered.sin(x[::-1].copy())[::-1], s)  # the same bits wherever an element sits
    assert_bit_exact(ordered.cos(x[1::2].copy()), c[1::2])
    with pytest.raises(ValueError, match=r"declared range reduction"):
        ordered.sin(np.array([1e7], dtype=np.float64))


def test_layer_norm_matches_torch_in_float64() -> None:
    x = np.random.default_rng(0).standard_normal((3, 5))
    w, b = np.linspace(0.5, 1.5, 5), np.linspace(-1, 1, 5)
    expected = torch.nn.functional.layer_norm(
        torch.tensor(x), (5,), torch.tensor(w), torch.tensor(b), 1e-5
    ).numpy()
    assert np.max(np.abs(ordered.layer_norm(x, w, b, 1e-5) - expected)) < 1e-14
    assert ordered.relu(np.array([-0.0, -1.0, 2.0, np.nan], dtype=np.float64))[:3].tolist() == [0.0, 0.0, 2.0]


def test_audit_collects_verdicts_and_flags_a_planted_bug() -> None:
    from revcheck.audit.ops_memxl import audit_memory_transformer
    from tests.gallery.memxl_bugs import NoRelativeShift

    torch.manual_seed(0)
    wrong = NoRelativeShift(n_token=12, n_layer=2, n_head=2, d_model=8, mem_len=3)
    report = audit_memory_transformer(wrong, TOKENS, 4)
    failed = {v.check for v in report.verdicts if not v.passed}
    assert {"relative positions", "conformance to the oracle"} <= failed, str(report)
    with pytest.raises(checks.MemXLCheckError):
        report.raise_for_failures()
    assert audit_memory_transformer(model(skip_retain=True, n_layer=3), TOKENS, 4).passed
