"""Properties of layer tying (docs/spec.md §5): the three meanings, untie, the optimizer, checkpoints.

Every body is a plain ``check_<what>(data, impl)`` taking the Hypothesis data object and the
implementation under test; tests/gallery/tying_bugs.py runs the same bodies against the
public code's behaviour and other planted bugs.  Models are tiny ``TinyGPT`` stacks (pre-norm
GPT blocks) in fp32, fp64 or bf16 on the CPU.

Levels (docs/spec.md §0):

* share / copy / stopgrad / all-independent against their references: **K**, bit for bit on
  the CPU with the same kernels (forward, every gradient, one AdamW step).  The references run
  the same operations in the same order, which is what makes K reachable; nothing here is
  claimed for another device.
* storages updated once per step, one optimizer state per storage, no orphaned state: facts
  about the real objects and one real (instrumented) AdamW step, K in the same sense.
* checkpoint round trip: K (bit patterns of every value and optimizer state; ties compared as
  object and storage identity).
* parameter counts and rewards: exact integer / float arithmetic on the drawn cases.
"""

from __future__ import annotations

import contextlib
import functools
import io
import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from hypothesis import given
from hypothesis import strategies as st

from revcheck._profiles import scaled
from revcheck.audit.ops_tying import (
    ParameterCountError,
    assert_each_storage_updated_once,
    assert_no_orphaned_state,
    assert_one_state_per_storage,
    count_parameters,
)
from revcheck.nn.transformer import TinyGPT
from revcheck.nn.tying import (
    TIE_MODES,
    TiesLostError,
    TyingAgent,
    TyingController,
    clipped_perplexity_reward,
    find_lost_ties,
    load_checkpoint,
    log_perplexity_reward,
    save_checkpoint,
)
from revcheck.storage import storage_key
from revcheck.testing import assert_bit_exact
from revcheck.tying import (
    SilentUntieError,
    TieSemanticsError,
    assert_reward_informative,
    assert_state_matches_weights,
    assert_tie_semantics,
    assert_ties_restored,
)

DTYPES = {"fp32": torch.float32, "fp64": torch.float64, "bf16": torch.bfloat16}
VOCAB, D_MODEL, HEADS, SEQ, BATCH = 11, 8, 2, 4, 2


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Run on one intra-op thread: tiny models on a loaded 2-core machine are up to 75x slower on two.

    Both sides of every comparison run inside it, so the K claims are for one thread.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def single_threaded(check: Callable[..., None]) -> Callable[..., None]:
    @functools.wraps(check)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        __tracebackhide__ = True
        with one_thread():
            check(*args, **kwargs)

    return wrapper


# ---- implementations under test (injected) ---------------------------------------------------


def real_tying(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> TyingController:
    """The implementation under test: revcheck's controller, optimizer attached."""
    return TyingController(model, optimizer=optimizer)


@dataclass(frozen=True)
class Checkpointing:
    """How a tied model is saved and restored.

    ``save(model, tying, optimizer)`` returns what ``load(model, saved, optimizer)`` restores.
    """

    save: Callable[..., Any]
    load: Callable[..., Any]


REAL_CHECKPOINTING = Checkpointing(
    save_checkpoint, lambda model, saved, optimizer: load_checkpoint(model, saved, optimizer=optimizer)
)


# ---- drawing cases ----------------------------------------------------------------------------


@dataclass
class Case:
    """A model, its AdamW, a batch, and the ties declared so far (independent bookkeeping)."""

    model: TinyGPT
    optimizer: torch.optim.Optimizer
    tying: Any
    inputs: torch.Tensor
    targets: torch.Tensor
    declared: dict[int, tuple[int, str]]
    ties_made: int = 0

    def loss(self, module: torch.nn.Module) -> torch.Tensor:
        return module.loss(self.inputs, self.targets)  # type: ignore[operator]

    def step(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        self.loss(self.model).backward()
        self.optimizer.step()


def new_model(depth: int, dtype: torch.dtype, seed: int) -> TinyGPT:
    return TinyGPT(VOCAB, D_MODEL, HEADS, depth, SEQ, seed=seed).to(dtype)


def new_optimizer(model: torch.nn.Module) -> torch.optim.Optimizer:
    return torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)


def draw_case(
    data: st.DataObject, impl: Callable[..., Any], *, min_depth: int = 2, max_depth: int = 5
) -> Case:
    depth = data.draw(st.integers(min_depth, max_depth), label="depth")
    dtype = DTYPES[data.draw(st.sampled_from(sorted(DTYPES)), label="dtype")]
    seed = data.draw(st.integers(0, 2**16), label="seed")
    model = new_model(depth, dtype, seed)
    optimizer = new_optimizer(model)
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, VOCAB, (BATCH, SEQ + 1), generator=generator)
    case = Case(model, optimizer, impl(model, optimizer), tokens[:, :-1], tokens[:, 1:], {})
    for _ in range(data.draw(st.integers(0, 2), label="warm-up steps")):
        case.step()
    return case


def declared_root(declared: dict[int, tuple[int, str]], k: int) -> int:
    """The layer whose storage layer ``k`` uses according to the declared ties (chains followed)."""
    while k in declared and declared[k][1] in ("share", "stopgrad"):
        k = declared[k][0]
    return k


def draw_tie(data: st.DataObject, case: Case, modes: tuple[str, ...], label: str) -> None:
    depth = len(case.model.blocks)
    i = data.draw(st.integers(1, depth - 1), label=f"{label}: layer")
    j = data.draw(st.integers(0, i - 1), label=f"{label}: tied to")
    mode = data.draw(st.sampled_from(modes), label=f"{label}: mode")
    case.tying.tie(i, j, mode)
    case.declared[i] = (j, mode)
    case.ties_made += 1


def draw_aliasing_tie_often(data: st.DataObject, case: Case) -> None:
    """Often (a drawn flag) a last share or stopgrad tie: what a state dict must carry, drawn early."""
    if data.draw(st.booleans(), label="ends with a share or stopgrad tie"):
        draw_tie(data, case, ("share", "stopgrad"), "last tie")


def draw_actions(data: st.DataObject, case: Case, modes: tuple[str, ...] = TIE_MODES) -> None:
    """A sequence of ties, unties and training steps (unties only of declared ties)."""
    for index in range(data.draw(st.integers(0, 6), label="actions")):
        kind = data.draw(st.sampled_from(["tie", "untie", "step"]), label=f"action {index}")
        if kind == "tie":
            draw_tie(data, case, modes, f"action {index}")
        elif kind == "untie" and case.declared:
            i = data.draw(st.sampled_from(sorted(case.declared)), label=f"action {index}: untie layer")
            case.tying.untie(i)
            del case.declared[i]
        else:
            case.step()


# ---- the three meanings, and no tie at all ---------------------------------------------------


@single_threaded
def check_share_matches_module_reuse(data: st.DataObject, impl: Callable[..., Any]) -> None:
    """share == the same module object at both positions: forward, gradients, one AdamW step (K, CPU)."""
    case = draw_case(data, impl)
    for index in range(data.draw(st.integers(1, 3), label="ties")):
        draw_tie(data, case, ("share",), f"tie {index}")
    assert_tie_semantics(case.model, case.optimizer, case.declared, case.loss)


@single_threaded
def check_copy_equals_source_then_independent(data: st.DataObject, impl: Callable[..., Any]) -> None:
    """copy: bit-equal to the source right after, own storage, then updated independently (K, CPU)."""
    case = draw_case(data, impl)
    draw_actions(data, case, ("share", "stopgrad"))
    depth = len(case.model.blocks)
    i = data.draw(st.integers(1, depth - 1), label="copied layer")
    j = data.draw(st.integers(0, i - 1), label="copied from")
    source = {name: p.detach().clone() for name, p in case.model.blocks[j].named_parameters()}
    case.tying.tie(i, j, "copy")
    case.declared[i] = (j, "copy")
    # Layers share- or stopgrad-tied to i follow it (docs/spec.md §5): they are not "others".
    others = {
        storage_key(p)
        for k, block in enumerate(case.model.blocks)
        if declared_root(case.declared, k) != i
        for p in block.parameters()
    }
    for name, param in case.model.blocks[i].named_parameters():
        assert_bit_exact(
            param.detach(), source[name], msg=f"layer {i} {name} right after the copy from layer {j}"
        )
        if storage_key(param) in others:
            raise TieSemanticsError(f"layer {i} {name} shares storage with another layer right after a copy")
    assert_tie_semantics(case.model, case.optimizer, case.declared, case.loss)


@single_threaded
def check_stopgrad_matches_detached(data: st.DataObject, impl: Callable[..., Any]) -> None:
    """stopgrad == the root's module called with detached parameters: forward, gradients, step (K, CPU)."""
    case = draw_case(data, impl)
    for index in range(data.draw(st.integers(1, 3), label="ties")):
        draw_tie(data, case, ("stopgrad", "share"), f"tie {index}")
    assert_tie_semantics(case.model, case.optimizer, case.declared, case.loss)


@single_threaded
def check_mixed_sequence_matches_reference(data: st.DataObject, impl: Callable[..., Any]) -> None:
    """Any sequence of ties, unties and steps: the model equals the reference of its declared ties (K)."""
    case = draw_case(data, impl)
    draw_actions(data, case)
    assert_tie_semantics(case.model, case.optimizer, case.declared, case.loss)


@single_threaded
def check_all_independent_is_baseline(data: st.DataObject, impl: Callable[..., Any]) -> None:
    """A controller that leaves every layer independent changes nothing, bit for bit (K, CPU)."""
    depth = data.draw(st.integers(2, 5), label="depth")
    dtype = DTYPES[data.draw(st.sampled_from(sorted(DTYPES)), label="dtype")]
    seed = data.draw(st.integers(0, 2**16), label="seed")
    steps = data.draw(st.integers(1, 3), label="steps")
    tokens = torch.randint(0, VOCAB, (BATCH, SEQ + 1), generator=torch.Generator().manual_seed(seed))
    runs = []
    for with_tying in (False, True):
        model = new_model(depth, dtype, seed)
        optimizer = new_optimizer(model)
        if with_tying:
            tying = impl(model, optimizer)
            tying.apply_state(
                list(range(depth)), data.draw(st.sampled_from(TIE_MODES), label="declared mode")
            )
        for _ in range(steps):
            optimizer.zero_grad(set_to_none=True)
            model.loss(tokens[:, :-1], tokens[:, 1:]).backward()
            optimizer.step()
        runs.append(dict(model.named_parameters()))
    for name, param in runs[0].items():
        assert_bit_exact(runs[1][name].detach(), param.detach(), msg=f"{name} after {steps} steps")


# ---- storage and optimizer consistency --------------------------------------------------------


@single_threaded
def check_each_storage_updated_once(data: st.DataObject, impl: Callable[..., Any]) -> None:
    """After any action sequence one real AdamW step updates every trainable storage exactly once."""
    case = draw_case(data, impl)
    draw_actions(data, case)
    case.optimizer.zero_grad(set_to_none=True)
    case.loss(case.model).backward()
    assert_each_storage_updated_once(case.model, case.optimizer, gradients="present")


@single_threaded
def check_one_state_per_storage(data: st.DataObject, impl: Callable[..., Any]) -> None:
    """After any action sequence (and a step) at most one optimizer state exists per storage."""
    case = draw_case(data, impl)
    draw_actions(data, case)
    case.step()
    assert_one_state_per_storage(case.model, case.optimizer)


@single_threaded
def check_optimizer_state_released(data: st.DataObject, impl: Callable[..., Any]) -> None:
    """After any action sequence no optimizer state belongs to a Parameter that is gone or frozen."""
    case = draw_case(data, impl)
    draw_actions(data, case)
    assert_no_orphaned_state(case.model, case.optimizer)


@single_threaded
def check_parameter_count(data: st.DataObject, counter: Callable[[torch.nn.Module], int]) -> None:
    """``counter(model)`` equals the elements the construction allocates (shared storage once)."""
    depth = data.draw(st.integers(2, 5), label="depth")
    model = new_model(depth, torch.float32, 0)
    tying = TyingController(model)
    owners = set(range(depth))
    for index in range(data.draw(st.integers(0, 3), label="ties")):
        i = data.draw(st.integers(1, depth - 1), label=f"tie {index}: layer")
        j = data.draw(st.integers(0, i - 1), label=f"tie {index}: tied to")
        mode = data.draw(st.sampled_from(("share", "stopgrad")), label=f"tie {index}: mode")
        tying.tie(i, j, mode)
    owners = {tying.root(i) for i in range(depth)}
    per_layer = sum(p.numel() for p in model.blocks[0].parameters())
    outside = sum(p.numel() for name, p in model.named_parameters() if not name.startswith("stack."))
    expected = outside + per_layer * len(owners)
    counted = counter(model)
    if counted != expected:
        raise ParameterCountError(
            f"the counter says {counted} parameters; the model allocates {expected} "
            f"({len(owners)} of {depth} layers own storage: {tying.describe()})"
        )


# ---- checkpoints -----------------------------------------------------------------------------


def _through_bytes(value: Any) -> Any:
    buffer = io.BytesIO()
    torch.save(value, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=False)


@single_threaded
def check_checkpoint_round_trip(data: st.DataObject, impl: Checkpointing) -> None:
    """Saved and restored (through torch.save): same ties, values, and the next AdamW step (K, CPU)."""
    case = draw_case(data, real_tying)
    draw_actions(data, case)
    draw_aliasing_tie_often(data, case)
    saved = _through_bytes(impl.save(case.model, case.tying, case.optimizer))
    depth, dtype = len(case.model.blocks), case.model.head.weight.dtype
    restored = new_model(depth, dtype, seed=12345)  # other initial values: everything must come from the file
    optimizer = new_optimizer(restored)
    impl.load(restored, saved, optimizer)
    assert_ties_restored(case.model, restored)
    case.step()
    optimizer.zero_grad(set_to_none=True)
    restored.loss(case.inputs, case.targets).backward()
    optimizer.step()
    assert_ties_restored(case.model, restored)


@single_threaded
def check_plain_state_dict_untie_detected(
    data: st.DataObject, detector: Callable[[torch.nn.Module, dict[str, Any]], list[Any]]
) -> None:
    """A plain state dict of a model with share or stopgrad ties, loaded into a fresh model, is detected."""
    case = draw_case(data, real_tying)
    draw_actions(data, case)
    draw_aliasing_tie_often(data, case)
    plain = _through_bytes(case.model.state_dict())
    fresh = new_model(len(case.model.blocks), case.model.head.weight.dtype, seed=1)
    aliasing = [i for i, (_, mode) in case.declared.items() if mode in ("share", "stopgrad")]
    found = detector(fresh, plain)
    if aliasing and not found:
        raise SilentUntieError(
            f"layers {aliasing} are tied ({case.declared}) in the state dict; loading it into a fresh model "
            "unties them and the detector reported nothing"
        )
    if case.ties_made == 0 and found:
        # (After a tie and an untie without training the layers are bit-identical, and the detector's
        # "values" hint rightly names them; only a stack that was never tied must give no report.)
        raise SilentUntieError(f"no layer was ever tied, but the detector reported {found}")


# ---- the agent --------------------------------------------------------------------------------


@single_threaded
def check_reward_informative(data: st.DataObject, reward: Callable[[float, float], float]) -> None:
    """The reward varies along a drawn training curve above perplexity 10 and prefers improvement."""
    start = data.draw(st.floats(2.4, 6.0), label="initial validation loss")
    drop = data.draw(st.floats(0.0, start - 2.31), label="total decrease")
    noise = data.draw(st.lists(st.floats(-0.05, 0.05), min_size=4, max_size=24), label="noise")
    losses = [start - drop * k / len(noise) + e for k, e in enumerate(noise)]
    pairs = list(itertools.pairwise(losses))
    if len({b - a for b, a in pairs}) < 2:
        return  # a curve on which every decision changes the loss alike cannot tell rewards apart
    assert_reward_informative(reward, pairs)


@single_threaded
def check_initial_state_matches_weights(data: st.DataObject, agent_factory: Callable[[int], Any]) -> None:
    """The agent's initial state describes the weights of a freshly built (untied) stack."""
    depth = data.draw(st.integers(2, 6), label="depth")
    model = new_model(depth, torch.float32, data.draw(st.integers(0, 100), label="seed"))
    assert_state_matches_weights(agent_factory(depth).initial_state(), model.blocks)


# ---- the tests: the real implementations ------------------------------------------------------


@scaled(0.4)
@given(data=st.data())
def test_share_matches_module_reuse(data: st.DataObject) -> None:
    check_share_matches_module_reuse(data, real_tying)


@scaled(0.4)
@given(data=st.data())
def test_copy_equals_source_then_independent(data: st.DataObject) -> None:
    check_copy_equals_source_then_independent(data, real_tying)


@scaled(0.4)
@given(data=st.data())
def test_stopgrad_matches_detached(data: st.DataObject) -> None:
    check_stopgrad_matches_detached(data, real_tying)


@scaled(0.4)
@given(data=st.data())
def test_mixed_sequence_matches_reference(data: st.DataObject) -> None:
    check_mixed_sequence_matches_reference(data, real_tying)


@scaled(0.4)
@given(data=st.data())
def test_all_independent_is_baseline(data: st.DataObject) -> None:
    check_all_independent_is_baseline(data, real_tying)


@scaled(0.4)
@given(data=st.data())
def test_each_storage_updated_once(data: st.DataObject) -> None:
    check_each_storage_updated_once(data, real_tying)


@scaled(0.4)
@given(data=st.data())
def test_one_state_per_storage(data: st.DataObject) -> None:
    check_one_state_per_storage(data, real_tying)


@scaled(0.4)
@given(data=st.data())
def test_optimizer_state_released(data: st.DataObject) -> None:
    check_optimizer_state_released(data, real_tying)


@scaled(0.5)
@given(data=st.data())
def test_parameter_count_per_storage(data: st.DataObject) -> None:
    check_parameter_count(data, count_parameters)


@scaled(0.4)
@given(data=st.data())
def test_checkpoint_round_trip(data: st.DataObject) -> None:
    check_checkpoint_round_trip(data, REAL_CHECKPOINTING)


@scaled(0.4)
@given(data=st.data())
def test_plain_state_dict_untie_detected(data: st.DataObject) -> None:
    check_plain_state_dict_untie_detected(data, find_lost_ties)


@given(data=st.data())
def test_reward_informative(data: st.DataObject) -> None:
    check_reward_informative(data, log_perplexity_reward)


@scaled(0.5)
@given(data=st.data())
def test_initial_state_matches_weights(data: st.DataObject) -> None:
    check_initial_state_matches_weights(data, TyingAgent)


def test_plain_state_dict_is_refused_by_load_checkpoint() -> None:
    """load_checkpoint refuses a plain state dict with ties (TiesLostError), naming them."""
    model = new_model(3, torch.float32, 0)
    TyingController(model).tie(2, 0, "share")
    plain = _through_bytes(model.state_dict())
    try:
        load_checkpoint(new_model(3, torch.float32, 1), plain)
    except TiesLostError as error:
        assert "stack.blocks.0.qkv.weight = stack.blocks.2.qkv.weight" in str(error)
    else:
        raise AssertionError("load_checkpoint accepted a plain state dict with ties")


def test_public_reward_is_what_the_gallery_plants() -> None:
    # The gallery's wrong reward is the library's reproduction of the public one.
    assert clipped_perplexity_reward(3.0, 2.4) == -10.0
