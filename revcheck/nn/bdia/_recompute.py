"""What a block's recomputation in backward must see again: the RNG states and the autocast state.

As in ``torch.utils.checkpoint``: the forward captures, per block, the CPU (and CUDA)
RNG state the block started from, and the autocast state of the call; backward
restores both before it recomputes the block, so dropout draws the same mask and
autocast picks the same kernels.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = ["RNGStates", "autocast_state"]


class RNGStates:
    """Per-block RNG states as in torch.utils.checkpoint, deduplicated when a block draws nothing."""

    def __init__(self, device: torch.device) -> None:
        self.cuda_index = device.index if device.type == "cuda" else None
        if device.type == "cuda" and self.cuda_index is None:
            self.cuda_index = torch.cuda.current_device()
        self.states: list[Tensor] = []  # CPU state, then CUDA state, per distinct capture
        self.which: list[int] = []

    def capture(self) -> None:
        """Record the current state(s) for the next block (once more if nothing drew since the last)."""
        current = [torch.get_rng_state()]
        if self.cuda_index is not None:
            current.append(torch.cuda.get_rng_state(self.cuda_index))
        width = len(current)
        if self.states and all(torch.equal(a, b) for a, b in zip(self.states[-width:], current, strict=True)):
            self.which.append(len(self.states) // width - 1)
            return
        self.states.extend(current)
        self.which.append(len(self.states) // width - 1)

    def restore(self, block: int, states: Sequence[Tensor]) -> None:
        """Set the global RNG(s) to what block ``block`` started from; ``states``: :attr:`states` as saved."""
        width = 1 if self.cuda_index is None else 2
        slot = self.which[block] * width
        torch.set_rng_state(states[slot])
        if self.cuda_index is not None:
            torch.cuda.set_rng_state(states[slot + 1], self.cuda_index)

    def devices(self) -> list[int]:
        """The CUDA devices whose RNG ``torch.random.fork_rng`` must save around the recomputation."""
        return [] if self.cuda_index is None else [self.cuda_index]


def autocast_state(device_type: str) -> dict[str, Any]:
    """Keyword arguments of ``torch.autocast`` that re-enter the current autocast state."""
    return {
        "device_type": device_type,
        "enabled": torch.is_autocast_enabled(device_type),
        "dtype": torch.get_autocast_dtype(device_type),
        "cache_enabled": torch.is_autocast_cache_enabled(),
    }
