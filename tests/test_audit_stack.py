"""revcheck.audit.audit_stack and `revcheck audit-stack`: whole BDIA stacks against the oracle."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from revcheck.audit import audit_stack
from revcheck.audit.stack import BANDS
from revcheck.cli import EXIT_COUNTEREXAMPLE, EXIT_OK, EXIT_USAGE, main
from revcheck.errors import UsageError
from tests.gallery import audit_stacks as gallery

REPO = Path(__file__).resolve().parents[1]
STACKS = "tests.gallery.audit_stacks"


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("backward", [gallery.code_backward, gallery.bdia_stack_backward])
def test_correct_stack_passes_every_check_in_every_band(backward: Callable[..., Any]) -> None:
    report = audit_stack(gallery.code_forward, gallery.code_reconstruct, backward=backward)
    assert report.passed, str(report)
    for band in BANDS:
        in_band = [r for r in report.checked if r.band == band]
        for check in ("forward", "reconstruction", "backward"):
            assert any(r.status[check] == "passed" for r in in_band), (band, check)
    assert max(r.largest_code for r in report.checked) >= 2**60  # up to the range limit (2**62)
    patterns = {r.case.pattern for r in report.checked}
    assert {"plus", "minus", "random with zeros", "inference"} <= patterns
    assert "saved for backward" in str(report) and report.results[0].saved_bytes is not None


def test_fp32_grid_stack_is_found_exact_only_below_2_to_24() -> None:
    # Like the public BDIA ViT: states kept as fp32 grid values. The audit must find the band itself.
    report = audit_stack(gallery.grid_forward, gallery.grid_reconstruct, backward=gallery.grid_backward)
    assert not report.passed
    below = [r for r in report.checked if r.band == BANDS[0]]
    assert below and all(r.failure is None for r in below), "a case below 2^24 failed"
    assert all(r.largest_code >= 2**24 for r in report.failures)
    assert len(report.failures) > len(report.checked) // 2
    assert "exact only below 2^24 codes" in str(report)
    assert report.shrunk is not None
    shrunk, original = report.shrunk
    assert shrunk.failure is not None and shrunk.case.depth <= original
    assert any(
        label.endswith("|code| ≥ 2^24") or label.endswith("|code| ≥ 2^53") for label in shrunk.failure.labels
    )


def test_reconstruction_without_dropout_replay_is_caught() -> None:
    report = audit_stack(gallery.code_forward, gallery.code_reconstruct_without_replay, cases=12, max_depth=4)
    assert report.failures and all(r.failure.check == "reconstruction" for r in report.failures)  # type: ignore[union-attr]
    assert report.shrunk is not None and report.shrunk[0].case.depth == 2  # one block cannot show it


def test_backward_missing_the_gamma_term_is_caught() -> None:
    report = audit_stack(gallery.code_forward, backward=gallery.code_backward_without_gamma_term, cases=12)
    assert report.failures and {r.failure.check for r in report.failures} == {"backward"}  # type: ignore[union-attr]
    assert report.shrunk is not None and report.shrunk[0].case.depth == 2
    assert "gradient of" in str(report)


def test_stack_audit_usage_errors() -> None:
    with pytest.raises(UsageError, match="use 'fp32' or 'fp64'"):
        audit_stack(gallery.code_forward, compute_dtype="bf16")
    with pytest.raises(UsageError, match="cases=0 must be an int"):
        audit_stack(gallery.code_forward, cases=0)
    with pytest.raises(UsageError, match="l=63"):
        audit_stack(gallery.code_forward, l=63)
    with pytest.raises(UsageError, match="has no attribute"):
        audit_stack(f"{STACKS}:no_such_forward")


def test_audit_stack_command_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(REPO)
    path = tmp_path / "stack.json"
    argv = ["audit-stack", f"{STACKS}:grid_forward", "--reconstruct", f"{STACKS}:grid_reconstruct"]
    assert main([*argv, "--cases", "24", "--json", str(path)]) == EXIT_COUNTEREXAMPLE
    out = capsys.readouterr().out
    assert "FAILED" in out and "exact only below 2^24" in out
    assert json.loads(path.read_text())["verdict"] == "failed"
    good = [
        "audit-stack",
        f"{STACKS}:code_forward",
        "--reconstruct",
        f"{STACKS}:code_reconstruct",
        "--cases",
        "12",
    ]
    assert main(good) == EXIT_OK and "PASSED" in capsys.readouterr().out
    assert main([*good, "--compute-dtype", "fp16"]) == EXIT_USAGE
    assert main([*good, "--json", str(tmp_path / "missing" / "x.json")]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.count("\n") == 2 and "fp16" in err and "--json" in err
