"""Layer tying: bad input, the controller's bookkeeping, checkpoints, the agent, the audit, memory."""

from __future__ import annotations

import functools
import io
import math
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import pytest
import torch
from torch import nn

from revcheck.audit.ops_tying import (
    DoubleUpdateError,
    NotUpdatedError,
    OrphanedStateError,
    StorageAuditUsageError,
    assert_each_storage_updated_once,
    assert_no_orphaned_state,
    assert_storage_consistent,
    audit_storage,
    count_parameters,
    count_parameters_per_object,
    measure_training_step,
)
from revcheck.errors import UsageError
from revcheck.nn.transformer import PreNormTransformerBlock, TinyGPT
from revcheck.nn.tying import (
    NoLayersError,
    TieModeError,
    TieShapeError,
    TiesLostError,
    TiesLostWarning,
    TieTargetError,
    TyingAgent,
    TyingController,
    TyingError,
    clipped_perplexity_reward,
    find_lost_ties,
    heldout_loss,
    load_checkpoint,
    num_actions,
    save_checkpoint,
    state_from_storage,
    train_with_agent,
    warn_if_ties_lost,
)
from revcheck.tying import (
    StateMismatchError,
    assert_reward_informative,
    assert_state_matches_weights,
    assert_tie_semantics,
    assert_ties_restored,
)

TEXT = Path(__file__).resolve().parent.parent / "examples" / "data" / "public_domain_english.txt"


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    # Tiny models on a shared 2-core machine: one intra-op thread is many times faster.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def layer(model: TinyGPT, index: int) -> PreNormTransformerBlock:
    """Block ``index`` of ``model``, typed (``ModuleList`` indexing is ``Module`` to mypy)."""
    return cast(PreNormTransformerBlock, model.blocks[index])


def _output_layer(agent: TyingAgent) -> nn.Linear:
    return cast(nn.Linear, agent.q_network[2])


def _grad(parameter: torch.Tensor) -> torch.Tensor:
    assert parameter.grad is not None, "the step left no gradient"
    return parameter.grad


def tiny(depth: int = 3, seed: int = 0) -> TinyGPT:
    return TinyGPT(vocab=11, d_model=8, n_heads=2, depth=depth, seq_len=4, seed=seed)


def batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    tokens = torch.randint(0, 11, (2, 5), generator=torch.Generator().manual_seed(seed))
    return tokens[:, :-1], tokens[:, 1:]


def train_step(model: TinyGPT, optimizer: torch.optim.Optimizer, seed: int = 0) -> None:
    optimizer.zero_grad(set_to_none=True)
    model.loss(*batch(seed)).backward()
    optimizer.step()


def through_bytes(value: object) -> object:
    buffer = io.BytesIO()
    torch.save(value, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=False)


def public_tie(model: TinyGPT, i: int, j: int) -> None:
    """The public code's tie, as docs/spec.md §5 describes it."""
    for param, source in zip(layer(model, i).parameters(), layer(model, j).parameters(), strict=True):
        param.data = source.data
        param.requires_grad = False


# ---- bad input ---------------------------------------------------------------------------------


def test_every_tying_error_is_a_usage_error() -> None:
    for error in (NoLayersError, TieTargetError, TieShapeError, TieModeError, TiesLostError):
        assert (
            issubclass(error, TyingError) and issubclass(error, UsageError) and issubclass(error, ValueError)
        )


@pytest.mark.parametrize(
    "layers, words",
    [
        (nn.ModuleList(), "no layers"),
        (nn.Linear(2, 2), "no `blocks`"),
        ([1, 2], "not an nn.Module"),
        (42, "not a sequence"),
    ],
)
def test_no_layers(layers: object, words: str) -> None:
    with pytest.raises(NoLayersError, match=words):
        TyingController(layers)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "i, j, words",
    [
        (1, 1, "cannot be tied to itself"),
        (1, 2, r"earlier layer \(j < 1\).*tie\(2, 1"),
        (3, 0, "not a layer index"),
        (1, -1, "not a layer index"),
        (True, 0, "not a layer index"),
    ],
)
def test_bad_tie_targets(i: int, j: int, words: str) -> None:
    with pytest.raises(TieTargetError, match=words):
        TyingController(tiny()).tie(i, j, "share")


def test_untie_of_an_independent_layer() -> None:
    with pytest.raises(TieTargetError, match="independent; there is nothing to untie"):
        TyingController(tiny()).untie(1)


@pytest.mark.parametrize("mode", ["tied", "Share", None, 1])
def test_unknown_mode(mode: object) -> None:
    with pytest.raises(TieModeError, match="use one of 'share', 'copy', 'stopgrad'"):
        TyingController(tiny()).tie(1, 0, mode)  # type: ignore[arg-type]


def test_unknown_untie_state() -> None:
    with pytest.raises(TieModeError, match="untie_state"):
        TyingController(tiny(), untie_state="zero")


def test_layers_of_different_shapes() -> None:
    with pytest.raises(TieShapeError, match=r"differ at 'weight': \(3, 3\)"):
        TyingController(nn.ModuleList([nn.Linear(2, 2), nn.Linear(3, 3)])).tie(1, 0, "share")
    with pytest.raises(TieShapeError, match="different parameters"):
        TyingController(nn.ModuleList([nn.Linear(2, 2), nn.Linear(2, 2, bias=False)])).tie(1, 0, "share")
    with pytest.raises(TieShapeError, match="float64"):
        TyingController(nn.ModuleList([nn.Linear(2, 2), nn.Linear(2, 2).double()])).tie(1, 0, "copy")


def test_layers_that_already_share_storage() -> None:
    layers = nn.ModuleList([nn.Linear(2, 2), nn.Linear(2, 2)])
    layers[1].weight = layers[0].weight
    with pytest.raises(TyingError, match="already shares storage"):
        TyingController(layers)


def test_bad_agent_states() -> None:
    tying = TyingController(tiny())
    with pytest.raises(TieTargetError, match="one per layer"):
        tying.apply_state([0, 1], "share")
    with pytest.raises(TieTargetError, match=r"state\[1\] = 2"):
        tying.apply_state([0, 2, 2], "share")


# ---- the controller ----------------------------------------------------------------------------


def test_share_is_one_parameter_and_its_state_leaves() -> None:
    model = tiny()
    optimizer = torch.optim.AdamW(model.parameters())
    tying = TyingController(model, optimizer=optimizer)
    train_step(model, optimizer)
    retired = list(layer(model, 2).parameters())
    states_before = len(optimizer.state)
    tying.tie(2, 0, "share")
    assert all(
        a is b for a, b in zip(layer(model, 2).parameters(), layer(model, 0).parameters(), strict=True)
    )
    held = [p for group in optimizer.param_groups for p in group["params"]]
    assert not any(p is r for p in held for r in retired)
    assert len(optimizer.state) == states_before - len(retired)
    assert len(list(model.parameters())) == len(held)


def test_untie_copies_values_and_state_into_new_storage() -> None:
    model = tiny()
    optimizer = torch.optim.AdamW(model.parameters())
    tying = TyingController(model, optimizer=optimizer)
    tying.tie(2, 0, "share")
    train_step(model, optimizer)
    tying.untie(2)
    for mine, root in zip(layer(model, 2).parameters(), layer(model, 0).parameters(), strict=True):
        assert mine is not root and mine.untyped_storage().data_ptr() != root.untyped_storage().data_ptr()
        assert torch.equal(mine, root)
        for key, value in optimizer.state[root].items():
            assert torch.equal(optimizer.state[mine][key], value)
            assert optimizer.state[mine][key] is not value


def test_untie_fresh_state() -> None:
    model = tiny()
    optimizer = torch.optim.AdamW(model.parameters())
    tying = TyingController(model, optimizer=optimizer, untie_state="fresh")
    tying.tie(2, 0, "stopgrad")
    train_step(model, optimizer)
    tying.untie(2)
    assert all(p not in optimizer.state for p in layer(model, 2).parameters())
    train_step(model, optimizer)
    assert all(float(optimizer.state[p]["step"]) == 1.0 for p in layer(model, 2).parameters())


def test_stopgrad_is_a_frozen_alias_outside_the_optimizer() -> None:
    model = tiny()
    optimizer = torch.optim.AdamW(model.parameters())
    tying = TyingController(model, optimizer=optimizer)
    tying.tie(1, 0, "stopgrad")
    held = {id(p) for group in optimizer.param_groups for p in group["params"]}
    for alias, root in zip(layer(model, 1).parameters(), layer(model, 0).parameters(), strict=True):
        assert alias is not root and not alias.requires_grad and id(alias) not in held
        assert alias.untyped_storage().data_ptr() == root.untyped_storage().data_ptr()
    train_step(model, optimizer)  # the alias follows the root's training
    assert all(
        torch.equal(a, r)
        for a, r in zip(layer(model, 1).parameters(), layer(model, 0).parameters(), strict=True)
    )


def test_chains_resolve_and_dependents_follow() -> None:
    model = tiny(4)
    tying = TyingController(model)
    tying.tie(3, 2, "share")
    tying.tie(2, 1, "stopgrad")
    tying.tie(1, 0, "share")
    assert [tying.root(i) for i in range(4)] == [0, 0, 0, 0]
    assert tying.state() == [0, 0, 1, 2]
    assert layer(model, 3).qkv.weight is layer(model, 0).qkv.weight  # share of a stopgrad-tied layer
    assert not layer(model, 2).qkv.weight.requires_grad
    tying.untie(1)
    assert layer(model, 3).qkv.weight is layer(model, 1).qkv.weight is not layer(model, 0).qkv.weight
    assert state_from_storage(model.blocks) == [0, 1, 1, 1]
    assert tying.describe()[2] == "layer 2: stopgrad -> 1 (root 1)"


def test_copy_in_place_keeps_the_object_and_takes_the_sources_state() -> None:
    model = tiny()
    optimizer = torch.optim.AdamW(model.parameters())
    tying = TyingController(model, optimizer=optimizer)
    train_step(model, optimizer)
    before = layer(model, 2).qkv.weight
    tying.tie(2, 0, "copy")
    assert layer(model, 2).qkv.weight is before and torch.equal(before, layer(model, 0).qkv.weight)
    assert torch.equal(
        optimizer.state[before]["exp_avg"], optimizer.state[layer(model, 0).qkv.weight]["exp_avg"]
    )


def test_repeating_a_copy_decision_keeps_the_copy_but_an_explicit_tie_copies_again() -> None:
    model = tiny()
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    tying = TyingController(model, optimizer=optimizer)
    tying.apply_state([0, 0, 2], "copy")
    train_step(model, optimizer)
    trained = layer(model, 1).qkv.weight.detach().clone()
    assert not torch.equal(trained, layer(model, 0).qkv.weight)
    tying.apply_state([0, 0, 2], "copy")  # the same decision again: no change
    assert torch.equal(layer(model, 1).qkv.weight, trained)
    tying.tie(1, 0, "copy")  # an explicit tie is a new decision
    assert torch.equal(layer(model, 1).qkv.weight, layer(model, 0).qkv.weight)


def test_new_parameters_join_the_group_of_their_source() -> None:
    model = tiny()
    decay = [p for n, p in model.named_parameters() if n.endswith("weight") and "norm" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (n.endswith("weight") and "norm" not in n)]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}]
    )
    tying = TyingController(model, optimizer=optimizer)
    tying.tie(2, 1, "share")
    tying.untie(2)
    decay_ids = {id(p) for p in optimizer.param_groups[0]["params"]}
    assert id(layer(model, 2).qkv.weight) in decay_ids
    assert id(layer(model, 2).qkv.bias) not in decay_ids and id(layer(model, 2).norm1.weight) not in decay_ids
    assert optimizer.param_groups[0]["params"][0] is model.token_embedding.weight  # foreign order untouched


def test_attaching_an_optimizer_later_reconciles_it() -> None:
    model = tiny()
    optimizer = torch.optim.AdamW(model.parameters())
    tying = TyingController(model)
    tying.tie(2, 0, "share")
    tying.tie(1, 0, "stopgrad")
    tying.attach_optimizer(optimizer)
    assert_storage_consistent(model, optimizer)
    with pytest.raises(TyingError, match=r"not a torch\.optim\.Optimizer"):
        tying.attach_optimizer(object())  # type: ignore[arg-type]


def test_trainable_elements_per_storage() -> None:
    model = tiny(4)
    tying = TyingController(model)
    per_layer = sum(p.numel() for p in layer(model, 0).parameters())
    tying.tie(2, 0, "share")
    tying.tie(3, 1, "stopgrad")
    assert tying.trainable_elements() == 2 * per_layer


# ---- checkpoints ----------------------------------------------------------------------------


def test_checkpoint_round_trip_restores_ties_values_and_optimizer() -> None:
    model = tiny(4)
    optimizer = torch.optim.AdamW(model.parameters())
    tying = TyingController(model, optimizer=optimizer)
    tying.tie(2, 0, "share")
    tying.tie(3, 1, "stopgrad")
    train_step(model, optimizer)
    tying.tie(1, 0, "copy")
    saved = through_bytes(save_checkpoint(model, tying, optimizer))
    restored = tiny(4, seed=7)
    restored_optimizer = torch.optim.AdamW(restored.parameters())
    restored_tying = load_checkpoint(restored, saved, optimizer=restored_optimizer)  # type: ignore[arg-type]
    assert restored_tying.ties() == tying.ties()
    assert_ties_restored(model, restored)
    train_step(model, optimizer, seed=1)
    train_step(restored, restored_optimizer, seed=1)
    assert_ties_restored(model, restored)


def test_plain_state_dict_is_detected_and_refused() -> None:
    model = tiny()
    TyingController(model).tie(2, 0, "share")
    plain = through_bytes(model.state_dict())
    fresh = tiny(seed=3)
    lost = find_lost_ties(fresh, plain)  # type: ignore[arg-type]
    assert len(lost) == 12 and all(t.evidence == "storage" for t in lost)
    with pytest.warns(TiesLostWarning, match="12 tie"):
        warn_if_ties_lost(fresh, plain)  # type: ignore[arg-type]
    with pytest.raises(TiesLostError, match="plain state dict with 12 tie"):
        load_checkpoint(fresh, plain)  # type: ignore[arg-type]
    fresh.load_state_dict(cast(dict[str, torch.Tensor], plain))  # what torch does: silently untied
    assert state_from_storage(fresh.blocks) == [0, 1, 2]


def test_a_cloned_state_dict_is_caught_by_its_values() -> None:
    model = tiny()
    TyingController(model).tie(2, 1, "share")
    cloned = {k: v.clone() for k, v in model.state_dict().items()}
    assert [(t.keys, t.evidence) for t in find_lost_ties(tiny(), cloned)] == [
        (("stack.blocks.1", "stack.blocks.2"), "values")
    ]


def test_load_checkpoint_bad_input() -> None:
    with pytest.raises(TyingError, match="not a checkpoint"):
        load_checkpoint(tiny(), tiny().state_dict())
    saved = save_checkpoint(tiny(3), TyingController(tiny(3)))
    with pytest.raises(TieTargetError, match="for 3 layers, this stack has 4"):
        load_checkpoint(tiny(4), saved)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert warn_if_ties_lost(tiny(), tiny().state_dict()) == []


# ---- the agent and the loop -----------------------------------------------------------------


def test_agent_shapes_and_schedule() -> None:
    torch.manual_seed(0)
    agent = TyingAgent(5)
    assert num_actions(5) == 15 and agent.q_values(list(range(5))).shape == (15,)
    assert [agent.action_slice(i) for i in range(5)] == [
        slice(0, 1),
        slice(1, 3),
        slice(3, 6),
        slice(6, 10),
        slice(10, 15),
    ]
    epsilons = [agent.end_episode() for _ in range(100)]
    assert (
        epsilons[0] == pytest.approx(0.95) and epsilons[1] == pytest.approx(0.9025) and epsilons[-1] == 0.01
    )
    for layer in range(1, 5):
        assert {agent.act(list(range(5)), layer) for _ in range(40)} <= set(range(layer + 1))
    with pytest.raises(TyingError, match="at least 2 layers"):
        TyingAgent(1)
    with pytest.raises(TyingError, match="layer 0 is never tied"):
        agent.act(list(range(5)), 0)
    with pytest.raises(TyingError, match="not finite"):
        agent.td_update(list(range(5)), 1, 0, math.nan, list(range(5)), 2)


def _char_stream(length: int = 6000) -> tuple[torch.Tensor, int]:
    text = TEXT.read_text(encoding="utf-8")[:length]
    alphabet = sorted(set(text))
    return torch.tensor([alphabet.index(c) for c in text]), len(alphabet)


def _agent_run(seed: int, episodes: int = 3) -> tuple[list, TyingAgent]:
    torch.manual_seed(seed)
    stream, vocab = _char_stream()
    split = int(0.9 * len(stream))
    train, val = stream[:split], stream[split:]
    model = TinyGPT(vocab, 16, 2, 4, 8, seed=seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    tying = TyingController(model, optimizer=optimizer)
    agent = TyingAgent(4)
    agent.initial_output_weights = _output_layer(agent).weight.detach().clone()  # type: ignore[attr-defined]

    def windows(source: torch.Tensor, starts: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        w = torch.stack([source[s : s + 9] for s in starts])
        return w[:, :-1], w[:, 1:]

    def train_batch() -> tuple[torch.Tensor, torch.Tensor]:
        return windows(train, torch.randint(0, len(train) - 9, (8,)).tolist())

    held_out = [windows(val, list(range(0, len(val) - 9, 37))[:16])]
    decisions = train_with_agent(
        model,
        optimizer,
        tying,
        agent,
        train_batch=train_batch,
        val_loss=lambda: heldout_loss(model, held_out),
        episodes=episodes,
        steps_per_action=3,
        mode="share",
    )
    return decisions, agent


def test_the_reward_varies_over_training_and_the_public_one_does_not() -> None:
    decisions, agent = _agent_run(0)
    rewards = [d.reward for d in decisions]
    assert len(decisions) == 9 and len(set(rewards)) == len(rewards)  # every decision's reward differs
    assert min(d.val_loss_after for d in decisions) > math.log(10)  # the regime of fact (d) ...
    public = {clipped_perplexity_reward(d.val_loss_before, d.val_loss_after) for d in decisions}
    assert public == {-10.0}  # ... where the public reward is one constant
    assert_reward_informative(lambda b, a: b - a, [(d.val_loss_before, d.val_loss_after) for d in decisions])
    assert agent.updates == 9 and agent.epsilon == pytest.approx(0.95**3)


def test_agent_runs_are_reproducible_under_manual_seed() -> None:
    first, agent = _agent_run(5, episodes=2)
    second, _ = _agent_run(5, episodes=2)
    assert first == second
    # Layer 0's one-action slice is never chosen and never in a TD target: it never trains (D5.6).
    initial = agent.initial_output_weights  # type: ignore[attr-defined]
    assert torch.equal(_output_layer(agent).weight[0], initial[0])
    assert not torch.equal(_output_layer(agent).weight[1:], initial[1:])


def test_train_with_agent_bad_input() -> None:
    model = tiny()
    optimizer = torch.optim.AdamW(model.parameters())
    tying = TyingController(model)
    kwargs = dict(train_batch=batch, val_loss=lambda: 0.0, steps_per_action=1, mode="share")
    with pytest.raises(TyingError, match="build TyingAgent"):
        train_with_agent(model, optimizer, tying, TyingAgent(4), episodes=1, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(TyingError, match="positive"):
        train_with_agent(model, optimizer, tying, TyingAgent(3), episodes=0, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(TieModeError):
        train_with_agent(model, optimizer, tying, TyingAgent(3), episodes=1, **{**kwargs, "mode": "tie"})  # type: ignore[arg-type]
    with pytest.raises(TyingError, match="no held-out batches"):
        heldout_loss(model, [])


def test_state_checks() -> None:
    model = tiny()
    assert_state_matches_weights(TyingAgent(3).initial_state(), model.blocks)
    TyingController(model).tie(2, 0, "share")
    assert_state_matches_weights([0, 1, 0], model.blocks)
    with pytest.raises(StateMismatchError, match="says layer 2 is independent, but it uses layer 0's"):
        assert_state_matches_weights([0, 1, 2], model.blocks)
    with pytest.raises(StateMismatchError, match="entries"):
        assert_state_matches_weights([0, 1], model.blocks)


# ---- the storage audit --------------------------------------------------------------------------


def test_audit_flags_the_public_code_and_leaves_everything_as_it_was() -> None:
    model = tiny()
    optimizer = torch.optim.AdamW(model.parameters())
    train_step(model, optimizer)
    public_tie(model, 2, 0)
    with pytest.raises(OrphanedStateError, match="frozen"):
        assert_no_orphaned_state(model, optimizer)
    for param in layer(model, 2).parameters():  # the public "train independently"
        param.requires_grad = True
    train_step(model, optimizer)
    values = [p.detach().clone() for p in model.parameters()]
    grads = [_grad(p).clone() for p in model.parameters()]
    states = {id(p): {k: v.clone() for k, v in s.items()} for p, s in optimizer.state.items()}
    with pytest.raises(DoubleUpdateError, match="updated 2 times per step") as caught:
        assert_storage_consistent(model, optimizer)
    report = caught.value.report
    assert report is not None and len(report.double_updated) == 12 and len(report.duplicate_state) == 12
    assert report.trainable_per_object - report.trainable_per_storage == sum(
        p.numel() for p in layer(model, 0).parameters()
    )
    assert all(torch.equal(a, b) for a, b in zip(values, model.parameters(), strict=True))
    assert all(torch.equal(a, _grad(b)) for a, b in zip(grads, model.parameters(), strict=True))
    for p, s in optimizer.state.items():
        assert all(torch.equal(v, states[id(p)][k]) for k, v in s.items())


@pytest.mark.parametrize("foreach", [False, True])
def test_audit_counts_updates_for_both_adamw_paths(foreach: bool) -> None:
    layers = nn.ModuleList([nn.Linear(3, 3), nn.Linear(3, 3)])
    layers[1].weight.data = layers[0].weight.data
    optimizer = torch.optim.AdamW(layers.parameters(), foreach=foreach)
    report = audit_storage(layers, optimizer, layers=layers)
    assert [s.updates for s in report.double_updated] == [2]
    assert str(report.layers[1]) == "layer 1: mixed (weight alias 0; bias own)"


def test_audit_of_a_tied_model_is_clean() -> None:
    model = tiny(4)
    optimizer = torch.optim.AdamW(model.parameters())
    tying = TyingController(model, optimizer=optimizer)
    tying.tie(2, 0, "share")
    tying.tie(3, 1, "stopgrad")
    train_step(model, optimizer)
    tying.untie(2)
    report = assert_storage_consistent(model, optimizer)
    assert [str(layer) for layer in report.layers] == [
        "layer 0: own storage",
        "layer 1: own storage",
        "layer 2: own storage",
        "layer 3: aliases layer 1's storage through other objects (frozen)",
    ]
    assert report.level.value == "K" and report.ok


def test_audit_finds_a_trainable_parameter_missing_from_the_optimizer() -> None:
    model = tiny()
    optimizer = torch.optim.AdamW([p for n, p in model.named_parameters() if "blocks.1." not in n])
    with pytest.raises(NotUpdatedError, match=r"blocks\.1"):
        assert_each_storage_updated_once(model, optimizer)


def test_audit_bad_input() -> None:
    with pytest.raises(StorageAuditUsageError, match=r"not an nn\.Module"):
        audit_storage(42)  # type: ignore[arg-type]
    with pytest.raises(StorageAuditUsageError, match="gradients="):
        audit_storage(tiny(), gradients="all")
    with pytest.raises(StorageAuditUsageError, match=r"not a torch\.optim\.Optimizer"):
        audit_storage(tiny(), object())  # type: ignore[arg-type]


def test_counts_per_storage_and_per_object() -> None:
    model = tiny()
    tying = TyingController(model)
    tying.tie(1, 0, "stopgrad")
    per_layer = sum(p.numel() for p in layer(model, 0).parameters())
    assert count_parameters_per_object(model) - count_parameters(model) == per_layer
    assert count_parameters(model, trainable=True) == count_parameters_per_object(model, trainable=True)


# ---- memory ---------------------------------------------------------------------------------


def test_memory_tying_reduces_persistent_state_only() -> None:
    reports = {}
    for mode in ("none", "share", "stopgrad"):
        model = tiny(4)
        optimizer = torch.optim.AdamW(model.parameters())
        tying = TyingController(model, optimizer=optimizer)
        if mode != "none":
            for i in (1, 2, 3):
                tying.tie(i, 0, mode)
        idx, targets = batch()
        reports[mode] = measure_training_step(
            model, optimizer, functools.partial(model.loss, idx, targets), inputs=[idx, targets]
        )
    untied, shared, frozen = reports["none"], reports["share"], reports["stopgrad"]
    assert shared.activation_bytes == untied.activation_bytes  # tying does not touch activations
    assert frozen.activation_bytes < shared.activation_bytes  # a frozen layer saves less for backward
    assert shared.persistent.total < untied.persistent.total
    assert shared.persistent.parameter_bytes == frozen.persistent.parameter_bytes
    assert shared.persistent.optimizer_state_bytes == frozen.persistent.optimizer_state_bytes


def test_assert_tie_semantics_bad_input() -> None:
    model = tiny()
    optimizer = torch.optim.AdamW(model.parameters())
    with pytest.raises(UsageError, match=r"layers=model\.blocks"):
        assert_tie_semantics(nn.Linear(2, 2), optimizer, {}, lambda m: cast(TinyGPT, m).loss(*batch()))
    with pytest.raises(UsageError, match="0 <= j < i"):
        assert_tie_semantics(model, optimizer, {1: (1, "share")}, lambda m: cast(TinyGPT, m).loss(*batch()))
