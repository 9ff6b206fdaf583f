"""revcheck.audit.assert_deterministic: identical bits on every run, or the first difference named."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from revcheck.audit import NondeterminismError, assert_deterministic, first_difference


def test_deterministic_function_passes_and_returns_the_first_output() -> None:
    x = torch.arange(6, dtype=torch.float32)
    out = assert_deterministic(torch.mul, x, 2.0)
    assert torch.equal(out, x * 2)


def test_differing_run_is_reported_with_index_run_and_both_values() -> None:
    calls = itertools.count()

    def flaky(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = x.clone()
        if next(calls) == 3:
            y[1, 2] = torch.nextafter(y[1, 2], torch.tensor(10.0, dtype=y.dtype))
        return x, y

    with pytest.raises(NondeterminismError) as raised:
        assert_deterministic(flaky, torch.ones(2, 3, dtype=torch.bfloat16), runs=5)
    error = raised.value
    assert error.run == 3 and error.difference.path == "[1]" and error.difference.index == (1, 2)
    assert "1.0 [0x3F80" in error.difference.first and "[0x3F81" in error.difference.other
    assert "run 3 differs from run 0" in str(error)


def test_sign_of_zero_and_nan_payloads_count() -> None:
    signs = itertools.cycle([0.0, -0.0])
    with pytest.raises(NondeterminismError, match=r"-0\.0"):
        assert_deterministic(lambda: torch.tensor([next(signs)]))
    payloads = itertools.cycle([0x7FC00000, 0x7FC00001])
    with pytest.raises(NondeterminismError, match="nan"):
        assert_deterministic(lambda: np.array([next(payloads)], dtype=np.uint32).view(np.float32))


def test_shape_dtype_and_output_count_changes_are_differences() -> None:
    assert first_difference(torch.zeros(2), torch.zeros(3)).reason == "shape"  # type: ignore[union-attr]
    assert first_difference(torch.zeros(2), torch.zeros(2, dtype=torch.float64)).reason == "dtype/device"  # type: ignore[union-attr]
    assert first_difference((torch.zeros(1),), (torch.zeros(1), 1)).reason == "number of outputs"  # type: ignore[union-attr]
    assert first_difference({"a": torch.ones(1)}, {"a": torch.ones(1)}) is None


def test_integer_outputs_are_compared_exactly() -> None:
    values = itertools.cycle([torch.tensor([1, 2]), torch.tensor([1, 3])])
    with pytest.raises(NondeterminismError, match=r"index \(1,\): 2 vs 3"):
        assert_deterministic(lambda: next(values), runs=2)


def test_fewer_than_two_runs_cannot_show_anything() -> None:
    with pytest.raises(ValueError, match="runs >= 2"):
        assert_deterministic(torch.zeros, 1, runs=1)


@pytest.mark.cuda
def test_cuda_run_includes_a_second_stream() -> None:
    x = torch.arange(1024, dtype=torch.float32, device="cuda")
    assert torch.equal(assert_deterministic(torch.cumsum, x, dim=0), torch.cumsum(x, dim=0))
