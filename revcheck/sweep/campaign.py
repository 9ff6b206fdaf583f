"""The exhaustive campaign: every sweep with a 2**32 input space, one after another, resumable, reported.

::

    revcheck sweep campaign --state-dir sweeps                      # the 12 16-bit binary sweeps
    revcheck sweep campaign --state-dir sweeps --unary32            # + pa_log2, pa_exp2 on all 2**32 fp32
    revcheck sweep campaign --state-dir sweeps --estimate           # the time estimate only
    revcheck sweep campaign --state-dir sweeps --scheduler tcp://HOST:8786

(``python -m revcheck.sweep campaign ...`` is the same command.)  The sweeps are
every binary elementwise op of the registry (``pam_mul``, ``pam_div``,
``pam_mul_grad``) on every 16-bit format (bf16, fp16) in every mode (ieee, ftz):
12 sweeps of 2**32 pairs, the implementation (``--impl``, default torch) against the
oracle; ``--unary32`` adds every unary op on fp32 (2**32 inputs each).  Before
starting, the command measures one chunk of each sweep on this machine and prints
how long the rest will take.  Every sweep records its chunks in the state dir as
they finish (:mod:`revcheck.sweep.state`), so the same command resumes an
interrupted campaign where it stopped; the time each run spent on a sweep is
logged there too (``campaign-runs.jsonl``).  After every sweep the report is
rewritten: a Markdown table (``--report``, default ``STATE_DIR/campaign.md``) and the
same as JSON next to it: pairs checked, mismatches, the first counterexample,
wall time, status, and the machine (name, CPU count, load average).

Exit status: 0 every sweep complete and clean, 1 some mismatch, 3 nothing failed
but some sweep is incomplete (``--limit-chunks``), 2 bad usage, 130 interrupted.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from revcheck import formats
from revcheck.audit import registry
from revcheck.cli import (
    EXIT_COUNTEREXAMPLE,
    EXIT_INTERRUPTED,
    EXIT_NOT_CHECKED,
    EXIT_OK,
    Parser,
    check_output_file,
    run_command,
)
from revcheck.errors import UsageError
from revcheck.modes import MODES
from revcheck.sweep import state
from revcheck.sweep.chunk import check_chunk
from revcheck.sweep.config import MAX_INPUT_BITS, SweepConfig, total_chunks, validate
from revcheck.sweep.pool import Backend, open_backend
from revcheck.sweep.run import SweepInterrupted, SweepResult, format_example, run_sweep
from revcheck.sweep.throughput import sample_chunks

__all__ = [
    "CampaignConfig",
    "Estimate",
    "SweepRow",
    "binary_sweeps",
    "campaign_sweeps",
    "estimate",
    "main",
    "report_from_records",
    "run_campaign",
    "unary32_sweeps",
]

PROG = "revcheck sweep campaign"
#: Chunks of each sweep the time estimate measures (about a second in all per sweep).
ESTIMATE_CHUNKS = 2
RUNS_LOG = "campaign-runs.jsonl"


def binary_sweeps() -> list[tuple[str, str, str]]:
    """(op, format, mode) of every binary sweepable op on every 16-bit format, in every mode."""
    sixteen = [f.name for f in formats.FORMATS.values() if 2 * f.width == MAX_INPUT_BITS]
    ops = [name for name in registry.sweepable() if registry.get(name).arity == 2]
    return [(op, fmt, mode) for op in ops for fmt in sixteen for mode in MODES]


def unary32_sweeps() -> list[tuple[str, str, str]]:
    """(op, format, mode) of every unary sweepable op on every 32-bit format, in every mode."""
    wide = [f.name for f in formats.FORMATS.values() if f.width == MAX_INPUT_BITS]
    ops = [name for name in registry.sweepable() if registry.get(name).arity == 1]
    return [(op, fmt, mode) for op in ops for fmt in wide for mode in MODES]


@dataclass(frozen=True)
class CampaignConfig:
    """What the campaign runs and where it records it."""

    state_dir: Path
    report: Path | None = None  # None: STATE_DIR/campaign.md
    impl: str = "torch"
    unary32: bool = False
    only: tuple[str, ...] = ()  # "op", "op:format" or "op:format:mode" filters; empty: every sweep
    workers: int = 0
    scheduler: str | None = None
    device: str = "cpu"
    limit_chunks: int | None = None  # per sweep, this run
    quiet: bool = False

    @property
    def report_path(self) -> Path:
        return self.report if self.report is not None else self.state_dir / "campaign.md"

    @property
    def json_path(self) -> Path:
        return self.report_path.with_suffix(".json")


def campaign_sweeps(config: CampaignConfig) -> list[SweepConfig]:
    """The sweeps of the campaign, validated, in the order they run."""
    chosen = binary_sweeps() + (unary32_sweeps() if config.unary32 else [])
    if config.only:
        for pattern in config.only:
            if not any(_matches(pattern, sweep) for sweep in chosen):
                names = ", ".join(":".join(s) for s in chosen)
                raise UsageError(f"--only {pattern!r} matches none of the campaign's sweeps ({names})")
        chosen = [s for s in chosen if any(_matches(p, s) for p in config.only)]
    sweeps = [
        SweepConfig(
            op=op,
            format=fmt,
            mode=mode,
            impl=config.impl,
            state_dir=config.state_dir,
            limit_chunks=config.limit_chunks,
            workers=config.workers,
            device=config.device,
            quiet=config.quiet,
            scheduler=config.scheduler,
        )
        for op, fmt, mode in chosen
    ]
    for sweep in sweeps:
        validate(sweep)
    return sweeps


def _matches(pattern: str, sweep: tuple[str, str, str]) -> bool:
    parts = pattern.split(":")
    return len(parts) <= 3 and all(p == s for p, s in zip(parts, sweep, strict=False))


@dataclass(frozen=True)
class Estimate:
    """One sweep's remaining work and its measured speed on this machine."""

    sweep: SweepConfig
    chunks_left: int
    cpu_seconds_per_chunk: float

    @property
    def cpu_seconds(self) -> float:
        return self.chunks_left * self.cpu_seconds_per_chunk


def estimate(sweeps: Sequence[SweepConfig], *, quiet: bool = False) -> list[Estimate]:
    """Each sweep's chunks still to check and the CPU time one of them takes here (chunks measured).

    A tqdm bar on stderr counts the sweeps measured (the whole estimate takes seconds per sweep).
    """
    import torch
    from tqdm import tqdm

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in a worker
    estimates = []
    try:
        for sweep in tqdm(
            sweeps, desc="campaign: estimating", unit="sweep", file=sys.stderr, leave=False, disable=quiet
        ):
            left = total_chunks(sweep) - len(state.load_done(sweep))
            if sweep.limit_chunks is not None:
                left = min(left, sweep.limit_chunks)
            seconds = 0.0
            if left:
                # Two chunks spread over the space (not the first of the run order: a = the smallest
                # subnormals), after an untimed warm-up one (first calls allocate).
                warm, *timed = sample_chunks(sweep, ESTIMATE_CHUNKS + 3)[3:]
                check_chunk(sweep, warm)
                seconds = sum(check_chunk(sweep, c).cpu_seconds for c in timed) / len(timed)
            estimates.append(Estimate(sweep, left, seconds))
    finally:
        torch.set_num_threads(threads)
    return estimates


def format_estimate(estimates: Sequence[Estimate], parallel: int, where: str) -> str:
    lines = [f"campaign: {len(estimates)} sweeps, {where}; time left, from chunks of each measured here:"]
    total = 0.0
    for e in estimates:
        wall = e.cpu_seconds / parallel
        total += wall
        s = e.sweep
        lines.append(
            f"  {s.op:<13} {s.fmt.name:<5} {s.mode:<4} {e.chunks_left:>5} chunks left  "
            f"~{_duration(wall)}"
            + (
                f"  ({(1 << s.bits_per_chunk) / e.cpu_seconds_per_chunk / 1e6:.1f} M/CPU-s)"
                if e.chunks_left
                else ""
            )
        )
    load = _load()
    lines.append(
        f"  total ~{_duration(total)} on {parallel} otherwise idle cores"
        + (
            f" (load average now {load:.1f} on {os.cpu_count()} CPUs: expect longer)"
            if load and load > 1
            else ""
        )
    )
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def _load() -> float | None:
    try:
        return os.getloadavg()[0]
    except (OSError, AttributeError):  # pragma: no cover - Windows
        return None


@dataclass
class SweepRow:
    """One line of the campaign's report."""

    op: str
    format: str
    mode: str
    impl: str
    inputs: int
    inputs_checked: int
    mismatches: int
    first_counterexample: str
    wall_seconds: float  # summed over every campaign run that worked on this sweep
    status: str  # "complete", "incomplete (k/n chunks)", "not started"
    runs: int = 0
    machines: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, sweep: SweepConfig, runs: list[dict[str, Any]]) -> SweepRow:
        done = state.load_done(sweep)
        n_chunks = total_chunks(sweep)
        ordered = [done[c] for c in sorted(done)]
        examples = [e for r in ordered for e in r.examples]
        mine = [run for run in runs if run["sweep"] == sweep.key]
        if len(done) == n_chunks:
            status = "complete"
        elif done:
            status = f"incomplete ({len(done)}/{n_chunks} chunks)"
        else:
            status = "not started"
        return cls(
            op=sweep.op,
            format=sweep.fmt.name,
            mode=sweep.mode,
            impl=sweep.impl,
            inputs=1 << sweep.input_bits,
            inputs_checked=sum(r.inputs for r in ordered),
            mismatches=sum(r.mismatches for r in ordered),
            first_counterexample=format_example(sweep, examples[0]) if examples else "",
            wall_seconds=sum(run["seconds"] for run in mine),
            status=status,
            runs=len(mine),
            machines=sorted({run["machine"] for run in mine}),
        )


def machine() -> dict[str, Any]:
    """This machine, for the report: name, processor, CPU count, load average."""
    import numpy
    import torch

    import revcheck

    return {
        "name": platform.node(),
        "processor": _processor(),
        "cpus": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "revcheck": revcheck.__version__,
        "torch": torch.__version__,
        "numpy": numpy.__version__,
    }


def _processor() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _log_run(config: CampaignConfig, record: dict[str, Any]) -> None:
    with (config.state_dir / RUNS_LOG).open("a", encoding="utf-8") as log:
        log.write(json.dumps(record) + "\n")


def _runs(config: CampaignConfig) -> list[dict[str, Any]]:
    path = config.state_dir / RUNS_LOG
    if not path.exists():
        return []
    runs = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        try:
            run = json.loads(line)
        except json.JSONDecodeError:
            if number == len(path.read_text().splitlines()):
                continue  # a torn last line: that run's time is not counted
            raise UsageError(
                f"{path} line {number} is not JSON; delete the file (only times are lost)"
            ) from None
        if not isinstance(run, dict) or not {"sweep", "seconds", "machine"} <= set(run):
            raise UsageError(
                f"{path} line {number} is not a run record; delete the file (only times are lost)"
            )
        runs.append(run)
    return runs


def _header(started: dict[str, Any], where: str) -> dict[str, Any]:
    now = machine()
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "backend": where,
        "machine": now,
        "load_average_at_start": started["load_average"],
        "load_average_now": now["load_average"],
    }


def report_from_records(config: CampaignConfig) -> str:
    """The Markdown report of what the state dir holds, computed from its records; writes nothing.

    Safe while a campaign is running on the same state dir (the records are only read):
    ``revcheck sweep campaign --state-dir DIR --report-only``.  The backend and the load
    averages are those the runs log (:data:`RUNS_LOG`) recorded.
    """
    if not config.state_dir.is_dir():
        raise UsageError(f"--report-only: {config.state_dir} is no state dir; run the campaign into it first")
    sweeps = campaign_sweeps(config)
    runs = _runs(config)
    where = ", ".join(sorted({str(run.get("backend", "?")) for run in runs})) or "not run yet"
    started = {"load_average": runs[0].get("load_average_start") if runs else None}
    header = _header(started, where)
    if runs:
        header["load_average_now"] = runs[-1].get("load_average_end")
    return markdown([SweepRow.of(sweep, runs) for sweep in sweeps], header)


def write_report(
    config: CampaignConfig, sweeps: Sequence[SweepConfig], started: dict[str, Any], where: str
) -> list[SweepRow]:
    """Rewrite the Markdown and JSON reports from the state dir; the rows."""
    rows = [SweepRow.of(sweep, _runs(config)) for sweep in sweeps]
    header = _header(started, where)
    config.report_path.parent.mkdir(parents=True, exist_ok=True)
    config.json_path.write_text(
        json.dumps({**header, "sweeps": [dataclasses.asdict(r) for r in rows]}, indent=2)
    )
    config.report_path.write_text(markdown(rows, header))
    return rows


def markdown(rows: Sequence[SweepRow], header: dict[str, Any]) -> str:
    m = header["machine"]
    lines = [
        "| sweep | inputs checked | mismatches | wall time | status | first counterexample |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        checked = f"{r.inputs_checked:,} / {r.inputs:,}"
        lines.append(
            f"| `{r.op}` {r.format} {r.mode}, {r.impl} | {checked} | {r.mismatches:,} | "
            f"{_duration(r.wall_seconds) if r.runs else '-'} | {r.status} | {r.first_counterexample or '-'} |"
        )
    total = sum(r.wall_seconds for r in rows)
    lines += [
        "",
        f"Total wall time {_duration(total)}; {header['backend']}; machine {m['name']} ({m['processor']}, "
        f"{m['cpus']} CPUs); load average (1, 5, 15 min) at the start {header['load_average_at_start']}, "
        f"at the end {header['load_average_now']}; revcheck {m['revcheck']}, torch {m['torch']}, "
        f"numpy {m['numpy']}; {header['date']}.",
    ]
    return "\n".join(lines) + "\n"


@dataclass
class CampaignResult:
    rows: list[SweepRow]
    interrupted: SweepInterrupted | None = None

    @property
    def status(self) -> int:
        if any(r.mismatches for r in self.rows):
            return EXIT_COUNTEREXAMPLE
        if self.interrupted is not None:
            return EXIT_INTERRUPTED
        return EXIT_OK if all(r.status == "complete" for r in self.rows) else EXIT_NOT_CHECKED


def run_campaign(
    config: CampaignConfig, *, stream: TextIO | None = None, estimate_only: bool = False
) -> CampaignResult:
    """Run (or resume) every sweep of the campaign through one backend; the report's rows."""
    out = stream or sys.stderr
    sweeps = campaign_sweeps(config)  # validates the state dir too
    if config.report is not None:
        check_output_file(config.report, "--report")
    config.state_dir.mkdir(parents=True, exist_ok=True)
    started = machine()
    estimates = estimate(sweeps, quiet=config.quiet)
    if estimate_only:
        print(format_estimate(estimates, _local_parallel(config), _local_where(config)), file=out, flush=True)
        return CampaignResult([SweepRow.of(s, _runs(config)) for s in sweeps])
    interrupted = None
    with open_backend(sweeps[0], None) as backend:
        print(format_estimate(estimates, max(1, backend.workers), backend.description), file=out, flush=True)
        for number, sweep in enumerate(sweeps, start=1):
            if not config.quiet:
                print(
                    f"[{number}/{len(sweeps)}] {sweep.op} {sweep.fmt.name} {sweep.mode}", file=out, flush=True
                )
            try:
                result = _run_one(config, sweep, backend, out)
            except SweepInterrupted as error:
                interrupted = error
                break
            if not config.quiet and result.mismatches:
                print(f"  {result.mismatches:,} mismatches", file=out, flush=True)
            write_report(config, sweeps, started, backend.description)
        rows = write_report(config, sweeps, started, backend.description)
    return CampaignResult(rows, interrupted)


def _local_parallel(config: CampaignConfig) -> int:
    return config.workers or os.cpu_count() or 1


def _local_where(config: CampaignConfig) -> str:
    if config.scheduler is not None:
        return f"Dask scheduler {config.scheduler}"
    return f"{_local_parallel(config)} processes"


def _run_one(config: CampaignConfig, sweep: SweepConfig, backend: Backend, out: TextIO) -> SweepResult:
    """Run one sweep; log the time this run spent on it (also when interrupted)."""
    start, load = time.perf_counter(), _load()
    chunks_run = 0
    try:
        result = run_sweep(sweep, backend=backend, progress_stream=out)
        chunks_run = result.chunks_run_now
        return result
    except SweepInterrupted as interrupted:
        chunks_run = interrupted.run_now
        raise
    finally:
        _log_run(
            config,
            {
                "sweep": sweep.key,
                "seconds": round(time.perf_counter() - start, 3),
                "chunks_run": chunks_run,
                "machine": platform.node(),
                "cpus": os.cpu_count(),
                "backend": backend.description,
                "load_average_start": load,
                "load_average_end": _load(),
            },
        )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--state-dir", type=Path, required=True, help="records of every sweep; rerun to resume"
    )
    parser.add_argument(
        "--report", type=Path, default=None, help="Markdown report (default STATE_DIR/campaign.md)"
    )
    parser.add_argument("--impl", default="torch", choices=registry.implementation_names())
    parser.add_argument("--unary32", action="store_true", help="also every unary op on all 2^32 fp32 inputs")
    parser.add_argument(
        "--only", action="append", default=[], metavar="OP[:FORMAT[:MODE]]", help="run only these sweeps"
    )
    parser.add_argument("--estimate", action="store_true", help="print the time estimate and stop")
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="print the Markdown table of what STATE_DIR holds and stop (runs and writes nothing)",
    )
    parser.add_argument(
        "--workers", type=int, default=0, help="processes or Dask workers (default: one per CPU)"
    )
    parser.add_argument("--scheduler", default=None, help="'local' (Dask LocalCluster) or tcp://HOST:PORT")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument(
        "--limit-chunks", type=int, default=None, help="at most this many chunks per sweep now"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress display")


def main(argv: Sequence[str] | None = None, prog: str = PROG) -> int:
    """``revcheck sweep campaign``; the exit status."""

    def command() -> int:
        parser = Parser(prog=prog, description=__doc__.splitlines()[0] if __doc__ else None)
        add_arguments(parser)
        args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
        config = CampaignConfig(
            state_dir=args.state_dir,
            report=args.report,
            impl=args.impl,
            unary32=args.unary32,
            only=tuple(args.only),
            workers=args.workers,
            scheduler=args.scheduler,
            device=args.device,
            limit_chunks=args.limit_chunks,
            quiet=args.quiet,
        )
        if args.report_only:
            print(report_from_records(config), end="")
            return EXIT_OK
        result = run_campaign(config, estimate_only=args.estimate)
        if args.estimate:
            return EXIT_OK
        print(config.report_path.read_text(), end="")
        if result.interrupted is not None:
            print(f"{prog}: {result.interrupted}", file=sys.stderr)
        print(f"report: {config.report_path} (and {config.json_path.name})", file=sys.stderr)
        return result.status

    return run_command(prog, command)
