"""Range checks of a forward pass: every code must stay inside ``|X| < CODE_LIMIT`` (docs/spec.md §3).

Each check is the pair ``(min, max)`` of 0-dim device tensors (one ``aminmax`` pass over the
values, no other per-block work); the comparisons with the limit are made for all checks at
once at the end of the forward (one host synchronisation per forward, not one per block).
"""

from __future__ import annotations

import torch
from torch import Tensor

from revcheck.nn.bdia._errors import BDIARangeError
from revcheck.oracle.bdia import CODE_LIMIT

__all__ = ["RangeFlags", "extremes", "within_code_limit"]


def extremes(values: Tensor) -> tuple[Tensor, Tensor]:
    """``(min, max)`` of ``values`` as 0-dim tensors (zeros for an empty tensor); NaN propagates."""
    if values.numel() == 0:
        zero = torch.zeros((), dtype=values.dtype, device=values.device)
        return zero, zero
    low, high = torch.aminmax(values)
    return low, high


def _within(low: Tensor, high: Tensor) -> Tensor:
    limit = CODE_LIMIT if not low.is_floating_point() else float(CODE_LIMIT)
    return (low > -limit) & (high < limit)  # NaN compares False


def within_code_limit(values: Tensor) -> Tensor:
    """0-dim flag: every value finite with ``|value| < 2**62``."""
    return _within(*extremes(values))


class RangeFlags:
    """The range checks of one forward, each with the block it belongs to and what it checks."""

    def __init__(self) -> None:
        self._checks: list[tuple[int, str, Tensor, Tensor]] = []

    def add(self, index: int, what: str, values_extremes: tuple[Tensor, Tensor]) -> None:
        """Record the ``(min, max)`` of the values of block ``index`` (-1: the input).

        ``what`` may name the block as ``{k}`` (and ``{k_next}`` for ``k + 1``): it is formatted
        only if this check fails.
        """
        low, high = values_extremes
        self._checks.append((index, what, low, high))

    def raise_first(self) -> None:
        """Raise :class:`BDIARangeError` naming the first check outside the limit, if any."""
        if not self._checks:
            return
        ok = torch.empty(len(self._checks), dtype=torch.bool, device=self._checks[0][2].device)
        for floating in (False, True):
            positions = [
                i for i, check in enumerate(self._checks) if check[2].is_floating_point() == floating
            ]
            if positions:
                low = torch.stack([self._checks[i][2] for i in positions])
                high = torch.stack([self._checks[i][3] for i in positions])
                ok[positions] = _within(low, high)
        if bool(ok.all()):
            return
        first = int((~ok).nonzero()[0, 0])
        index, template, _, _ = self._checks[first]
        what = template.format(k=index, k_next=index + 1)
        where = "input" if index < 0 else f"block {index}"
        raise BDIARangeError(
            f"BDIAStack {where}: {what} -- this value cannot be reconstructed exactly. Codes must be "
            f"finite with |X| < 2**62; rescale the block, lower l, or find the NaN/inf in the block"
        )
