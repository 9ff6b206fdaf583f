"""Planted bugs of the function-preserving expansions: each violates one constraint of docs/spec.md §4.

Two kinds of records:

* wrong **growth code**: one of the six transformations with one constraint
  broken (a block that must be zero made nonzero, a rescaling left out, eps not
  rescaled), its certificate forged to claim what the real transformation
  claims, as a buggy implementation would.  The property bodies of
  properties/test_expand.py must catch each with ``FunctionNotPreservedError``.
* the public notebook's **choices** (google-research
  ``muNet/TransformerExpansions.ipynb``): an unrescaled eps, random new
  embedding columns, nonzero new W2 rows (each not even R-exact: caught at level
  R), the factor sqrt(1.5) (R-exact, never O-exact: caught at level O), and its
  ``allclose(rtol=1e-3)`` check, which accepts some of them
  (``CheckerTooLaxError``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from fractions import Fraction
from functools import partial
from typing import Any

import torch

from properties import test_expand as props
from revcheck.audit.ops_expand import (
    NOTEBOOK_GROWTHS,
    CheckerTooLaxError,
    audit_preservation_checker,
    notebook_allclose_check,
)
from revcheck.expand import (
    FunctionNotPreservedError,
    assert_function_preserved,
    expand_head_dim,
    expand_hidden,
    expand_mlp,
    expand_qk_dim,
    insert_layer,
)
from revcheck.nn.expand import ModelConfig, ReferenceTransformer
from tests.harness import PlantedBug

__all__ = ["PLANTED_BUGS"]

FAMILY = "expand"
Params = dict[str, torch.Tensor]


def _mutated(
    real: Callable[..., Any], mutate: Callable[[ReferenceTransformer, Params], None], **config_changes: Any
) -> Callable[..., Any]:
    """``real`` followed by ``mutate(before, params)`` on the grown parameters, certificates forged."""

    def transformation(model: ReferenceTransformer, size: int, **kwargs: Any) -> ReferenceTransformer:
        grown = real(model, size, **kwargs)
        changes = {key: value(model, grown) for key, value in config_changes.items()}
        return props.forge(grown, partial(mutate, model), changes)

    transformation.__name__ = f"buggy_{real.__name__}"
    return transformation


def _layers(model: ReferenceTransformer) -> range:
    return range(model.config.layers)


def _head_new_positions(heads: int, old: int, new: int) -> list[int]:
    return [e * new + i for e in range(heads) for i in range(old, new)]


# ---- wrong growth code: one constraint broken each ----------------------------------------------------


def _w2_rows(model: ReferenceTransformer, params: Params) -> None:
    for i in _layers(model):
        params[f"layers.{i}.w2"][model.config.mlp :] = 0.5


def _head_w_o_rows(model: ReferenceTransformer, params: Params) -> None:
    c = model.config
    for i in _layers(model):
        params[f"layers.{i}.w_o"][c.heads * c.v :] = 0.5


def _value_w_o_rows(model: ReferenceTransformer, params: Params) -> None:
    c = model.config
    for i in _layers(model):
        w_o = params[f"layers.{i}.w_o"]
        new_v = w_o.shape[0] // c.heads
        w_o[_head_new_positions(c.heads, c.v, new_v)] = 0.5


def _w_k_unscaled(model: ReferenceTransformer, params: Params) -> None:
    c = model.config
    for i in _layers(model):
        w_k = params[f"layers.{i}.w_k"]
        new_k = w_k.shape[1] // c.heads
        old = [e * new_k + j for e in range(c.heads) for j in range(c.qk)]
        w_k[:, old] = (w_k[:, old].double() / (new_k / c.qk) ** 0.5).to(w_k.dtype)


def _w_k_columns(model: ReferenceTransformer, params: Params) -> None:
    c = model.config
    for i in _layers(model):
        w_k = params[f"layers.{i}.w_k"]
        w_k[:, _head_new_positions(c.heads, c.qk, w_k.shape[1] // c.heads)] = 0.5


def _gains_unscaled(model: ReferenceTransformer, params: Params) -> None:
    h = model.config.hidden
    for i in _layers(model):
        for norm in ("norm1", "norm2"):
            gain = params[f"layers.{i}.{norm}.weight"]
            gain[:h] = (gain[:h].double() * (gain.shape[0] / h) ** 0.5).to(gain.dtype)


def _gains_squared_factor(model: ReferenceTransformer, params: Params) -> None:
    """Gains multiplied by h/h' instead of sqrt(h/h') (a units slip)."""
    h = model.config.hidden
    for i in _layers(model):
        for norm in ("norm1", "norm2"):
            gain = params[f"layers.{i}.{norm}.weight"]
            gain[:h] = (gain[:h].double() * (h / gain.shape[0]) ** 0.5).to(gain.dtype)


def _new_columns(name: str) -> Callable[[ReferenceTransformer, Params], None]:
    def mutate(model: ReferenceTransformer, params: Params) -> None:
        h = model.config.hidden
        names = (
            [name] if not name.startswith("layers.") else [name.replace("*", str(i)) for i in _layers(model)]
        )
        for each in names:
            tensor = params[each]
            if tensor.dim() == 1:
                tensor[h:] = 0.5
            else:
                generator = torch.Generator().manual_seed(0)
                noise = torch.randn(tensor[..., h:].shape, generator=generator, dtype=torch.float64)
                tensor[..., h:] = (0.02 + 0.5 * noise).to(tensor.dtype)

    return mutate


def _inserted(name: str) -> Callable[..., Callable[..., Any]]:
    def mutate(model: ReferenceTransformer, params: Params, index: int) -> None:
        params[f"layers.{index}.{name}"].fill_(0.5)

    def transformation(model: ReferenceTransformer, index: int, **kwargs: Any) -> ReferenceTransformer:
        grown = insert_layer(model, index, **kwargs)
        return props.forge(grown, lambda params: mutate(model, params, index))

    transformation.__name__ = f"insert_layer_with_nonzero_{name}"
    return transformation  # type: ignore[return-value]


def _eps_kept(model: ReferenceTransformer, grown: ReferenceTransformer) -> float:
    return model.config.eps


def _wrong_gradient_factor(model: ReferenceTransformer, size: int, **kwargs: Any) -> ReferenceTransformer:
    """expand_qk_dim that scales w_k but reports factor 1 for it: gradients would be compared unrescaled."""
    grown = expand_qk_dim(model, size, **kwargs)
    for attribute in ("growth_step", "growth_certificate"):
        certificate = getattr(grown, attribute)
        mapping = {
            name: dataclasses.replace(entry, factor_squared=Fraction(1))
            if entry.parameter.endswith(".w_k")
            else entry
            for name, entry in certificate.parameter_map.items()
        }
        setattr(grown, attribute, dataclasses.replace(certificate, parameter_map=mapping))
    return grown


_BUGGY_GROWTH: list[tuple[str, str, dict[str, Callable[..., Any]]]] = [
    (
        "mlp_nonzero_w2_rows",
        "expand_mlp leaves the new W2 rows nonzero",
        {"expand_mlp": _mutated(expand_mlp, _w2_rows)},
    ),
    (
        "heads_nonzero_w_o_rows",
        "add_heads gives the new heads nonzero W_O rows",
        {"add_heads": _mutated(props.REAL["add_heads"], _head_w_o_rows)},
    ),
    (
        "value_size_nonzero_w_o_rows",
        "expand_head_dim leaves W_O's new rows inside each head nonzero",
        {"expand_head_dim": _mutated(expand_head_dim, _value_w_o_rows)},
    ),
    (
        "qk_factor_missing",
        "expand_qk_dim forgets to multiply the old W_K by sqrt(k'/k)",
        {"expand_qk_dim": _mutated(expand_qk_dim, _w_k_unscaled)},
    ),
    (
        "qk_nonzero_w_k_columns",
        "expand_qk_dim gives W_K's new columns nonzero values",
        {"expand_qk_dim": _mutated(expand_qk_dim, _w_k_columns)},
    ),
    (
        "hidden_gains_unscaled",
        "expand_hidden forgets the gain factor sqrt(h/h')",
        {"expand_hidden": _mutated(expand_hidden, _gains_unscaled)},
    ),
    (
        "hidden_eps_unrescaled",
        "expand_hidden keeps eps instead of eps * h/h'",
        {"expand_hidden": _mutated(expand_hidden, lambda model, params: None, eps=_eps_kept)},
    ),
    (
        "hidden_random_embedding_columns",
        "expand_hidden draws the new embedding columns at random (the paper's text)",
        {"expand_hidden": _mutated(expand_hidden, _new_columns("tok_emb"))},
    ),
    (
        "hidden_nonzero_position_columns",
        "expand_hidden leaves the new position columns nonzero",
        {"expand_hidden": _mutated(expand_hidden, _new_columns("pos_emb"))},
    ),
    (
        "hidden_nonzero_w2_columns",
        "expand_hidden leaves W2's new columns nonzero",
        {"expand_hidden": _mutated(expand_hidden, _new_columns("layers.*.w2"))},
    ),
    (
        "hidden_nonzero_b2",
        "expand_hidden leaves the new b2 entries nonzero",
        {"expand_hidden": _mutated(expand_hidden, _new_columns("layers.*.b2"))},
    ),
    (
        "hidden_nonzero_w_o_columns",
        "expand_hidden leaves W_O's new columns nonzero",
        {"expand_hidden": _mutated(expand_hidden, _new_columns("layers.*.w_o"))},
    ),
    (
        "inserted_layer_nonzero_w_o",
        "insert_layer leaves the new layer's W_O nonzero",
        {"insert_layer": _inserted("w_o")},
    ),
    (
        "inserted_layer_nonzero_w2",
        "insert_layer leaves the new layer's W2 nonzero",
        {"insert_layer": _inserted("w2")},
    ),
    (
        "inserted_layer_nonzero_b2",
        "insert_layer leaves the new layer's b2 nonzero",
        {"insert_layer": _inserted("b2")},
    ),
]

PLANTED_BUGS: list[PlantedBug] = [
    PlantedBug(
        name,
        mistake,
        props.check_growth_is_o_exact,
        props.REAL.replace(**functions),
        props.REAL,
        FunctionNotPreservedError,
        family=FAMILY,
        # every example composes all six transformations: the first one catches each bug here
        max_examples=30,
    )
    for name, mistake, functions in _BUGGY_GROWTH
]

# Level R catches what is wrong in real numbers, including stored values that disagree with the certificate.
PLANTED_BUGS += [
    PlantedBug(
        "mlp_nonzero_w2_rows",
        "expand_mlp leaves the new W2 rows nonzero",
        props.check_growth_is_r_exact,
        props.REAL.replace(expand_mlp=_mutated(expand_mlp, _w2_rows)),
        props.REAL,
        FunctionNotPreservedError,
        family=FAMILY,
        max_examples=30,
    ),
    PlantedBug(
        "hidden_eps_unrescaled",
        "expand_hidden keeps eps instead of eps * h/h'",
        props.check_growth_is_r_exact,
        props.REAL.replace(expand_hidden=_mutated(expand_hidden, lambda model, params: None, eps=_eps_kept)),
        props.REAL,
        FunctionNotPreservedError,
        family=FAMILY,
        max_examples=30,
    ),
    PlantedBug(
        "hidden_gain_factor_squared",
        "expand_hidden multiplies the gains by h/h' (not its square root) and certifies sqrt(h/h')",
        props.check_growth_is_r_exact,
        props.REAL.replace(expand_hidden=_mutated(expand_hidden, _gains_squared_factor)),
        props.REAL,
        FunctionNotPreservedError,
        family=FAMILY,
        max_examples=30,
    ),
    PlantedBug(
        "gradient_factor_misreported",
        "expand_qk_dim's certificate reports factor 1 for the scaled W_K",
        props.check_gradients_preserved,
        props.REAL.replace(expand_qk_dim=_wrong_gradient_factor),
        props.REAL,
        FunctionNotPreservedError,
        family=FAMILY,
        max_examples=30,
    ),
]


# ---- checkers that must not accept a broken model ----------------------------------------------------


def allclose_checker(before: Any, after: Any, ids: torch.Tensor) -> None:
    """The notebook's check as a checker: allclose(rtol=1e-3)."""
    notebook_allclose_check(before, after, ids)


def nan_hiding_checker(before: Any, after: Any, ids: torch.Tensor) -> None:
    """Compares only the elements that are finite on both sides: a NaN from 0·inf is never looked at."""
    with torch.no_grad():
        a, b = before(ids), after(ids)
    finite = torch.isfinite(a) & torch.isfinite(b)
    if not torch.equal(a[finite], b[finite]):
        assert_function_preserved(before, after, ids, level="O")


PLANTED_BUGS += [
    PlantedBug(
        "allclose_accepts_violations",
        "a violated constraint checked with allclose(rtol=1e-3)",
        props.check_violation_is_detected,
        allclose_checker,
        props.level_o_checker,
        CheckerTooLaxError,
        family=FAMILY,
        max_examples=50,
    ),
    PlantedBug(
        "nan_hidden",
        "outputs compared after nan_to_num",
        props.check_nan_is_reported,
        nan_hiding_checker,
        props.level_o_checker,
        CheckerTooLaxError,
        family=FAMILY,
        max_examples=20,
    ),
]


# ---- the notebook's choices, each caught at the level where it breaks -------------------------------------

NOTEBOOK_BASE = ModelConfig(
    vocab=7, max_len=3, hidden=4, mlp=4, heads=2, qk=2, v=2, layers=1, eps=1e-6, activation="gelu"
)


def _notebook_base(dtype: torch.dtype = torch.float64) -> ReferenceTransformer:
    return props.random_model(NOTEBOOK_BASE, dtype, seed=3)


def check_growth_is_r_exact_on_notebook_model(
    grow: Callable[[ReferenceTransformer], ReferenceTransformer],
) -> None:
    """Level R on the notebook's setting (eps = 1e-6, tiny, fp64): the real functions must agree."""
    before = _notebook_base()
    assert_function_preserved(before, grow(before), torch.tensor([[1, 2, 3]]), level="R")


def check_growth_is_o_exact_on_notebook_model(
    grow: Callable[[ReferenceTransformer], ReferenceTransformer],
) -> None:
    """Level O on the notebook's setting (fp32): bit-exact in the declared order."""
    before = _notebook_base(torch.float32)
    assert_function_preserved(before, grow(before), torch.tensor([[1, 2, 3], [4, 5, 6]]), level="O")


def check_checker_rejects_notebook_growths(checker: Callable[..., Any]) -> None:
    """The checker must reject every growth of the notebook that breaks the function (at R or O)."""
    audit_preservation_checker(checker)


_NOTEBOOK = {growth.name: growth for growth in NOTEBOOK_GROWTHS}
_RIGHT = {
    "unrescaled eps": lambda m: expand_hidden(m, 4 * m.config.hidden, seed=0),
    "random new embedding columns": lambda m: expand_hidden(m, 4 * m.config.hidden, seed=0),
    "nonzero new W2 rows": lambda m: expand_mlp(m, 4 * m.config.mlp, seed=0),
    "qk factor sqrt(1.5)": lambda m: expand_qk_dim(m, 4 * m.config.qk, seed=0),
}

PLANTED_BUGS += [
    PlantedBug(
        f"notebook_{name.replace(' ', '_').replace('(', '').replace(')', '')}",
        growth.why,
        check_growth_is_r_exact_on_notebook_model
        if growth.breaks_at == "R"
        else check_growth_is_o_exact_on_notebook_model,
        growth.grow,
        _RIGHT[name],
        FunctionNotPreservedError,
        family=FAMILY,
        hypothesis=False,
        notes={"caught at level": str(growth.breaks_at)},
    )
    for name, growth in _NOTEBOOK.items()
]
PLANTED_BUGS.append(
    PlantedBug(
        "notebook_allclose_1e-3",
        "allclose(rtol=1e-3) accepts growths that change the function",
        check_checker_rejects_notebook_growths,
        notebook_allclose_check,
        partial(assert_function_preserved, level="O"),
        CheckerTooLaxError,
        family=FAMILY,
        hypothesis=False,
    )
)
