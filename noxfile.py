"""Sessions: tests, properties, lint, tests_without_triton, slow, bench, sweep.

One environment, many sessions.  A torch install is about 2 GB, so sessions with
the same needs share one environment instead of building one each: the
``env`` session builds (or reuses) ``.nox/env`` with torch, triton and
``revcheck[test,dev,triton,dask]``; ``tests``, ``properties``, ``lint``, ``slow``,
``bench`` and ``sweep`` require it and run its executables.  The one necessary
second environment is ``.nox/env_without_triton`` (torch and ``revcheck[test]``,
no triton), for ``tests_without_triton``: the suites must pass there with the
Triton tests skipped.  nox's own options keep working: ``-R`` reuses the
environments without reinstalling, ``-N`` rebuilds them.

torch is installed first and explicitly.  On the project's CPU machines pip's
find-links hold a local CPU build that answers ``torch==2.13.0``; an unpinned
``torch`` would pull the newest CUDA wheels (several GB).  Elsewhere, choose
your own build: ``REVCHECK_TORCH="torch" nox -s tests`` (or any requirement
string, e.g. a CUDA index URL through PIP_INDEX_URL).

Hypothesis profile: ``revcheck-ci`` where the ``CI`` variable is set, else
``revcheck`` (see ``revcheck/_profiles.py``), passed as ``--hypothesis-profile``
unless the session's arguments name one: ``nox -s properties --
--hypothesis-profile revcheck-thorough``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import nox

nox.needs_version = ">=2024.10.9"  # requires= and default= in @nox.session
nox.options.sessions = ["lint", "tests", "tests_without_triton", "properties"]
nox.options.reuse_venv = "yes"

PYTHON = os.environ.get("REVCHECK_PYTHON", "3.11")
TORCH_REQUIREMENT = os.environ.get("REVCHECK_TORCH", "torch==2.13.0")
TRITON_REQUIREMENT = os.environ.get("REVCHECK_TRITON", "triton>=3.0,<4")

LINTED = ["revcheck", "tests", "properties", "examples", "conftest.py", "noxfile.py"]
TEST_PATHS = ["tests", "revcheck", "README.md"]  # the README's command: pytest tests revcheck README.md
PROPERTIES_TOUCHING_TRITON = ["properties/triton", "properties/test_pam_kernels.py"]


# ---- the shared environments ---------------------------------------------------------------------


def _bin(location: str | os.PathLike[str]) -> Path:
    return Path(location) / ("Scripts" if os.name == "nt" else "bin")


def _shared_location(session: nox.Session, env_session: str) -> Path:
    # nox keeps a session's environment in <envdir>/<session name>; cache_dir is <envdir>/.cache.
    return session.cache_dir.parent / env_session


def _own_location(session: nox.Session) -> Path:
    """Where an environment session's virtualenv is (``location`` of nox's VirtualEnv)."""
    return Path(getattr(session.virtualenv, "location", ""))


def _check_location(session: nox.Session) -> None:
    location = _own_location(session)
    expected = _shared_location(session, session.name)
    if location.resolve() != expected.resolve():
        session.error(
            f"nox put the {session.name} environment in {location}, not {expected}: update noxfile.py"
        )


def _stamp_file(session: nox.Session) -> Path:
    return _own_location(session) / "revcheck-installed.txt"


def _stamp_text(requirements: tuple[str, ...]) -> str:
    return "\n".join([*requirements, hashlib.sha256(Path("pyproject.toml").read_bytes()).hexdigest()])


def _up_to_date(session: nox.Session, requirements: tuple[str, ...]) -> bool:
    """Whether this environment already holds ``requirements`` for the current pyproject.toml.

    revcheck is installed editable, so a change to its code needs no reinstall; a change to
    pyproject.toml (dependencies, entry points) or to a requirement does.  The stamp lives inside
    the environment, so a rebuilt environment (``nox -N``) starts without one.
    """
    stamp = _stamp_file(session)
    if stamp.is_file() and stamp.read_text() == _stamp_text(requirements):
        session.log(f"{stamp.parent} is up to date (nox -N rebuilds it)")
        return True
    stamp.unlink(missing_ok=True)
    return False


@nox.session(python=PYTHON, reuse_venv=True, default=False)
def env(session: nox.Session) -> None:
    """The shared environment: torch, triton, revcheck[test,dev,triton,dask,ml_dtypes,plots]."""
    _check_location(session)
    requirements = (TORCH_REQUIREMENT, TRITON_REQUIREMENT, "-e", ".[test,dev,triton,dask,ml_dtypes,plots]")
    if _up_to_date(session, requirements):
        return
    session.install(TORCH_REQUIREMENT)  # first and alone: nothing else may choose the torch build
    session.install(TRITON_REQUIREMENT)
    session.install("-e", ".[test,dev,triton,dask,ml_dtypes,plots]")
    _stamp_file(session).write_text(_stamp_text(requirements))


@nox.session(python=PYTHON, reuse_venv=True, default=False)
def env_without_triton(session: nox.Session) -> None:
    """The environment without triton: torch and revcheck[test] only (for tests_without_triton)."""
    _check_location(session)
    requirements = (TORCH_REQUIREMENT, "-e", ".[test]")
    if not _up_to_date(session, requirements):
        session.install(TORCH_REQUIREMENT)
        session.install("-e", ".[test]")
        # Some torch builds (CUDA wheels on Linux) depend on triton; this environment must not have it.
        session.run("python", "-m", "pip", "uninstall", "--yes", "--quiet", "triton")
        _stamp_file(session).write_text(_stamp_text(requirements))
    session.run(
        "python", "-c", "import importlib.util, sys; sys.exit(importlib.util.find_spec('triton') is not None)"
    )


def run_in(session: nox.Session, env_session: str, program: str, *args: str) -> None:
    """Run ``program`` from the shared environment built by the session ``env_session``."""
    location = _shared_location(session, env_session)
    bin_dir = _bin(location)
    if not bin_dir.is_dir():
        session.error(f"no environment at {location}: run `nox -s {env_session}` (or drop --no-dependencies)")
    env = {
        "VIRTUAL_ENV": str(location),
        "PATH": os.pathsep.join([str(bin_dir), os.environ.get("PATH", "")]),
    }
    session.run(str(bin_dir / program), *args, env=env, external=True)


def interpret_triton_without_gpu(session: nox.Session) -> None:
    """Run Triton kernels on the CPU interpreter where there is no NVIDIA GPU (TRITON_INTERPRET=1)."""
    if shutil.which("nvidia-smi") is None:
        session.env.setdefault("TRITON_INTERPRET", "1")


def parallel(session: nox.Session) -> list[str]:
    """``-n auto`` (pytest-xdist, one worker per core), unless the session's arguments choose ``-n``."""
    if any(arg.startswith(("-n", "--numprocesses")) for arg in session.posargs):
        return []
    return ["-n", "auto"]


def hypothesis_profile(session: nox.Session) -> list[str]:
    """``--hypothesis-profile revcheck(-ci)``, unless the session's arguments choose a profile."""
    if any(arg.startswith("--hypothesis-profile") for arg in session.posargs):
        return []
    return ["--hypothesis-profile", "revcheck-ci" if "CI" in os.environ else "revcheck"]


# ---- what the README promises ---------------------------------------------------------------------


@nox.session(python=False, requires=["env"])
def tests(session: nox.Session) -> None:
    """Unit tests of the toolkit, README examples included (Triton under TRITON_INTERPRET=1)."""
    interpret_triton_without_gpu(session)
    run_in(
        session,
        "env",
        "pytest",
        *parallel(session),
        *hypothesis_profile(session),
        *(session.posargs or TEST_PATHS),
    )


@nox.session(python=False, requires=["env_without_triton"])
def tests_without_triton(session: nox.Session) -> None:
    """The tests and the properties where triton is not installed: Triton tests skip with the reason."""
    # -ra prints the skip reasons; the run fails if a Triton test errors instead of skipping.
    options = ("-ra", *parallel(session), *hypothesis_profile(session))
    run_in(session, "env_without_triton", "pytest", *options, *TEST_PATHS)
    # The properties: every module must collect without triton, and the ones that run Triton
    # (its directory, the suite over registered implementations) must skip it with the reason.
    # The other property modules never import triton; running them twice would only cost time.
    run_in(session, "env_without_triton", "pytest", "--collect-only", "-q", "properties")
    run_in(session, "env_without_triton", "pytest", *options, *PROPERTIES_TOUCHING_TRITON)


@nox.session(python=False, requires=["env"])
def properties(session: nox.Session) -> None:
    """Hypothesis property suites.  Pass pytest options after ``--``:

    nox -s properties -- --device cuda --hypothesis-profile revcheck-thorough
    """
    interpret_triton_without_gpu(session)
    run_in(
        session,
        "env",
        "pytest",
        "properties",
        "-p",
        "no:cacheprovider",
        *parallel(session),
        *hypothesis_profile(session),
        *session.posargs,
    )


@nox.session(python=False, requires=["env"])
def lint(session: nox.Session) -> None:
    """ruff (check and format) and mypy over the package, the tests and the properties; all must be clean."""
    run_in(session, "env", "ruff", "check", *LINTED)
    run_in(session, "env", "ruff", "format", "--check", *LINTED)
    run_in(session, "env", "mypy")  # files: [tool.mypy] in pyproject.toml


# ---- more -----------------------------------------------------------------------------------------


@nox.session(python=False, requires=["env"], default=False)
def slow(session: nox.Session) -> None:
    """The heavy unit tests left out of ``tests`` (exhaustive fp8 pairs, every format x mode audits)."""
    interpret_triton_without_gpu(session)
    run_in(session, "env", "pytest", "tests", "-m", "slow", *hypothesis_profile(session), *session.posargs)


@nox.session(python=False, requires=["env"], default=False)
def bench(session: nox.Session) -> None:
    """Benchmarks, printed as ratios measured in one run: ``nox -s bench -- --only pam``."""
    interpret_triton_without_gpu(session)
    run_in(session, "env", "python", "-m", "revcheck.bench", *session.posargs)


@nox.session(python=False, requires=["env"], default=False)
def sweep(session: nox.Session) -> None:
    """Exhaustive PAM sweeps: ``nox -s sweep -- --op pam_mul --format bf16 --shard 0/2``;
    ``nox -s sweep -- campaign --state-dir sweeps`` runs every 2**32 sweep, with a report."""
    interpret_triton_without_gpu(session)
    run_in(session, "env", "python", "-m", "revcheck.sweep", *session.posargs)
