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


TYING_LM = REPO_ROOT / "examples" / "tying_char_lm.py"
TYING_PERPLEXITY = re.compile(r"^final val perplexity\s+tied (\S+)\s+untied (\S+)", re.MULTILINE)
TYING_TRAINABLE = re.compile(
    r"^trainable parameters\s+tied (\d+) \(per Parameter object (\d+)\)\s+untied (\d+)$", re.MULTILINE
)
TYING_MEMORY = re.compile(
    r"^memory (tied|untied)\s*: persistent\s+([\d.]+) KiB.*activations\s+([\d.]+) KiB$", re.MULTILINE
)


def test_tying_char_lm_prints_its_figures() -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, str(TYING_LM), "--quick"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "identical initialisation: yes" in out and "storage audit (tied): clean" in out, out
    ((tied, untied),) = [(float(a), float(b)) for a, b in TYING_PERPLEXITY.findall(out)]
    assert 1.0 < tied < 100 and 1.0 < untied < 100, out
    ((trainable, per_object, baseline),) = [tuple(map(int, t)) for t in TYING_TRAINABLE.findall(out)]
    assert trainable <= per_object and trainable <= baseline, out
    memory = {kind: (float(p), float(a)) for kind, p, a in TYING_MEMORY.findall(out)}
    assert set(memory) == {"tied", "untied"}, out
    assert memory["tied"][0] <= memory["untied"][0] and memory["tied"][1] == memory["untied"][1], out
    assert re.search(r"rewards: \d+ decisions, (\d+) distinct", out), out


GROW = REPO_ROOT / "examples" / "expand_grow.py"
GROWTH_LINE = re.compile(r"^  eval loss before (\S+)  after (\S+)  difference", re.MULTILINE)
LEVEL_LINE = re.compile(r"^  certified level (\w); level O: (.*?); level K", re.MULTILINE)
RETRAIN_LINE = re.compile(
    r"^trained the grown model \d+ more steps: train loss (\S+) -> (\S+);", re.MULTILINE
)


def check_grow_output(output: str) -> list[str]:
    """Problems with expand_grow.py's printout: three growth steps, no loss jump, level O, training goes "
    "on."""
    problems = []
    growth = [(float(b), float(a)) for b, a in GROWTH_LINE.findall(output)]
    levels = LEVEL_LINE.findall(output)
    if len(growth) != 3 or len(levels) != 3:
        problems.append(
            f"expected three growth steps, found {len(growth)} losses and {len(levels)} level lines"
        )
    # The loss is compared at the kernel (K is data): a jump beyond rounding would mean the function changed.
    problems += [f"loss jumped: {b} -> {a}" for b, a in growth if not abs(a - b) <= 1e-5 * max(1.0, abs(b))]
    problems += [f"level O did not hold: {o}" for certified, o in levels if certified == "O" and o != "holds"]
    retrain = RETRAIN_LINE.findall(output)
    if len(retrain) != 1 or not float(retrain[0][1]) < float(retrain[0][0]):
        problems.append(f"the grown model did not keep learning: {retrain}")
    return problems


def test_expand_grow_example_preserves_the_loss_and_keeps_training() -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "2"}
    result = subprocess.run(
        [sys.executable, str(GROW), "--quick"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"example failed:\n{result.stdout}\n{result.stderr}"
    assert check_grow_output(result.stdout) == [], result.stdout


def test_grow_output_check_flags_a_jump() -> None:
    broken = (
        "  eval loss before 2.5  after 2.9  difference 4.0e-01\n  certified level O; level O: FAILS: x; "
        "level K\n"
        "trained the grown model 5 more steps: train loss 2.0 -> 2.5; eval loss 2.4\n"
    )
    problems = check_grow_output(broken)
    assert any("three growth steps" in p for p in problems) and any("jumped" in p for p in problems)
    assert any("did not hold" in p for p in problems) and any("keep learning" in p for p in problems)


MULFREE_TRAIN = REPO_ROOT / "examples" / "mulfree_train.py"
MULFREE_TABLE_ROW = re.compile(r"^(forward|backward|optimizer)\s+(\d+)\s+(\d+)\s+(\d+)\s", re.MULTILINE)


def check_mulfree_output(output: str) -> list[str]:
    """Problems with examples/mulfree_train.py's printout: the certificate, the losses, the standard table."""
    problems = []
    pa_part, _, standard_part = output.partition("== the same certificate in record mode")
    certified = {phase: int(mult) for phase, _, mult, _ in mulfree_rows(pa_part)}
    if set(certified) != {"forward", "backward", "optimizer"} or any(certified.values()):
        problems.append(f"the PA run is not certified multiplication-free in every phase: {certified}")
    if "MULTIPLICATION-FREE" not in pa_part or "violations in the slice: none" not in pa_part:
        problems.append("the runtime certificate or the static proof is missing or failed")
    if "loss falling pa: yes" not in output:
        problems.append("the PA loss did not fall")
    standard = {phase: int(mult) for phase, _, mult, _ in mulfree_rows(standard_part)}
    if set(standard) != {"forward", "backward", "optimizer"} or not all(standard.values()):
        problems.append(
            f"the standard step's record-mode table lacks float multiplies in some phase: {standard}"
        )
    return problems


def mulfree_rows(text: str) -> list[tuple[str, str, str, str]]:
    return MULFREE_TABLE_ROW.findall(text)


def test_mulfree_example_trains_under_the_certificate() -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "2"}
    result = subprocess.run([sys.executable, str(MULFREE_TRAIN), "--quick"], capture_output=True, text=True,
                            env=env, timeout=300, check=False)  # fmt: skip
    assert result.returncode == 0, (
        f"example failed (exit {result.returncode}):\n{result.stdout}\n{result.stderr}"
    )
    assert check_mulfree_output(result.stdout) == [], result.stdout


def test_mulfree_output_check_flags_a_float_multiply() -> None:
    broken = (
        "forward 10 1 0 addmm x1\nbackward 10 0 0 -\noptimizer 10 0 0 -\nMULTIPLICATION-FREE\n"
        "violations in the slice: none\nloss falling pa: NO\n"
        "== the same certificate in record mode\nforward 5 0 0 -\nbackward 5 2 0 mm x2\noptimizer 5 3 0 -\n"
    )
    problems = check_mulfree_output(broken)
    assert any("not certified" in p for p in problems), problems
    assert any("did not fall" in p for p in problems), problems
    assert any("lacks float multiplies" in p for p in problems), problems


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
