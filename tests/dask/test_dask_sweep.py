"""Sweeps on a real Dask cluster (revcheck.sweep.cluster): the same records and result as one process.

A planted wrong ``pam_mul`` (:mod:`tests.dask.planted`, 16 one-ULP errors spread over 16
chunks) is swept on fp8_e5m2 in one process and on a ``LocalCluster`` of worker
processes, once with ``--scheduler local`` and once against a running scheduler's address
while one worker process is killed (SIGKILL) in the middle of a chunk: the mismatch
count and the first counterexamples must equal the single-process run's, and every
chunk must be recorded exactly once.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest

distributed = pytest.importorskip("distributed", reason="dask.distributed is not installed (revcheck[dask])")

from revcheck.sweep import SweepConfig, SweepResult, run_sweep  # noqa: E402
from revcheck.sweep import cli as sweep_cli  # noqa: E402
from tests.dask.planted import PLANTED_MISMATCHES, planted_pam_mul  # noqa: E402

CHUNK_BITS = 11  # 32 chunks of 2048 pairs


def _config(**overrides: Any) -> SweepConfig:
    settings: dict[str, Any] = {
        "op": "pam_mul",
        "format": "fp8_e5m2",
        "chunk_bits": CHUNK_BITS,
        "workers": 1,
        "quiet": True,
    }
    settings.update(overrides)
    return SweepConfig(**settings)


@pytest.fixture(scope="module")
def single_process() -> SweepResult:
    result = run_sweep(_config(), implementation=planted_pam_mul)
    assert result.mismatches == PLANTED_MISMATCHES and result.complete
    return result


def _records(state_dir: Path) -> dict[int, dict[str, Any]]:
    """Every chunk record of the journals; a chunk recorded twice fails the test."""
    records: dict[int, dict[str, Any]] = {}
    for path in state_dir.glob("*.jsonl"):
        text = path.read_text()
        for line in text[: text.rfind("\n") + 1].splitlines()[1:]:
            record = json.loads(line)
            assert record["chunk"] not in records, f"chunk {record['chunk']} was recorded twice"
            records[record["chunk"]] = record
    return records


def _same_outcome(result: SweepResult, single: SweepResult) -> None:
    assert result.complete and result.chunks_done == single.chunks_done
    assert (result.inputs_checked, result.mismatches) == (single.inputs_checked, single.mismatches)
    assert result.examples == single.examples  # the first counterexamples, in chunk order


def test_local_cluster_gives_the_single_process_result(tmp_path: Path, single_process: SweepResult) -> None:
    config = _config(scheduler="local", workers=2, state_dir=tmp_path)
    result = run_sweep(config, implementation=planted_pam_mul)
    _same_outcome(result, single_process)
    assert len(_records(tmp_path)) == result.chunks_in_shard == 32
    again = run_sweep(config, implementation=planted_pam_mul)  # resumes: nothing left to do
    assert again.chunks_run_now == 0 and again.mismatches == single_process.mismatches


def _calls(log: Path) -> list[tuple[str, int, int]]:
    """(event, pid, first flat index) of every logged call, in order."""
    if not log.exists():
        return []
    text = log.read_text()
    calls = []
    for line in text[: text.rfind("\n") + 1].splitlines():
        event, pid, a, b = line.split()
        calls.append((event, int(pid), int(a) << 8 | int(b)))
    return calls


def _open_calls(calls: list[tuple[str, int, int]]) -> dict[int, int]:
    """pid -> first flat index of the call it has started and not finished."""
    running: dict[int, int] = {}
    for event, pid, index in calls:
        if event == "start":
            running[pid] = index
        else:
            running.pop(pid, None)
    return running


def test_a_worker_killed_mid_chunk_loses_only_that_chunk(tmp_path: Path, single_process: SweepResult) -> None:
    log = tmp_path / "calls.log"
    state_dir = tmp_path / "state"
    slow = functools.partial(planted_pam_mul, delay=0.4, log=str(log))
    cluster = distributed.LocalCluster(
        n_workers=3, threads_per_worker=1, processes=True, dashboard_address=None, silence_logs=40
    )
    client = distributed.Client(cluster)
    try:
        worker_pids = set(client.run(os.getpid).values())
        config = _config(scheduler=cluster.scheduler_address, state_dir=state_dir)
        outcome: dict[str, Any] = {}

        def sweep() -> None:
            try:
                outcome["result"] = run_sweep(config, implementation=slow)
            except BaseException as error:  # reported by the main thread
                outcome["error"] = error

        thread = threading.Thread(target=sweep)
        thread.start()
        deadline = time.monotonic() + 120
        victim = None
        while victim is None and time.monotonic() < deadline and thread.is_alive():
            if state_dir.is_dir() and _records(state_dir):
                running = {p: i for p, i in _open_calls(_calls(log)).items() if p in worker_pids}
                if running:  # after the first results, a worker in the middle of a chunk
                    victim, started_at = next(iter(running.items()))
                    os.kill(victim, signal.SIGKILL)
                    break
            time.sleep(0.02)
        assert victim is not None, "no worker was caught in the middle of a chunk"
        thread.join(timeout=180)
        assert not thread.is_alive(), "the sweep did not finish after a worker was killed"
        if "error" in outcome:
            raise outcome["error"]
        result: SweepResult = outcome["result"]
    finally:
        client.close()
        cluster.close()

    _same_outcome(result, single_process)
    records = _records(state_dir)
    assert sorted(records) == list(range(32)), "every chunk recorded exactly once"
    lost_chunk = started_at >> CHUNK_BITS
    calls = _calls(log)
    finished_by = {pid for event, pid, index in calls if event == "end" and index >> CHUNK_BITS == lost_chunk}
    assert victim not in finished_by and finished_by, (
        f"chunk {lost_chunk} was started by the killed worker {victim} and must have been finished by another"
    )
    # Only the lost chunk was checked twice: every other chunk was started exactly once.
    starts: dict[int, int] = {}
    for event, _, index in calls:
        if event == "start":
            starts[index >> CHUNK_BITS] = starts.get(index >> CHUNK_BITS, 0) + 1
    assert {c for c, n in starts.items() if n > 1} <= {lost_chunk}, starts


def test_the_command_line_runs_on_a_local_cluster(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--op", "pa_exp2", "--format", "fp8_e5m2", "--scheduler", "local", "--workers", "2", "--quiet"]
    status = sweep_cli.main(argv)
    out = capsys.readouterr().out
    assert status == 0, out
    assert "inputs checked: 256 (of 256 in the whole sweep)" in out and "mismatches: 0" in out, out


def test_an_unreachable_scheduler_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    import dask

    argv = ["--op", "pa_exp2", "--format", "fp8_e5m2", "--scheduler", "tcp://127.0.0.1:9", "--quiet"]
    with dask.config.set({"distributed.comm.timeouts.connect": "2s"}):
        status = sweep_cli.main(argv)
    err = capsys.readouterr().err
    assert status == 2 and "cannot reach the Dask scheduler at tcp://127.0.0.1:9" in err, err
    assert err.count("\n") == 1, err
