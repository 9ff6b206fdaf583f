"""The `revcheck` command line: exit codes 0 / 1 / 2, one-line usage errors, JSON output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from revcheck.cli import EXIT_BROKEN_PIPE, EXIT_COUNTEREXAMPLE, EXIT_NOT_CHECKED, EXIT_OK, EXIT_USAGE, main

REPO = Path(__file__).resolve().parents[1]
GALLERY = "tests.gallery.audit_kernels"


@pytest.fixture(autouse=True)
def at_repo_root(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.chdir(REPO)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: a second OpenMP thread only adds contention
    yield
    torch.set_num_threads(threads)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_passing_kernel_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run(capsys, "audit", f"{GALLERY}:pam_mul", "--op", "pam_mul", "--format", "fp8_e5m2")
    assert status == EXIT_OK, out + err
    assert "PASSED" in out and "(exhaustive)" in out and err == ""


def test_counterexample_exits_1_and_prints_it(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(
        capsys,
        "audit",
        f"{GALLERY}:pam_mul_flushes_subnormals",
        "--op",
        "pam_mul",
        "--format",
        "bf16",
        "--seed",
        "1",
    )
    assert status == EXIT_COUNTEREXAMPLE
    assert "FAILED" in out and "subnormal" in out and "seed:     1" in out and "reproduce(" in out


def test_repeated_formats_modes_and_json(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "report.json"
    status, _, _ = run(
        capsys,
        "audit",
        f"{GALLERY}:pa_exp2",
        "--op",
        "pa_exp2",
        "--format",
        "fp8_e5m2",
        "--format",
        "fp8_e4m3fn",
        "--mode",
        "all",
        "--examples",
        "5",
        "--json",
        str(path),
    )
    assert status == EXIT_OK
    report = json.loads(path.read_text())
    assert report["passed"] is True
    assert {(r["format"], r["mode"]) for r in report["results"]} == {
        (f, m) for f in ("fp8_e5m2", "fp8_e4m3fn") for m in ("ieee", "ftz")
    }


def test_file_path_target(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    kernel = tmp_path / "my_kernel.py"
    kernel.write_text(
        "import torch\ndef quantize(y, l):\n    return torch.floor(y.double() * 2.0**l + 0.5).long()\n"
    )
    status, out, _ = run(capsys, "audit", f"{kernel}:quantize", "--op", "bdia_quantize", "--format", "fp32")
    assert status == EXIT_COUNTEREXAMPLE and "tie" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["audit", "no_such_module_xyz:f", "--op", "pam_mul"], "cannot import module 'no_such_module_xyz'"),
        (["audit", f"{GALLERY}:no_such_kernel", "--op", "pam_mul"], "has no attribute 'no_such_kernel'"),
        (["audit", "missing/file.py:f", "--op", "pam_mul"], "no such file 'missing/file.py'"),
        (["audit", "just_a_module", "--op", "pam_mul"], "is not MODULE:FUNCTION"),
        (["audit", f"{GALLERY}:pam_mul", "--op", "pam_mull"], "unknown op 'pam_mull'"),
        (["audit", f"{GALLERY}:pam_mul", "--op", "pam_mul", "--format", "fp7"], "unknown format 'fp7'"),
        (
            ["audit", f"{GALLERY}:bdia_forward_step", "--op", "bdia_forward_step", "--format", "fp16"],
            "does not support format fp16",
        ),
        (["audit", f"{GALLERY}:pam_mul"], "the following arguments are required: --op"),
        (["audit", f"{GALLERY}:pam_mul", "--op", "pam_mul", "--examples", "many"], "invalid int value"),
        ([], "no command given"),
    ],
)
def test_usage_errors_exit_2_with_one_line(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    status, out, err = run(capsys, *argv)
    assert status == EXIT_USAGE
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("revcheck: error: ") and message in err, err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message given where CUDA is missing")
def test_cuda_without_cuda_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = run(capsys, "audit", f"{GALLERY}:pam_mul", "--op", "pam_mul", "--device", "cuda")
    assert status == EXIT_USAGE and "CUDA is not available" in err and err.count("\n") == 1


def test_ops_lists_every_op(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, "ops")
    assert status == EXIT_OK and "bdia_inverse_step" in out and "candidate(" in out
    # The one op table: the sweepable ops are marked with their implementations.
    assert "pam_mul_grad" in out and out.count("sweep: torch, triton") == 5


def test_python_dash_m_revcheck_exit_codes() -> None:
    ok = subprocess.run(
        [
            sys.executable,
            "-m",
            "revcheck",
            "audit",
            f"{GALLERY}:pa_log2",
            "--op",
            "pa_log2",
            "--format",
            "fp8_e4m3fn",
            "--examples",
            "3",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert ok.returncode == EXIT_OK, ok.stdout + ok.stderr
    bad = subprocess.run(
        [sys.executable, "-m", "revcheck", "audit", "no_such_module_xyz:f", "--op", "pa_log2"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode == EXIT_USAGE and bad.stderr.count("\n") == 1


# ---- issue 9: nothing checked is never a pass; usage errors before work; pipes -------------------


def test_time_budget_zero_or_negative_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    for budget in ("0", "-5"):
        status, out, err = run(
            capsys, "audit", "examples/audit_my_kernel.py:pam_mul", "--op", "pam_mul", "--time-budget", budget
        )
        assert status == EXIT_USAGE and out == "" and "time budget" in err and err.count("\n") == 1, err


def test_budget_that_checks_nothing_exits_3_not_checked(capsys: pytest.CaptureFixture[str]) -> None:
    # The README's known-buggy kernel: a run that checked nothing must not say PASSED.
    status, out, _ = run(
        capsys, "audit", "examples/audit_my_kernel.py:pam_mul", "--op", "pam_mul", "--time-budget", "1e-9"
    )
    assert status == EXIT_NOT_CHECKED, out
    assert "NOT CHECKED" in out and "PASSED" not in out


def test_meta_device_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run(capsys, "audit", f"{GALLERY}:pam_mul", "--op", "pam_mul", "--device", "meta")
    assert status == EXIT_USAGE and out == "" and "holds no data" in err and err.count("\n") == 1


@pytest.mark.parametrize("where", ["under_a_file", "a_directory", "missing_folder"])
def test_unwritable_json_path_exits_2_before_the_audit(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, where: str
) -> None:
    blocker = tmp_path / "file.txt"
    blocker.write_text("")
    path = {
        "under_a_file": blocker / "report.json",
        "a_directory": tmp_path,
        "missing_folder": tmp_path / "no" / "report.json",
    }[where]
    # Refused before the audit: no report is printed (after an audit it would be, with its verdict).
    status, out, err = run(
        capsys, "audit", f"{GALLERY}:pam_mul", "--op", "pam_mul", "--format", "bf16", "--json", str(path)
    )
    assert status == EXIT_USAGE and out == "" and "--json" in err and err.count("\n") == 1, err


def test_target_that_exits_at_import_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    script = tmp_path / "script_kernel.py"
    script.write_text("import sys\ndef pam_mul(a, b):\n    return a\nsys.exit(3)\n")
    status, out, err = run(capsys, "audit", f"{script}:pam_mul", "--op", "pam_mul")
    assert status == EXIT_USAGE and out == ""
    assert "called sys.exit(3)" in err and str(script) in err and err.count("\n") == 1, err


def test_kernel_without_mode_declared_ftz(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    kernel = tmp_path / "ftz_kernel.py"
    kernel.write_text(
        "from tests.gallery.audit_kernels import pam_mul as reference\n"
        "def pam_mul(a, b):\n    return reference(a, b, mode='ftz')\n"
    )
    argv = ["audit", f"{kernel}:pam_mul", "--op", "pam_mul", "--format", "fp8_e5m2"]
    status, out, _ = run(capsys, *argv, "--mode", "ftz")
    assert status == EXIT_OK and "audited as a kernel of mode 'ftz', as declared" in out, out
    assert run(capsys, *argv)[0] == EXIT_COUNTEREXAMPLE  # it is not an ieee kernel
    status, _, err = run(capsys, *argv, "--mode", "all")
    assert status == EXIT_USAGE and "declare which" in err


def test_closed_stdout_ends_quietly_with_141() -> None:
    # `revcheck audit ... | head`: the reader goes away before the report is written.
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "revcheck",
            "audit",
            f"{GALLERY}:pa_log2",
            "--op",
            "pa_log2",
            "--format",
            "fp16",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()  # the audit takes a second: nothing has been written yet
    stderr = process.stderr.read().decode()
    assert process.wait(timeout=300) == EXIT_BROKEN_PIPE, stderr
    assert "Traceback" not in stderr and "BrokenPipeError" not in stderr, stderr
