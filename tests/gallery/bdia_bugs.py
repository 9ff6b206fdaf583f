"""Deliberately wrong BDIA implementations: each is one realistic mistake the BDIA properties must catch.

Stack bugs are subclasses of :class:`revcheck.nn.bdia.BDIAStack` that change
one method of its arithmetic (one method per formula of docs/spec.md §3) or one
of its arguments; the property bodies take the class under test as their
``stack_class=`` parameter, so the stack itself carries no test switches.
Oracle bugs are copies of the oracle module's namespace with one function
replaced.  :data:`PLANTED_BUGS` holds one :class:`~tests.harness.PlantedBug` per
bug and property body (``check_*`` in properties/test_bdia_*.py) that must catch
it, with the error it must raise; tests/test_gallery.py runs them.
"""

# ruff: noqa: E741  (``l``, the grid exponent, is the name docs/spec.md §3 and the API contract use)
from __future__ import annotations

import types
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor, nn

from properties import test_bdia_oracle as oracle_properties
from properties import test_bdia_stack as stack_properties
from properties.test_bdia_oracle import CodeMismatchError
from properties.test_bdia_stack import RNGUseError
from revcheck.nn.bdia import BDIAReconstructionError, BDIAStack
from revcheck.oracle import bdia as oracle
from revcheck.testing import BitMismatchError
from tests.harness import PlantedBug, check_with

__all__ = ["PLANTED_BUGS"]

FAMILY = "bdia"


# ----------------------------------------------------------------------------- torch stack bugs


class RoundHalfUpStack(BDIAStack):
    """Quantizer rounds ties up (floor(v + 1/2)) instead of to even."""

    def _rounded_codes(self, values: Tensor) -> Tensor:
        return torch.floor(values * float(2**self.l) + 0.5)


class FusedMixStack(BDIAStack):
    """y_k contracted like an FMA: (1-g) x + (1+g) h formed in float64 and rounded once."""

    def _mix(self, x: Tensor, h: Tensor, one_minus: Tensor, one_plus: Tensor) -> Tensor:
        wide = one_minus.double() * x.double() + one_plus.double() * h.double()
        return wide.to(x.dtype)


class WrongSideBitStack(BDIAStack):
    """Side bit taken from the current state X_k instead of X_{k-1}."""

    def _side_bits(self, X_prev: Tensor, X_cur: Tensor) -> Tensor:
        return X_cur & 1


class GlobalRNGGammaStack(BDIAStack):
    """gamma drawn from the global RNG (torch.randint without the stack's generator)."""

    def _draw_gamma_signs(self, count: int, batch: int) -> Tensor:
        return (torch.randint(0, 2, (count, batch), dtype=torch.int8) * 2 - 1).to(torch.int8)


class NoDropoutReplayStack(BDIAStack):
    """Backward recomputes blocks with whatever RNG state happens to be current (dropout not replayed).

    The stack forgets to keep the RNG states, whatever its caller asked for.
    """

    def __init__(self, blocks: Sequence[nn.Module], **kwargs: Any) -> None:
        super().__init__(blocks, **{**kwargs, "preserve_rng_state": False})


# ----------------------------------------------------------------------------- oracle bugs


def _oracle_with(**replacements: Any) -> types.SimpleNamespace:
    namespace = types.SimpleNamespace(**{k: v for k, v in vars(oracle).items() if not k.startswith("__")})
    for name, function in replacements.items():
        setattr(namespace, name, function)
    return namespace


def _quantize_round_half_up(y: object, l: int) -> np.ndarray:
    values = np.asarray(y, dtype=np.float64)
    return np.floor(np.ldexp(values, l) + 0.5).astype(np.int64)


def _mix_fused(
    x: np.ndarray, h: np.ndarray, gamma: np.ndarray, compute_dtype: npt.DTypeLike = np.float32
) -> np.ndarray:
    gamma_b = np.asarray(gamma, dtype=np.float64).reshape((-1,) + (1,) * (np.ndim(x) - 1))
    wide = (1.0 - gamma_b) * x.astype(np.float64) + (1.0 + gamma_b) * h.astype(np.float64)
    return wide.astype(compute_dtype)  # type: ignore[no-any-return]


def _stack_check(name: str) -> Any:
    return check_with(getattr(stack_properties, name), inject="stack_class", device="cpu")


def _oracle_check(name: str) -> Any:
    return check_with(getattr(oracle_properties, name), inject="oracle")


FORWARD = _stack_check("check_forward_and_reconstruction_match_oracle")
PLAIN_LOOP = _stack_check("check_gradients_equal_plain_autograd_loop")
REVERSIBLE_EQUALS_STORED = _stack_check("check_reversible_gradients_equal_stored")
GAMMAS = _stack_check("check_gammas_come_from_the_stack_generator")
GLOBAL_RNG = _stack_check("check_backward_leaves_global_rng_unchanged")


def _stack_bug(
    name: str,
    mistake: str,
    stack_class: type[BDIAStack],
    check: Any,
    error: type[BaseException],
    examples: int,
) -> PlantedBug:
    return PlantedBug(
        name, mistake, check, stack_class, BDIAStack, error, family=FAMILY, max_examples=examples
    )


def _oracle_bug(
    name: str, mistake: str, namespace: Any, check: Any, error: type[BaseException], examples: int
) -> PlantedBug:
    return PlantedBug(name, mistake, check, namespace, oracle, error, family=FAMILY, max_examples=examples)


_HALF_UP = "quantizer rounds ties up (floor(v + 1/2)) instead of to even"
_FUSED = "y_k = (1-g) x + (1+g) h formed in float64 and rounded once, like an FMA"
_SIDE_BIT = "side bit taken from X_k instead of X_{k-1}"
_GLOBAL_GAMMA = "gamma drawn with torch.randint from the global RNG, not the stack's generator"
_NO_REPLAY = "backward recomputes the blocks without restoring the RNG state (dropout not replayed)"

# The stack checks are costly (~0.1 s an example) and catch within 5 examples (measured): 30 each.
PLANTED_BUGS: list[PlantedBug] = [
    _stack_bug("round-half-up quantizer", _HALF_UP, RoundHalfUpStack, FORWARD, CodeMismatchError, 30),
    _stack_bug("round-half-up quantizer", _HALF_UP, RoundHalfUpStack, PLAIN_LOOP, BitMismatchError, 30),
    _stack_bug("FMA-contracted y_k", _FUSED, FusedMixStack, FORWARD, CodeMismatchError, 30),
    _stack_bug("FMA-contracted y_k", _FUSED, FusedMixStack, PLAIN_LOOP, BitMismatchError, 30),
    _stack_bug(
        "side bit from the wrong state", _SIDE_BIT, WrongSideBitStack, FORWARD, BDIAReconstructionError, 30
    ),
    _stack_bug(
        "side bit from the wrong state",
        _SIDE_BIT,
        WrongSideBitStack,
        REVERSIBLE_EQUALS_STORED,
        BDIAReconstructionError,
        30,
    ),
    _stack_bug("gamma from the global RNG", _GLOBAL_GAMMA, GlobalRNGGammaStack, GAMMAS, RNGUseError, 30),
    _stack_bug(
        "dropout not replayed in backward", _NO_REPLAY, NoDropoutReplayStack, GLOBAL_RNG, RNGUseError, 30
    ),
    _stack_bug(
        "dropout not replayed in backward",
        _NO_REPLAY,
        NoDropoutReplayStack,
        REVERSIBLE_EQUALS_STORED,
        BitMismatchError,
        30,
    ),
    _oracle_bug(
        "oracle quantizer rounds ties up",
        _HALF_UP,
        _oracle_with(quantize=_quantize_round_half_up),
        _oracle_check("check_quantize_is_round_half_even"),
        CodeMismatchError,
        60,
    ),
    _oracle_bug(
        "oracle y_k contracted like an FMA",
        _FUSED,
        _oracle_with(mix=_mix_fused),
        _oracle_check("check_mix_is_three_rounded_operations"),
        BitMismatchError,
        # The fused and the three-rounding results differ only for some (x, h): over 20 seeds the first
        # catch came at example 9 to 560 (median 82), at 187 here.  The check is cheap (~2 ms an example).
        600,
    ),
]
