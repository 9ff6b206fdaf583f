"""The state file of a sweep shard: finished chunks, recorded atomically so that a re-run resumes.

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
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from revcheck.errors import UsageError
from revcheck.sweep.chunk import ChunkResult
from revcheck.sweep.config import SweepConfig, total_chunks

__all__ = ["load_done", "save", "state_path"]


def state_path(config: SweepConfig) -> Path | None:
    """Where this shard records its chunks (None: no ``state_dir``, nothing recorded)."""
    if config.state_dir is None:
        return None
    return config.state_dir / f"{config.key}-shard{config.shard}of{config.num_shards}.json"


def load_done(config: SweepConfig) -> dict[int, ChunkResult]:
    """Chunks recorded by any shard of this sweep under ``state_dir``, every record validated."""
    done: dict[int, ChunkResult] = {}
    if config.state_dir is None or not config.state_dir.is_dir():
        return done
    for path in sorted(config.state_dir.glob(f"{config.key}-shard*.json")):
        try:
            state = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise UsageError(f"state file {path} is unreadable ({error}); delete it to start over") from None
        for result in _records(path, state, config):
            done[result.chunk] = result
    return done


_STATE_KEYS = {"sweep", "shard", "chunks"}
_RECORD_FIELDS = tuple(field.name for field in dataclasses.fields(ChunkResult))


def _records(path: Path, state: Any, config: SweepConfig) -> list[ChunkResult]:
    """The chunk records of one state file, each checked field by field."""

    def bad(where: str, problem: str) -> UsageError:
        return UsageError(f"state file {path}: {where} {problem}; delete the file to start over")

    if not isinstance(state, dict):
        raise bad("the file", f"holds a {type(state).__name__}, not a state record (a JSON object)")
    unknown = sorted(set(state) - _STATE_KEYS)
    missing = sorted(_STATE_KEYS - set(state))
    if unknown or missing:
        raise bad("the record", _key_problem(unknown, missing, _STATE_KEYS))
    if state["sweep"] != config.key:
        raise bad("field 'sweep'", f"is {state['sweep']!r}, but this sweep is {config.key!r}")
    if not isinstance(state["chunks"], list):
        raise bad("field 'chunks'", f"is a {type(state['chunks']).__name__}, not a list")
    n_chunks = total_chunks(config)
    chunk_size = 1 << config.bits_per_chunk
    operands = config.arity
    results = []
    for position, record in enumerate(state["chunks"]):
        where = f"chunks[{position}]"
        if not isinstance(record, dict):
            raise bad(where, f"is a {type(record).__name__}, not a chunk record")
        unknown = sorted(set(record) - set(_RECORD_FIELDS))
        missing = sorted(set(_RECORD_FIELDS) - set(record))
        if unknown or missing:
            raise bad(where, _key_problem(unknown, missing, set(_RECORD_FIELDS)))
        _integer(record, "chunk", 0, n_chunks - 1, where, bad)
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
        results.append(ChunkResult(**record))
    return results


def _key_problem(unknown: list[str], missing: list[str], expected: set[str]) -> str:
    parts = []
    if unknown:
        parts.append(f"has unknown field(s) {', '.join(map(repr, unknown))}")
    if missing:
        parts.append(f"lacks field(s) {', '.join(map(repr, missing))}")
    return " and ".join(parts) + f" (a record has exactly {', '.join(sorted(expected))})"


def _integer(record: dict[str, Any], name: str, low: int, high: int, where: str, bad: Any) -> None:
    value = record[name]
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad(f"{where} field {name!r}", f"is {value!r}, not an integer")
    if value < 0:
        raise bad(f"{where} field {name!r}", f"is {value}, a negative count")
    if not low <= value <= high:
        expected = str(low) if low == high else f"{low}..{high}"
        raise bad(f"{where} field {name!r}", f"is {value}, expected {expected} for this sweep")


def save(config: SweepConfig, results: Iterable[ChunkResult]) -> None:
    """Record ``results`` as this shard's state (replacing the file in one step)."""
    path = state_path(config)
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        "sweep": config.key,
        "shard": f"{config.shard}/{config.num_shards}",
        "chunks": [vars(r) for r in sorted(results, key=lambda r: r.chunk)],
    }
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(state))
    os.replace(temporary, path)  # atomic: an interrupted run never leaves half a state file
