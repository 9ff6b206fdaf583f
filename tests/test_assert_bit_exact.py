"""assert_bit_exact / compare_bits: what passes, what fails, and what the message says."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from revcheck import BitMismatchError, assert_bit_exact
from revcheck.testing import Comparison, compare_bits


def bf16(patterns: list[int]) -> torch.Tensor:
    return torch.tensor(patterns, dtype=torch.int16).view(torch.bfloat16)


# ---- passes --------------------------------------------------------------------------


def test_equal_arrays_pass_with_any_nan_bits_under_nan_class() -> None:
    actual = np.array([1.0, -0.0, np.inf, np.nan], dtype=np.float32)
    expected = actual.copy()
    expected.view(np.uint32)[3] = 0xFFC00001  # another NaN: sign and payload differ
    assert_bit_exact(actual, expected)
    assert compare_bits(actual, expected).equal


def test_equal_torch_tensor_and_numpy_array_pass() -> None:
    assert_bit_exact(torch.tensor([1.5, -2.0], dtype=torch.float16), np.array([1.5, -2.0], np.float16))


def test_tensor_against_oracle_bits_with_fmt() -> None:
    oracle_bits = np.array([0x3F80, 0x8000, 0x7FC0], dtype=np.uint16)
    assert_bit_exact(bf16([0x3F80, -0x8000, 0x7FC0]), oracle_bits, fmt="bf16")
    assert_bit_exact(oracle_bits, bf16([0x3F80, -0x8000, 0x7FC1]), fmt=torch.bfloat16)


def test_python_float_is_fp64() -> None:
    assert_bit_exact(0.1, np.float64(0.1))
    with pytest.raises(
        BitMismatchError, match=r"actual:   fp64 \(Python float\)\n expected: fp32 \(float32 array\)"
    ) as info:
        assert_bit_exact(1.0, np.float32(1.0))
    assert info.value.reason == "dtype"


def test_check_dtype_false_compares_exact_values_across_formats() -> None:
    assert_bit_exact(1.0, np.float32(1.0), check_dtype=False)
    assert_bit_exact(bf16([0x3F81]), np.array([1.0078125], np.float32), check_dtype=False)
    with pytest.raises(BitMismatchError, match="fp64"):
        assert_bit_exact(0.1, np.float32(0.1), check_dtype=False)


def test_non_contiguous_tensor_is_compared_by_value_position() -> None:
    matrix = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    assert_bit_exact(matrix.T, np.arange(6, dtype=np.float32).reshape(2, 3).T)


# ---- fails, with the message checked -------------------------------------------------


def test_negative_zero_differs_from_positive_zero() -> None:
    with pytest.raises(BitMismatchError) as info:
        assert_bit_exact(np.array([0.0, 1.0]), np.array([-0.0, 1.0]))
    error = info.value
    assert (error.reason, error.mismatch_count, error.total, error.indices) == ("values", 1, 2, [(0,)])
    assert error.max_ulp == 1
    text = str(error)
    assert "1 / 2 elements differ (50.000%)" in text
    assert "actual:   0.0 [0x0000000000000000" in text
    assert "expected: -0.0 [0x8000000000000000" in text


def test_different_nans_fail_with_nan_bits_and_pass_with_nan_class() -> None:
    actual = np.array([0x7FC0, 0x3F80], dtype=np.uint16)
    expected = np.array([0xFFC1, 0x3F80], dtype=np.uint16)
    assert_bit_exact(actual, expected, fmt="bf16", nan="class")
    with pytest.raises(BitMismatchError) as info:
        assert_bit_exact(actual, expected, fmt="bf16", nan="bits")
    error = info.value
    assert error.mismatch_count == 1 and error.max_ulp is None
    assert "nan [0x7FC0 +FF.40]" in str(error) and "nan [0xFFC1 -FF.41]" in str(error)
    assert "different NaN bits" in str(error)


def test_nan_against_number_fails_without_ulp_distance() -> None:
    with pytest.raises(BitMismatchError, match="NaN vs number") as info:
        assert_bit_exact(np.array([np.nan, 1.0], np.float16), np.array([1.0, 1.0], np.float16))
    assert info.value.max_ulp is None


def test_one_ulp_bf16_difference_on_cpu_tensors() -> None:
    actual = bf16([0x3F80, 0x3F81, 0x4000])
    expected = bf16([0x3F80, 0x3F80, 0x4000])
    with pytest.raises(BitMismatchError) as info:
        assert_bit_exact(actual, expected)
    error = info.value
    assert error.fmt is not None and error.fmt.name == "bf16"
    assert (error.mismatch_count, error.total, error.indices, error.max_ulp) == (1, 3, [(1,)], 1)
    text = str(error)
    assert "not bit-exact (bf16" in text and "1 / 3 elements differ" in text
    assert "index [1]" in text
    assert "actual:   1.0078125 [0x3F81 +7F.01]" in text
    assert "expected: 1.0 [0x3F80 +7F.00]" in text
    assert "distance: 1 ULP" in text
    assert "max ULP distance: 1 ULP" in text


def test_message_lists_first_five_mismatches_and_the_overall_max_ulp() -> None:
    expected = np.zeros(10, dtype=np.float32)
    actual = expected.copy()
    actual.view(np.uint32)[:] = np.arange(1, 11, dtype=np.uint32)  # k-th element k ULPs away
    with pytest.raises(BitMismatchError) as info:
        assert_bit_exact(actual, expected)
    error = info.value
    assert error.mismatch_count == 10 and error.max_ulp == 10
    assert error.indices == [(k,) for k in range(5)]
    text = str(error)
    assert "first 5 mismatches" in text and "index [5]" not in text
    assert "max ULP distance: 10 ULP" in text


def test_multidimensional_indices() -> None:
    actual = np.ones((2, 3), dtype=np.float32)
    expected = actual.copy()
    expected[1, 2] = 2.0
    with pytest.raises(BitMismatchError, match=re.escape("index (1, 2)")) as info:
        assert_bit_exact(actual, expected)
    assert info.value.indices == [(1, 2)]


def test_shape_mismatch_names_both_shapes() -> None:
    with pytest.raises(BitMismatchError) as info:
        assert_bit_exact(np.zeros((2, 3), np.float32), np.zeros((3, 2), np.float32))
    assert info.value.reason == "shape"
    text = str(info.value)
    assert "shapes differ" in text and "(2, 3)" in text and "(3, 2)" in text


def test_scalar_is_not_broadcast() -> None:
    with pytest.raises(BitMismatchError, match="shapes differ"):
        assert_bit_exact(np.zeros(3, np.float32), np.float32(0.0))


def test_dtype_mismatch_names_both_formats() -> None:
    with pytest.raises(BitMismatchError) as info:
        assert_bit_exact(torch.zeros(2, dtype=torch.bfloat16), np.zeros(2, np.float16))
    assert info.value.reason == "dtype"
    text = str(info.value)
    assert "formats (dtypes) differ" in text
    assert "bf16 (torch.bfloat16 tensor)" in text and "fp16 (float16 array)" in text


def test_float_side_must_match_fmt() -> None:
    with pytest.raises(BitMismatchError, match="fp32") as info:
        assert_bit_exact(np.zeros(2, np.float32), np.zeros(2, np.uint16), fmt="bf16", check_dtype=False)
    assert info.value.reason == "dtype"


def test_same_device_passes_check_device() -> None:
    assert_bit_exact(torch.ones(2), np.ones(2, np.float32), check_device=True)


def test_device_mismatch_message() -> None:
    # A real mismatch needs two devices: see test_cuda_tensor_against_cpu_tensor.
    text = Comparison("device", None, actual_info="cuda:0", expected_info="cpu").message()
    assert text == "not bit-exact: devices differ\n actual:   cuda:0\n expected: cpu"


def test_custom_msg_is_prepended() -> None:
    with pytest.raises(BitMismatchError, match=r"^pam_mul\(bf16\) vs oracle\nnot bit-exact"):
        assert_bit_exact(np.float32(1.0), np.float32(2.0), msg="pam_mul(bf16) vs oracle")


def test_is_an_assertion_error() -> None:
    assert issubclass(BitMismatchError, AssertionError)


# ---- bad arguments -------------------------------------------------------------------


def test_unknown_nan_mode_names_the_accepted_ones() -> None:
    with pytest.raises(ValueError, match=r"nan='payload' is not accepted; use one of \('class', 'bits'\)"):
        assert_bit_exact(np.float32(1.0), np.float32(1.0), nan="payload")


def test_unsigned_without_fmt_asks_for_fmt() -> None:
    with pytest.raises(TypeError, match="pass fmt="):
        assert_bit_exact(np.zeros(2, np.uint16), torch.zeros(2, dtype=torch.bfloat16))


def test_wrong_pattern_width_for_fmt() -> None:
    with pytest.raises(TypeError, match="bf16 bit patterns are uint16"):
        assert_bit_exact(np.zeros(2, np.uint32), np.zeros(2, np.uint16), fmt="bf16")


def test_signed_integer_arrays_are_rejected_with_advice() -> None:
    with pytest.raises(TypeError, match="unsigned-integer bit patterns together with fmt="):
        assert_bit_exact(np.zeros(2, np.int16), np.zeros(2, np.int16), fmt="bf16")
    with pytest.raises(TypeError, match=r"t\.view\(torch\.uint16\)"):
        assert_bit_exact(torch.zeros(2, dtype=torch.int16), np.zeros(2, np.uint16), fmt="bf16")


def test_nan_bits_across_formats_is_refused() -> None:
    with pytest.raises(ValueError, match="use check_dtype=True or nan='class'"):
        compare_bits(np.float32(1.0), 1.0, check_dtype=False, nan="bits")


# ---- devices -------------------------------------------------------------------------


def test_on_the_selected_device(device: str) -> None:
    actual = torch.tensor([1.0, -0.0], dtype=torch.bfloat16, device=device)
    assert_bit_exact(actual, np.array([0x3F80, 0x8000], np.uint16), fmt="bf16")
    with pytest.raises(BitMismatchError, match="1 / 2 elements differ"):
        assert_bit_exact(actual, np.array([0x3F80, 0x0000], np.uint16), fmt="bf16")


@pytest.mark.cuda
def test_cuda_tensor_against_cpu_tensor() -> None:
    on_gpu = torch.tensor([1.0, 2.0], device="cuda")
    assert_bit_exact(on_gpu, torch.tensor([1.0, 2.0]))
    with pytest.raises(BitMismatchError, match="devices differ") as info:
        assert_bit_exact(on_gpu, torch.tensor([1.0, 2.0]), check_device=True)
    assert info.value.reason == "device"
    with pytest.raises(BitMismatchError, match=r"0x3F800001"):
        assert_bit_exact(on_gpu, torch.tensor([np.nextafter(1.0, 2.0, dtype=np.float32), 2.0]))


# ---- tensors without dense data (issue 9) ---------------------------------------------


def test_sparse_tensor_is_a_clear_type_error() -> None:
    dense = torch.tensor([1.0, 0.0, 2.0])
    with pytest.raises(TypeError, match=r"layout torch\.sparse_coo.*to_dense\(\)"):
        assert_bit_exact(dense.to_sparse(), dense)
    with pytest.raises(TypeError, match=r"expected has layout torch\.sparse_coo"):
        compare_bits(dense, dense.to_sparse())


def test_meta_against_cpu_is_a_device_difference() -> None:
    meta, cpu = torch.empty(3, device="meta"), torch.zeros(3)
    comparison = compare_bits(meta, cpu)  # check_device=False: a meta side has nothing else to compare
    assert comparison.reason == "device"
    assert "meta" in comparison.actual_info and "no data" in comparison.actual_info
    with pytest.raises(BitMismatchError, match="devices differ") as raised:
        assert_bit_exact(cpu, meta)
    assert raised.value.reason == "device"


def test_meta_shape_and_dtype_are_still_compared_first() -> None:
    assert compare_bits(torch.empty(3, device="meta"), torch.zeros(4)).reason == "shape"
    assert compare_bits(torch.empty(3, device="meta"), torch.zeros(3, dtype=torch.float64)).reason == "dtype"


def test_two_meta_tensors_have_no_bits_to_compare() -> None:
    with pytest.raises(ValueError, match="no bits to compare"):
        assert_bit_exact(torch.empty(2, device="meta"), torch.empty(2, device="meta"))
