"""Sweep throughput of two checkouts of revcheck, interleaved: pairs per CPU-second before and after.

::

    python -m revcheck.bench.sweep_compare --before ../main --after .        # every 16-bit binary sweep
    python -m revcheck.bench.sweep_compare --before ../main --after . --only pam_mul:bf16:ieee

Each round runs one process per checkout (``PYTHONPATH=<checkout>``), in alternating order
(before/after, then after/before, ...); each process times ``--chunks`` chunks of 2**20 pairs
of every sweep with one torch thread (as a sweep's worker) after one untimed warm-up chunk,
and prints the inputs per CPU-second.  The child uses only what every version of the sweep
has (``SweepConfig``, ``check_chunk(config, chunk)``, ``total_chunks``), so an older
checkout can be the "before".  The figure per sweep is the median over rounds of the
per-round gain (after / before) with its spread, and the campaign's CPU-hours from the
median rates of each side.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from revcheck.bench._harness import Row, Spread, busy_warning, load_average, print_table, progress

__all__ = ["CHILD", "main", "measure"]

#: Run in a child process with one checkout first on the path: rates of the sweeps in argv[1].
CHILD = """
import json, sys
import torch
torch.set_num_threads(1)
import revcheck
from revcheck.sweep import SweepConfig
from revcheck.sweep.chunk import check_chunk
from revcheck.sweep.config import total_chunks
rates = {}
for text in sys.argv[1].split(","):
    op, fmt, mode = text.split(":")
    config = SweepConfig(op=op, format=fmt, mode=mode, impl="torch", quiet=True)
    total = total_chunks(config)
    # chunks spread over the space by a multiplicative hash, the same in every checkout
    picked = [(k * 2654435761) % total for k in range(1, int(sys.argv[2]) + 2)]
    check_chunk(config, picked[0])
    results = [check_chunk(config, chunk) for chunk in picked[1:]]
    rates[text] = sum(r.inputs for r in results) / sum(r.cpu_seconds for r in results)
print(json.dumps({"revcheck": revcheck.__file__, "rates": rates}))
"""


def _rates(root: Path, sweeps: list[str], chunks: int) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", CHILD, ",".join(sweeps), str(chunks)],
        env=env,
        cwd=root,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode:
        raise SystemExit(f"measuring {root} failed (exit {done.returncode}):\n{done.stderr}")
    reply = json.loads(done.stdout.strip().splitlines()[-1])
    if not Path(reply["revcheck"]).resolve().is_relative_to(root.resolve()):
        raise SystemExit(f"{root}: the child imported revcheck from {reply['revcheck']}, not from {root}")
    return {k: float(v) for k, v in reply["rates"].items()}


def measure(
    before: Path, after: Path, sweeps: list[str], *, chunks: int, rounds: int
) -> dict[str, list[dict[str, float]]]:
    """``{"before": [rates of round 0, ...], "after": [...]}``, the two sides alternating in order."""
    samples: dict[str, list[dict[str, float]]] = {"before": [], "after": []}
    for round_ in progress(range(rounds), "sweep: before/after rounds"):
        order = [("before", before), ("after", after)]
        for side, root in order if round_ % 2 == 0 else reversed(order):
            samples[side].append(_rates(root, sweeps, chunks))
    return samples


def rows(samples: dict[str, list[dict[str, float]]], loads: list[float | None]) -> list[Row]:
    """One row per sweep (gain with spread, both median rates) and the campaign's CPU time."""
    out = []
    cpu_seconds = {"before": 0.0, "after": 0.0}
    for sweep in samples["before"][0]:
        pairs = zip(samples["after"], samples["before"], strict=True)
        gains = Spread.of([after[sweep] / before[sweep] for after, before in pairs])
        medians = {side: statistics.median(r[sweep] for r in samples[side]) for side in cpu_seconds}
        for side in cpu_seconds:
            cpu_seconds[side] += 2**32 / medians[side]
        out.append(
            Row(
                f"{sweep.replace(':', ' ')}: pairs/CPU-s after / before",
                f"{gains.text()}; {medians['before'] / 1e6:.2f} -> {medians['after'] / 1e6:.2f} M/CPU-s",
                warning=busy_warning(gains, loads),
            )
        )
    out.append(
        Row(
            f"these {len(out)} sweeps x 2^32 pairs, CPU time (on 2 idle cores)",
            f"before {cpu_seconds['before'] / 3600:.2f} CPU-h ({cpu_seconds['before'] / 120:.0f} min), "
            f"after {cpu_seconds['after'] / 3600:.2f} CPU-h ({cpu_seconds['after'] / 120:.0f} min)",
        )
    )
    return out


def main(argv: list[str] | None = None) -> int:
    from revcheck.sweep.campaign import binary_sweeps

    parser = argparse.ArgumentParser(prog="python -m revcheck.bench.sweep_compare", description=__doc__)
    parser.add_argument("--before", type=Path, required=True, help="the checkout measured as 'before'")
    parser.add_argument("--after", type=Path, default=Path.cwd(), help="the checkout measured as 'after' (.)")
    parser.add_argument("--only", action="append", metavar="OP:FORMAT:MODE", help="these sweeps only")
    parser.add_argument("--chunks", type=int, default=3, help="timed chunks per sweep and process (3)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (3)")
    args = parser.parse_args(argv)
    for root in (args.before, args.after):
        if not (root / "revcheck" / "sweep").is_dir():
            parser.error(f"{root} is not a revcheck checkout (no revcheck/sweep in it)")
    if args.chunks < 1 or args.rounds < 1:
        parser.error("--chunks and --rounds must be at least 1")
    sweeps = args.only or [":".join(s) for s in binary_sweeps()]
    loads = [load_average()]
    samples = measure(args.before, args.after, sweeps, chunks=args.chunks, rounds=args.rounds)
    loads.append(load_average())
    print_table(f"sweep throughput: {args.before} (before) vs {args.after} (after)", rows(samples, loads))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
