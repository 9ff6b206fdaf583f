"""Properties of the function-preserving expansions (docs/spec.md §4), each naming the level it proves.

Every ``check_*`` body takes the Hypothesis data object and the implementation
under test (injected): a :class:`Growths` table of the six transformations, or
a preservation checker.  tests/gallery/expand_bugs.py runs the same bodies
against planted bugs; the thin ``test_*`` wrappers run them on the real code.

* ``check_growth_is_o_exact`` — level **O**: every transformation composed
  with all the others in a drawn order (plus repeats), at O-certified ratios
  (fp64 / fp32 / bf16, eps, explicit or SDPA attention, pre- or post-norm where
  allowed), is bit-exact in the oracle, and the certificate says O.  Level K is
  measured on the CPU kernels and recorded as a Hypothesis event: data, never
  asserted.
* ``check_gradients_preserved`` — level **O**: gradients of pre-existing
  parameters are bit-exact after the rescaling a certificate reports.
* ``check_growth_is_r_exact`` — level **R**: all transformations composed in a
  drawn order at any ratio (powers of 4 or not) are exact in real numbers with
  the certificate's exact factors, and the stored scaled values are those
  factors rounded once.
* ``check_violation_is_detected`` — a constraint violated (a nonzero entry in a
  zeroed block, a missing rescaling, an unrescaled eps) changes the function,
  and the checker under test must say so (level O, fp64).
* ``check_nan_is_reported`` — a new head whose values overflow to inf meets the
  zero rows of ``w_o``: 0·inf = NaN; the checker must report it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from hypothesis import event, given, reject
from hypothesis import strategies as st

from revcheck._profiles import scaled
from revcheck.audit.ops_expand import CheckerTooLaxError
from revcheck.expand import (
    TRANSFORMATIONS,
    FunctionNotPreservedError,
    GrowthCertificate,
    assert_function_preserved,
    fingerprint,
    random_init,
)
from revcheck.levels import Level
from revcheck.nn.expand import DTYPES, ModelConfig, ReferenceLayer, ReferenceTransformer


@dataclass(frozen=True)
class Growths:
    """The transformations under test, by name (the real ones: :data:`revcheck.expand.TRANSFORMATIONS`)."""

    table: Mapping[str, Callable[..., Any]]

    def __getitem__(self, name: str) -> Callable[..., Any]:
        return self.table[name]

    def replace(self, **functions: Callable[..., Any]) -> Growths:
        return Growths({**self.table, **functions})


REAL = Growths(dict(TRANSFORMATIONS))
# The order the transformations are drawn in: Hypothesis favours early entries, so the ones with rescalings
# (whose bugs need a grown key size, two tokens and a layer to show) come first.
DRAW_ORDER = ("expand_qk_dim", "expand_hidden", "insert_layer", "expand_head_dim", "add_heads", "expand_mlp")
assert set(DRAW_ORDER) == set(TRANSFORMATIONS)


# ---- strategies ---------------------------------------------------------------------------------


@st.composite
def configs(draw: st.DrawFn, *, tiny: bool = False, placement: str | None = None) -> ModelConfig:
    """A reference configuration with every size drawn independently (tiny: for the exact model)."""
    top = 3 if tiny else 8
    return ModelConfig(
        vocab=draw(st.integers(2, 9), label="vocab"),
        # sampled, not integers(): attention needs time >= 2 to see its scores, so small is not simple here
        max_len=draw(st.sampled_from([3, 1, 2] if tiny else [4, 2, 1, 5, 3]), label="max_len"),
        hidden=draw(st.integers(1, top), label="hidden"),
        mlp=draw(st.integers(1, top), label="mlp"),
        heads=draw(st.integers(1, 2 if tiny else 3), label="heads"),
        qk=draw(st.integers(1, 2 if tiny else 4), label="qk"),
        v=draw(st.integers(1, 2 if tiny else 4), label="v"),
        layers=draw(st.sampled_from([1, 0] if tiny else [1, 2, 0]), label="layers"),
        eps=draw(st.sampled_from([1e-5, 0.0, 2.0**-10]), label="eps"),
        activation=draw(st.sampled_from(["relu", "gelu", "gelu_tanh"]), label="activation"),
        attention=draw(st.sampled_from(["explicit", "sdpa"]), label="attention"),
        placement=placement or draw(st.sampled_from(["pre", "pre", "post"]), label="placement"),
        causal=draw(st.booleans(), label="causal"),
    )


def random_model(
    config: ModelConfig, dtype: torch.dtype, seed: int, scale: float = 1.0
) -> ReferenceTransformer:
    """Every parameter random (gains near 1, biases around 0), so no block is zero by accident."""
    model = ReferenceTransformer(config, dtype=dtype, seed=seed)
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            draw = torch.randn(parameter.shape, generator=generator, dtype=torch.float64)
            if name.endswith("norm1.weight") or name.endswith("norm2.weight"):
                draw = 1 + 0.5 * draw
            parameter.copy_((scale * draw).to(dtype))
    return model


# torch's Module.__getattr__ types every submodule and every attribute set after __init__ (the growth
# certificates) as ``Tensor | Module``; these accessors check the real type and say it to mypy.


def layer(model: ReferenceTransformer, index: int) -> ReferenceLayer:
    """``model.layers[index]``, typed."""
    block = model.layers[index]
    assert isinstance(block, ReferenceLayer), f"layers[{index}] is a {type(block).__name__}"
    return block


def growth_step(model: torch.nn.Module) -> GrowthCertificate:
    """The certificate of the step that grew ``model`` (``model.growth_step``), typed."""
    step = model.growth_step
    assert isinstance(step, GrowthCertificate), f"growth_step is a {type(step).__name__}"
    return step


def growth_certificate(model: torch.nn.Module) -> GrowthCertificate:
    """The certificate of every step since the first base model (``model.growth_certificate``), typed."""
    certificate = model.growth_certificate
    assert isinstance(certificate, GrowthCertificate), f"growth_certificate is a {type(certificate).__name__}"
    return certificate


@st.composite
def models(
    draw: st.DrawFn,
    *,
    tiny: bool = False,
    dtypes: tuple[str, ...] = ("fp64", "fp32", "bf16"),
    placement: str | None = None,
) -> ReferenceTransformer:
    config = draw(configs(tiny=tiny, placement=placement), label="config")
    dtype = draw(st.sampled_from(dtypes), label="dtype")
    seed = draw(st.integers(0, 2**16), label="parameter seed")
    scale = draw(st.sampled_from([0.25, 1.0, 2.0]), label="parameter scale")
    return random_model(config, DTYPES[dtype], seed, scale)


@st.composite
def token_ids(draw: st.DrawFn, config: ModelConfig, max_batch: int = 2) -> torch.Tensor:
    batch = draw(st.integers(1, max_batch), label="batch")
    time = draw(st.sampled_from(range(config.max_len, 0, -1)), label="time")
    ids = draw(
        st.lists(st.integers(0, config.vocab - 1), min_size=batch * time, max_size=batch * time), label="ids"
    )
    return torch.tensor(ids, dtype=torch.int64).reshape(batch, time)


def _o_size(config: ModelConfig, name: str, data: st.DataObject) -> int:
    """A new size (or index) for which the transformation is certified O."""
    if name == "insert_layer":
        return data.draw(st.integers(0, config.layers), label="insert index")
    if name == "expand_hidden":
        return config.hidden * data.draw(st.sampled_from([4, 1]), label="hidden ratio")
    if name == "expand_qk_dim":
        ratios = [4, 1] if config.attention == "explicit" else [16, 1]
        return config.qk * data.draw(st.sampled_from(ratios), label="qk ratio")
    attribute = {"expand_mlp": "mlp", "add_heads": "heads", "expand_head_dim": "v"}[name]
    return getattr(config, attribute) + data.draw(st.sampled_from([1, 3, 0, 2]), label=f"{attribute} growth")


def _allowed(config: ModelConfig, name: str) -> bool:
    if name == "insert_layer":
        return config.placement == "pre"
    if name == "expand_hidden":
        return config.norm == "rms"
    return True


def grow_sequence(data: st.DataObject, impl: Growths, model: ReferenceTransformer) -> ReferenceTransformer:
    """Apply EVERY transformation the model allows, in a drawn order, each O-certified (a ratio of 1 is
    allowed: the identity), each with its own free initialiser, plus up to two repeats.

    Every example composes all six (five for post-norm models, which refuse
    layer insertion; four for LayerNorm, which refuses hidden growth), so a
    bug in any one of them is exercised by every example.
    """
    allowed = [name for name in DRAW_ORDER if _allowed(model.config, name)]
    order = data.draw(st.permutations(allowed), label="order")
    repeats = data.draw(st.lists(st.sampled_from(allowed), max_size=2), label="repeats")
    for step, name in enumerate([*order, *repeats]):
        size = _o_size(model.config, name, data)
        init_scale = data.draw(st.sampled_from([0.5, 1.0, 3.0]), label=f"step {step} free scale")
        seed = data.draw(st.integers(0, 2**16), label=f"step {step} seed")
        model = impl[name](model, size, init=random_init(init_scale), seed=seed)
    return model


def _o_exact_in_the_normal_range(before: Any, after: Any, ids: torch.Tensor, *, check_grads: bool) -> Any:
    """Level O, under the certificate's condition that scaled intermediates stay normal.

    A power-of-two factor is exact only in the normal range: where the grown
    model's oracle evaluation had subnormal results AND the growth scaled
    something, a mismatch is outside the claim; the example is rejected (and
    counted as an event), never passed.
    """
    try:
        return assert_function_preserved(before, after, ids, level="O", check_grads=check_grads)
    except FunctionNotPreservedError as error:
        scaled = any(block.factor != 1 for block in after.growth_certificate.scaled)
        if error.report.subnormal_results and scaled:
            event("rejected: scaled intermediates left the normal range (outside the O claim)")
            reject()
        raise


def _kernel_event(before: Any, after: Any, ids: torch.Tensor) -> None:
    """Level K, measured: an event for the statistics, never an assertion."""
    try:
        assert_function_preserved(before, after, ids, level="K")
        event("K: bit-exact on the CPU kernels")
    except FunctionNotPreservedError:
        event("K: not bit-exact on the CPU kernels (a kernel finding; O holds)")


# ---- properties ---------------------------------------------------------------------------------


def check_growth_is_o_exact(data: st.DataObject, impl: Growths) -> None:
    """Level O: every O-certified growth sequence is bit-exact in the declared-order oracle."""
    before = data.draw(models(), label="base model")
    after = grow_sequence(data, impl, before)
    ids = data.draw(token_ids(before.config), label="ids")
    certificate = getattr(after, "growth_certificate", None)
    assert isinstance(certificate, GrowthCertificate) and certificate.level == Level.O, certificate
    _o_exact_in_the_normal_range(before, after, ids, check_grads=False)
    _kernel_event(before, after, ids)


def check_gradients_preserved(data: st.DataObject, impl: Growths) -> None:
    """Level O: old parameters' gradients are bit-exact after dividing by each reported factor."""
    before = data.draw(models(dtypes=("fp64", "fp32")), label="base model")
    after = grow_sequence(data, impl, before)
    ids = data.draw(token_ids(before.config), label="ids")
    report = _o_exact_in_the_normal_range(before, after, ids, check_grads=True)
    factors = sorted({g.factor for g in report.gradients if g.factor != 1})
    event(f"rescaled gradients: {factors or 'none'}")


def _r_size(config: ModelConfig, name: str, data: st.DataObject) -> int:
    if name == "insert_layer":
        return data.draw(st.integers(0, config.layers), label="insert index")
    attribute = {
        "expand_mlp": "mlp",
        "add_heads": "heads",
        "expand_head_dim": "v",
        "expand_qk_dim": "qk",
        "expand_hidden": "hidden",
    }[name]
    return getattr(config, attribute) + data.draw(st.sampled_from([1, 3, 0, 2]), label=f"{attribute} growth")


def check_growth_is_r_exact(data: st.DataObject, impl: Growths) -> None:
    """Level R: every transformation once, in a drawn order, at any ratio (powers of 4 or not), with the
    certificate's exact factors: the real functions agree (mpmath, 200 bits, tiny shapes), and the stored
    scaled values and eps are the exact ones rounded once."""
    before = data.draw(models(tiny=True, dtypes=("fp64", "fp32")), label="base model")
    allowed = [name for name in DRAW_ORDER if _allowed(before.config, name)]
    after = before
    for name in data.draw(st.permutations(allowed), label="order"):
        size = _r_size(after.config, name, data)
        seed = data.draw(st.integers(0, 99), label=f"{name} seed")
        after = impl[name](after, size, init=random_init(1.0), seed=seed)
    ids = data.draw(token_ids(before.config, max_batch=1), label="ids")
    assert_function_preserved(before, after, ids, level="R")
    event(f"certified {growth_certificate(after).level}")


def _violate(data: st.DataObject, model: ReferenceTransformer) -> tuple[ReferenceTransformer, str]:
    """A copy of a grown model with one of its step's constraints broken (one zero block made nonzero,
    one scaling undone, or eps restored), or the model itself when there is nothing to break."""
    step = growth_step(model)
    choices: dict[str, list[Any]] = {
        "zero": list(step.zeroed),
        "scale": [block for block in step.scaled if block.factor != 1],
        "eps": [None] if step.eps_after != step.eps_before else [],
    }
    kinds = [kind for kind, blocks in choices.items() if blocks]
    if not kinds:
        return model, "nothing to violate"
    kind = data.draw(st.sampled_from(kinds), label="violation kind")
    block = data.draw(st.sampled_from(choices[kind]), label="violated block")
    params = {name: p.detach().clone() for name, p in model.named_parameters()}
    config = model.config
    old_of = {entry.parameter: (old, entry) for old, entry in step.parameter_map.items()}
    if kind == "eps":
        config = config.replace(eps=step.eps_before)
        what = f"eps kept at {step.eps_before!r}"
    elif kind == "scale":
        assert block is not None
        _, entry = old_of[block.parameter]
        where = torch.meshgrid(*(torch.from_numpy(i) for i in entry.index), indexing="ij")
        tensor = params[block.parameter]
        tensor[where] = (tensor[where].double() / block.factor).to(tensor.dtype)
        what = f"{block.parameter} not scaled"
    else:
        assert block is not None
        tensor = params[block.parameter]
        mask = torch.ones(tensor.shape, dtype=torch.bool)
        if block.parameter in old_of:
            _, entry = old_of[block.parameter]
            mask[torch.meshgrid(*(torch.from_numpy(i) for i in entry.index), indexing="ij")] = False
        generator = torch.Generator().manual_seed(data.draw(st.integers(0, 99), label="violation seed"))
        noise = (1 + torch.rand(tensor.shape, generator=generator, dtype=torch.float64)).to(tensor.dtype)
        tensor[mask] = noise[mask]
        what = f"{block.parameter} [{block.region}] nonzero"
    return ReferenceTransformer.from_parameters(config, params), what


def check_violation_is_detected(data: st.DataObject, checker: Callable[..., Any]) -> None:
    """A broken constraint changes the function (GELU, every new entry in [1, 2)) and ``checker`` says so."""
    drawn = data.draw(configs(placement="pre"), label="config")
    eps = data.draw(st.sampled_from([1e-3, 1e-6]), label="eps")  # 1e-6: the notebook's
    config = drawn.replace(
        activation="gelu", eps=eps, causal=False, max_len=max(2, drawn.max_len), layers=max(1, drawn.layers)
    )
    before = random_model(config, torch.float64, data.draw(st.integers(0, 2**16), label="seed"))
    names = [name for name in DRAW_ORDER if _allowed(before.config, name)]
    name = data.draw(st.sampled_from(names), label="transformation")
    config = before.config
    size = {
        "insert_layer": data.draw(st.integers(0, config.layers), label="index"),
        "expand_hidden": 4 * config.hidden,
        "expand_qk_dim": (4 if config.attention == "explicit" else 16) * config.qk,
        "expand_mlp": config.mlp + 2,
        "add_heads": config.heads + 1,
        "expand_head_dim": config.v + 2,
    }[name]
    grown = REAL[name](before, size, seed=data.draw(st.integers(0, 99), label="seed"))
    broken, what = _violate(data, grown)
    if broken is grown:
        return
    event(f"violation: {what.split(' [')[0]}")
    ids = torch.arange(config.max_len).reshape(1, -1) % config.vocab
    try:
        checker(before, broken, ids)
    except AssertionError:  # FunctionNotPreservedError, or a checker's own assertion
        return
    raise CheckerTooLaxError(f"{getattr(checker, '__name__', checker)} accepted {name} with {what}")


def check_nan_is_reported(data: st.DataObject, checker: Callable[..., Any]) -> None:
    """A new head's values overflow to inf and meet w_o's zero rows: 0·inf = NaN, which must be reported."""
    dtype = DTYPES[data.draw(st.sampled_from(["fp32", "fp64", "bf16"]), label="dtype")]
    config = ModelConfig(
        vocab=5,
        max_len=4,
        hidden=1,
        mlp=2,
        heads=1,
        qk=1,
        v=1,
        layers=1,
        eps=data.draw(st.sampled_from([0.0, 1e-5]), label="eps"),
        attention=data.draw(st.sampled_from(["explicit", "sdpa"]), label="attention"),
    )
    before = random_model(config, dtype, data.draw(st.integers(0, 99), label="seed"), 1.0)
    with torch.no_grad():
        layer(before, 0).norm1.weight.fill_(4.0)  # |norm1(x)| = 4 for h = 1
    huge = torch.finfo(dtype).max / 2

    def overflowing_values(role: str, shape: tuple[int, ...], fan_in: int, generator: Any) -> torch.Tensor:
        return torch.full(shape, huge, dtype=torch.float64)  # finite; 4 * huge overflows

    after = REAL["add_heads"](before, 2, init=overflowing_values)
    ids = data.draw(token_ids(config), label="ids")
    try:
        checker(before, after, ids)
    except FunctionNotPreservedError as error:
        if "NaN" not in str(error):
            raise CheckerTooLaxError(f"the report does not mention the NaN:\n{error}") from None
        return
    raise CheckerTooLaxError("a NaN created by 0·inf in a grown model was accepted")


def level_o_checker(before: Any, after: Any, ids: torch.Tensor) -> None:
    """The real checker of the two checker properties: level O."""
    assert_function_preserved(before, after, ids, level="O")


# ---- the tests (the real implementation) -----------------------------------------------------------


@scaled(1.0, minimum=3)
@given(data=st.data())
def test_growth_is_o_exact(data: st.DataObject) -> None:
    check_growth_is_o_exact(data, REAL)


@scaled(0.5, minimum=3)
@given(data=st.data())
def test_gradients_preserved(data: st.DataObject) -> None:
    check_gradients_preserved(data, REAL)


@scaled(0.34, minimum=3)
@given(data=st.data())
def test_growth_is_r_exact(data: st.DataObject) -> None:
    check_growth_is_r_exact(data, REAL)


@scaled(1.0, minimum=3)
@given(data=st.data())
def test_violation_is_detected(data: st.DataObject) -> None:
    check_violation_is_detected(data, level_o_checker)


@scaled(0.25, minimum=3)
@given(data=st.data())
def test_nan_is_reported(data: st.DataObject) -> None:
    check_nan_is_reported(data, level_o_checker)


def forge(
    model: ReferenceTransformer,
    mutate: Callable[[dict[str, torch.Tensor]], None],
    config_changes: Mapping[str, Any] | None = None,
    certificate_changes: Mapping[str, Any] | None = None,
) -> ReferenceTransformer:
    """``model`` with ``mutate`` applied to (copies of) its parameters, keeping (forging) its certificates.

    The gallery's buggy transformations use it: the certificate claims what the
    real transformation claims, as a buggy implementation would.
    """
    params = {name: p.detach().clone() for name, p in model.named_parameters()}
    mutate(params)
    forged = ReferenceTransformer.from_parameters(model.config.replace(**(config_changes or {})), params)
    target = fingerprint(forged)
    for attribute in ("growth_step", "growth_certificate"):
        certificate = getattr(model, attribute)
        setattr(
            forged, attribute, dataclasses.replace(certificate, target=target, **(certificate_changes or {}))
        )
    return forged
