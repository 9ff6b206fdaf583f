"""Exhaustive sweeps (revcheck.sweep): full fp8 runs, sharding, resuming, planted bugs, usage errors.

The chunk and shard arithmetic itself is tested in ``tests/test_enumeration.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from revcheck import errors, formats, sweep
from revcheck.audit import registry
from revcheck.cli import main as revcheck_main
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
    inputs = 1 << (registry.get(op).arity * 8)
    assert (result.inputs_checked, result.mismatches, result.complete) == (inputs, 0, True), (
        sweep.format_summary(result)
    )


def test_sweep_in_two_processes_is_clean() -> None:
    result = run_sweep(_config(format="fp8_e5m2", chunk_bits=14, workers=2))
    assert (result.chunks_done, result.inputs_checked, result.mismatches) == (4, 1 << 16, 0)


def test_every_sweepable_op_is_an_elementwise_registry_entry() -> None:
    # One op table: the sweep's ops are the registry's elementwise ops, with oracle and implementations.
    assert set(registry.sweepable()) == {"pam_mul", "pam_div", "pam_mul_grad", "pa_log2", "pa_exp2"}
    for name in registry.sweepable():
        spec = registry.get(name)
        assert spec.bit_oracle is not None and spec.arity in (1, 2)
        assert callable(spec.implementation("torch")), name
        assert set(spec.implementations) == {"torch", "triton"}


def test_pam_mul_grad_sweep_is_clean() -> None:
    result = run_sweep(_config(op="pam_mul_grad", format="fp8_e5m2", mode="ftz"))
    assert (result.inputs_checked, result.mismatches) == (1 << 16, 0), sweep.format_summary(result)


def test_triton_sweep_is_clean() -> None:
    triton_pam = pytest.importorskip("revcheck.kernels.triton_pam", reason="triton is not installed")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu" and not triton_pam.INTERPRETED:
        pytest.skip("Triton on the CPU needs TRITON_INTERPRET=1 set before triton is first imported")
    result = run_sweep(_config(impl="triton", device=device, mode="ftz"))
    assert (result.inputs_checked, result.mismatches) == (1 << 16, 0), sweep.format_summary(result)


@pytest.mark.parametrize("num_shards", [1, 3, 100])
def test_sharded_runs_cover_every_input_exactly_once(num_shards: int) -> None:
    results = [
        run_sweep(_config(format="fp8_e5m2", chunk_bits=10, shard=shard, num_shards=num_shards))
        for shard in range(num_shards)
    ]
    assert sum(r.chunks_in_shard for r in results) == 64
    assert sum(r.inputs_checked for r in results) == 1 << 16
    assert all(r.complete and r.mismatches == 0 for r in results)


def test_chunks_enumerate_every_pair_once() -> None:
    config = _config(chunk_bits=10)
    pairs = [np.stack(sweep.chunk_inputs(config, c)) for c in range(sweep.total_chunks(config))]
    flat = np.concatenate(pairs, axis=1).astype(np.int64)
    codes = flat[0] << 8 | flat[1]
    assert np.array_equal(np.sort(codes), np.arange(1 << 16)), "some (a, b) pair is missing or repeated"


def _recorded(state_dir: Path) -> dict[int, dict[str, object]]:
    """Chunk records of every state file: a chunk that is re-run gets a new record (new timings)."""
    records: dict[int, dict[str, object]] = {}
    for path in state_dir.glob("*.json"):
        records.update({record["chunk"]: record for record in json.loads(path.read_text())["chunks"]})
    return records


def test_resume_skips_recorded_chunks(tmp_path: Path) -> None:
    first = run_sweep(_config(chunk_bits=12, state_dir=tmp_path, limit_chunks=3))
    assert (first.chunks_done, first.chunks_in_shard, first.complete) == (3, 16, False)
    after_first = _recorded(tmp_path)
    assert len(after_first) == 3
    second = run_sweep(_config(chunk_bits=12, state_dir=tmp_path))
    assert (second.chunks_run_now, second.chunks_done, second.inputs_checked) == (13, 16, 1 << 16)
    after_second = _recorded(tmp_path)
    rerun = [c for c in after_first if after_second[c] != after_first[c]]
    assert not rerun, f"chunks {rerun} were checked twice"
    third = run_sweep(_config(chunk_bits=12, state_dir=tmp_path))
    assert (third.chunks_run_now, third.complete, third.mismatches) == (0, True, 0)
    assert _recorded(tmp_path) == after_second


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
        (["--op", "pam_mul", "--format", "bf16", "--mode", "rtz"], "invalid choice: 'rtz'"),
        (["--op", "pam_mul", "--format", "bf16", "--impl", "cuda"], "invalid choice: 'cuda'"),
        (["--format", "bf16"], "--op"),
    ],
)
@pytest.mark.parametrize("command", ["python -m revcheck.sweep", "revcheck sweep"])
def test_bad_usage_exits_2_with_one_line_reason(
    argv: list[str], reason: str, command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status = sweep.main(argv) if command.startswith("python") else revcheck_main(["sweep", *argv])
    error = capsys.readouterr().err
    assert status == 2
    assert error.count("\n") == 1 and error.startswith(f"{command.split()[0]}") and reason in error, error


def test_usage_errors_of_the_python_api_are_revchecks_usage_error() -> None:
    assert sweep.UsageError is errors.UsageError
    with pytest.raises(errors.UsageError, match="unknown --op 'pam_matmul'"):
        run_sweep(_config(op="pam_matmul"))
    with pytest.raises(errors.UsageError, match="unknown mode 'rtz'"):
        run_sweep(_config(mode="rtz"))
    with pytest.raises(errors.UsageError, match="0 <= I < N"):
        run_sweep(_config(shard=3, num_shards=2))


def test_revcheck_sweep_is_the_same_command(capsys: pytest.CaptureFixture[str]) -> None:
    status = revcheck_main(["sweep", "--op", "pa_exp2", "--format", "fp8_e5m2", "--workers", "1", "--quiet"])
    out = capsys.readouterr().out
    assert status == 0, out
    assert "inputs checked: 256 (of 256 in the whole sweep)" in out and "mismatches: 0" in out, out


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
