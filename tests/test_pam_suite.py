"""The PAM kernel suite's machinery (properties/pam_suite.py): implementations, registry, counted cases."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest

from properties import pam_suite
from properties.pam_suite import TORCH, PamKernels
from revcheck import formats
from revcheck import strategies as rst
from revcheck.audit import registry
from revcheck.kernels import pam as kernels


def test_registered_kernels_are_the_registrys_implementations() -> None:
    names = [implementation.name for implementation in pam_suite.registered_kernels()]
    assert names == list(registry.get("pam_mul").implementations)
    assert {"torch", "triton"} <= set(names)
    assert TORCH.function("pam_div") is kernels.pam_div
    assert TORCH.function("pam_matmul") is kernels.pam_matmul
    assert TORCH.matmul_orders() == kernels.ORDERS


def test_replace_swaps_one_op_and_names_the_result() -> None:
    def wrong(a: object, b: object, *, mode: str = "ieee") -> object:
        return a

    replaced = TORCH.replace(pam_mul=wrong)
    assert replaced.name == "torch with pam_mul"
    assert replaced.function("pam_mul") is wrong
    assert replaced.function("pa_log2") is kernels.pa_log2
    assert replaced.matmul_orders() == kernels.ORDERS
    with pytest.raises(ValueError, match="unknown ops"):
        TORCH.replace(pam_add=wrong)


def test_an_implementation_whose_module_is_missing_skips_with_the_reason() -> None:
    missing = PamKernels("nowhere", {"pam_mul": "no_such_package.kernels:pam_mul"})
    with pytest.raises(pytest.skip.Exception, match="nowhere cannot be imported"):
        pam_suite.loaded(missing)
    with pytest.raises(LookupError, match="nowhere has no pa_exp2"):
        missing.function("pa_exp2")


@pytest.mark.parametrize("fmt_name", formats.names())
def test_counted_pairs_hold_every_pair_of_the_boundary_table(fmt_name: str) -> None:
    """The Triton suite's old boundary table (±0, ±smallest/largest subnormal and normal, ±1, ±1.5, ±max,
    ±inf or the overflow pattern, NaN) is inside the level-1 counted pairs that replace it."""
    fmt = formats.get(fmt_name)
    magnitudes = [
        0,
        fmt.min_subnormal,
        fmt.max_subnormal,
        fmt.min_normal,
        fmt.one,
        fmt.one | 1 << (fmt.mantissa_bits - 1),
        fmt.max_finite,
        fmt.overflow_magnitude,
    ]
    table = {m | s for m in magnitudes for s in (0, fmt.sign_mask)}
    if fmt.has_nan:  # fp6 and fp4 have none (docs/spec.md D1.6)
        table.add(fmt.canonical_nan)
    a, b = rst.testfloat_pairs(fmt).bits()
    pairs = set(zip(a.tolist(), b.tolist(), strict=True))
    missing = [(x, y) for x in sorted(table) for y in sorted(table) if (x, y) not in pairs]
    assert not missing, (
        f"{len(missing)} boundary pairs missing, e.g. {[tuple(map(hex, p)) for p in missing[:3]]}"
    )


def test_a_users_kernels_run_the_suites_from_their_own_module(pytester: pytest.Pytester) -> None:
    pytester.makeconftest("from tests.conftest import *  # noqa: F403\n")
    pytester.makepyfile(
        test_my_kernels=textwrap.dedent(
            """
            import pytest
            from properties.pam_suite import ElementwiseSuite, MatmulSuite, PamKernels

            @pytest.fixture(scope="module")
            def kernels():
                return PamKernels.from_module("mine", "revcheck.kernels.pam")

            class TestMine(ElementwiseSuite, MatmulSuite):
                pass
            """
        )
    )
    result = pytester.runpytest_inprocess("-q", "-p", "no:cacheprovider", "-k", "counted and fp8")
    # pairs for 3 binary ops, cases for 2 unary ops, 4 fp8 formats (e5m2, e4m3fn and the two fnuz)
    result.assert_outcomes(passed=4 * 5)


def test_counted_cases_reach_every_class_of_every_format() -> None:
    for name in formats.names():
        cases = rst.testfloat_cases(name)
        classes = {case.cls for case in cases}
        assert classes == set(rst.format_classes(name)), (name, classes)
        assert np.unique(cases.bits()).size == len(cases), f"{name}: repeated counted cases"
