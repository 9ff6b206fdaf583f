"""PAM benchmarks: oracle and kernels against the native multiply, matmuls, sweep throughput.

Every ratio is measured interleaved, with its spread (see :mod:`revcheck.bench._harness`).
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator

import numpy as np
import torch

from revcheck.bench._harness import (
    DEFAULT_PAIRS,
    QUICK_PAIRS,
    Row,
    Spread,
    busy_warning,
    load_average,
    progress,
    ratio_row,
)

TITLE = "PAM"

SWEEP_TARGET_MINUTES = 15.0
SWEEP_TARGET_CORES = 2
CAMPAIGN_TARGET_MINUTES = 30.0


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


def _elementwise_rows(n: int, pairs: int) -> list[Row]:
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
            pairs=pairs,
        ),
        ratio_row(
            f"torch pam_mul / torch.mul ({label} fp32)",
            lambda: kernels.pam_mul(ta, tb),
            lambda: torch.mul(ta, tb),
            target=4,
            pairs=pairs,
        ),
        # Opt-in fused path; ratio_row's warm-up call pays the one-off compilation (seconds), untimed.
        ratio_row(
            f"torch pam_mul(compiled=True) / torch.mul ({label} fp32, opt-in torch.compile)",
            lambda: kernels.pam_mul(ta, tb, compiled=True),
            lambda: torch.mul(ta, tb),
            pairs=pairs,
        ),
    ]


def _matmul_rows(size: int, quick: bool, pairs: int) -> list[Row]:
    from revcheck.kernels import pam as kernels

    gen = torch.Generator().manual_seed(1)
    A = torch.randn(size, size, generator=gen)
    B = torch.randn(size, size, generator=gen)
    rows = [
        ratio_row(
            f"torch pam_matmul / torch.matmul ({size}^3 fp32, cpu)",
            lambda: kernels.pam_matmul(A, B),
            lambda: torch.matmul(A, B),
            pairs=pairs,
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
                pairs=pairs,
            )
        )
    return rows


def _block_rows(pairs: int) -> list[Row]:
    """Pairs per CPU-second of one chunk, evaluated in cache-sized blocks (now) and in one call (before)."""
    from revcheck.sweep import SweepConfig, check_chunk
    from revcheck.sweep.throughput import sample_chunks

    config = SweepConfig(op="pam_mul", format="bf16", impl="torch", quiet=True)
    chunks = sample_chunks(config, pairs + 1)
    whole = config.bits_per_chunk
    torch.set_num_threads(1)  # as in a sweep's worker
    check_chunk(config, chunks[0])  # warm-up
    rates: dict[str, list[float]] = {"blocks": [], "whole": []}
    loads = [load_average()]
    for round_, chunk in enumerate(progress(chunks[1:], "sweep: blocks vs whole chunk")):
        order = ("blocks", "whole") if round_ % 2 == 0 else ("whole", "blocks")
        for name in order:
            result = check_chunk(config, chunk, block_bits=None if name == "blocks" else whole)
            rates[name].append(result.inputs / result.cpu_seconds)
    loads.append(load_average())
    gain = Spread.of([b / w for b, w in zip(rates["blocks"], rates["whole"], strict=True)])
    blocks, whole_rate = Spread.of(rates["blocks"]), Spread.of(rates["whole"])
    return [
        Row(
            f"sweep bf16 pam_mul, pairs per CPU-second: blocks of 2^{config.bits_per_block} / one call "
            f"per 2^{whole} chunk",
            f"{gain.text()}; blocks {blocks.median / 1e6:.2f} M/CPU-s, "
            f"one call {whole_rate.median / 1e6:.2f} M/CPU-s",
            warning=busy_warning(gain, loads),
        )
    ]


def _stage_rows(chunks_per_sweep: int) -> list[Row]:
    """Where a sweep's CPU time goes: the share of each stage of a chunk, for each op on bf16, ieee."""
    from revcheck.sweep import SweepConfig
    from revcheck.sweep.throughput import sample_chunks, stage_seconds

    torch.set_num_threads(1)
    rows = []
    for op in progress(("pam_mul", "pam_div", "pam_mul_grad"), "sweep: where the time goes"):
        config = SweepConfig(op=op, format="bf16", impl="torch", quiet=True)
        warm, *timed = sample_chunks(config, chunks_per_sweep + 1)
        stage_seconds(config, [warm])
        seconds = stage_seconds(config, timed)
        total = sum(seconds.values())
        rows.append(
            Row(
                f"sweep {op} bf16 ieee, share of CPU time per stage",
                ", ".join(f"{stage} {100 * s / total:.0f}%" for stage, s in seconds.items())
                + f" ({total / len(timed):.2f} CPU-s per 2^20 chunk)",
            )
        )
    return rows


def _campaign_rows(chunks_per_sweep: int) -> list[Row]:
    """Pairs per CPU-second of each 16-bit binary sweep of the campaign, and the campaign's projected time."""
    from revcheck.sweep import SweepConfig, check_chunk
    from revcheck.sweep.campaign import binary_sweeps
    from revcheck.sweep.throughput import sample_chunks

    torch.set_num_threads(1)
    rows = []
    total_cpu_seconds = 0.0
    sweeps = binary_sweeps()
    for op, fmt, mode in progress(sweeps, "sweep: campaign rates"):
        config = SweepConfig(op=op, format=fmt, mode=mode, impl="torch", quiet=True)
        chunks = sample_chunks(config, chunks_per_sweep + 1)
        check_chunk(config, chunks[0])  # warm-up
        results = [check_chunk(config, c) for c in chunks[1:]]
        rate = sum(r.inputs for r in results) / sum(r.cpu_seconds for r in results)
        total_cpu_seconds += (1 << config.input_bits) / rate
        rows.append(Row(f"sweep {op} {fmt} {mode}, torch vs oracle", f"{rate / 1e6:.2f} M pairs/CPU-s"))
    minutes = total_cpu_seconds / SWEEP_TARGET_CORES / 60.0
    rows.append(
        Row(
            f"16-bit campaign ({len(sweeps)} sweeps x 2^32 pairs) on {SWEEP_TARGET_CORES} idle cores, "
            "from CPU time",
            f"{minutes:.1f} min ({total_cpu_seconds / 3600:.2f} CPU-hours)",
            f"<= {CAMPAIGN_TARGET_MINUTES:g} min",
            minutes <= CAMPAIGN_TARGET_MINUTES,
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
    pairs = QUICK_PAIRS if quick else DEFAULT_PAIRS
    threads = torch.get_num_threads()
    rows = _elementwise_rows(100_000 if quick else 1_000_000, pairs)
    rows += _matmul_rows(64 if quick else 256, quick, pairs)
    try:
        rows += _block_rows(pairs)
        rows += _stage_rows(1 if quick else 3)
        rows += _campaign_rows(1 if quick else 3)
    finally:
        torch.set_num_threads(threads)
    rows += _sweep_rows(8 if quick else 64)
    return rows
