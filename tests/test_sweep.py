"""Exhaustive sweeps (revcheck.sweep): full fp8 runs, sharding, resuming, planted bugs, usage errors.

The chunk and shard arithmetic itself is tested in ``tests/test_enumeration.py``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

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


def _journal_lines(path: Path) -> list[dict[str, Any]]:
    """The whole lines of a journal (one being written right now is left out)."""
    text = path.read_text()
    return [json.loads(line) for line in text[: text.rfind("\n") + 1].splitlines()]


def _recorded(state_dir: Path) -> dict[int, dict[str, object]]:
    """Chunk records of every journal; each chunk is recorded once (a re-run would add a second line)."""
    records: dict[int, dict[str, object]] = {}
    for path in state_dir.glob("*.jsonl"):
        header, *lines = _journal_lines(path)
        assert set(header) == {"sweep", "shard"}, header
        for record in lines:
            assert record["chunk"] not in records, f"chunk {record['chunk']} was recorded twice"
            records[record["chunk"]] = record
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
        (["--op", "pam_mul", "--format", "fp32"], "has 2^64 inputs, too many to enumerate"),
        (["--op", "pam_mul", "--format", "fp64"], "invalid choice: 'fp64'"),
        (["--op", "pam_mul", "--format", "bf16", "--scheduler", "udp:x"], "neither 'local' nor"),
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


# ---- issue 9: usage errors before any work, validated state, Ctrl-C ------------------------------


def _sweep_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = sweep.main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message given where CUDA is missing")
def test_cuda_without_cuda_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = _sweep_cli(capsys, "--op", "pam_mul", "--format", "fp8_e5m2", "--device", "cuda")
    assert status == 2 and out == "" and "CUDA is not available" in err and err.count("\n") == 1, err


@pytest.mark.parametrize("where", ["a_file", "under_a_file"])
def test_state_dir_that_is_or_lies_under_a_file_exits_2_before_any_work(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, where: str
) -> None:
    blocker = tmp_path / "file.txt"
    blocker.write_text("")
    state_dir = blocker if where == "a_file" else blocker / "sweeps"
    # The whole bf16 sweep would take minutes: the refusal comes before the first chunk.
    status, out, err = _sweep_cli(
        capsys, "--op", "pam_mul", "--format", "bf16", "--state-dir", str(state_dir), "--quiet"
    )
    assert status == 2 and out == "" and "--state-dir" in err and "file" in err, err
    assert err.count("\n") == 1 and blocker.read_text() == ""


def _state_file(tmp_path: Path) -> Path:
    run_sweep(_config(chunk_bits=12, state_dir=tmp_path, limit_chunks=2))
    (path,) = tmp_path.glob("*.jsonl")
    return path


@pytest.mark.parametrize(
    ("corrupt", "message"),
    [
        (lambda h, r: r[0].update(extra=1), "line 2 has unknown field(s) 'extra'"),
        (lambda h, r: r[0].update(mismatches=-3), "line 2 field 'mismatches' is -3, a negative count"),
        (lambda h, r: r[1].update(inputs="4096"), "line 3 field 'inputs' is '4096', not an integer"),
        (lambda h, r: r[0].update(chunk=99), "line 2 field 'chunk' is 99, expected 0..15"),
        (lambda h, r: r[0].update(seconds=-1.0), "field 'seconds' is -1.0, a negative time"),
        (lambda h, r: r[0].pop("examples"), "line 2 lacks field(s) 'examples'"),
        (lambda h, r: h.update(owner="me"), "the header (line 1) has unknown field(s) 'owner'"),
        (lambda h, r: h.update(sweep="pam_div-x"), "field 'sweep' is 'pam_div-x'"),
        (lambda h, r: r.insert(0, [1, 2]), "line 2 is a list, not a chunk record"),
    ],
)
def test_state_record_is_validated_on_load(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, corrupt: Any, message: str
) -> None:
    path = _state_file(tmp_path)
    header, *records = _journal_lines(path)
    corrupt(header, records)
    path.write_text("".join(json.dumps(line) + "\n" for line in [header, *records]))
    with pytest.raises(errors.UsageError) as raised:
        run_sweep(_config(chunk_bits=12, state_dir=tmp_path))
    assert str(path) in str(raised.value) and message in str(raised.value), raised.value
    argv = ["--op", "pam_mul", "--format", "fp8_e4m3fn", "--chunk-bits", "12", "--workers", "1", "--quiet"]
    status, out, err = _sweep_cli(capsys, *argv, "--state-dir", str(tmp_path))
    assert status == 2 and out == "" and message in err and err.count("\n") == 1, err


def test_a_torn_last_line_is_no_record_and_is_cut_off(tmp_path: Path) -> None:
    path = _state_file(tmp_path)
    whole = path.read_text()
    path.write_text(whole + whole.splitlines()[-1][:25])  # a crash in the middle of writing a record
    resumed = run_sweep(_config(chunk_bits=12, state_dir=tmp_path, limit_chunks=1))
    assert (resumed.chunks_done, resumed.chunks_run_now) == (3, 1)
    assert path.read_text().startswith(whole) and path.read_text().endswith("\n")
    assert len(_recorded(tmp_path)) == 3


def test_a_whole_file_state_of_the_earlier_format_is_read_and_validated(tmp_path: Path) -> None:
    path = _state_file(tmp_path)
    header, *records = _journal_lines(path)
    legacy = tmp_path / path.name.replace(".jsonl", ".json")
    legacy.write_text(json.dumps({**header, "chunks": records}))
    path.unlink()
    assert run_sweep(_config(chunk_bits=12, state_dir=tmp_path, limit_chunks=1)).chunks_done == 3
    legacy.write_text(json.dumps({**header, "chunks": {}}))
    with pytest.raises(errors.UsageError, match="field 'chunks' is a dict, not a list"):
        run_sweep(_config(chunk_bits=12, state_dir=tmp_path))


@pytest.mark.parametrize("argv", [["--shard", "-1/2"], ["--shard=-1/2"]])
def test_negative_shard_exits_2_with_a_clear_reason(
    capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    for command in (sweep.main, lambda a: revcheck_main(["sweep", *a])):
        status = command(["--op", "pam_mul", "--format", "bf16", *argv])
        err = capsys.readouterr().err
        assert status == 2 and "shard index -1 is negative" in err and err.count("\n") == 1, err


def test_ctrl_c_saves_reports_and_exits_130(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "revcheck.sweep", "--op", "pam_mul", "--format", "bf16"]
    command += ["--chunk-bits", "14", "--state-dir", str(tmp_path), "--workers", "1", "--quiet"]
    environment = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # A pytest-xdist worker ignores SIGINT, and an ignored SIGINT is inherited: Python then installs
        # no KeyboardInterrupt handler (as for a background job of a shell). A terminal's Ctrl-C is wanted.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        deadline = time.monotonic() + 120
        while len(_recorded(tmp_path)) < 2 and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.2)  # records appear as chunks finish
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:  # never leave a 2**32 sweep running behind a failed test
            process.kill()
            process.wait()
    assert process.returncode == 130, out + err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert "chunks of this shard are recorded in" in err and "run the same command again to resume" in err
    recorded = _recorded(tmp_path)
    saved = int(err.split("interrupted: ")[1].split(" of ")[0])
    assert saved == len(recorded) > 0
    # The state file is whole and the next run resumes from it.
    resumed = run_sweep(_config(format="bf16", chunk_bits=14, state_dir=tmp_path, limit_chunks=1))
    assert resumed.chunks_done == saved + 1 and resumed.chunks_run_now == 1
