"""The campaign command (revcheck.sweep.campaign): its sweeps, the estimate, resuming, the report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from revcheck.cli import main as revcheck_main
from revcheck.sweep import campaign
from revcheck.sweep import cli as sweep_cli


def test_the_campaign_is_every_binary_op_on_every_16_bit_format_in_every_mode() -> None:
    sweeps = campaign.binary_sweeps()
    assert len(sweeps) == 12 and len(set(sweeps)) == 12
    assert {op for op, _, _ in sweeps} == {"pam_mul", "pam_div", "pam_mul_grad"}
    assert {fmt for _, fmt, _ in sweeps} == {"bf16", "fp16"}
    assert {mode for _, _, mode in sweeps} == {"ieee", "ftz"}
    assert set(campaign.unary32_sweeps()) == {
        (op, "fp32", mode) for op in ("pa_log2", "pa_exp2") for mode in ("ieee", "ftz")
    }


ONE_SWEEP = ["--only", "pam_div:fp16:ftz", "--workers", "1", "--quiet"]


def test_a_limited_run_is_incomplete_resumes_and_reports(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state_dir = tmp_path / "state"
    argv = ["--state-dir", str(state_dir), *ONE_SWEEP, "--limit-chunks", "2"]
    status = sweep_cli.main(["campaign", *argv])
    out, err = capsys.readouterr()
    assert status == 3, out + err  # nothing failed, but not everything was checked
    assert "incomplete (2/4096 chunks)" in out and "2,097,152 / 4,294,967,296" in out, out
    assert "~" in err and "chunks left" in err, err  # the estimate comes first
    report = json.loads((state_dir / "campaign.json").read_text())
    (row,) = report["sweeps"]
    assert (row["op"], row["format"], row["mode"], row["mismatches"]) == ("pam_div", "fp16", "ftz", 0)
    assert row["inputs_checked"] == 2 << 20 and row["runs"] == 1 and row["wall_seconds"] > 0
    assert report["machine"]["cpus"] >= 1 and "load_average_at_start" in report
    markdown = (state_dir / "campaign.md").read_text()
    assert markdown.startswith("| sweep | inputs checked | mismatches | wall time | status |")
    # The same command again: two more chunks, the first two are not checked again.
    assert revcheck_main(["sweep", "campaign", *argv]) == 3
    out = capsys.readouterr().out
    assert "incomplete (4/4096 chunks)" in out, out
    again = json.loads((state_dir / "campaign.json").read_text())["sweeps"][0]
    assert again["runs"] == 2 and again["wall_seconds"] > row["wall_seconds"]
    (journal,) = state_dir.glob("pam_div-*.jsonl")
    chunks = [json.loads(line)["chunk"] for line in journal.read_text().splitlines()[1:]]
    assert len(chunks) == len(set(chunks)) == 4
    # The table of what the state dir holds, printed without running or writing anything.
    before = sorted((p.name, p.stat().st_mtime_ns) for p in state_dir.iterdir())
    assert sweep_cli.main(["campaign", "--state-dir", str(state_dir), *ONE_SWEEP, "--report-only"]) == 0
    table = capsys.readouterr().out
    assert table.startswith("| sweep | inputs checked |") and "incomplete (4/4096 chunks)" in table, table
    assert "1 processes" in table or "process" in table, table  # the backend, from the runs log
    assert sorted((p.name, p.stat().st_mtime_ns) for p in state_dir.iterdir()) == before
    assert sweep_cli.main(["campaign", "--state-dir", str(tmp_path / "none"), "--report-only"]) == 2
    assert "is no state dir" in capsys.readouterr().err


def test_the_estimate_runs_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status = sweep_cli.main(["campaign", "--state-dir", str(tmp_path), *ONE_SWEEP, "--estimate"])
    err = capsys.readouterr().err
    assert status == 0 and "4096 chunks left" in err and "total ~" in err, err
    assert not list(tmp_path.glob("*.jsonl"))


@pytest.mark.parametrize(
    ("argv", "reason"),
    [
        (["--only", "pam_pow"], "--only 'pam_pow' matches none of the campaign's sweeps"),
        (["--only", "pa_log2:fp32"], "matches none"),  # unary fp32 sweeps need --unary32
        (["--impl", "cuda"], "invalid choice: 'cuda'"),
        (["--scheduler", "nowhere"], "neither 'local' nor a scheduler address"),
    ],
)
def test_bad_usage_exits_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], reason: str
) -> None:
    status = sweep_cli.main(["campaign", "--state-dir", str(tmp_path), *argv])
    err = capsys.readouterr().err
    assert status == 2 and reason in err and err.count("\n") == 1, err


def test_a_report_in_a_missing_folder_is_refused_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--state-dir", str(tmp_path / "s"), "--report", str(tmp_path / "no" / "r.md"), *ONE_SWEEP]
    status = sweep_cli.main(["campaign", *argv])
    err = capsys.readouterr().err
    assert status == 2 and "does not exist; create it first" in err, err
    assert not (tmp_path / "s").exists()
