"""Progress of a sweep on stderr: rate and ETA."""

from __future__ import annotations

import time
from typing import TextIO

__all__ = ["Progress", "duration"]


class Progress:
    """Rate and ETA on ``stream``: redrawn in place on a terminal, a line every 30 s otherwise."""

    def __init__(self, stream: TextIO, total_inputs: int, enabled: bool, noun: str) -> None:
        self.stream = stream
        self.noun = noun
        self.total = total_inputs
        self.enabled = enabled
        self.interactive = stream.isatty()
        self.start = time.perf_counter()
        self.last = 0.0
        self.done = 0

    def update(self, inputs: int, chunks_done: int, chunks_total: int, *, final: bool = False) -> None:
        self.done += inputs
        now = time.perf_counter()
        interval = 0.5 if self.interactive else 30.0
        if not self.enabled or (not final and now - self.last < interval):
            return
        self.last = now
        elapsed = now - self.start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        remaining = (self.total - self.done) / rate if rate > 0 else float("inf")
        text = (
            f"chunk {chunks_done}/{chunks_total}  {self.done:,}/{self.total:,} {self.noun}  "
            f"{rate:,.0f} {self.noun}/s  elapsed {duration(elapsed)}  ETA {duration(remaining)}"
        )
        if self.interactive:
            self.stream.write("\r" + text + ("\n" if final else ""))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()


def duration(seconds: float) -> str:
    """``"1h02m03s"`` / ``"2m03s"``; ``"?"`` for an unknown (infinite) time."""
    if seconds == float("inf"):
        return "?"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"
