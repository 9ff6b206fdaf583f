"""The runnable examples run, print what they promise, and learn something."""

from __future__ import annotations

import importlib.util
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
CHAR_LM = REPO_ROOT / "examples" / "bdia_char_lm.py"

TRAIN_LINE = re.compile(r"^step\s+(\d+)\s+train loss\s+bdia (\S+)\s+plain (\S+)$", re.MULTILINE)
FINAL_LINE = re.compile(r"^final (train|val) loss\s+bdia (\S+)\s+plain (\S+)$", re.MULTILINE)
MEMORY_LINE = re.compile(r"^memory (bdia|plain)\s*: residual stack saves\s+([\d.]+) KiB", re.MULTILINE)


def _run_char_lm(*args: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "2"}
    result = subprocess.run(
        [sys.executable, str(CHAR_LM), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, (
        f"example failed (exit {result.returncode}):\n{result.stdout}\n{result.stderr}"
    )
    return result.stdout


def check_char_lm_output(output: str, vocab_hint: int = 200) -> list[str]:
    """Problems with the example's printout: missing lines, non-finite or non-decreasing losses."""
    problems = []
    logged = [(int(s), float(b), float(p)) for s, b, p in TRAIN_LINE.findall(output)]
    finals = {kind: (float(b), float(p)) for kind, b, p in FINAL_LINE.findall(output)}
    memory = {kind: float(kib) for kind, kib in MEMORY_LINE.findall(output)}
    if len(logged) < 2:
        problems.append(f"expected at least two logged training losses, found {len(logged)}")
    if set(finals) != {"train", "val"}:
        problems.append(f"expected final train and val losses, found {sorted(finals)}")
    if set(memory) != {"bdia", "plain"}:
        problems.append(f"expected memory figures for bdia and plain, found {sorted(memory)}")
    if "identical initialisation: yes" not in output:
        problems.append("the two models did not start from identical parameters")
    losses = [loss for _, b, p in logged for loss in (b, p)] + [v for pair in finals.values() for v in pair]
    if not all(math.isfinite(loss) and 0.0 < loss < math.log(vocab_hint) + 1 for loss in losses):
        problems.append(f"a loss is not finite or not plausible: {losses}")
    if len(logged) >= 2:
        for column, name in ((1, "bdia"), (2, "plain")):
            first, last = logged[0][column], logged[-1][column]
            if not last < first:
                problems.append(f"{name} training loss did not decrease: {first} -> {last}")
    if set(memory) == {"bdia", "plain"} and not memory["bdia"] < memory["plain"]:
        problems.append(f"BDIA saved no less than plain: {memory}")
    return problems


@pytest.mark.skipif(
    importlib.util.find_spec("revcheck.nn.bdia") is None,
    reason="revcheck.nn.bdia (BDIAStack) is not there yet",
)
def test_bdia_char_lm_trains_both_models() -> None:
    output = _run_char_lm("--quick", "--steps", "20", "--log-every", "5", "--depth", "3")
    assert check_char_lm_output(output) == [], output


def test_output_check_flags_a_diverging_run() -> None:
    # Planted failure: a printout whose BDIA loss goes up and whose val loss is NaN.
    broken = (
        "identical initialisation: yes\n"
        "memory bdia : residual stack saves       1.0 KiB for backward, whole model 2.0 KiB per step\n"
        "memory plain: residual stack saves      10.0 KiB for backward, whole model 11.0 KiB per step\n"
        "step    10  train loss  bdia 3.0000  plain 3.0000\n"
        "step    20  train loss  bdia 3.5000  plain 2.5000\n"
        "final train loss  bdia 3.5000  plain 2.5000\n"
        "final val loss  bdia nan  plain 2.6000\n"
    )
    problems = check_char_lm_output(broken)
    assert any("bdia training loss did not decrease" in p for p in problems), problems
    assert any("not finite" in p for p in problems), problems


MEMXL_CHAR_LM = REPO_ROOT / "examples" / "memxl_char_lm.py"
MEMXL_BPC = re.compile(r"^final val bpc\s+plain (\S+)\s+scxl (\S+)$", re.MULTILINE)


def test_memxl_char_lm_trains_both_models() -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "2"}
    result = subprocess.run(
        [sys.executable, str(MEMXL_CHAR_LM), "--quick"], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "identical initialisation: yes" in out and "(scxl phase 2)" in out, out
    assert len(re.findall(r"^memory (plain|scxl )?: saved for backward", out, flags=re.MULTILINE)) == 2, out
    ((plain, scxl),) = [tuple(map(float, pair)) for pair in MEMXL_BPC.findall(out)]
    assert all(math.isfinite(v) and 0 < v < 8 for v in (plain, scxl)), out
