"""Properties of Transformer-XL, skip-retain and cross-head (docs/spec.md §6), each naming its level.

Each ``check_*(data, impl)`` is a property body over Hypothesis draws (layers, heads, widths,
segment and memory lengths, ``same_length``, ``clamp_len``, ``ext_len``, dtypes, weight scales) and
the implementation under test, injected: an oracle class (a :class:`~revcheck.oracle.memxl.MemXLOracle`
subclass), a model class (a :class:`~revcheck.nn.memxl.MemTransformerXL` subclass) or a trainer
class.  The thin ``test_*`` functions run them on the real implementations; tests/gallery/memxl_bugs.py
runs the same bodies on planted bugs.

=========================================================  =====  ==========================================
property                                                   level  how
=========================================================  =====  ==========================================
oracle recurrence == oracle full pass (staircase / band)    O      bit for bit, fp32 and fp64
exact recurrence == exact full pass                         R      200-bit mpmath, within 2**-150
torch recurrence == torch full pass, and == oracle at O     R, O   fp64 within FP64_BOUND; fp32 K deviation
                                                                   reported as data (events), not asserted
gradients == full pass with stop-gradient                   R      fp64 within FP64_BOUND
zero memories differ unless masked                          O, R   divergence > 0; masked == empty bitwise
positional score depends on i - j only                      K      bits along each diagonal
memory keeps the last mem_len rows, detached, any ext_len   K      bits, flags, positions
cross-head: identity / ch_prob = 0 / eval == plain          K      bits
cross-head(π) == K/R/V head blocks of the weights permuted  K, O   bits (torch and oracle)
skip-retain: identity, memory kept, age-correct distances   K, R   trace (ints, bits); fp64 oracle replay
phase 2 == plain model with the same weights                K      bits
torch model == oracle (any ext_len, init, mode)             R      fp64 within FP64_BOUND
=========================================================  =====  ==========================================
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from hypothesis import event, given, note
from hypothesis import strategies as st

from revcheck import memxl as checks
from revcheck._profiles import scaled
from revcheck.exact import memxl as exact
from revcheck.nn.memxl import MemTransformerXL, TwoPhaseTrainer, segments
from revcheck.oracle import memxl as oracle
from revcheck.testing import assert_bit_exact

_DTYPES = {"fp32": torch.float32, "fp64": torch.float64}


# ----------------------------------------------------------------------------- draws


@dataclass
class Case:
    """One drawn model configuration and its token stream."""

    kwargs: dict[str, Any]
    dtype: torch.dtype
    seed: int
    scale: float
    tokens: torch.Tensor
    segment_length: int

    def pieces(self) -> list[torch.Tensor]:
        """The segments a model with this ``ext_len`` reads: overlapping by ``ext_len`` tokens."""
        ext = self.kwargs["ext_len"]
        stride = self.segment_length - ext
        starts = range(0, self.tokens.shape[1] - ext, stride)
        return [self.tokens[:, s : s + self.segment_length] for s in starts]

    def build(self, model_class: type[MemTransformerXL], **overrides: Any) -> MemTransformerXL:
        """The model, its parameters drawn from ``seed`` (global RNG left as it was)."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            model = model_class(**{**self.kwargs, **overrides})
        with torch.no_grad():
            for name, parameter in model.named_parameters():
                if "layer_norm" not in name:
                    parameter.mul_(self.scale)
        return model.to(self.dtype)


def draw_case(
    data: st.DataObject,
    *,
    max_layers: int = 3,
    ext_len: bool = False,
    max_segments: int = 4,
    dtypes: tuple[str, ...] = ("fp32", "fp64"),
    same_length: bool | None = None,
    min_d_model: int = 4,
) -> Case:
    n_layer = data.draw(st.integers(1, max_layers), label="n_layer")
    n_head = data.draw(st.integers(1, 3), label="n_head")
    d_head = data.draw(st.integers(1, 4), label="d_head")
    # d_model = 2 is a degenerate layer norm (every output is about +-1, so most differences shrink to
    # ~1e-9): drawn only by the bit-exact properties (min_d_model=2), never where a bound decides.
    d_model = data.draw(st.sampled_from([d for d in (2, 4, 6, 8) if d >= min_d_model]), label="d_model")
    d_inner = data.draw(st.integers(1, 12), label="d_inner")
    mem_len = data.draw(st.integers(0, 6), label="mem_len")
    if same_length is None:
        same = data.draw(st.booleans(), label="same_length") if mem_len > 0 else False
    else:
        same = same_length and mem_len > 0
    clamp_len = data.draw(st.one_of(st.none(), st.integers(1, 8)), label="clamp_len")
    ext = data.draw(st.integers(0, 3), label="ext_len") if ext_len else 0
    segment_length = data.draw(st.integers(ext + 1, ext + 5), label="segment length")
    n_segments = data.draw(st.integers(1, max_segments), label="segments")
    tail = data.draw(st.integers(0, segment_length - 1), label="tokens of a shorter last segment")
    batch = data.draw(st.integers(1, 2), label="batch")
    n_token = data.draw(st.integers(2, 12), label="vocabulary")
    dtype = _DTYPES[data.draw(st.sampled_from(dtypes), label="dtype")]
    seed = data.draw(st.integers(0, 2**32 - 1), label="parameter seed")
    scale = data.draw(st.sampled_from([0.5, 1.0, 2.0, 4.0]), label="weight scale")
    # With ext_len > 0 consecutive segments overlap by ext_len tokens (kimiyoung's iterator): n_segments
    # segments advance by segment_length - ext_len each.
    T = ext + (segment_length - ext) * n_segments + min(tail, segment_length - ext - 1)
    token_seed = data.draw(st.integers(0, 2**32 - 1), label="token seed")
    tokens = torch.randint(0, n_token, (batch, T), generator=torch.Generator().manual_seed(token_seed))
    kwargs = dict(
        n_token=n_token,
        n_layer=n_layer,
        n_head=n_head,
        d_model=d_model,
        d_head=d_head,
        d_inner=d_inner,
        mem_len=mem_len,
        ext_len=ext,
        same_length=same,
        clamp_len=clamp_len,
    )
    note(
        f"model {kwargs}, {dtype}, scale {scale}, segment length {segment_length}, "
        f"tokens {tuple(tokens.shape)}"
    )
    return Case(kwargs, dtype, seed, scale, tokens, segment_length)


def _oracle_inputs(case: Case) -> tuple[oracle.Weights, oracle.MemXLConfig, np.ndarray[Any, Any]]:
    weights, config = case.build(MemTransformerXL).to_oracle()
    return weights, config, case.tokens.numpy()


# ----------------------------------------------------------------------------- recurrence == full pass


def check_oracle_recurrence_is_full_pass(data: st.DataObject, oracle_class: type[oracle.MemXLOracle]) -> None:
    """Level O: the declared-order recurrence is the full pass with the staircase (band) mask, bitwise."""
    case = draw_case(data, min_d_model=2)
    weights, config, tokens = _oracle_inputs(case)
    model = oracle_class()
    recurrent, _ = model.recurrence(weights, config, tokens, case.segment_length)
    allowed = oracle.staircase_mask(tokens.shape[1], case.segment_length, config.mem_len, config.same_length)
    full = model.full_pass(weights, config, tokens, allowed)
    assert_bit_exact(recurrent, full, msg="level O: oracle recurrence vs oracle full pass")


def check_exact_recurrence_is_full_pass(data: st.DataObject, oracle_class: type[oracle.MemXLOracle]) -> None:
    """Level R: the same composition at 200 bits; recurrence and full pass within ``2**-150``."""
    case = draw_case(data, max_layers=2, max_segments=3, dtypes=("fp64",))
    weights, config, tokens = _oracle_inputs(case)
    tokens = tokens[:1, :8]
    model = oracle_class(exact.ExactArithmetic())
    with exact.mpmath.workprec(exact.EXACT_PRECISION):
        ew = exact.exact_weights(weights)
        recurrent, _ = model.recurrence(ew, config, tokens, case.segment_length)
        allowed = oracle.staircase_mask(
            tokens.shape[1], case.segment_length, config.mem_len, config.same_length
        )
        full = model.full_pass(ew, config, tokens, allowed)
    difference = exact.max_abs_difference(recurrent, full)
    if not difference <= exact.R_TOLERANCE:
        raise checks.RecurrenceMismatchError(
            f"exact recurrence vs exact full pass differ by {difference:.3g} (> 2**-150)", "R"
        )


def _k_deviation_event(case: Case, model_class: type[MemTransformerXL]) -> None:
    """The fp32 kernels' recurrence vs full pass: data, not an assertion (docs/spec.md §0)."""
    model = case.build(model_class).to(torch.float32).eval()
    mems, outputs = None, []
    with torch.no_grad():
        for piece in segments(case.tokens, case.segment_length):
            out, mems = model(piece, mems)
            outputs.append(out)
        recurrent = torch.cat(outputs, dim=1)
        allowed = oracle.staircase_mask(
            case.tokens.shape[1], case.segment_length, model.mem_len, model.same_length
        )
        full = model.full_pass(case.tokens, torch.as_tensor(allowed))
    deviation = checks.measure_deviation(recurrent, full)
    share = deviation.mismatches / deviation.total
    bucket = "0" if share == 0 else "<25%" if share < 0.25 else "<75%" if share < 0.75 else ">=75%"
    event(f"fp32 K: share of outputs whose bits differ {bucket}")
    note(f"fp32 K deviation: {deviation.text()}")


def check_torch_recurrence_is_full_pass(data: st.DataObject, model_class: type[MemTransformerXL]) -> None:
    """Level R (fp64 copy within FP64_BOUND) and level O (the model conforms, then the oracle bit for bit)."""
    case = draw_case(data)
    model = case.build(model_class)
    checks.assert_recurrence_equivalent(
        model, case.tokens, case.segment_length, model.mem_len, level="R", gradients=False
    )
    checks.assert_recurrence_equivalent(model, case.tokens, case.segment_length, model.mem_len, level="O")
    _k_deviation_event(case, model_class)


def check_gradients_match_stop_gradient_full_pass(
    data: st.DataObject, model_class: type[MemTransformerXL]
) -> None:
    """Level R: recurrence gradients == full-pass gradients with stop-gradient on earlier segments."""
    case = draw_case(data, max_layers=2, dtypes=("fp64",))
    model = case.build(model_class)
    checks.assert_recurrence_equivalent(model, case.tokens, case.segment_length, model.mem_len, level="R")


# ----------------------------------------------------------------------------- zero memories


def check_zero_memories_differ_unless_masked(
    data: st.DataObject, oracle_class: type[oracle.MemXLOracle]
) -> None:
    """Level O: zero-initialised memories change the outputs; masked, they are the empty model bitwise."""
    case = draw_case(data)
    weights, config, tokens = _oracle_inputs(case)
    model = oracle_class()
    empty, _ = model.recurrence(weights, config, tokens, case.segment_length, "empty")
    masked, _ = model.recurrence(weights, config, tokens, case.segment_length, "zeros-masked")
    assert_bit_exact(masked, empty, msg="level O: masked zero memories vs empty memories")
    qlen = min(case.segment_length, tokens.shape[1])
    first = oracle.segment_mask(qlen, config.mem_len, config.mem_len, config.same_length)
    # The zero rows are seen unless the band hides them (same_length, mem_len = 1: each query sees itself).
    if first[:, : config.mem_len].any():
        zeros, _ = model.recurrence(weights, config, tokens, case.segment_length, "zeros")
        divergence = float(np.max(np.abs(zeros.astype(np.float64) - empty)))
        event(f"zero-init divergence on the first segment > 0: {divergence > 0}")
        note(f"zero-initialised memories: max |Δ| = {divergence:.3g}")
        assert divergence > 0, "zero-initialised (unmasked) memories left every output unchanged"


def check_zero_init_is_another_model(data: st.DataObject, model_class: type[MemTransformerXL]) -> None:
    """Level R: the torch check rejects zero-initialised memories and accepts them masked."""
    case = draw_case(data, dtypes=("fp64",))
    model = case.build(model_class)
    arguments = (model, case.tokens, case.segment_length, model.mem_len)
    checks.assert_recurrence_equivalent(*arguments, level="R", init_memory="zeros-masked", gradients=False)
    qlen = min(case.segment_length, case.tokens.shape[1])
    if oracle.segment_mask(qlen, model.mem_len, model.mem_len, model.same_length)[:, : model.mem_len].any():
        try:
            checks.assert_recurrence_equivalent(*arguments, level="R", init_memory="zeros", gradients=False)
        except checks.RecurrenceMismatchError:
            return
        raise AssertionError("zero-initialised memories passed as the empty-memory model")


# ----------------------------------------------------------------------------- positions


def check_positional_score_depends_on_distance_only(
    data: st.DataObject, model_class: type[MemTransformerXL]
) -> None:
    """Level K: with constant queries and no content term, scores agree bit for bit along each diagonal."""
    case = draw_case(data, min_d_model=2)
    model = case.build(model_class)
    qlen = data.draw(st.integers(2, 6), label="queries")
    mlen = data.draw(st.integers(0, 6), label="memory rows")
    start = data.draw(st.integers(mlen, 3 * mlen + 10), label="segment start")
    for layer in model.layers:
        checks.assert_relative(layer.attn, qlen=qlen, mlen=mlen, start=start, seed=case.seed)


# ----------------------------------------------------------------------------- memory update


def check_memory_update_keeps_last_rows(data: st.DataObject, model_class: type[MemTransformerXL]) -> None:
    """Level K: new memory == last mem_len rows of [m ; h[:qlen - ext_len]], detached, inputs untouched."""
    case = draw_case(data, ext_len=True, min_d_model=2)
    dropout = data.draw(st.sampled_from([0.0, 0.25]), label="dropout")
    model = case.build(model_class, dropout=dropout)
    model.train(data.draw(st.booleans(), label="training mode"))
    pieces = case.pieces()
    init = data.draw(st.sampled_from(oracle.INIT_MEMORIES), label="initial memory")
    mems = None if init == "empty" else model.init_memory(case.tokens.shape[0], init)
    checks.assert_memory_update(model, pieces, mems=mems)


# ----------------------------------------------------------------------------- cross-head


def check_cross_head_inactive_cases(data: st.DataObject, model_class: type[MemTransformerXL]) -> None:
    """Level K: identity permutation, ch_prob = 0 (training) and eval (ch_prob = 1) are plain attention."""
    case = draw_case(data, max_segments=3, min_d_model=2)
    dropout = data.draw(st.sampled_from([0.0, 0.25]), label="dropout")
    model = case.build(model_class, dropout=dropout)
    checks.assert_cross_head_inactive(model, case.tokens, segment_length=case.segment_length)


def check_cross_head_is_reparametrisation(data: st.DataObject, model_class: type[MemTransformerXL]) -> None:
    """Level K (torch) and O (oracle): cross-head with a fixed π == permuted K/R/V head blocks of weights."""
    case = draw_case(data, max_segments=2, min_d_model=2)
    model = case.build(model_class)
    permutation = data.draw(st.permutations(range(model.config.n_head)), label="head permutation")
    qlen = data.draw(st.integers(1, 6), label="queries")
    mlen = data.draw(st.integers(0, 6), label="memory rows")
    for layer in model.layers:
        checks.assert_cross_head_reparam(layer.attn, permutation, qlen=qlen, mlen=mlen, seed=case.seed)
    weights, config = model.to_oracle()
    tokens = case.tokens.numpy()[:, : case.segment_length]
    permuted = oracle.ORACLE.segment(weights, config, tokens, permutations=[permutation] * config.n_layer)
    twin = oracle.Weights(
        weights.embedding,
        weights.r_w_bias,
        weights.r_r_bias,
        tuple(layer.permuted_heads(permutation, config.n_head) for layer in weights.layers),
    )
    assert_bit_exact(
        permuted.output, oracle.ORACLE.segment(twin, config, tokens).output, msg="level O cross-head"
    )


# ----------------------------------------------------------------------------- skip-retain


def check_skip_retain_is_age_correct(data: st.DataObject, model_class: type[MemTransformerXL]) -> None:
    """Level K (trace) and R (fp64 oracle replay): skipped layers are the identity and keep their memory;
    retained memory is attended at distance ``i + mlen - j + (c - m) * M``."""
    case = draw_case(data, max_layers=4, ext_len=True, max_segments=6)
    ch_prob = data.draw(st.sampled_from([0.0, 0.5]), label="ch_prob")
    model = case.build(model_class, skip_retain=True, ch_prob=ch_prob)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(case.seed)
        model.generator.manual_seed(case.seed)
    trace = checks.skip_retain_trace(model, case.tokens, case.segment_length)
    skipped = sum(r.skipped for r in trace.records)
    event(f"skip-retain: layers skipped in this run: {'none' if not skipped else 'some'}")
    pieces = case.pieces()
    model.train()
    checks.assert_conforms_to_oracle(model, pieces)


# ----------------------------------------------------------------------------- two phases


def check_phase_two_equals_baseline(data: st.DataObject, trainer_class: type[TwoPhaseTrainer]) -> None:
    """Level K: after phase 1, the trainer's model forward == the plain model with the same weights."""
    case = draw_case(data, max_layers=3, max_segments=4, min_d_model=2)
    dropout = data.draw(st.sampled_from([0.0, 0.25]), label="dropout")
    model = case.build(MemTransformerXL, dropout=dropout)
    model.generator.manual_seed(case.seed)
    phase1 = data.draw(st.integers(1, 3), label="phase-1 steps")
    ch_prob = data.draw(st.sampled_from([0.1, 0.5, 1.0]), label="phase-1 ch_prob")
    trainer = trainer_class(
        model, torch.optim.SGD(model.parameters(), lr=0.05), phase1_steps=phase1, ch_prob=ch_prob
    )
    pieces = segments(case.tokens, case.segment_length)
    for step in range(phase1):
        piece = pieces[step % len(pieces)]
        trainer.step(piece, piece.roll(-1, dims=1))
    checks.assert_phase_two_is_baseline(trainer, pieces[-1])


# ----------------------------------------------------------------------------- conformance


def check_torch_conforms_to_oracle(data: st.DataObject, model_class: type[MemTransformerXL]) -> None:
    """Level R: the torch model computes the oracle's function (fp64, FP64_BOUND), any ext_len and init."""
    case = draw_case(data, ext_len=True)
    model = case.build(model_class).eval()
    pieces = case.pieces()
    init = data.draw(st.sampled_from(oracle.INIT_MEMORIES), label="initial memory")
    checks.assert_conforms_to_oracle(model, pieces, init_memory=init)


# ----------------------------------------------------------------------------- the tests


@scaled(0.3, minimum=3)
@given(data=st.data())
def test_oracle_recurrence_is_full_pass(data: st.DataObject) -> None:
    check_oracle_recurrence_is_full_pass(data, oracle.MemXLOracle)


@scaled(0.1, minimum=3)
@given(data=st.data())
def test_exact_recurrence_is_full_pass(data: st.DataObject) -> None:
    check_exact_recurrence_is_full_pass(data, oracle.MemXLOracle)


@scaled(0.3, minimum=3)
@given(data=st.data())
def test_torch_recurrence_is_full_pass(data: st.DataObject) -> None:
    check_torch_recurrence_is_full_pass(data, MemTransformerXL)


@scaled(0.2, minimum=3)
@given(data=st.data())
def test_gradients_match_stop_gradient_full_pass(data: st.DataObject) -> None:
    check_gradients_match_stop_gradient_full_pass(data, MemTransformerXL)


@scaled(0.2, minimum=3)
@given(data=st.data())
def test_zero_memories_differ_unless_masked(data: st.DataObject) -> None:
    check_zero_memories_differ_unless_masked(data, oracle.MemXLOracle)


@scaled(0.1, minimum=3)
@given(data=st.data())
def test_zero_init_is_another_model(data: st.DataObject) -> None:
    check_zero_init_is_another_model(data, MemTransformerXL)


@scaled(0.2, minimum=3)
@given(data=st.data())
def test_positional_score_depends_on_distance_only(data: st.DataObject) -> None:
    check_positional_score_depends_on_distance_only(data, MemTransformerXL)


@scaled(0.3, minimum=3)
@given(data=st.data())
def test_memory_update_keeps_last_rows(data: st.DataObject) -> None:
    check_memory_update_keeps_last_rows(data, MemTransformerXL)


@scaled(0.2, minimum=3)
@given(data=st.data())
def test_cross_head_inactive_cases(data: st.DataObject) -> None:
    check_cross_head_inactive_cases(data, MemTransformerXL)


@scaled(0.2, minimum=3)
@given(data=st.data())
def test_cross_head_is_reparametrisation(data: st.DataObject) -> None:
    check_cross_head_is_reparametrisation(data, MemTransformerXL)


@scaled(0.2, minimum=3)
@given(data=st.data())
def test_skip_retain_is_age_correct(data: st.DataObject) -> None:
    check_skip_retain_is_age_correct(data, MemTransformerXL)


@scaled(0.1, minimum=3)
@given(data=st.data())
def test_phase_two_equals_baseline(data: st.DataObject) -> None:
    check_phase_two_equals_baseline(data, TwoPhaseTrainer)


@scaled(0.2, minimum=3)
@given(data=st.data())
def test_torch_conforms_to_oracle(data: st.DataObject) -> None:
    check_torch_conforms_to_oracle(data, MemTransformerXL)
