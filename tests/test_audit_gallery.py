"""The audit against its gallery: no false alarms, catches under every seed, the README's table.

That every planted bug is flagged with the right class (and the audit of the
correct kernel passes) is a record of the one harness (tests/test_gallery.py,
tests/gallery/audit_kernels.py's ``PLANTED_BUGS``).  Runs with the audit's
DEFAULT settings (100 Hypothesis examples per check, derandomized, exhaustive
where cheap).  The number of examples each bug needed is printed by
``python -m tests.test_audit_gallery`` (a Markdown table).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from revcheck.audit import Counterexample, audit
from revcheck.audit.registry import REGISTRY
from revcheck.audit.report import CAUGHT_UNITS
from tests.gallery.audit_kernels import AUDIT_BUGS, CORRECT_KERNELS, AuditBug, pam_matmul


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread() -> Iterator[None]:
    # The audit's tensors are tiny: thread start-up would dominate, and on a busy 2-core machine
    # two OpenMP threads spin against each other.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def audit_bug(bug: AuditBug) -> tuple[Counterexample, int]:
    report = audit(bug.kernel, bug.op, formats=bug.formats, determinism=bug.determinism)
    assert not report.passed, f"the audit missed the planted bug:\n{report}"
    (failed,) = report.failures
    assert failed.counterexample is not None and failed.caught_after is not None
    return failed.counterexample, failed.caught_after


# One format whose inputs are all enumerated and one where only Hypothesis runs, per op; every
# format and mode in the slow test below.
QUICK_FORMATS = {
    "pam_mul": ("fp8_e4m3fn", "bf16"),
    "pam_div": ("fp8_e5m2", "fp32"),
    "pam_mul_grad": ("fp8_e4m3fn", "fp16"),
    "pa_log2": ("fp16", "fp64"),
    "pa_exp2": ("bf16", "fp32"),
    "pam_matmul": ("fp8_e4m3fn", "fp32"),
    "pam_matmul_any_order": ("bf16",),
    "pam_matmul_backward_approx": ("fp8_e4m3fn", "bf16"),
    "bdia_quantize": ("bf16", "fp32"),
    "bdia_forward_step": ("fp32",),
    "bdia_inverse_step": ("fp32",),
    "bdia_inference_step": ("fp32", "fp64"),
}


def test_every_registered_op_has_a_correct_gallery_kernel() -> None:
    # The multiplication-free row-wise ops have their own gallery (tests/gallery/mulfree_bugs.py).
    from revcheck.audit.ops_mulfree import ROWWISE_OPS

    assert set(CORRECT_KERNELS) == set(REGISTRY) - set(ROWWISE_OPS) == set(QUICK_FORMATS)


@pytest.mark.parametrize("op", list(QUICK_FORMATS))
def test_correct_kernel_passes(op: str) -> None:
    report = audit(CORRECT_KERNELS[op], op, formats=QUICK_FORMATS[op])
    assert report.passed, f"false alarm on the correct {op} kernel:\n{report}"


def test_correct_matmul_is_deterministic() -> None:
    report = audit(pam_matmul, "pam_matmul", formats="bf16", max_examples=5, determinism=True)
    assert report.passed, str(report)


@pytest.mark.slow
@pytest.mark.parametrize("op", list(QUICK_FORMATS))
def test_correct_kernel_passes_in_every_format_and_mode(op: str) -> None:
    report = audit(CORRECT_KERNELS[op], op, formats="all", mode="all")
    assert report.passed, f"false alarm on the correct {op} kernel:\n{report}"


def test_matmul_special_values_are_caught_under_every_seed() -> None:
    # Issue 9: the PAM paper's CUDA matmul (inf ⊡ finite is NaN) took 76 examples under the default
    # run and was missed under one of nine seeds.  The counted cases run first, whatever the seed.
    bug = AUDIT_BUGS["PAM paper's CUDA matmul: inf ⊡ finite is NaN"]
    needed = {}
    for seed in range(20):
        report = audit(bug.kernel, bug.op, formats=bug.formats, seed=seed, max_examples=10)
        (failed,) = report.failures
        assert failed.counterexample is not None and failed.counterexample.involves("inf")
        needed[seed] = failed.caught_after
    assert all(caught is not None and caught <= 3 for caught in needed.values()), needed


def catch_table() -> str:
    """Markdown table: each planted bug, its op and format, the examples needed, the counterexample class."""
    rows = [
        "| planted bug | op | format | caught after | stage | counterexample class |",
        "|---|---|---|---|---|---|",
    ]
    for name, bug in AUDIT_BUGS.items():
        counterexample, caught_after = audit_bug(bug)
        unit = CAUGHT_UNITS[counterexample.stage]
        unit = unit.removesuffix("s") if caught_after == 1 else unit
        classes = ", ".join(counterexample.labels).replace("|", "\\|")  # a Markdown table cell
        if counterexample.expected_label:
            classes += f"; expected {counterexample.expected_label}, got {counterexample.actual_label}"
        rows.append(
            f"| {name} | {bug.op} | {', '.join(bug.formats)} | {caught_after} {unit} | "
            f"{counterexample.stage} | {classes} |"
        )
    return "\n".join(rows)


if __name__ == "__main__":
    torch.set_num_threads(1)
    print(catch_table())
