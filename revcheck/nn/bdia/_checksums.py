"""Checksums of the states, so that a block whose recomputation differs is named in backward."""

from __future__ import annotations

import torch
from torch import Tensor

from revcheck.nn.bdia._errors import BDIAReconstructionError

__all__ = ["checksum", "raise_mismatch"]


def checksum(codes: Tensor) -> Tensor:
    """Wrapping int64 sum of the codes: any change of a single code (|X| < 2**62) changes it.

    One reduction per block in forward and in backward -- cheap enough to stay on by default,
    and it names the block whose recomputation differs (a changed state also drifts every
    state below it, and the first block's check ``X_1 - X_0 == R(h_0)`` catches it at the end).
    """
    return codes.sum(dtype=torch.int64)


def raise_mismatch(
    checks: Tensor, reconstructed_sums: list[Tensor], first_block_differs: Tensor | None
) -> None:
    """One host sync per backward: every reconstructed checksum and the first block's recomputation.

    ``checks`` holds the forward's checksums of X_0 .. X_{K-2}; ``reconstructed_sums`` those of
    the states backward rebuilt, from X_{K-2} down.

    Raises
    ------
    BDIAReconstructionError
        Naming the highest block whose recomputation differs.
    """
    flags = [] if first_block_differs is None else [first_block_differs.reshape(1)]
    if reconstructed_sums:
        # reconstructed_sums runs from X_{K-2} down to X_0; report the highest block that differs
        # (every state below a wrong one is wrong as well)
        flags.insert(0, torch.stack(reconstructed_sums) != checks.flip(0)[: len(reconstructed_sums)])
    if not flags:
        return
    bad = torch.cat(flags)
    if not bool(bad.any()):
        return
    position = int(bad.nonzero()[0, 0])
    index = len(reconstructed_sums) - position if position < len(reconstructed_sums) else 0
    if index == 0:
        what = "block 0 recomputed h_0(x_0) differently in backward (X_1 - X_0 != R(h_0))"
    else:
        what = f"reconstructing X_{index - 1} through block {index} gave a different state than the forward"
    raise BDIAReconstructionError(
        f"BDIAStack: {what}. Blocks must recompute bit-identically: same kernels, dtype/autocast, and "
        "dropout replayed from the saved RNG state (preserve_rng_state=True); no side effects."
    )
