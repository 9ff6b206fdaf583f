"""The state file of a sweep shard: finished chunks, recorded atomically so that a re-run resumes."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

from revcheck.errors import UsageError
from revcheck.sweep.chunk import ChunkResult
from revcheck.sweep.config import SweepConfig

__all__ = ["load_done", "save", "state_path"]


def state_path(config: SweepConfig) -> Path | None:
    """Where this shard records its chunks (None: no ``state_dir``, nothing recorded)."""
    if config.state_dir is None:
        return None
    return config.state_dir / f"{config.key}-shard{config.shard}of{config.num_shards}.json"


def load_done(config: SweepConfig) -> dict[int, ChunkResult]:
    """Chunks recorded by any shard of this sweep under ``state_dir``."""
    done: dict[int, ChunkResult] = {}
    if config.state_dir is None or not config.state_dir.exists():
        return done
    for path in sorted(config.state_dir.glob(f"{config.key}-shard*.json")):
        try:
            state = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise UsageError(f"state file {path} is unreadable ({error}); delete it to start over") from error
        for record in state.get("chunks", []):
            result = ChunkResult(**record)
            done[result.chunk] = result
    return done


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
