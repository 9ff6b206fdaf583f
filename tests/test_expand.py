"""Function-preserving expansions: model, six transformations, certificates, refusals, checks, audits.

The property suite (properties/test_expand.py) proves the transformations at
levels O and R over drawn sizes; these are the examples, edge cases and bad
inputs.  Level K appears only as data (never asserted equal).
"""

from __future__ import annotations

from fractions import Fraction
from functools import partial

import numpy as np
import pytest
import torch

from properties.test_expand import growth_certificate, growth_step, layer, random_model
from revcheck.audit.ops_expand import (
    CheckerTooLaxError,
    audit_growth_function,
    audit_preservation_checker,
    notebook_allclose_check,
)
from revcheck.errors import UsageError
from revcheck.expand import (
    FunctionNotPreservedError,
    GrowthRefused,
    ParameterMap,
    add_heads,
    assert_function_preserved,
    expand_head_dim,
    expand_hidden,
    expand_mlp,
    expand_qk_dim,
    fingerprint,
    insert_layer,
    random_init,
)
from revcheck.levels import Level
from revcheck.nn.expand import ModelConfig, ReferenceTransformer, from_state_dict, oracle_parameters
from revcheck.oracle.expand import ConfigError, oracle_forward, oracle_gradients

CONFIG = ModelConfig(
    vocab=11, max_len=6, hidden=8, mlp=12, heads=2, qk=2, v=3, layers=2, eps=1e-5, activation="gelu"
)
IDS = torch.tensor([[1, 2, 3, 4, 5], [6, 7, 8, 9, 10]])


def model(
    config: ModelConfig = CONFIG, dtype: torch.dtype = torch.float32, seed: int = 0
) -> ReferenceTransformer:
    return random_model(config, dtype, seed)


# ---- the reference model and its oracle --------------------------------------------------------------


VARIANTS = [
    {},
    {"norm": "layer"},
    {"placement": "post"},
    {"attention": "sdpa"},
    {"activation": "relu", "eps": 0.0},
    {"activation": "gelu_tanh", "causal": False},
    {"layers": 0},
]


@pytest.mark.parametrize("changes", VARIANTS, ids=[str(v) for v in VARIANTS])
def test_oracle_computes_the_torch_models_function(changes: dict) -> None:
    """The oracle and the torch model are the same real function (fp64: within a few ulps of each other)."""
    config = CONFIG.replace(**changes)
    m = model(config, torch.float64)
    out = m(IDS)
    oracle = oracle_forward(config, oracle_parameters(m), IDS.numpy(), "fp64")
    np.testing.assert_allclose(oracle, out.detach().numpy(), rtol=1e-12, atol=1e-12)
    grad_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    grads = torch.autograd.grad((out * grad_out).sum(), list(m.parameters()))
    oracle_grads = oracle_gradients(config, oracle_parameters(m), IDS.numpy(), grad_out.numpy(), "fp64")
    for (name, _), grad in zip(m.named_parameters(), grads, strict=True):
        np.testing.assert_allclose(oracle_grads[name], grad.numpy(), rtol=1e-10, atol=1e-11, err_msg=name)


def test_bad_configurations_and_inputs_are_refused() -> None:
    with pytest.raises(ConfigError, match="hidden=0 must be a positive int"):
        CONFIG.replace(hidden=0)
    with pytest.raises(ConfigError, match="norm='batch' is not supported"):
        CONFIG.replace(norm="batch")
    with pytest.raises(ConfigError, match=r"eps=-1\.0 must be a finite float"):
        CONFIG.replace(eps=-1.0)
    m = model()
    with pytest.raises(UsageError, match="int64 tensor"):
        m(IDS.float())
    with pytest.raises(UsageError, match="max_len=6"):
        m(torch.zeros(1, 7, dtype=torch.int64))
    with pytest.raises(UsageError, match=r"0\.\.10"):
        m(torch.tensor([[11]]))


def test_from_state_dict_maps_another_models_parameters() -> None:
    m = model()
    theirs = {
        f"net.{name}": p.detach().t() if p.dim() == 2 else p.detach() for name, p in m.named_parameters()
    }
    mapping = {name: (f"net.{name}", p.dim() == 2) for name, p in m.named_parameters()}
    rebuilt = from_state_dict(CONFIG, theirs, mapping)
    assert fingerprint(rebuilt) == fingerprint(m)
    with pytest.raises(UsageError, match="mapping lacks"):
        from_state_dict(CONFIG, theirs, {})


# ---- the transformations -------------------------------------------------------------------------------


ALL = [
    (expand_mlp, 48),
    (add_heads, 3),
    (expand_head_dim, 5),
    (expand_qk_dim, 8),
    (expand_hidden, 32),
    (insert_layer, 1),
]


@pytest.mark.parametrize("transformation, size", ALL, ids=[t.__name__ for t, _ in ALL])
def test_each_transformation_returns_a_new_o_exact_model_and_leaves_the_old_one(transformation, size) -> None:
    m = model()
    before = fingerprint(m)
    grown = transformation(m, size, seed=0)
    assert grown is not m and fingerprint(m) == before
    assert growth_step(grown).level == Level.O and growth_step(grown).source == before
    assert_function_preserved(m, grown, IDS, level="O", check_grads=True)


def test_certificate_lists_zeroed_scaled_free_blocks_and_reductions() -> None:
    grown = expand_qk_dim(model(), 8, seed=0)
    step = growth_step(grown)
    assert {block.parameter for block in step.zeroed} == {"layers.0.w_k", "layers.1.w_k"}
    assert all(block.count == 8 * 2 * 6 for block in step.zeroed)
    assert [(block.factor, block.power_of_two, block.exact) for block in step.scaled] == [
        (2.0, True, True)
    ] * 2
    assert {block.parameter for block in step.free} == {"layers.0.w_q", "layers.1.w_q"}
    assert step.grown_reductions[0].before == 2 and step.grown_reductions[0].after == 8
    assert "x 2.0 = sqrt(4)" in step.summary()
    hidden = growth_step(expand_hidden(model(), 32, seed=0))
    assert hidden.eps_after == CONFIG.eps / 4 and hidden.eps_rescaled and hidden.eps_factor == Fraction(1, 4)


@pytest.mark.parametrize(
    "attention, ratio, level",
    [("explicit", 4, "O"), ("explicit", 2, "R"), ("sdpa", 4, "R"), ("sdpa", 16, "O")],
)
def test_qk_level_depends_on_the_ratio_and_the_attention(attention: str, ratio: int, level: str) -> None:
    grown = expand_qk_dim(model(CONFIG.replace(attention=attention)), 2 * ratio, seed=0)
    assert growth_step(grown).level == level
    assert bool(growth_step(grown).reasons) == (level == "R")


def test_hidden_level_depends_on_the_ratio() -> None:
    assert growth_step(expand_hidden(model(), 32, seed=0)).level == Level.O
    r_only = growth_step(expand_hidden(model(), 12, seed=0))
    assert r_only.level == Level.R and "not a power of 4" in r_only.reasons[0]
    assert not r_only.scaled[0].power_of_two


def test_refusals_say_why() -> None:
    m = model()
    with pytest.raises(GrowthRefused, match="cannot preserve a LayerNorm model"):
        expand_hidden(model(CONFIG.replace(norm="layer")), 32)
    with pytest.raises(GrowthRefused, match="unrescaled eps=1e-05 breaks preservation even in real numbers"):
        expand_hidden(m, 32, rescale_eps=False)
    expand_hidden(model(CONFIG.replace(eps=0.0)), 32, rescale_eps=False)  # eps = 0 needs no rescaling
    with pytest.raises(GrowthRefused, match="post-norm model"):
        insert_layer(model(CONFIG.replace(placement="post")), 0)
    with pytest.raises(GrowthRefused, match=r"ratio 1/2 < 1"):
        expand_mlp(m, 6)
    with pytest.raises(GrowthRefused, match="index 3 is out of range"):
        insert_layer(m, 3)
    with pytest.raises(GrowthRefused, match="index -1 is out of range"):
        insert_layer(m, -1)
    with pytest.raises(GrowthRefused, match="must be an int"):
        expand_mlp(m, 24.0)  # type: ignore[arg-type]
    with pytest.raises(UsageError, match=r"not revcheck\.nn\.ReferenceTransformer"):
        expand_mlp(torch.nn.Linear(2, 2), 4)  # type: ignore[arg-type]

    class Subclass(ReferenceTransformer):
        pass

    with pytest.raises(UsageError, match="is a Subclass"):
        add_heads(Subclass(CONFIG), 3)
    edited = model()
    layer(edited, 0).w1 = torch.nn.Parameter(torch.zeros(8, 13))
    with pytest.raises(UsageError, match="edited by hand"):
        expand_mlp(edited, 24)
    with pytest.raises(GrowthRefused, match="not finite"):
        expand_mlp(m, 24, init=lambda role, shape, fan_in, g: torch.full(shape, float("inf")))


def test_free_parameters_are_reproducible() -> None:
    m = model()
    torch.manual_seed(7)
    first = fingerprint(expand_mlp(m, 24))
    torch.manual_seed(7)
    assert fingerprint(expand_mlp(m, 24)) == first
    assert fingerprint(expand_mlp(m, 24, seed=1)) == fingerprint(expand_mlp(m, 24, seed=1)) != first


def test_compositions_in_any_order_compose_their_certificates() -> None:
    m = model()
    orders = [
        lambda x: insert_layer(expand_hidden(expand_mlp(x, 24, seed=1), 32, seed=2), 0, seed=3),
        lambda x: expand_mlp(insert_layer(expand_hidden(x, 32, seed=2), 2, seed=3), 24, seed=1),
        lambda x: expand_qk_dim(add_heads(expand_head_dim(x, 6, seed=1), 4, seed=2), 8, seed=3),
    ]
    for grow in orders:
        grown = grow(m)
        certificate = growth_certificate(grown)
        assert len(certificate.steps) == 3 and certificate.source == fingerprint(m)
        assert_function_preserved(m, grown, IDS, level="O", check_grads=True)
    first = expand_mlp(m, 24, seed=0)
    with pytest.raises(ValueError, match="cannot compose"):
        growth_step(first).then(growth_step(first))


def test_sdpa_value_growth_and_post_norm_growth_are_o_exact() -> None:
    for changes in ({"attention": "sdpa"}, {"placement": "post"}, {"norm": "layer"}):
        m = model(CONFIG.replace(**changes))
        for transformation, size in ALL[:4]:
            if transformation is expand_qk_dim and changes.get("attention") == "sdpa":
                size = 16 * m.config.qk  # SDPA's math path needs a power of 16
            assert_function_preserved(m, transformation(m, size, seed=0), IDS, level="O")


def test_bf16_growth_is_o_exact() -> None:
    m = model(dtype=torch.bfloat16)
    grown = insert_layer(expand_hidden(expand_mlp(m, 48, seed=0), 32, seed=1), 1, seed=2)
    assert_function_preserved(m, grown, IDS, level="O", check_grads=True)


# ---- assert_function_preserved --------------------------------------------------------------------------


def test_levels_on_an_r_only_growth() -> None:
    """sqrt(1.5): exact in real numbers with the exact factor, not bit-exact in any order."""
    m = model(CONFIG.replace(hidden=4, mlp=4, layers=1), torch.float64)
    grown = expand_qk_dim(m, 3, seed=0)
    assert growth_step(grown).level == Level.R
    ids = IDS[:1, :3]
    assert_function_preserved(m, grown, ids, level="R")  # the real transformation (exact factor)
    with pytest.raises(FunctionNotPreservedError, match="rounded growth factors"):
        assert_function_preserved(m, grown, ids, level="R", certificate=None)  # the stored, rounded one
    with pytest.raises(FunctionNotPreservedError, match="not bit-exact"):
        assert_function_preserved(m, grown, ids, level="O")
    report = assert_function_preserved(m, grown, ids, level="B")
    assert "bound: |after_kernel - before_exact| <=" in report.text()


def test_level_b_rejects_a_real_change() -> None:
    m = model(CONFIG.replace(hidden=4, mlp=4, layers=1))
    grown = expand_mlp(m, 8, seed=0)
    with torch.no_grad():
        layer(grown, 0).w2[4:] = 1.0
    with pytest.raises(FunctionNotPreservedError, match="leaves after's enclosure"):
        assert_function_preserved(m, grown, IDS, level="B", certificate=None)


def test_level_k_compares_any_two_callables_and_reports_bits() -> None:
    linear = torch.nn.Linear(3, 2)
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))
    assert_function_preserved(linear, lambda t: linear(t), x, level="K")
    with pytest.raises(FunctionNotPreservedError) as caught:
        assert_function_preserved(linear, lambda t: linear(t) * (1 + 2**-20), x, level="K")
    text = str(caught.value)
    assert "not bit-exact (fp32" in text and "ULP" in text and caught.value.level == Level.K
    with pytest.raises(FunctionNotPreservedError, match="shapes differ"):
        assert_function_preserved(linear, lambda t: linear(t)[:2], x, level="K")


def test_level_k_gradients_with_an_explicit_parameter_map() -> None:
    """A hand-made 'growth' (weight x 2, output / 2): the map says where the weight went and by what "
    "factor."""
    small = torch.nn.Linear(3, 2, bias=False)

    class Doubled(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = torch.nn.Linear(3, 2, bias=False)
            with torch.no_grad():
                self.inner.weight.copy_(small.weight * 2)

        def forward(self, t: torch.Tensor) -> torch.Tensor:
            return self.inner(t) / 2

    x = torch.randn(5, 3, generator=torch.Generator().manual_seed(1))
    mapping = {"weight": ParameterMap("inner.weight", (np.arange(2), np.arange(3)), Fraction(4))}
    report = assert_function_preserved(
        small, Doubled(), x, level="K", check_grads=True, parameter_map=mapping
    )
    assert report.gradients[0].factor == 2.0 and report.gradients[0].equal
    with pytest.raises(UsageError, match="cannot tell where"):
        assert_function_preserved(small, Doubled(), x, level="K", check_grads=True)


def test_usage_errors() -> None:
    m = model()
    grown = expand_mlp(m, 24, seed=0)
    with pytest.raises(UsageError, match="level O needs the reference architecture"):
        assert_function_preserved(torch.nn.Linear(2, 2), grown, IDS, level="O")
    with pytest.raises(UsageError, match="levels K and O only"):
        assert_function_preserved(m, grown, IDS, level="B", check_grads=True)
    with pytest.raises(ValueError, match="unknown level"):
        assert_function_preserved(m, grown, IDS, level="exact")
    with pytest.raises(UsageError, match="mpmath operations"):
        big = model(CONFIG.replace(hidden=64, mlp=256))
        assert_function_preserved(big, big, IDS, level="R")
    with torch.no_grad():
        grown.w_out.add_(1.0)  # "trained" since it was grown
    with pytest.raises(UsageError, match="does not lead from before to after"):
        assert_function_preserved(
            m, grown, IDS, level="O", certificate=growth_step(expand_mlp(m, 24, seed=0))
        )


def test_an_inf_activation_meeting_a_zero_weight_is_reported_as_nan() -> None:
    config = ModelConfig(vocab=5, max_len=4, hidden=1, mlp=2, heads=1, qk=1, v=1, layers=1)
    m = model(config)
    with torch.no_grad():
        layer(m, 0).norm1.weight.fill_(4.0)
    huge = torch.finfo(torch.float32).max / 2
    grown = add_heads(m, 2, init=lambda role, shape, fan_in, g: torch.full(shape, huge, dtype=torch.float64))
    for level in ("K", "O"):
        with pytest.raises(FunctionNotPreservedError, match=r"0·inf = NaN"):
            assert_function_preserved(m, grown, IDS[:, :4] % 5, level=level)


def test_eps_zero_layer_insertion_on_a_zero_row() -> None:
    """docs/spec.md §4: with eps = 0 a zero row is NaN after any norm.

    With no base layer, insertion makes it NaN.
    """
    for layers, preserved in ((0, False), (1, True)):
        config = ModelConfig(vocab=4, max_len=3, hidden=4, mlp=4, heads=1, qk=2, v=2, layers=layers, eps=0.0)
        m = model(config)
        with torch.no_grad():
            m.tok_emb[0].zero_()
            m.pos_emb[0].zero_()
        ids = torch.tensor([[0, 1, 2]])
        grown = insert_layer(m, 0, seed=0)
        assert "0/0 = NaN" in growth_step(grown).summary()
        if preserved:
            assert np.isnan(m(ids).detach().numpy()).any()
            assert_function_preserved(m, grown, ids, level="O")
        else:
            with pytest.raises(FunctionNotPreservedError, match="NaN"):
                assert_function_preserved(m, grown, ids, level="O")


# ---- audits ----------------------------------------------------------------------------------------------


def test_audit_of_a_growth_function() -> None:
    good = audit_growth_function(lambda m: expand_mlp(m, 2 * m.config.mlp, seed=0), seeds=(0,))
    assert good.ok and "bit-exact" in str(good)
    bad = audit_growth_function(
        lambda m: expand_hidden(m, 2 * m.config.hidden, seed=0), seeds=(0,), name="hidden x2"
    )
    assert not bad.ok
    with pytest.raises(FunctionNotPreservedError, match="audit of hidden x2"):
        bad.raise_if_failed()
    refusing = audit_growth_function(lambda m: insert_layer(m, 99), seeds=(0,))
    assert refusing.ok and all(case.cell("O") == "refused" for case in refusing.cases)


def test_audit_of_a_users_own_model_through_a_parameter_mapping() -> None:
    """The user's model keeps its parameters under its own names; to_reference maps them (from_state_dict)."""

    def to_reference(user_model: ReferenceTransformer) -> ReferenceTransformer:
        names = dict(user_model.named_parameters())
        state = {f"net.{name}": p for name, p in names.items()}
        return from_state_dict(user_model.config, state, {name: (f"net.{name}", False) for name in names})

    audit = audit_growth_function(
        lambda m: expand_mlp(m, 24, seed=0), models=[model()], to_reference=to_reference
    )
    assert audit.ok and len(audit.cases) == 1
    with pytest.raises(UsageError, match="to_reference"):
        audit_growth_function(lambda m: m, models=[model()])


def test_audit_of_preservation_checkers() -> None:
    lines = audit_preservation_checker(partial(assert_function_preserved, level="O"))
    assert any(line.startswith("unrescaled eps: rejected") for line in lines)
    with pytest.raises(CheckerTooLaxError, match=r"unrescaled eps .*qk factor sqrt\(1.5\)"):
        audit_preservation_checker(notebook_allclose_check)


def test_bench_matrix_rows_reach_the_certified_level_at_o() -> None:
    from revcheck.bench import expand as bench

    cells = list(bench.measure(dtypes=("fp32",), sizes=("small",), attentions=("explicit",), progress=False))
    assert len(cells) == len(bench.growths())
    for cell in cells:
        if cell.certified == "O":
            assert cell.o_diff[0] == 0, cell  # O is asserted; K is data
        assert cell.reached in (
            "K bit-exact",
            "O only",
            "R only",
            "broken",
            "K bit-exact, not O",
            "broken in R, bits equal here",
        )
    notebook = [c for c in cells if c.growth.ratio.endswith("(notebook)")]
    assert notebook and all(c.r_holds is False for c in notebook)
    assert "| transformation | ratio |" in bench.pivot(cells)
    assert random_init(2.0)("weight", (2,), 1, None).shape == (2,)
