"""Range checks of a forward pass: every code must stay inside ``|X| < CODE_LIMIT`` (docs/spec.md §3).

The checks are 0-dim device flags, gathered while the forward runs and looked at
once at its end (one host synchronisation per forward, not one per block).
"""

from __future__ import annotations

import torch
from torch import Tensor

from revcheck.nn.bdia._errors import BDIARangeError
from revcheck.oracle.bdia import CODE_LIMIT

__all__ = ["RangeFlags", "within_code_limit"]


def within_code_limit(values: Tensor) -> Tensor:
    """0-dim flag: every value finite with ``|value| < 2**62`` (one pass: min and max, no temporaries)."""
    if values.numel() == 0:
        return torch.ones((), dtype=torch.bool, device=values.device)
    low, high = torch.aminmax(values)
    limit = CODE_LIMIT if not values.is_floating_point() else float(CODE_LIMIT)
    return (low > -limit) & (high < limit)  # NaN compares False


class RangeFlags:
    """The range flags of one forward, each with the block it belongs to and what it checks."""

    def __init__(self) -> None:
        self._flags: list[tuple[int, str, Tensor]] = []

    def add(self, index: int, what: str, ok: Tensor) -> None:
        """Record the 0-dim flag ``ok`` of block ``index`` (-1: the input)."""
        self._flags.append((index, what, ok))

    def raise_first(self) -> None:
        """Raise :class:`BDIARangeError` naming the first flag that is False, if any."""
        if not self._flags:
            return
        ok = torch.stack([flag for _, _, flag in self._flags])
        if bool(ok.all()):
            return
        first = int((~ok).nonzero()[0, 0])
        index, what, _ = self._flags[first]
        where = "input" if index < 0 else f"block {index}"
        raise BDIARangeError(
            f"BDIAStack {where}: {what} -- this value cannot be reconstructed exactly. Codes must be "
            f"finite with |X| < 2**62; rescale the block, lower l, or find the NaN/inf in the block"
        )
