"""The state of a sweep shard: a journal of finished chunks, appended as results arrive, so a re-run resumes.

One file per shard, ``<sweep key>-shard<I>of<N>.jsonl``, in JSON Lines: a header
line ``{"sweep": KEY, "shard": "I/N"}``, then one line per finished chunk (the
fields of :class:`~revcheck.sweep.chunk.ChunkResult`).  The process that collects
the results (the sweep's command, never a worker) appends each record when its
chunk's result arrives and flushes it, so a chunk once recorded is never checked
again, whichever worker or machine checked it; a crash loses at most the line
being written, which the next run ignores (that one chunk is checked again).
State files of the earlier whole-file format (``.json``: one object with a
``chunks`` list) are read as well.

A state file is read back only after every record in it is checked (:func:`load_done`):
the keys, the types and the ranges of each field.  A file that fails any check is a
:class:`~revcheck.errors.UsageError` naming the file, the record and the field, never
a traceback, and never a count that is silently taken for true.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from revcheck.errors import UsageError
from revcheck.sweep.chunk import ChunkResult
from revcheck.sweep.config import SweepConfig, total_chunks

__all__ = ["Journal", "load_done", "state_path"]

# Seconds between fsyncs of the journal (every record is flushed to the OS at once).
SYNC_INTERVAL = 5.0


def state_path(config: SweepConfig) -> Path | None:
    """Where this shard records its chunks (None: no ``state_dir``, nothing recorded)."""
    if config.state_dir is None:
        return None
    return config.state_dir / f"{config.key}-shard{config.shard}of{config.num_shards}.jsonl"


def load_done(config: SweepConfig) -> dict[int, ChunkResult]:
    """Chunks recorded by any shard of this sweep under ``state_dir``, every record validated."""
    done: dict[int, ChunkResult] = {}
    if config.state_dir is None or not config.state_dir.is_dir():
        return done
    paths = sorted(config.state_dir.glob(f"{config.key}-shard*.json"))
    paths += sorted(config.state_dir.glob(f"{config.key}-shard*.jsonl"))
    for path in paths:
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as error:
            raise UsageError(f"state file {path} is unreadable ({error}); delete it to start over") from None
        records = (
            _journal_records(path, text, config)
            if path.suffix == ".jsonl"
            else _file_records(path, text, config)
        )
        for result in records:
            done[result.chunk] = result
    return done


_HEADER_KEYS = {"sweep", "shard"}
_STATE_KEYS = {"sweep", "shard", "chunks"}
_RECORD_FIELDS = tuple(field.name for field in dataclasses.fields(ChunkResult))


class _Bad:
    """Builds the UsageError for one state file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __call__(self, where: str, problem: str) -> UsageError:
        return UsageError(f"state file {self.path}: {where} {problem}; delete the file to start over")


def _journal_records(path: Path, text: str, config: SweepConfig) -> list[ChunkResult]:
    """The records of a ``.jsonl`` journal; an unterminated last line (a torn write) is left out."""
    bad = _Bad(path)
    lines = text.split("\n")
    torn = lines.pop()  # "" when the file ends with a newline, else a line whose write was cut short
    if not lines:
        if torn:
            return []  # even the header was cut short: nothing was recorded
        raise bad("the file", "is empty (no header line)")
    parsed: list[Any] = []
    for number, line in enumerate(lines, start=1):
        try:
            parsed.append(json.loads(line))
        except json.JSONDecodeError as error:
            raise bad(f"line {number}", f"is not JSON ({error})") from None
    del torn  # not a record: that chunk is checked again
    header, *records = parsed
    if not isinstance(header, dict):
        raise bad("line 1", f"holds a {type(header).__name__}, not the header (a JSON object)")
    unknown, missing = sorted(set(header) - _HEADER_KEYS), sorted(_HEADER_KEYS - set(header))
    if unknown or missing:
        raise bad("the header (line 1)", _key_problem(unknown, missing, _HEADER_KEYS))
    _check_sweep(header, config, bad)
    return [_record(record, f"line {number}", config, bad) for number, record in enumerate(records, start=2)]


def _file_records(path: Path, text: str, config: SweepConfig) -> list[ChunkResult]:
    """The records of a whole-file ``.json`` state (the earlier format)."""
    bad = _Bad(path)
    try:
        state = json.loads(text)
    except json.JSONDecodeError as error:
        raise UsageError(f"state file {path} is unreadable ({error}); delete it to start over") from None
    if not isinstance(state, dict):
        raise bad("the file", f"holds a {type(state).__name__}, not a state record (a JSON object)")
    unknown = sorted(set(state) - _STATE_KEYS)
    missing = sorted(_STATE_KEYS - set(state))
    if unknown or missing:
        raise bad("the record", _key_problem(unknown, missing, _STATE_KEYS))
    _check_sweep(state, config, bad)
    if not isinstance(state["chunks"], list):
        raise bad("field 'chunks'", f"is a {type(state['chunks']).__name__}, not a list")
    return [_record(record, f"chunks[{i}]", config, bad) for i, record in enumerate(state["chunks"])]


def _check_sweep(header: dict[str, Any], config: SweepConfig, bad: _Bad) -> None:
    if header["sweep"] != config.key:
        raise bad("field 'sweep'", f"is {header['sweep']!r}, but this sweep is {config.key!r}")


def _record(record: Any, where: str, config: SweepConfig, bad: _Bad) -> ChunkResult:
    """One chunk record, checked field by field."""
    if not isinstance(record, dict):
        raise bad(where, f"is a {type(record).__name__}, not a chunk record")
    unknown = sorted(set(record) - set(_RECORD_FIELDS))
    missing = sorted(set(_RECORD_FIELDS) - set(record))
    if unknown or missing:
        raise bad(where, _key_problem(unknown, missing, set(_RECORD_FIELDS)))
    chunk_size = 1 << config.bits_per_chunk
    _integer(record, "chunk", 0, total_chunks(config) - 1, where, bad)
    _integer(record, "inputs", chunk_size, chunk_size, where, bad)
    _integer(record, "mismatches", 0, record["inputs"], where, bad)
    for name in ("seconds", "cpu_seconds"):
        value = record[name]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise bad(f"{where} field {name!r}", f"is {value!r}, not a number of seconds")
        if value < 0:
            raise bad(f"{where} field {name!r}", f"is {value!r}, a negative time")
    examples = record["examples"]
    if not isinstance(examples, list) or len(examples) > record["mismatches"]:
        raise bad(f"{where} field 'examples'", "is not a list of at most `mismatches` counterexamples")
    operands = config.arity
    for example in examples:
        if (
            not isinstance(example, list)
            or len(example) != operands + 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in example)
            or not all(0 <= v < (1 << config.fmt.width) for v in example)
        ):
            raise bad(
                f"{where} field 'examples'",
                f"holds {example!r}, not {operands + 2} bit patterns (operands, result, expected)",
            )
    return ChunkResult(**record)


def _key_problem(unknown: list[str], missing: list[str], expected: set[str]) -> str:
    parts = []
    if unknown:
        parts.append(f"has unknown field(s) {', '.join(map(repr, unknown))}")
    if missing:
        parts.append(f"lacks field(s) {', '.join(map(repr, missing))}")
    return " and ".join(parts) + f" (a record has exactly {', '.join(sorted(expected))})"


def _integer(record: dict[str, Any], name: str, low: int, high: int, where: str, bad: _Bad) -> None:
    value = record[name]
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad(f"{where} field {name!r}", f"is {value!r}, not an integer")
    if value < 0:
        raise bad(f"{where} field {name!r}", f"is {value}, a negative count")
    if not low <= value <= high:
        expected = str(low) if low == high else f"{low}..{high}"
        raise bad(f"{where} field {name!r}", f"is {value}, expected {expected} for this sweep")


class Journal:
    """This shard's journal, open for appending: :meth:`append` records one finished chunk at once.

    A context manager; without a ``state_dir`` it records nothing.  From a journal whose
    last line was cut short (a crash mid-write) that unterminated tail is cut off first
    (it is no record: :func:`load_done` leaves it out too).
    """

    def __init__(self, config: SweepConfig) -> None:
        self.path = state_path(config)
        self._file: IO[str] | None = None
        self._last_sync = time.monotonic()
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            content = self.path.read_bytes()
            if not content.endswith(b"\n"):
                with self.path.open("r+b") as handle:  # cut the torn tail: keep whole lines only
                    handle.truncate(content.rfind(b"\n") + 1)
        fresh = not self.path.exists() or self.path.stat().st_size == 0
        self._file = self.path.open("a", encoding="utf-8")
        if fresh:
            self._write({"sweep": config.key, "shard": f"{config.shard}/{config.num_shards}"})

    def _write(self, record: dict[str, Any]) -> None:
        assert self._file is not None
        # One write of one whole line: a crash leaves at most this line unterminated.
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        if time.monotonic() - self._last_sync > SYNC_INTERVAL:
            os.fsync(self._file.fileno())
            self._last_sync = time.monotonic()

    def append(self, result: ChunkResult) -> None:
        """Record one finished chunk (flushed to the OS before this returns)."""
        if self._file is not None:
            self._write(dataclasses.asdict(result))

    def close(self) -> None:
        if self._file is not None and not self._file.closed:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()
