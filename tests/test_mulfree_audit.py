"""Audit ops of the multiplication-free family: row-wise PA ops vs the oracle, a step's certificate."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from revcheck.audit import audit, registry
from revcheck.audit.ops_mulfree import ROWWISE_OPS, certify_step, rowwise_specs
from revcheck.nn import mulfree as M
from tests.gallery.mulfree_bugs import global_max_softmax, sgd_step


def test_rowwise_ops_are_registered() -> None:
    assert {spec.name for spec in rowwise_specs()} <= set(registry.REGISTRY)


@pytest.mark.parametrize("name", list(ROWWISE_OPS))
def test_revcheck_rowwise_ops_pass_their_audit(name: str) -> None:
    candidates: dict[str, Callable[..., torch.Tensor]] = {
        "pa_softmax": M.pa_softmax,
        "pa_log_softmax": M.pa_log_softmax,
        "pa_mean": M.pa_mean,
        "pa_layer_norm": M.pa_layer_norm,
        "pa_rms_norm": M.pa_rms_norm,
    }
    report = audit(candidates[name], name, formats=["fp32", "bf16"], max_examples=10)
    assert report.passed, report


def test_audit_finds_the_global_max_softmax() -> None:
    report = audit(global_max_softmax, "pa_softmax", formats=["fp32"], max_examples=50)
    assert not report.passed
    assert report.counterexamples[0].op == "pa_softmax"


def test_certify_step_lists_every_offender_and_the_static_verdict() -> None:
    bad = certify_step(sgd_step)
    assert not bad.multiplication_free
    assert "aten::add_.Tensor" in {r.op for r in bad.runtime.violations()}
    good = certify_step(_pa_step)
    assert good.multiplication_free, good.summary()
    assert "violations in the slice: none" in good.summary()


def _pa_step():
    from properties.test_mulfree import pa_step

    return pa_step()


def test_certify_step_reports_an_untraceable_step() -> None:
    def make():
        w = torch.nn.Parameter(torch.ones(2))
        optimizer = torch.optim.Adam([w])

        def step() -> None:
            optimizer.zero_grad()
            (w + 1).sum().backward()
            optimizer.step()

        return step

    certificate = certify_step(make)
    assert certificate.static is None and "not traceable" in certificate.static_skipped
