"""Audit ops of the function-preserving expansions (docs/spec.md §4): audit YOUR growth code.

* :func:`audit_growth_function` — a user's growth function (``grow(model) ->
  grown``, e.g. their own ``expand_mlp``) is run on a set of base models and
  audited at level **O** against the declared-order oracle (a verdict) and at
  level **K** on the user's device (data: bit-exact or how many elements
  differ).  For the user's own architecture, pass their models and
  ``to_reference`` (which maps their parameters onto the reference model, e.g.
  with :func:`revcheck.nn.expand.from_state_dict`).
* :func:`audit_preservation_checker` — a user's *check* (``checker(before,
  after, ids)`` raising ``AssertionError`` when it thinks the function changed)
  is run on growths known to break the function and on growths known to
  preserve it; a check that accepts a broken growth (as ``allclose(rtol=1e-3)``
  does) raises :class:`CheckerTooLaxError`.

The known-broken growths, :data:`NOTEBOOK_GROWTHS`, are the public notebook's
choices (google-research ``muNet/TransformerExpansions.ipynb``, docs/spec.md §4).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from revcheck.errors import UsageError
from revcheck.expand import (
    FunctionNotPreservedError,
    PreservationReport,
    assert_function_preserved,
    expand_hidden,
    expand_mlp,
    expand_qk_dim,
    insert_layer,
    zeros_init,
)
from revcheck.levels import Level
from revcheck.nn.expand import DTYPES, ModelConfig, ReferenceTransformer

__all__ = [
    "DEFAULT_BASE_CONFIGS",
    "NOTEBOOK_GROWTHS",
    "PRESERVING_GROWTHS",
    "CheckerTooLaxError",
    "CheckerTooStrictError",
    "GrowthAudit",
    "GrowthAuditCase",
    "KnownGrowth",
    "audit_growth_function",
    "audit_preservation_checker",
    "notebook_allclose_check",
]

Outcome = PreservationReport | FunctionNotPreservedError | UsageError

DEFAULT_BASE_CONFIGS: tuple[ModelConfig, ...] = (
    ModelConfig(vocab=13, max_len=8, hidden=8, mlp=16, heads=2, qk=4, v=4, layers=1),
    ModelConfig(
        vocab=13, max_len=8, hidden=8, mlp=16, heads=2, qk=4, v=4, layers=2, eps=1e-5, activation="gelu"
    ),
    ModelConfig(
        vocab=13,
        max_len=8,
        hidden=16,
        mlp=24,
        heads=3,
        qk=2,
        v=5,
        layers=2,
        activation="gelu_tanh",
        attention="sdpa",
    ),
    ModelConfig(vocab=13, max_len=8, hidden=4, mlp=8, heads=1, qk=3, v=2, layers=0, eps=1e-6),
)


@dataclass
class GrowthAuditCase:
    """One base model grown by the audited function, and what each level found."""

    label: str
    outcomes: dict[str, Outcome]

    def cell(self, level: str) -> str:
        outcome = self.outcomes.get(level)
        if outcome is None:
            return "-"
        if isinstance(outcome, PreservationReport):
            return "bit-exact" if level in ("K", "O") else "holds"
        if isinstance(outcome, UsageError):
            return "refused"
        comparison = outcome.comparison
        if comparison is not None and comparison.reason == "values":
            return f"{comparison.mismatch_count}/{comparison.total} differ"
        return "NOT preserved"


@dataclass
class GrowthAudit:
    """The audit of one growth function: a level-O verdict per case and the level-K data on ``device``."""

    name: str
    device: str
    cases: list[GrowthAuditCase] = field(default_factory=list)

    @property
    def failures(self) -> list[tuple[GrowthAuditCase, FunctionNotPreservedError]]:
        return [
            (case, outcome)
            for case in self.cases
            if isinstance(outcome := case.outcomes.get("O"), FunctionNotPreservedError)
        ]

    @property
    def ok(self) -> bool:
        """Level O held on every case the function did not refuse (K is data, never part of the verdict)."""
        return not self.failures

    def table(self) -> str:
        rows = [("case", "O (oracle)", f"K ({self.device})")] + [
            (case.label, case.cell("O"), case.cell("K")) for case in self.cases
        ]
        widths = [max(len(row[i]) for row in rows) for i in range(3)]
        lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join(lines)

    def __str__(self) -> str:
        verdict = (
            "level O holds on every case" if self.ok else f"level O FAILS on {len(self.failures)} case(s)"
        )
        return f"audit of {self.name}: {verdict} (K is measured data)\n{self.table()}"

    def raise_if_failed(self) -> None:
        """Raise the first level-O failure (a :class:`FunctionNotPreservedError`) with its case."""
        __tracebackhide__ = True
        for case, error in self.failures:
            error.report.lines.insert(0, f"audit of {self.name}, case {case.label}")
            raise FunctionNotPreservedError(error.report)


def _ids(config: ModelConfig, batch: int, time: int | None, seed: int, device: Any) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    length = min(config.max_len, time or 6)
    return torch.randint(0, config.vocab, (batch, length), generator=generator).to(device)


def _label(config: ModelConfig, dtype: str, seed: int) -> str:
    c = config
    return (
        f"h{c.hidden} p{c.mlp} E{c.heads} k{c.qk} v{c.v} N{c.layers} {c.activation} {c.attention} "
        f"eps={c.eps:g} "
        f"{dtype} seed {seed}"
    )


def _randomised(config: ModelConfig, dtype: torch.dtype, seed: int, device: Any) -> ReferenceTransformer:
    """A base model with every parameter random (gains and biases too), so that no block is trivially zero."""
    model = ReferenceTransformer(config, dtype=dtype, device=device, seed=seed)
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith(("weight", "bias", "b1", "b2")) and "emb" not in name:
                base = 1.0 if name.endswith("weight") else 0.0
                draw = base + 0.3 * torch.randn(parameter.shape, generator=generator, dtype=torch.float64)
                parameter.copy_(draw.to(dtype))
    return model


def audit_growth_function(
    grow: Callable[[Any], Any],
    *,
    name: str | None = None,
    base_configs: Iterable[ModelConfig] = DEFAULT_BASE_CONFIGS,
    dtypes: Sequence[str] = ("fp32",),
    seeds: Sequence[int] = (0, 1),
    device: str | torch.device = "cpu",
    batch: int = 2,
    time: int | None = None,
    check_grads: bool = False,
    models: Iterable[Any] | None = None,
    to_reference: Callable[[Any], ReferenceTransformer] | None = None,
) -> GrowthAudit:
    """Audit a growth function at level O (the oracle: a verdict) and K (``device``: data).

    Parameters
    ----------
    grow
        ``grow(model) -> grown``; must not modify ``model``.  For reference
        models, e.g. ``lambda m: my_expand_mlp(m, 4 * m.config.mlp)``.
    base_configs, dtypes, seeds
        The reference base models to grow (ignored when ``models`` is given):
        every parameter random, one model per config x dtype x seed.
    device
        Where level K runs (the models are moved there).
    check_grads
        Also compare the gradients of pre-existing parameters at O and K (needs
        a growth certificate on the grown model, or unchanged parameter shapes).
    models, to_reference
        The user's own base models and the function that maps one onto a
        :class:`ReferenceTransformer` with the same parameters (for level O);
        level K runs the user's models themselves.

    Returns
    -------
    GrowthAudit
        ``.ok`` is the level-O verdict; ``.raise_if_failed()`` raises the first
        failure; ``str(audit)`` is a table with the K data.

    Examples
    --------
    >>> from revcheck.expand import expand_mlp
    >>> audit = audit_growth_function(lambda m: expand_mlp(m, 2 * m.config.mlp, seed=0), seeds=(0,))
    >>> audit.ok
    True
    """
    device = torch.device(device)
    audit = GrowthAudit(name or str(getattr(grow, "__name__", "growth function")), str(device))
    cases: list[tuple[str, Any, Any]] = []
    if models is not None:
        if to_reference is None:
            raise UsageError(
                "auditing your own models needs to_reference= (map one onto a ReferenceTransformer)"
            )
        for index, model in enumerate(models):
            cases.append((f"model {index}", model, None))
    else:
        for config in base_configs:
            for dtype_name in dtypes:
                if dtype_name not in DTYPES:
                    raise UsageError(f"dtype {dtype_name!r} is not supported; use one of {', '.join(DTYPES)}")
                for seed in seeds:
                    base = _randomised(config, DTYPES[dtype_name], seed, device)
                    cases.append((_label(config, dtype_name, seed), base, None))
    for label, base, _ in cases:
        outcomes: dict[str, Outcome] = {}
        try:
            grown = grow(base)
        except UsageError as error:  # a refusal is an answer, not a failure
            audit.cases.append(GrowthAuditCase(label, {"O": error, "K": error}))
            continue
        reference = base if to_reference is None else to_reference(base)
        config = reference.config
        ids = _ids(config, batch, time, 7, device)
        reference_grown = grown if to_reference is None else to_reference(grown)
        for level, pair in (("O", (reference, reference_grown)), ("K", (base, grown))):
            try:
                outcomes[level] = assert_function_preserved(
                    pair[0], pair[1], ids if level == "K" else ids.cpu(), level=level, check_grads=check_grads
                )
            except (FunctionNotPreservedError, UsageError) as error:
                outcomes[level] = error
        audit.cases.append(GrowthAuditCase(label, outcomes))
    return audit


# ---- auditing a preservation check -------------------------------------------------------------


class CheckerTooLaxError(AssertionError):
    """A preservation check accepted a growth that changes the function."""


class CheckerTooStrictError(AssertionError):
    """A preservation check rejected a growth that preserves the function (at the level it claims)."""


@dataclass(frozen=True)
class KnownGrowth:
    """A growth function whose effect on the function is known, and the level at which it breaks (if any)."""

    name: str
    grow: Callable[[ReferenceTransformer], ReferenceTransformer]
    breaks_at: (
        Level | None
    )  # R: not even real-exact; O: real-exact, not bit-exact in declared order; None: O-exact
    why: str


def _rebuild(model: ReferenceTransformer, **config_changes: Any) -> ReferenceTransformer:
    params = {name: p.detach().clone() for name, p in model.named_parameters()}
    return ReferenceTransformer.from_parameters(model.config.replace(**config_changes), params)


def _unrescaled_eps(model: ReferenceTransformer) -> ReferenceTransformer:
    """The notebook's hidden growth: gains rescaled, but eps (1e-6 there) kept as it was."""
    return _rebuild(expand_hidden(model, 4 * model.config.hidden, seed=0), eps=model.config.eps)


def _qk_sqrt_one_and_a_half(model: ReferenceTransformer) -> ReferenceTransformer:
    """The notebook's key/query growth k -> 1.5 k with the factor sqrt(1.5): exact only in real numbers."""
    if model.config.qk % 2:
        raise UsageError("the sqrt(1.5) growth needs an even key/query size")
    return expand_qk_dim(model, model.config.qk * 3 // 2, seed=0)


def _random_embedding_columns(model: ReferenceTransformer) -> ReferenceTransformer:
    """The paper's text: new embedding columns drawn at random (the residual stream is no longer [x, 0])."""
    grown = expand_hidden(model, 4 * model.config.hidden, seed=0)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        new = grown.tok_emb[:, model.config.hidden :]
        new.copy_(0.02 * torch.randn(new.shape, generator=generator, dtype=torch.float64).to(new.dtype))
    return _rebuild(grown)


def _nonzero_w2_rows(model: ReferenceTransformer) -> ReferenceTransformer:
    """MLP growth whose new W2 rows are initialised like any other weight instead of 0."""
    grown = expand_mlp(model, 4 * model.config.mlp, seed=0)
    generator = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for layer in grown.layers:
            new = layer.w2[model.config.mlp :]  # type: ignore[index]
            new.copy_(0.02 * torch.randn(new.shape, generator=generator, dtype=torch.float64).to(new.dtype))
    return _rebuild(grown)


NOTEBOOK_GROWTHS: tuple[KnownGrowth, ...] = (
    KnownGrowth(
        "unrescaled eps", _unrescaled_eps, Level.R, "mean over h' = mean over h x h/h'; eps must follow"
    ),
    KnownGrowth(
        "qk factor sqrt(1.5)", _qk_sqrt_one_and_a_half, Level.O, "sqrt(1.5) is irrational: stored rounded"
    ),
    KnownGrowth(
        "random new embedding columns",
        _random_embedding_columns,
        Level.R,
        "the residual stream is not [x, 0]",
    ),
    KnownGrowth("nonzero new W2 rows", _nonzero_w2_rows, Level.R, "new units write into the residual stream"),
)

PRESERVING_GROWTHS: tuple[KnownGrowth, ...] = (
    KnownGrowth("hidden x4, eps rescaled", lambda m: expand_hidden(m, 4 * m.config.hidden, seed=0), None, ""),
    KnownGrowth(
        "hidden x4, free blocks zero (Table 1)",
        lambda m: expand_hidden(m, 4 * m.config.hidden, init=zeros_init),
        None,
        "",
    ),
    KnownGrowth("qk x4, factor 2", lambda m: expand_qk_dim(m, 4 * m.config.qk, seed=0), None, ""),
    KnownGrowth("MLP x4, new W2 rows 0", lambda m: expand_mlp(m, 4 * m.config.mlp, seed=0), None, ""),
    KnownGrowth("layer inserted at 0", lambda m: insert_layer(m, 0, seed=0), None, ""),
)

NOTEBOOK_CONFIG = ModelConfig(
    vocab=13, max_len=8, hidden=8, mlp=16, heads=2, qk=4, v=4, layers=2, eps=1e-6, activation="gelu"
)


def notebook_allclose_check(before: Any, after: Any, ids: torch.Tensor) -> None:
    """The public notebook's check: ``allclose(before(ids), after(ids), rtol=1e-3)`` (a lax one, for "
    "audits)."""
    with torch.no_grad():
        if not torch.allclose(before(ids), after(ids), rtol=1e-3):
            raise AssertionError("allclose(rtol=1e-3) failed")


def audit_preservation_checker(
    checker: Callable[[Any, Any, torch.Tensor], Any],
    *,
    name: str | None = None,
    config: ModelConfig = NOTEBOOK_CONFIG,
    broken: Sequence[KnownGrowth] = NOTEBOOK_GROWTHS,
    preserving: Sequence[KnownGrowth] = PRESERVING_GROWTHS,
    levels: Sequence[Level] = (Level.R, Level.O),
    seed: int = 0,
) -> list[str]:
    """Run ``checker(before, after, ids)`` on growths known to break / preserve the function.

    ``checker`` signals "not preserved" by raising ``AssertionError`` (which
    :class:`~revcheck.expand.FunctionNotPreservedError` is).  A growth that breaks
    the function at a level in ``levels`` must be rejected; every growth in
    ``preserving`` (O-exact) must be accepted.  Returns the lines of the audit.

    Raises
    ------
    CheckerTooLaxError
        The checker accepted a broken growth (the message lists each one).
    CheckerTooStrictError
        The checker rejected an O-exact growth.

    Examples
    --------
    >>> from functools import partial
    >>> from revcheck.expand import assert_function_preserved
    >>> lines = audit_preservation_checker(partial(assert_function_preserved, level="O"))
    >>> audit_preservation_checker(notebook_allclose_check)
    Traceback (most recent call last):
      ...
    revcheck.audit.ops_expand.CheckerTooLaxError: notebook_allclose_check accepted 2 growth(s) that change ...
    """
    __tracebackhide__ = True
    label = (
        name
        or getattr(checker, "__name__", None)
        or getattr(getattr(checker, "func", None), "__name__", "checker")
    )
    base = _randomised(config, torch.float32, seed, "cpu")
    ids = _ids(config, 2, None, seed + 3, "cpu")
    accepted, rejected, lines = [], [], []
    for growth in (*broken, *preserving):
        grown = growth.grow(base)
        try:
            checker(base, grown, ids)
            verdict = "accepted"
        except AssertionError:
            verdict = "rejected"
        must_reject = growth.breaks_at is not None and growth.breaks_at in levels
        lines.append(f"{growth.name}: {verdict} (breaks at {growth.breaks_at or 'no level: O-exact'})")
        if must_reject and verdict == "accepted":
            accepted.append(f"{growth.name} (breaks at level {growth.breaks_at}: {growth.why})")
        if growth.breaks_at is None and verdict == "rejected":
            rejected.append(growth.name)
    if accepted:
        raise CheckerTooLaxError(
            f"{label} accepted {len(accepted)} growth(s) that change the function: " + "; ".join(accepted)
        )
    if rejected:
        raise CheckerTooStrictError(f"{label} rejected O-exact growth(s): {', '.join(rejected)}")
    return lines
