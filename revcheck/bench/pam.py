"""PAM benchmarks: oracle and kernels against the native multiply, matmuls, sweep throughput.

Every ratio compares two timings taken in this run (see :mod:`revcheck.bench._harness`).
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator

import numpy as np
import torch

from revcheck.bench._harness import Row, ratio_row

TITLE = "PAM"

SWEEP_TARGET_MINUTES = 15.0
SWEEP_TARGET_CORES = 2


@contextlib.contextmanager
def _tf32_off() -> Iterator[None]:
    # The baseline must be a true fp32 matmul, not TF32, or the comparison flatters it.
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _fp32_operands(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal(n).astype(np.float32), rng.standard_normal(n).astype(np.float32)


def _elementwise_rows(n: int) -> list[Row]:
    from revcheck.kernels import pam as kernels
    from revcheck.oracle import pam as oracle

    a, b = _fp32_operands(n, seed=0)
    a_bits, b_bits = a.view(np.uint32), b.view(np.uint32)
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    label = f"{n / 1e6:g}M" if n >= 10**6 else f"{n // 1000}k"
    return [
        ratio_row(
            f"oracle pam_mul / numpy.multiply ({label} fp32)",
            lambda: oracle.pam_mul(a_bits, b_bits, "fp32"),
            lambda: np.multiply(a, b),
            target=4,
        ),
        ratio_row(
            f"torch pam_mul / torch.mul ({label} fp32)",
            lambda: kernels.pam_mul(ta, tb),
            lambda: torch.mul(ta, tb),
            target=4,
        ),
        # Opt-in fused path; ratio_row's warm-up call pays the one-off compilation (seconds), untimed.
        ratio_row(
            f"torch pam_mul(compiled=True) / torch.mul ({label} fp32, opt-in torch.compile)",
            lambda: kernels.pam_mul(ta, tb, compiled=True),
            lambda: torch.mul(ta, tb),
        ),
    ]


def _matmul_rows(size: int, quick: bool) -> list[Row]:
    from revcheck.kernels import pam as kernels

    gen = torch.Generator().manual_seed(1)
    A = torch.randn(size, size, generator=gen)
    B = torch.randn(size, size, generator=gen)
    rows = [
        ratio_row(
            f"torch pam_matmul / torch.matmul ({size}^3 fp32, cpu)",
            lambda: kernels.pam_matmul(A, B),
            lambda: torch.matmul(A, B),
            repeat=3,
        )
    ]
    if not torch.cuda.is_available():
        rows.append(Row("Triton pam_matmul / torch.matmul, TF32 off (cuda)", "skipped: no CUDA", "<= 2x"))
        return rows
    try:
        from revcheck.kernels import triton_pam
    except ImportError as error:
        rows.append(Row("Triton pam_matmul / torch.matmul, TF32 off (cuda)", f"skipped: {error}", "<= 2x"))
        return rows
    if triton_pam.INTERPRETED:
        rows.append(
            Row("Triton pam_matmul / torch.matmul, TF32 off (cuda)", "skipped: TRITON_INTERPRET=1", "<= 2x")
        )
        return rows
    cuda_size = 512 if quick else 2048
    Ac, Bc = (
        torch.randn(cuda_size, cuda_size, device="cuda"),
        torch.randn(cuda_size, cuda_size, device="cuda"),
    )

    def triton_matmul() -> None:
        triton_pam.pam_matmul(Ac, Bc)
        torch.cuda.synchronize()

    def torch_matmul() -> None:
        torch.matmul(Ac, Bc)
        torch.cuda.synchronize()

    with _tf32_off():
        rows.append(
            ratio_row(
                f"Triton pam_matmul / torch.matmul, TF32 off ({cuda_size}^3 fp32, cuda)",
                triton_matmul,
                torch_matmul,
                target=2,
                repeat=3,
            )
        )
    return rows


def _sweep_rows(n_chunks: int) -> list[Row]:
    from revcheck.sweep import SweepConfig, throughput

    config = SweepConfig(op="pam_mul", format="bf16", impl="torch", quiet=True)
    speed = throughput(config, n_chunks)
    wall_minutes = speed.projected_seconds(2**32) / 60.0
    cpu_minutes = speed.projected_seconds(2**32, cores=SWEEP_TARGET_CORES) / 60.0
    target = f"<= {SWEEP_TARGET_MINUTES:g} min"
    return [
        Row(
            f"sweep bf16 pam_mul torch vs oracle ({n_chunks} x 2^20 pairs, {speed.workers} processes)",
            f"{speed.wall_rate / 1e6:.2f} M pairs/s wall, {speed.cpu_rate / 1e6:.2f} M pairs/CPU-s",
        ),
        Row(
            "sweep bf16 pam_mul, 2^32 pairs at the measured wall rate",
            f"{wall_minutes:.1f} min",
            target,
            wall_minutes <= SWEEP_TARGET_MINUTES,
        ),
        Row(
            f"sweep bf16 pam_mul, 2^32 pairs on {SWEEP_TARGET_CORES} idle cores (from CPU time)",
            f"{cpu_minutes:.1f} min",
            target,
            cpu_minutes <= SWEEP_TARGET_MINUTES,
        ),
    ]


def run(args: argparse.Namespace) -> list[Row]:
    """All PAM rows, measured in this run; ``args.quick`` shrinks every size."""
    quick = bool(getattr(args, "quick", False))
    rows = _elementwise_rows(100_000 if quick else 1_000_000)
    rows += _matmul_rows(64 if quick else 256, quick)
    rows += _sweep_rows(8 if quick else 64)
    return rows
