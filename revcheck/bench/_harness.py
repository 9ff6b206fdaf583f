"""Timing, ratios with their spread, progress and tables, shared by every benchmark family.

Every ratio goes through :func:`interleaved` and :func:`ratio_rows`: the compared commands
run in alternating order within each *round* (A B, then B A, ...), each timing long
enough to be measured (at least ``min_time`` seconds, looping the command), for
``pairs`` rounds.  The figure is the median over rounds of the per-round ratio, printed
with its spread: the 10th-90th percentile and the min-max.  A load change on a shared
machine then hits both sides of a round alike, and what it does to the rounds shows in
the spread rather than in a silently wrong figure.  A row whose spread is wide
((p90 - p10) / median above :data:`BUSY_SPREAD`), or that was measured while the load
average exceeded the core count, carries a warning, printed under its table.
"""

from __future__ import annotations

import math
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

__all__ = [
    "BUSY_SPREAD",
    "DEFAULT_PAIRS",
    "QUICK_PAIRS",
    "Row",
    "Spread",
    "busy_warning",
    "describe_machine",
    "interleaved",
    "load_average",
    "median_time",
    "print_table",
    "progress",
    "ratio_row",
    "ratio_rows",
]

#: Rounds per ratio (an odd number: the median is one of them).
DEFAULT_PAIRS = 21
QUICK_PAIRS = 5
#: (p90 - p10) / median above this: the rounds disagree, the machine was probably busy.
BUSY_SPREAD = 0.25

T = TypeVar("T")


@dataclass
class Row:
    """One line of the benchmark table: a measured figure and, if any, its target."""

    case: str
    figure: str
    target: str = ""
    met: bool | None = None
    #: Why the figure is not to be trusted as it stands (a busy machine); printed under the table.
    warning: str = ""


@dataclass(frozen=True)
class Spread:
    """The median of some values and how far they spread: min, 10th and 90th percentile, max."""

    median: float
    low: float
    p10: float
    p90: float
    high: float
    n: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        if not values:
            raise ValueError("no values to summarize")
        ordered = sorted(values)
        return cls(
            statistics.median(ordered),
            ordered[0],
            _percentile(ordered, 0.1),
            _percentile(ordered, 0.9),
            ordered[-1],
            len(ordered),
        )

    @property
    def relative_width(self) -> float:
        """(p90 - p10) / median: 0 for identical rounds."""
        return (self.p90 - self.p10) / self.median if self.median else math.inf

    def text(self, digits: int = 2, unit: str = "x") -> str:
        """``"4.06x (p10-p90 3.41-5.70, min-max 3.10-6.02, 21 pairs)"``."""

        def f(value: float) -> str:
            return f"{value:.{digits}f}"

        return (
            f"{f(self.median)}{unit} (p10-p90 {f(self.p10)}-{f(self.p90)}, "
            f"min-max {f(self.low)}-{f(self.high)}, "
            f"{self.n} pairs)"
        )


def _percentile(ordered: Sequence[float], q: float) -> float:
    """Linear-interpolation percentile of sorted values (numpy's default method)."""
    position = q * (len(ordered) - 1)
    below = math.floor(position)
    above = min(below + 1, len(ordered) - 1)
    return ordered[below] + (ordered[above] - ordered[below]) * (position - below)


def load_average() -> float | None:
    """The 1-minute load average (None where the OS has none)."""
    try:
        return os.getloadavg()[0]
    except (OSError, AttributeError):  # pragma: no cover - Windows
        return None


def busy_warning(spread: Spread, loads: Iterable[float | None] = ()) -> str:
    """Why a ratio measured with this spread (and these load averages) may be off; "" when it looks fine."""
    reasons = []
    if spread.relative_width > BUSY_SPREAD:
        reasons.append(
            f"rounds spread widely (p10-p90 is {spread.relative_width:.0%} of the median, over "
            f"{BUSY_SPREAD:.0%})"
        )
    cores = os.cpu_count() or 1
    highest = max((load for load in loads if load is not None), default=None)
    if highest is not None and highest > cores:
        reasons.append(f"load average {highest:.1f} on {cores} cores")
    if not reasons:
        return ""
    return "; ".join(reasons) + ": the machine was busy, rerun on a quiet one for a figure to quote"


def progress(iterable: Iterable[T], desc: str, *, total: int | None = None) -> Iterator[T]:
    """``iterable`` with a tqdm bar on stderr (left on screen only while it runs)."""
    from tqdm import tqdm

    yield from tqdm(iterable, desc=desc, total=total, file=sys.stderr, leave=False, dynamic_ncols=True)


def _loops_for(fn: Callable[[], object], min_time: float, clock: Callable[[], float]) -> int:
    """How many calls of ``fn`` take at least ``min_time`` (after one warm-up call)."""
    fn()  # warm-up: allocation, JIT, caches, one-off compilation
    loops = 1
    while True:
        start = clock()
        for _ in range(loops):
            fn()
        if clock() - start >= min_time or loops >= 1 << 20:
            return loops
        loops *= 2


def interleaved(
    candidates: Mapping[str, Callable[[], object]],
    *,
    pairs: int = DEFAULT_PAIRS,
    min_time: float = 0.05,
    loops: int | None = None,
    clock: Callable[[], float] = time.perf_counter,
    desc: str = "timing",
) -> dict[str, list[float]]:
    """Seconds per call of each candidate, one sample per round for ``pairs`` rounds.

    Within a round every candidate runs once (``loops`` calls, or as many as take
    ``min_time``), in the order of ``candidates`` in even rounds and reversed in odd
    ones, so that neither side always runs first.  ``clock`` is ``time.perf_counter``
    (wall) or ``time.process_time`` (CPU time of this process).
    """
    if pairs < 1:
        raise ValueError(f"pairs={pairs} must be at least 1")
    names = list(candidates)
    # Warm-up and calibration take a few calls of each candidate: seconds for a training step.
    counts = {}
    for name in progress(names, f"{desc}: warm-up"):
        if loops is None:
            counts[name] = _loops_for(candidates[name], min_time, clock)
        else:
            candidates[name]()  # warm-up
            counts[name] = loops
    samples: dict[str, list[float]] = {name: [] for name in names}
    for round_ in progress(range(pairs), desc):
        for name in names if round_ % 2 == 0 else reversed(names):
            fn, count = candidates[name], counts[name]
            start = clock()
            for _ in range(count):
                fn()
            samples[name].append((clock() - start) / count)
    return samples


def ratio_rows(
    samples: Mapping[str, Sequence[float]],
    baseline: str,
    cases: Mapping[str, str],
    *,
    targets: Mapping[str, float] | None = None,
    loads: Iterable[float | None] = (),
) -> list[Row]:
    """One row per candidate in ``cases`` (name -> case text): its per-round ratio to ``baseline``."""
    loads = list(loads)
    rows = []
    for name, case in cases.items():
        ratios = [c / b for c, b in zip(samples[name], samples[baseline], strict=True)]
        spread = Spread.of(ratios)
        target = (targets or {}).get(name)
        rows.append(
            Row(
                case,
                spread.text(),
                "" if target is None else f"<= {target:g}x",
                None if target is None else spread.median <= target,
                busy_warning(spread, loads),
            )
        )
    return rows


def ratio_row(
    case: str,
    candidate: Callable[[], object],
    baseline: Callable[[], object],
    *,
    target: float | None = None,
    pairs: int = DEFAULT_PAIRS,
    min_time: float = 0.05,
    loops: int | None = None,
) -> Row:
    """Time ``candidate`` and ``baseline`` interleaved; the row of candidate/baseline (lower is better)."""
    loads = [load_average()]
    samples = interleaved(
        {"candidate": candidate, "baseline": baseline},
        pairs=pairs,
        min_time=min_time,
        loops=loops,
        desc=_short(case),
    )
    loads.append(load_average())
    targets = None if target is None else {"candidate": target}
    (row,) = ratio_rows(samples, "baseline", {"candidate": case}, targets=targets, loads=loads)
    return row


def median_time(fn: Callable[[], object], *, repeat: int = 5, min_time: float = 0.2) -> float:
    """Seconds per call of ``fn``: the median of ``repeat`` timings, each looping for at least ``min_time`` s.

    For absolute figures only; a ratio is :func:`ratio_row`'s (interleaved, with its spread).
    """
    return statistics.median(interleaved({"fn": fn}, pairs=repeat, min_time=min_time, desc="timing")["fn"])


def _short(text: str, width: int = 40) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def print_table(title: str, rows: list[Row]) -> None:
    headers = ("case", "figure", "target", "met")
    cells = [
        (
            r.case,
            r.figure,
            r.target,
            "" if r.met is None else ("yes" if r.met else "NO") + ("?" if r.warning else ""),
        )
        for r in rows
    ]
    widths = [max(len(h), *(len(c[i]) for c in cells)) if cells else len(h) for i, h in enumerate(headers)]
    print(f"\n## {title}\n")
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for c in cells:
        print("  ".join(v.ljust(w) for v, w in zip(c, widths, strict=True)).rstrip())
    warned = [r for r in rows if r.warning]
    if warned:
        print()
    for r in warned:
        print(f"warning: {r.case}: {r.warning}")
    sys.stdout.flush()


def describe_machine() -> str:
    """CPU count and load average, for the header of a benchmark run."""
    load = load_average()
    return f"{os.cpu_count()} CPUs, load average {'?' if load is None else f'{load:.2f}'}"
