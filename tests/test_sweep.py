"""Exhaustive sweeps (revcheck.sweep): full fp8 runs, sharding, resuming, planted bugs, usage errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from revcheck import formats, sweep
from revcheck.kernels import pam as kernels
from revcheck.sweep import SweepConfig, run_sweep

ROOT = Path(__file__).resolve().parents[1]


def _config(**overrides: object) -> SweepConfig:
    settings: dict[str, object] = {"op": "pam_mul", "format": "fp8_e4m3fn", "workers": 1, "quiet": True}
    settings.update(overrides)
    return SweepConfig(**settings)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("op", "fmt_name"), [("pam_mul", "fp8_e4m3fn"), ("pam_div", "fp8_e5m2"), ("pa_exp2", "fp8_e5m2")]
)
def test_full_fp8_sweep_is_clean(op: str, fmt_name: str) -> None:
    result = run_sweep(_config(op=op, format=fmt_name))
    inputs = 1 << (sweep.OPS[op] * 8)
    assert (result.inputs_checked, result.mismatches, result.complete) == (inputs, 0, True), (
        sweep.format_summary(result)
    )


def test_sweep_in_two_processes_is_clean() -> None:
    result = run_sweep(_config(format="fp8_e5m2", chunk_bits=14, workers=2))
    assert (result.chunks_done, result.inputs_checked, result.mismatches) == (4, 1 << 16, 0)


def test_triton_sweep_is_clean() -> None:
    triton_pam = pytest.importorskip("revcheck.kernels.triton_pam", reason="triton is not installed")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu" and not triton_pam.INTERPRETED:
        pytest.skip("Triton on the CPU needs TRITON_INTERPRET=1 set before triton is first imported")
    result = run_sweep(_config(impl="triton", device=device, mode="ftz"))
    assert (result.inputs_checked, result.mismatches) == (1 << 16, 0), sweep.format_summary(result)


@pytest.mark.parametrize("num_shards", [1, 2, 3, 7, 64, 100])
def test_shards_cover_every_chunk_exactly_once(num_shards: int) -> None:
    n_chunks = 64
    taken = [c for shard in range(num_shards) for c in sweep.shard_chunks(n_chunks, shard, num_shards)]
    assert sorted(taken) == list(range(n_chunks)), f"{num_shards} shards took {sorted(taken)}"


def test_run_order_is_a_permutation_spread_over_the_space() -> None:
    order = sweep.run_order(range(16), 16)
    assert sorted(order) == list(range(16))
    assert order[:4] == [0, 8, 4, 12], "a prefix of the run order should sample the whole input space"


def test_chunks_enumerate_every_pair_once() -> None:
    config = _config(chunk_bits=10)
    pairs = [np.stack(sweep.chunk_inputs(config, c)) for c in range(sweep.total_chunks(config))]
    flat = np.concatenate(pairs, axis=1).astype(np.int64)
    codes = flat[0] << 8 | flat[1]
    assert np.array_equal(np.sort(codes), np.arange(1 << 16)), "some (a, b) pair is missing or repeated"


def test_resume_skips_recorded_chunks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ran: list[int] = []
    real_check = sweep.check_chunk

    def recording_check(config: SweepConfig, chunk: int) -> sweep.ChunkResult:
        ran.append(chunk)
        return real_check(config, chunk)

    monkeypatch.setattr(sweep, "check_chunk", recording_check)
    first = run_sweep(_config(chunk_bits=12, state_dir=tmp_path, limit_chunks=3))
    assert (first.chunks_done, first.chunks_in_shard, first.complete) == (3, 16, False)
    first_chunks = set(ran)
    ran.clear()
    second = run_sweep(_config(chunk_bits=12, state_dir=tmp_path))
    assert not first_chunks & set(ran), f"chunks {sorted(first_chunks & set(ran))} were checked twice"
    assert (second.chunks_run_now, second.chunks_done, second.inputs_checked) == (13, 16, 1 << 16)
    ran.clear()
    third = run_sweep(_config(chunk_bits=12, state_dir=tmp_path))
    assert (ran, third.complete, third.mismatches) == ([], True, 0)


def test_shards_share_progress_through_the_state_dir(tmp_path: Path) -> None:
    for shard in (0, 1):
        run_sweep(_config(chunk_bits=13, state_dir=tmp_path, shard=shard, num_shards=2))
    whole = run_sweep(_config(chunk_bits=13, state_dir=tmp_path))
    assert (whole.chunks_run_now, whole.chunks_done, whole.inputs_checked) == (0, 8, 1 << 16)


def test_planted_mismatch_is_reported_with_exit_code_1(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real_mul = kernels.pam_mul
    fmt = formats.get("fp8_e4m3fn")

    def off_by_one_ulp_at_one_times_one(
        a: torch.Tensor, b: torch.Tensor, *, mode: str = "ieee"
    ) -> torch.Tensor:
        out = real_mul(a, b, mode=mode)
        a_int, b_int, out_int = (t.view(torch.int8) for t in (a, b, out))
        out_int[(a_int == fmt.one) & (b_int == fmt.one)] += 1
        return out

    monkeypatch.setattr(kernels, "pam_mul", off_by_one_ulp_at_one_times_one)
    code = sweep.main(["--op", "pam_mul", "--format", "fp8_e4m3fn", "--workers", "1", "--quiet"])
    summary = capsys.readouterr().out
    assert code == 1, summary
    assert "mismatches: 1\n" in summary, summary
    assert "counterexample: pam_mul(a=1.0 [0x38 +7.0], b=1.0 [0x38 +7.0]): torch gave 1.125" in summary, (
        summary
    )


@pytest.mark.parametrize(
    ("argv", "reason"),
    [
        (["--op", "pam_pow", "--format", "bf16"], "invalid choice: 'pam_pow'"),
        (["--op", "pam_mul", "--format", "fp32"], "invalid choice: 'fp32'"),
        (["--op", "pam_mul", "--format", "bf16", "--shard", "2/2"], "0 <= I < N"),
        (["--op", "pam_mul", "--format", "bf16", "--shard", "half"], "is not I/N"),
        (["--op", "pam_mul", "--format", "bf16", "--chunk-bits", "40"], "use 1..32"),
        (["--op", "pa_log2", "--format", "fp8_e5m2", "--chunk-bits", "9"], "use 1..8"),
        (["--op", "pam_mul", "--format", "bf16", "--limit-chunks", "0"], "must be at least 1"),
        (["--format", "bf16"], "--op"),
    ],
)
def test_bad_usage_exits_2_with_one_line_reason(
    argv: list[str], reason: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        sweep.main(argv)
    error = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert error.count("\n") == 1 and reason in error, error


def test_command_line_exit_status_and_summary() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "revcheck.sweep",
            "--op",
            "pa_log2",
            "--format",
            "fp8_e4m3fn",
            "--mode",
            "ftz",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "inputs checked: 256 (of 256 in the whole sweep)" in result.stdout, result.stdout
    assert "mismatches: 0" in result.stdout, result.stdout
