"""Sweep throughput tools: where a chunk's time goes, and the before/after comparison of two checkouts."""

from __future__ import annotations

from pathlib import Path

import pytest

from revcheck.bench import sweep_compare
from revcheck.sweep import SweepConfig
from revcheck.sweep.throughput import STAGES, stage_seconds


def test_stage_seconds_times_every_stage_of_a_chunk() -> None:
    config = SweepConfig(op="pam_mul", format="fp8_e5m2", chunk_bits=12, block_bits=10, quiet=True)
    seconds = stage_seconds(config, [0, 15])
    assert tuple(seconds) == STAGES and all(s >= 0 for s in seconds.values())
    assert sum(seconds.values()) > 0


def test_the_comparison_pairs_rounds_and_sums_the_campaign() -> None:
    samples = {
        "before": [{"pam_mul:bf16:ieee": 4e6}, {"pam_mul:bf16:ieee": 2e6}],
        "after": [{"pam_mul:bf16:ieee": 6e6}, {"pam_mul:bf16:ieee": 3e6}],
    }
    gain, campaign = sweep_compare.rows(samples, [0.0])
    # Each round's gain pairs the two sides of that round: 1.5 both times, however slow the round.
    assert gain.figure.startswith("1.50x (p10-p90 1.50-1.50") and gain.warning == ""
    assert "3.00 -> 4.50 M/CPU-s" in gain.figure
    assert campaign.figure.startswith(f"before {2**32 / 3e6 / 3600:.2f} CPU-h")


def test_a_folder_that_is_no_checkout_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        sweep_compare.main(["--before", str(tmp_path), "--after", "."])
    assert stopped.value.code == 2 and "is not a revcheck checkout" in capsys.readouterr().err
