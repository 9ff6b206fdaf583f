"""Unit tests of revcheck.audit: registry, runner stages, report, reproduction, argument errors."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator

import numpy as np
import pytest
import torch

from revcheck import bits, formats
from revcheck.audit import AuditFailure, AuditUsageError, TargetError, audit, reproduce
from revcheck.audit.registry import REGISTRY, UnknownOpError, get
from revcheck.errors import UsageError
from revcheck.formats import FloatFormat
from tests.gallery import audit_kernels as gallery

REQUIRED_OPS = (
    "pam_mul",
    "pam_div",
    "pam_mul_grad",
    "pa_exp2",
    "pa_log2",
    "pam_matmul",
    "pam_matmul_any_order",
    "bdia_quantize",
    "bdia_forward_step",
    "bdia_inverse_step",
)


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_registry_has_every_required_op_with_a_documented_signature() -> None:
    assert set(REQUIRED_OPS) <= set(REGISTRY)
    for spec in REGISTRY.values():
        assert spec.signature.startswith("candidate("), spec.name
        assert spec.formats, spec.name


def test_unknown_op_names_the_registered_ones() -> None:
    with pytest.raises(UnknownOpError, match="pam_mul"):
        get("pam_mull")
    with pytest.raises(AuditUsageError, match=r"unknown op 'pam_mull'.*registered ops are"):
        audit(gallery.pam_mul, "pam_mull")


def test_every_usage_error_is_revchecks_usage_error() -> None:
    # One base class: the CLI maps it to exit status 2; the old names still catch what they caught.
    assert AuditUsageError is UsageError and issubclass(UsageError, ValueError)
    assert issubclass(TargetError, UsageError)
    assert issubclass(UnknownOpError, UsageError) and issubclass(UnknownOpError, KeyError)
    with pytest.raises(UsageError, match="is not MODULE:FUNCTION"):
        audit("no_colon", "pam_mul")
    with pytest.raises(KeyError):
        get("pam_mull")


def test_bdia_ops_draw_inside_the_oracles_limits() -> None:
    # The audit's own bound on l is how far it draws, not the method's limit (oracle.bdia.MAX_L).
    from revcheck.audit import ops_bdia
    from revcheck.oracle import bdia

    assert 0 < ops_bdia.DRAWN_L_MAX <= bdia.MAX_L
    assert 1 << (ops_bdia.MAX_VALUE_EXPONENT + ops_bdia.DRAWN_L_MAX + 1) < bdia.CODE_LIMIT
    assert tuple(formats.get(d).name for d in bdia.COMPUTE_DTYPES) == ops_bdia.STEP_FORMATS
    assert get("bdia_forward_step").formats == ops_bdia.STEP_FORMATS


def test_modes_come_from_revcheck_modes() -> None:
    from revcheck.modes import MODES

    assert all(spec.modes in ((), MODES) for spec in REGISTRY.values())
    with pytest.raises(UsageError, match=r"unknown mode 'rtz'; use one of 'ieee', 'ftz' \(or 'all'\)"):
        audit(gallery.pam_mul, "pam_mul", mode="rtz")


def test_exhaustive_plans_follow_the_input_space_size() -> None:
    mul, log2 = get("pam_mul"), get("pa_log2")
    fp8_pairs, bf16_pairs, fp16_inputs = (
        mul.exhaustive(_fmt("fp8_e5m2")),
        mul.exhaustive(_fmt("bf16")),
        log2.exhaustive(_fmt("fp16")),
    )
    assert fp8_pairs is not None and bf16_pairs is not None and fp16_inputs is not None
    assert fp8_pairs.by_default and fp8_pairs.size == 2**16
    assert not bf16_pairs.by_default and bf16_pairs.size == 2**32
    assert mul.exhaustive(_fmt("fp32")) is None
    assert fp16_inputs.by_default and fp16_inputs.size == 2**16


def _fmt(name: str) -> FloatFormat:
    return formats.get(name)


def test_correct_kernel_passes_and_8_bit_formats_are_enumerated() -> None:
    report = audit(gallery.pam_mul, "pam_mul", formats=["fp8_e5m2", "bf16"], max_examples=20)
    assert report.passed, str(report)
    fp8, bf16 = report.result("fp8_e5m2"), report.result("bf16")
    assert fp8.exhaustive and fp8.elements >= 2**16
    counted = len(get("pam_mul").examples(_fmt("bf16")))
    assert not bf16.exhaustive and bf16.examples == counted + 20
    report.raise_for_failures()  # does not raise
    assert "PASSED" in str(report) and "fp8_e5m2" in report.table()


def test_failure_report_has_bits_ulps_class_and_reproduction() -> None:
    report = audit(gallery.pam_mul_flushes_subnormals, "pam_mul", formats="bf16")
    assert not report.passed
    counterexample = report.result("bf16").counterexample
    assert counterexample is not None
    assert counterexample.involves("subnormal")
    assert all("[0x" in value.text for value in counterexample.inputs + counterexample.expected)
    assert counterexample.seed is None and counterexample.stage in ("counted", "hypothesis")
    assert "FAILED" in str(report) and "reproduce:" in str(report)
    with pytest.raises(AuditFailure) as raised:
        report.raise_for_failures()
    assert isinstance(raised.value, AssertionError) and raised.value.report is report
    parsed = json.loads(report.to_json())
    assert parsed["passed"] is False
    assert parsed["results"][0]["counterexample"]["labels"] == list(counterexample.labels)
    # The printed one-liner re-runs exactly this input: it fails on the bug, passes on the fix.
    with pytest.raises(AssertionError, match="differs from the oracle"):
        exec(counterexample.snippet, {})
    reproduce(gallery.pam_mul, "pam_mul", "bf16", counterexample.case)


def test_ulp_distance_is_reported_for_float_results() -> None:
    report = audit(gallery.pam_mul_unsigned_zero, "pam_mul", formats="fp32")
    counterexample = report.counterexamples[0]
    assert (counterexample.expected_label, counterexample.actual_label) == ("-zero", "+zero")
    assert counterexample.ulp_distance == 1


def test_exhaustive_stage_finds_what_hypothesis_misses() -> None:
    # Wrong on exactly one of the 65536 fp8 pairs: only enumeration can be sure to find it.
    def one_wrong_pair(a: torch.Tensor, b: torch.Tensor, *, mode: str = "ieee") -> torch.Tensor:
        result = gallery.pam_mul(a, b, mode=mode)
        target = (a.view(torch.uint8) == 0x35) & (b.view(torch.uint8) == 0x4B)
        return torch.where(target, torch.zeros_like(result), result)

    report = audit(one_wrong_pair, "pam_mul", formats="fp8_e4m3fn", max_examples=10)
    counterexample = report.counterexamples[0]
    assert counterexample.stage == "exhaustive"
    assert counterexample.case == {"a": [0x35], "b": [0x4B]}
    assert report.result("fp8_e4m3fn").caught_after == 0x35 * 256 + 0x4B + 1


def test_seed_makes_runs_repeatable() -> None:
    first = audit(gallery.pam_mul_unsigned_zero, "pam_mul", formats="fp16", seed=3)
    second = audit(gallery.pam_mul_unsigned_zero, "pam_mul", formats="fp16", seed=3)
    assert first.counterexamples[0].case == second.counterexamples[0].case
    assert first.results[0].caught_after == second.results[0].caught_after
    assert first.counterexamples[0].seed == 3


def test_mode_is_passed_only_to_candidates_that_take_it() -> None:
    seen: list[str] = []

    def with_mode(a: torch.Tensor, b: torch.Tensor, *, mode: str) -> torch.Tensor:
        seen.append(mode)
        return gallery.pam_mul(a, b, mode=mode)

    def without_mode(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return gallery.pam_mul(a, b)

    assert audit(with_mode, "pam_mul", formats="fp8_e5m2", mode="all", max_examples=5).passed
    assert set(seen) == {"ieee", "ftz"}
    report = audit(without_mode, "pam_mul", formats="fp8_e5m2", max_examples=5)
    assert report.passed and "takes no `mode` keyword: audited as a kernel of mode 'ieee'" in str(report)
    with pytest.raises(AuditUsageError, match="implements one rounding mode; declare which"):
        audit(without_mode, "pam_mul", formats="fp8_e5m2", mode="all")


def test_kernel_without_mode_keyword_is_audited_in_the_declared_mode() -> None:
    def ftz_only(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return gallery.pam_mul(a, b, mode="ftz")

    declared = audit(ftz_only, "pam_mul", formats=["fp16", "bf16"], mode="ftz", max_examples=30)
    assert declared.passed, str(declared)
    assert [r.mode for r in declared.results] == ["ftz", "ftz"]
    assert "audited as a kernel of mode 'ftz', as declared" in str(declared)
    assert "as declared" in json.loads(declared.to_json())["notes"][0]
    wrong = audit(ftz_only, "pam_mul", formats="fp16", mode="ieee")
    assert wrong.counterexamples[0].involves("subnormal")


def test_ops_without_modes_refuse_a_mode_as_the_docstring_says() -> None:
    assert "Ops\n        without rounding modes (the BDIA ops) accept only" in (audit.__doc__ or "")
    with pytest.raises(UsageError, match="bdia_quantize has no rounding modes"):
        audit(gallery.bdia_quantize, "bdia_quantize", formats="fp32", mode="ftz")
    for accepted in ("ieee", "all", None):
        report = audit(gallery.bdia_quantize, "bdia_quantize", formats="fp32", mode=accepted, max_examples=3)
        assert report.passed and report.results[0].mode is None


def test_ftz_kernel_in_ieee_mode_is_caught_on_subnormals() -> None:
    def always_ftz(a: torch.Tensor, b: torch.Tensor, *, mode: str = "ieee") -> torch.Tensor:
        return gallery.pam_mul(a, b, mode="ftz")

    report = audit(always_ftz, "pam_mul", formats="fp16", mode="all")
    assert report.result("fp16", mode="ftz").passed
    counterexample = report.result("fp16", mode="ieee").counterexample
    assert counterexample is not None
    # Either a subnormal input was flushed, or a subnormal result (e.g. 0.5 x min normal) was.
    assert counterexample.involves("subnormal") or any(
        value.bits is not None and bool(bits.is_subnormal(np.array([value.bits], dtype=np.uint16), "fp16")[0])
        for value in counterexample.expected
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"formats": "bf17"}, "unknown format 'bf17'"),
        ({"formats": "fp8_e5m2", "mode": "rtz"}, "unknown mode 'rtz'"),
        ({"formats": "fp16", "max_examples": 0}, "at least 1"),
        ({"device": "cpux"}, "unknown device"),
        ({"device": "meta"}, "holds no data"),
        ({"formats": "fp16", "max_examples": True}, "must be an int"),
    ],
)
def test_bad_arguments_are_usage_errors(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(AuditUsageError, match=message):
        audit(gallery.pam_mul, "pam_mul", **kwargs)  # type: ignore[arg-type]


def test_unsupported_format_for_the_op() -> None:
    with pytest.raises(AuditUsageError, match="does not support format bf16; use one of fp32, fp64"):
        audit(gallery.bdia_forward_step, "bdia_forward_step", formats="bf16")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message given where CUDA is missing")
def test_cuda_without_cuda_is_a_usage_error() -> None:
    with pytest.raises(AuditUsageError, match="CUDA is not available"):
        audit(gallery.pam_mul, "pam_mul", device="cuda")


@pytest.mark.cuda
def test_audit_on_cuda() -> None:
    assert audit(gallery.pam_mul, "pam_mul", formats="bf16", device="cuda", max_examples=20).passed


def test_candidate_that_raises_or_returns_the_wrong_dtype_is_a_finding() -> None:
    def raises(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("kernel not compiled for this dtype")

    def wrong_dtype(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return gallery.pam_mul(a, b).float()

    raised = audit(raises, "pam_mul", formats="fp16").counterexamples[0]
    assert "raised" in raised.labels and "kernel not compiled" in raised.note
    bad = audit(wrong_dtype, "pam_mul", formats="fp16").counterexamples[0]
    assert "bad output" in bad.labels and "torch.float32, expected torch.float16" in bad.note


def test_candidate_given_as_target_text() -> None:
    report = audit("tests.gallery.audit_kernels:pa_log2", "pa_log2", formats="fp8_e5m2", max_examples=5)
    assert report.passed and report.candidate == "tests.gallery.audit_kernels:pa_log2"
    with pytest.raises(AuditUsageError, match="cannot import module"):
        audit("no_such_module_xyz:f", "pa_log2")


@pytest.mark.parametrize("seconds", [0, 0.0, -1.0, float("nan"), float("inf")])
def test_time_budget_that_leaves_no_time_is_a_usage_error(seconds: float) -> None:
    with pytest.raises(UsageError, match="time budget"):
        audit(gallery.pam_mul_flushes_subnormals, "pam_mul", formats="bf16", time_budget=seconds)


def test_budget_that_skips_every_check_is_not_checked_never_passed() -> None:
    # A budget spent before the first check starts: nothing is checked, so nothing may pass.
    report = audit(gallery.pam_mul_flushes_subnormals, "pam_mul", formats=["fp16", "bf16"], time_budget=1e-9)
    assert [r.status for r in report.results] == ["skipped", "skipped"]
    assert report.verdict == "not checked" and not report.passed
    assert "NOT CHECKED" in str(report) and "time budget" in str(report)
    assert json.loads(report.to_json())["passed"] is False
    with pytest.raises(AuditFailure, match="not checked to the end"):
        report.raise_for_failures()


def test_budget_that_cuts_a_check_short_is_incomplete() -> None:
    def slow(a: torch.Tensor, b: torch.Tensor, *, mode: str = "ieee") -> torch.Tensor:
        time.sleep(0.02)
        return gallery.pam_mul(a, b, mode=mode)

    report = audit(slow, "pam_mul", formats=["fp32", "bf16"], time_budget=0.3)
    first, second = report.results
    assert first.status == "incomplete" and 0 < first.examples < 100, first
    assert any("stopped by the time budget" in note for note in first.notes)
    assert second.status == "skipped"
    assert report.verdict == "incomplete" and not report.passed


def test_determinism_option_flags_a_nondeterministic_kernel_and_passes_a_deterministic_one() -> None:
    flagged = audit(gallery.pam_matmul_random_order, "pam_matmul_any_order", formats="fp32", determinism=True)
    counterexample = flagged.counterexamples[0]
    assert counterexample.stage == "determinism" and "nondeterministic" in counterexample.labels
    assert "run 1 differs from run 0" in counterexample.note
    without = audit(gallery.pam_matmul_random_order, "pam_matmul_any_order", formats="fp32", max_examples=10)
    assert without.passed  # inside the bound: only the determinism check can see this bug


def test_bdia_counterexample_is_narrowed_to_one_element() -> None:
    report = audit(gallery.bdia_forward_step_wrong_side_bit, "bdia_forward_step", formats="fp32")
    case = report.counterexamples[0].case
    assert np.shape(case["X_prev"]) == (1, 1) and np.shape(case["gamma"]) == (1,)


def test_pam_matmul_backward_approx_is_what_pammatmul_computes() -> None:
    # The op's definition is PAMMatmul(backward="approx"): revcheck's own autograd passes its audit.
    from revcheck.nn.pam import PAMMatmul

    def autograd_backward(
        a: torch.Tensor, b: torch.Tensor, g: torch.Tensor, *, mode: str
    ) -> tuple[torch.Tensor, torch.Tensor]:
        a, b = a.clone().requires_grad_(), b.clone().requires_grad_()
        grad_a, grad_b = torch.autograd.grad(PAMMatmul.apply(a, b, mode, "approx"), (a, b), g)
        return grad_a, grad_b

    report = audit(
        autograd_backward, "pam_matmul_backward_approx", formats=["fp32", "bf16"], mode="all", max_examples=30
    )
    assert report.passed, str(report)


def _values(patterns: np.ndarray, fmt: FloatFormat) -> np.ndarray:
    """The float64 values of patterns (exact for every format; fp6/fp4 have no torch dtype)."""
    return np.array([float(bits.to_fraction(int(p), fmt)) for p in patterns.ravel()])


@pytest.mark.parametrize("name", formats.names())
def test_counted_cases_reach_every_region_in_every_format(name: str) -> None:
    # Issue 9: some classes were reached only in other formats; the counted cases reach each region in
    # each format on its own, so a kernel that supports one format is checked there as well as any.
    from revcheck.audit import ops_pam
    from revcheck.oracle import pam

    fmt = formats.get(name)
    fraction = 2.0**-fmt.mantissa_bits
    exp2_case = get("pa_exp2").examples(fmt)[0]  # the special values and the regions
    y = _values(exp2_case["y"], fmt)
    # Below 2**threshold pa_exp2 rounds to 0 or to the smallest subnormal.
    threshold = fmt.emin - fmt.mantissa_bits
    spacing = 2.0 ** (math.floor(math.log2(abs(threshold))) - fmt.mantissa_bits)
    in_last_binade = bool(((y > threshold - 1) & (y < threshold)).any())
    assert in_last_binade == (spacing < 1), (
        "the last binade's inputs are not counted (where the format has any)"
    )
    log2_case = get("pa_log2").examples(fmt)[0]
    x = _values(log2_case["x"], fmt)
    few = min(8, (1 << fmt.mantissa_bits) - 1)
    above_one = sorted({round(float(v - 1) / fraction) for v in x if 1 < v <= 1 + few * fraction})
    assert above_one == list(range(1, few + 1)), "pa_log2 inputs 1 + k ulp, k = 1..8, are not all counted"
    outer = get("pam_matmul").examples(fmt)[0]
    accumulator = pam.accumulator_format(fmt)
    a, b = (v.reshape(-1) for v in np.meshgrid(outer["A"][:, 0], outer["B"][0], indexing="ij"))
    products = np.asarray(ops_pam._row_products(a, b, fmt, "ieee"))
    subnormal = bits.is_subnormal(products, accumulator)
    # fp16 and fp8 products are never subnormal in fp32 (docs/spec.md F2.10); the others must be reached.
    assert bool(subnormal.any()) == (fmt.name in ("fp64", "fp32", "bf16")), fmt.name


def test_every_model_audit_resolves_to_a_documented_function() -> None:
    from revcheck.audit.registry import MODEL_AUDITS

    assert len({entry.name for entry in MODEL_AUDITS}) == len(MODEL_AUDITS)
    for entry in MODEL_AUDITS:
        function = entry.load()
        assert callable(function) and function.__name__ == entry.name, entry
        assert function.__doc__, f"{entry.function} has no docstring"
