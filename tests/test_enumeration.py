"""revcheck.enumeration: the one enumeration of all inputs (audit exhaustive stage, sweep), chunks, shards."""

from __future__ import annotations

import numpy as np
import pytest

from revcheck import enumeration, formats
from revcheck.audit import registry
from revcheck.errors import UsageError


@pytest.mark.parametrize("num_shards", [1, 2, 3, 7, 64, 100])
def test_shards_cover_every_chunk_exactly_once(num_shards: int) -> None:
    n_chunks = 64
    taken = [c for shard in range(num_shards) for c in enumeration.shard_chunks(n_chunks, shard, num_shards)]
    assert sorted(taken) == list(range(n_chunks)), f"{num_shards} shards took {sorted(taken)}"


def test_a_shard_that_does_not_exist_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="0 <= I < N"):
        enumeration.shard_chunks(64, 2, 2)


def test_run_order_is_a_permutation_spread_over_the_space() -> None:
    order = enumeration.run_order(range(16), 16)
    assert sorted(order) == list(range(16))
    assert order[:4] == [0, 8, 4, 12], "a prefix of the run order should sample the whole input space"


@pytest.mark.parametrize(("fmt_name", "arity", "chunk_bits"), [("fp8_e4m3fn", 2, 10), ("fp8_e5m2", 1, 3)])
def test_chunks_enumerate_every_input_once_in_flat_index_order(
    fmt_name: str, arity: int, chunk_bits: int
) -> None:
    fmt = formats.get(fmt_name)
    operands = [np.stack(c) for c in enumeration.chunks(fmt, arity, chunk_bits)]
    assert all(o.dtype == fmt.uint_dtype for o in operands)
    flat = np.concatenate(operands, axis=1).astype(np.int64)
    index = np.zeros(flat.shape[1], dtype=np.int64)
    for digit in flat:  # most significant operand first: a = i >> w, b = i & (2**w - 1)
        index = index << fmt.width | digit
    assert np.array_equal(index, np.arange(1 << (arity * fmt.width))), "some input is missing or repeated"


def test_a_chunk_of_a_16_bit_binary_space_is_a_block_of_a_values_against_every_b() -> None:
    fmt = formats.get("bf16")
    a, b = enumeration.chunk(fmt, 2, 20, 3)  # 2**20 pairs: a in [48, 64), every b
    assert np.array_equal(np.unique(a), np.arange(48, 64))
    assert np.array_equal(b[: 1 << 16], np.arange(1 << 16)) and a[0] == 48 and a[-1] == 63


def test_sizes_and_bad_chunks() -> None:
    assert enumeration.input_bits("bf16", 2) == 32 and enumeration.input_bits("fp32", 1) == 32
    assert (
        enumeration.chunk_bits_for("fp8_e5m2", 2, 22) == 16
        and enumeration.chunk_bits_for("bf16", 2, 22) == 22
    )
    assert enumeration.total_chunks("bf16", 2, 20) == 1 << 12
    assert np.array_equal(enumeration.all_patterns("fp8_e5m2"), np.arange(256, dtype=np.uint8))
    with pytest.raises(ValueError, match="out of range"):
        enumeration.total_chunks("fp8_e5m2", 2, 17)
    with pytest.raises(ValueError, match="does not exist"):
        enumeration.chunk("fp8_e5m2", 2, 8, 256)


def test_the_audit_and_the_sweep_enumerate_alike() -> None:
    # The audit's exhaustive plan walks the same flat-index order as the sweep's chunks.
    from revcheck.sweep import SweepConfig, chunk_inputs, total_chunks

    fmt = formats.get("fp8_e4m3fn")
    plan = registry.get("pam_mul").exhaustive(fmt)
    assert plan is not None and plan.size == 1 << 16
    audited = [np.stack([case["a"], case["b"]]) for case in plan.chunks()]
    config = SweepConfig(op="pam_mul", format=fmt.name, chunk_bits=12)
    swept = [np.stack(chunk_inputs(config, c)) for c in range(total_chunks(config))]
    assert np.array_equal(np.concatenate(audited, axis=1), np.concatenate(swept, axis=1))
