"""Deliberately wrong BDIA implementations: each is one realistic mistake the BDIA properties must catch.

Stack bugs are subclasses of :class:`revcheck.nn.bdia.BDIAStack` that change
one method of its arithmetic (one method per formula of docs/spec.md §3) or one
of its arguments; the property bodies take the class under test as their
``stack_class=`` parameter, so the stack itself carries no test switches.
Oracle bugs are copies of the oracle module's namespace with one function
replaced.  :data:`PLANTED_BUGS` names, for each,
the property bodies (``check_*`` in properties/test_bdia_*.py) that must fail;
tests/test_bdia_properties_catch.py runs them.
"""

# ruff: noqa: E741  (``l``, the grid exponent, is the name docs/spec.md §3 and the API contract use)
from __future__ import annotations

import types
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor, nn

from revcheck.nn.bdia import BDIAStack
from revcheck.oracle import bdia as oracle

__all__ = ["PLANTED_BUGS", "PlantedBug"]


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


@dataclass(frozen=True)
class PlantedBug:
    """A wrong implementation and the property bodies that must flag it."""

    name: str
    kind: str  # "stack" (a BDIAStack subclass) or "oracle" (an oracle namespace)
    implementation: Any
    caught_by: tuple[str, ...]


PLANTED_BUGS: tuple[PlantedBug, ...] = (
    PlantedBug(
        "round-half-up quantizer",
        "stack",
        RoundHalfUpStack,
        ("check_forward_and_reconstruction_match_oracle", "check_gradients_equal_plain_autograd_loop"),
    ),
    PlantedBug(
        "FMA-contracted y_k",
        "stack",
        FusedMixStack,
        ("check_forward_and_reconstruction_match_oracle", "check_gradients_equal_plain_autograd_loop"),
    ),
    PlantedBug(
        "side bit from the wrong state",
        "stack",
        WrongSideBitStack,
        ("check_forward_and_reconstruction_match_oracle", "check_reversible_gradients_equal_stored"),
    ),
    PlantedBug(
        "gamma from the global RNG",
        "stack",
        GlobalRNGGammaStack,
        ("check_gammas_come_from_the_stack_generator",),
    ),
    PlantedBug(
        "dropout not replayed in backward",
        "stack",
        NoDropoutReplayStack,
        ("check_backward_leaves_global_rng_unchanged", "check_reversible_gradients_equal_stored"),
    ),
    PlantedBug(
        "oracle quantizer rounds ties up",
        "oracle",
        _oracle_with(quantize=_quantize_round_half_up),
        ("check_quantize_is_round_half_even",),
    ),
    PlantedBug(
        "oracle y_k contracted like an FMA",
        "oracle",
        _oracle_with(mix=_mix_fused),
        ("check_mix_is_three_rounded_operations",),
    ),
)
