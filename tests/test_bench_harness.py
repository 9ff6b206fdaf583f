"""The benchmark harness (revcheck.bench._harness): interleaved rounds, ratios with their spread, warnings."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from revcheck.bench import _harness as harness


def test_spread_is_the_median_with_numpys_percentiles() -> None:
    values = [5.0, 1.0, 4.0, 2.0, 3.0, 10.0, 2.5]
    spread = harness.Spread.of(values)
    assert spread.median == np.median(values) and (spread.low, spread.high) == (1.0, 10.0)
    assert spread.p10 == pytest.approx(np.percentile(values, 10))
    assert spread.p90 == pytest.approx(np.percentile(values, 90))
    assert spread.n == 7
    assert spread.text() == "3.00x (p10-p90 1.60-7.00, min-max 1.00-10.00, 7 pairs)"
    with pytest.raises(ValueError, match="no values"):
        harness.Spread.of([])


def test_rounds_alternate_which_candidate_runs_first() -> None:
    calls: list[str] = []
    candidates = {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}
    samples = harness.interleaved(candidates, pairs=4, loops=1)
    assert calls[:2] == ["a", "b"]  # warm-up
    assert calls[2:] == ["a", "b", "b", "a", "a", "b", "b", "a"]
    assert [len(v) for v in samples.values()] == [4, 4]


def test_ratio_rows_take_the_per_round_ratio_and_warn_on_a_wide_spread() -> None:
    steady = {"x": [2.0] * 5, "base": [1.0] * 5}
    (row,) = harness.ratio_rows(steady, "base", {"x": "x / base"}, targets={"x": 2.5})
    assert row.figure.startswith("2.00x (p10-p90 2.00-2.00") and row.met is True and row.warning == ""
    # The same medians, but rounds that disagree: the row says the machine was busy.
    noisy = {"x": [2.0, 1.0, 6.0, 2.0, 2.2], "base": [1.0, 1.0, 1.0, 1.0, 1.0]}
    (row,) = harness.ratio_rows(noisy, "base", {"x": "x / base"})
    assert "rounds spread widely" in row.warning and "busy" in row.warning
    # Each ratio pairs the two timings of one round (a slow round slows both sides).
    paired = {"x": [2.0, 20.0, 2.0], "base": [1.0, 10.0, 1.0]}
    (row,) = harness.ratio_rows(paired, "base", {"x": "x / base"})
    assert row.figure.startswith("2.00x") and row.warning == ""


def test_a_load_above_the_core_count_is_a_warning() -> None:
    spread = harness.Spread.of([1.0, 1.0, 1.0])
    cores = harness.os.cpu_count() or 1
    assert harness.busy_warning(spread, [0.1]) == ""
    assert f"load average {cores + 1.5:.1f} on {cores} cores" in harness.busy_warning(spread, [cores + 1.5])


def test_ratio_row_measures_both_commands(capsys: pytest.CaptureFixture[str]) -> None:
    counter = itertools.count()
    row = harness.ratio_row("count / count", lambda: next(counter), lambda: next(counter), pairs=3, loops=2)
    assert row.figure.endswith("3 pairs)") and next(counter) == 2 + 2 * 2 * 3
    harness.print_table("t", [row, harness.Row("other", "1", warning="busy")])
    out = capsys.readouterr().out
    assert "## t" in out and "warning: other: busy" in out
