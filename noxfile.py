"""Sessions: tests, properties, lint, bench, sweep.

torch is installed first and explicitly.  On the project's CPU machines pip's
find-links hold a local CPU build that answers ``torch==2.13.0``; an unpinned
``torch`` would pull the newest CUDA wheels (several GB).  Elsewhere, choose
your own build: ``REVCHECK_TORCH="torch" nox -s tests`` (or any requirement
string, e.g. a CUDA index URL through PIP_INDEX_URL).
"""

from __future__ import annotations

import os
import shutil

import nox

nox.options.sessions = ["tests", "properties", "lint"]
nox.options.reuse_venv = "yes"

PYTHON = os.environ.get("REVCHECK_PYTHON", "3.11")
TORCH_REQUIREMENT = os.environ.get("REVCHECK_TORCH", "torch==2.13.0")
TRITON_REQUIREMENT = os.environ.get("REVCHECK_TRITON", "triton>=3.0,<4")


def interpret_triton_without_gpu(session: nox.Session) -> None:
    """Run Triton kernels on the CPU interpreter where there is no NVIDIA GPU (TRITON_INTERPRET=1)."""
    if shutil.which("nvidia-smi") is None:
        session.env.setdefault("TRITON_INTERPRET", "1")


def install(session: nox.Session, *extras: str, triton: bool = True) -> None:
    session.install(TORCH_REQUIREMENT)
    if triton:
        session.install(TRITON_REQUIREMENT)
    suffix = f"[{','.join(extras)}]" if extras else ""
    session.install("-e", f".{suffix}")


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """Unit tests of the toolkit, README examples included (Triton under TRITON_INTERPRET=1)."""
    install(session, "test")
    interpret_triton_without_gpu(session)
    session.run("pytest", *(session.posargs or ["tests", "revcheck", "README.md"]))


@nox.session(python=PYTHON)
def slow(session: nox.Session) -> None:
    """The heavy unit tests left out of ``tests`` (exhaustive fp8 pairs, every format x mode audits)."""
    install(session, "test")
    interpret_triton_without_gpu(session)
    session.run("pytest", "tests", "-m", "slow", *session.posargs)


@nox.session(python=PYTHON)
def properties(session: nox.Session) -> None:
    """Hypothesis property suites.  Pass pytest options after ``--``:

    nox -s properties -- --device cuda --hypothesis-profile thorough
    """
    install(session, "test")
    interpret_triton_without_gpu(session)
    session.run("pytest", "properties", "-p", "no:cacheprovider", *session.posargs)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff and mypy, both must be clean."""
    install(session, "dev")
    session.run("ruff", "check", "revcheck", "tests", "properties", "examples", "noxfile.py")
    session.run("ruff", "format", "--check", "revcheck", "tests", "properties", "examples", "noxfile.py")
    session.run("mypy")


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """Benchmarks, printed as ratios measured in one run: ``nox -s bench -- --only pam``."""
    install(session)
    interpret_triton_without_gpu(session)
    session.run("python", "-m", "revcheck.bench", *session.posargs)


@nox.session(python=PYTHON)
def sweep(session: nox.Session) -> None:
    """Exhaustive PAM sweeps: ``nox -s sweep -- --op pam_mul --format bf16 --shard 0/2``."""
    install(session)
    interpret_triton_without_gpu(session)
    session.run("python", "-m", "revcheck.sweep", *session.posargs)
