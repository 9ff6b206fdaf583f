"""Every example in README.md runs: doctest blocks via --doctest-glob, the rest here.

- ```python blocks without ``>>>`` are executed (from the repository root);
  a block whose first line is ``# path/to/file.py`` must equal that file;
- ```console blocks: each ``$ revcheck ...`` command is run and its output
  compared with the README's, ignoring timings.  Hypothesis' derandomized draws
  change between its versions, so with a Hypothesis other than the one named in
  the README's ``@reproduce_failure`` line only the verdict line and the field
  names are compared; ``$ echo $?`` lines check the previous exit status.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import hypothesis
import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
BLOCKS = re.findall(r"```(\w+)\n(.*?)```", README, flags=re.DOTALL)

PYTHON_BLOCKS = [code for lang, code in BLOCKS if lang == "python" and ">>>" not in code]
CONSOLE_BLOCKS = [code for lang, code in BLOCKS if lang == "console"]


def _block_id(code: str) -> str:
    return code.strip().splitlines()[0][:50]


# Optional dependencies a README example may import, and the extra that installs each.
OPTIONAL_MODULES = {
    "ml_dtypes": "revcheck[ml_dtypes]",
    "matplotlib": "revcheck[plots]",
    "dask": "revcheck[dask]",
    "triton": "revcheck[triton]",
}


def _skip_without_optional_modules(code: str) -> None:
    imported = set(re.findall(r"^\s*(?:import|from)\s+([\w., ]+)", code, flags=re.MULTILINE))
    names = {part.strip().split(".")[0].split(" ")[0] for line in imported for part in line.split(",")}
    for name in sorted(names & OPTIONAL_MODULES.keys()):
        if importlib.util.find_spec(name) is None:
            pytest.skip(f"this README example imports {name}: install {OPTIONAL_MODULES[name]}")


@pytest.mark.parametrize("code", PYTHON_BLOCKS, ids=_block_id)
def test_python_block_runs(code: str, monkeypatch: pytest.MonkeyPatch) -> None:
    _skip_without_optional_modules(code)
    first_line = code.splitlines()[0]
    if first_line.startswith("# ") and first_line[2:].strip().endswith(".py"):
        shown_file = ROOT / first_line[2:].strip()
        assert shown_file.read_text() == code.split("\n", 1)[1], f"README copy of {shown_file} is stale"
    monkeypatch.chdir(ROOT)
    exec(compile(code, "README.md", "exec"), {"__name__": "readme_example"})


def _hypothesis_version_shown(text: str) -> str | None:
    match = re.search(r"@reproduce_failure\('([^']+)'", text)
    return match.group(1) if match else None


def _skeleton(text: str) -> list[str]:
    """The verdict (up to its parenthesis) and each line's leading field name: what every version prints."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    verdict = lines[0].split("(")[0]
    return [verdict] + [re.split(r"[=:]", line)[0].split()[0] for line in lines[1:]]


def _normalise(text: str) -> str:
    text = re.sub(r"\d+\.\d+s\b", "<time>", text)
    text = re.sub(r"@reproduce_failure\(.*\)", "@reproduce_failure(<blob>)", text)
    return "\n".join(line.rstrip() for line in text.strip().splitlines())


def _console_steps(block: str) -> list[tuple[str, str]]:
    steps: list[tuple[str, str]] = []
    for line in block.splitlines():
        if line.startswith("$ "):
            steps.append((line[2:], ""))
        elif steps:
            command, output = steps[-1]
            steps[-1] = (command, output + line + "\n")
    return steps


@pytest.mark.parametrize("block", CONSOLE_BLOCKS, ids=_block_id)
def test_console_block_output(block: str) -> None:
    last_status: int | None = None
    for command, shown in _console_steps(block):
        if command == "echo $?":
            assert str(last_status) == shown.strip(), (
                f"exit status {last_status}, README says {shown.strip()}"
            )
            continue
        argv = shlex.split(command)
        assert argv[0] == "revcheck", f"README console command not runnable here: {command}"
        result = subprocess.run(
            [sys.executable, "-m", "revcheck", *argv[1:]],
            cwd=ROOT,
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            timeout=300,
        )
        last_status = result.returncode
        output = result.stdout + result.stderr
        if _hypothesis_version_shown(shown) in (None, hypothesis.__version__):
            assert _normalise(output) == _normalise(shown), (
                f"output of `{command}` differs from README.md:\n{output}"
            )
        else:
            assert _skeleton(output) == _skeleton(shown), (
                f"output of `{command}` differs from README.md:\n{output}"
            )
