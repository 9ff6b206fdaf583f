"""triton is optional: without it the Triton module says what to install, and its doctests are skipped.

These run with or without triton installed: each starts a Python process in which
``import triton`` fails (``sys.modules["triton"] = None``), as it does where triton
is absent.  ``nox -s tests_without_triton`` runs the whole suite where it really is.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WITHOUT_TRITON = "import sys; sys.modules['triton'] = None\n"


def _run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", WITHOUT_TRITON + code],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])},
        timeout=300,
    )


def test_import_without_triton_raises_module_not_found_naming_the_extra() -> None:
    code = (
        "try:\n"
        "    import revcheck.kernels.triton_pam\n"
        "except ModuleNotFoundError as error:\n"
        "    print('NAME', error.name)\n"
        "    print('MESSAGE', error)\n"
    )
    result = _run_python(code)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "NAME triton\n" in result.stdout, result.stdout
    assert "pip install 'revcheck[triton]'" in result.stdout, result.stdout
    assert "revcheck.kernels.pam" in result.stdout, result.stdout


def test_doctest_collection_skips_the_triton_module_with_the_reason() -> None:
    code = (
        "import pytest\n"
        "sys.exit(pytest.main(['-q', '-ra', '-p', 'no:cacheprovider', '--doctest-modules',\n"
        "                      'revcheck/kernels/triton_pam.py']))\n"
    )
    result = _run_python(code)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert (
        "SKIPPED [1] revcheck/kernels/triton_pam.py: triton is not installed (pip install 'revcheck[triton]')"
        in result.stdout
    ), result.stdout[-2000:]


def test_gallery_imports_without_triton_and_its_triton_records_skip_with_the_reason() -> None:
    code = (
        "import pytest\n"
        "sys.exit(pytest.main(['-q', '-ra', '-p', 'no:cacheprovider', 'tests/test_gallery.py',\n"
        "                      '-k', 'pam_triton and nan_keeps_sign']))\n"
    )
    result = _run_python(code)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "needs triton (not installed)" in result.stdout, result.stdout[-2000:]
    assert " passed" not in result.stdout, result.stdout[-2000:]
