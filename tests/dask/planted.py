"""A deliberately wrong ``pam_mul`` for the distributed-sweep tests, importable by Dask's worker processes.

It is the real torch kernel with 16 planted one-ULP errors on fp8_e5m2 (``a``'s low nibble 5,
``b = 1.0``), spread over 16 different chunks of a sweep with ``chunk_bits <= 12``, so the
mismatch count and the first counterexamples depend on every chunk being checked once.
Optionally it sleeps in every call (so a test can kill a worker in the middle of a chunk)
and logs the start and end of every call with its process id.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch

from revcheck import formats
from revcheck.kernels import pam as kernels

FMT = formats.get("fp8_e5m2")
PLANTED_MISMATCHES = 16


def planted_pam_mul(
    a: torch.Tensor, b: torch.Tensor, *, mode: str = "ieee", delay: float = 0.0, log: str | None = None
) -> torch.Tensor:
    """``kernels.pam_mul`` with the planted errors; ``delay`` seconds of sleep; calls logged to ``log``."""
    a_bits, b_bits = (t.view(torch.uint8).to(torch.int64) for t in (a, b))
    call = f"{os.getpid()} {int(a_bits.reshape(-1)[0])} {int(b_bits.reshape(-1)[0])}"
    if log is not None:
        with Path(log).open("a") as handle:
            handle.write(f"start {call}\n")
    out = kernels.pam_mul(a, b, mode=mode)
    wrong = ((a_bits & 0x0F) == 0x05) & (b_bits == FMT.one)
    out = out.view(torch.uint8).clone()
    out[wrong] += 1
    time.sleep(delay)
    if log is not None:
        with Path(log).open("a") as handle:
            handle.write(f"end {call}\n")
    return out.view(a.dtype)
