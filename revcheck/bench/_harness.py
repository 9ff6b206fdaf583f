"""Timing and table helpers shared by the benchmark families."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class Row:
    """One line of the benchmark table: a measured figure and, if any, its target."""

    case: str
    figure: str
    target: str = ""
    met: bool | None = None


def median_time(fn: Callable[[], object], *, repeat: int = 5, min_time: float = 0.2) -> float:
    """Seconds per call of ``fn``: the median of ``repeat`` timings, each looping for at least ``min_time`` s.

    The median, not the best: one lucky or unlucky repeat on a shared machine moves neither ratio.
    """
    fn()  # warm-up: allocation, JIT, caches
    loops = 1
    while True:
        start = time.perf_counter()
        for _ in range(loops):
            fn()
        elapsed = time.perf_counter() - start
        if elapsed >= min_time or loops >= 1 << 20:
            break
        loops *= 2
    samples = [elapsed / loops]
    for _ in range(repeat - 1):
        start = time.perf_counter()
        for _ in range(loops):
            fn()
        samples.append((time.perf_counter() - start) / loops)
    return statistics.median(samples)


def ratio_row(
    case: str,
    candidate: Callable[[], object],
    baseline: Callable[[], object],
    *,
    target: float | None = None,
    **timing: float,
) -> Row:
    """Time both in this run and report candidate/baseline (lower is better)."""
    t_candidate = median_time(candidate, **timing)  # type: ignore[arg-type]
    t_baseline = median_time(baseline, **timing)  # type: ignore[arg-type]
    ratio = t_candidate / t_baseline
    return Row(
        case,
        f"{ratio:.2f}x",
        "" if target is None else f"<= {target:g}x",
        None if target is None else ratio <= target,
    )


def print_table(title: str, rows: list[Row]) -> None:
    headers = ("case", "figure", "target", "met")
    cells = [(r.case, r.figure, r.target, "" if r.met is None else ("yes" if r.met else "NO")) for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) if cells else len(h) for i, h in enumerate(headers)]
    print(f"\n## {title}\n")
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for c in cells:
        print("  ".join(v.ljust(w) for v, w in zip(c, widths, strict=True)))
