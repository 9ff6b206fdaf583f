"""revcheck.plots.data: the numbers every picture draws, checked against revcheck's own checkers.

No matplotlib needed (``tests/plots/`` checks that the drawings show exactly these arrays).
"""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from revcheck import bits, formats, plots
from revcheck.audit import audit
from revcheck.errors import UsageError
from revcheck.exact import pam as exact
from revcheck.kernels import pam as kernels
from revcheck.sweep.config import SweepConfig
from revcheck.sweep.run import run_sweep

ROOT = Path(__file__).resolve().parents[1]
USER_KERNEL = f"{ROOT / 'examples' / 'audit_my_kernel.py'}:pam_mul"


# ---- PAM error maps ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["bf16", "fp16", "fp8_e4m3fnuz", "fp6_e2m3fn", "fp4_e2m1fn"])
def test_pam_mul_error_map_has_its_worst_case_minus_one_ninth_at_one_half(name: str) -> None:
    data = plots.pam_error_data(name, "pam_mul")
    fmt = formats.get(name)
    assert data.error.shape == (1 << fmt.mantissa_bits,) * 2
    assert (data.worst, data.worst_ma, data.worst_mb) == (Fraction(-1, 9), Fraction(1, 2), Fraction(1, 2))
    assert data.error.min() == float(Fraction(-1, 9)) and data.error.max() == 0.0
    half = 1 << (fmt.mantissa_bits - 1)
    assert data.error[half, half] == data.error.min()


def test_pam_div_error_map_lies_in_zero_one_eighth() -> None:
    data = plots.pam_error_data("bf16", "pam_div")
    assert data.worst == Fraction(1, 8) and (data.worst_ma, data.worst_mb) == (0, Fraction(1, 2))
    assert data.error.min() == 0.0 and data.error.max() <= float(Fraction(1, 8)) * (1 + 2**-50)


@pytest.mark.parametrize("op", ["pam_mul", "pam_div"])
def test_error_cells_are_the_exact_models(op: str) -> None:
    fmt = formats.get("fp6_e2m3fn")
    data = plots.pam_error_data(fmt, op)
    for i, j in [(0, 0), (3, 5), (7, 7), (4, 2)]:
        a, b = fmt.one | i, fmt.one | j
        got = bits.to_fraction(getattr(exact, op)(a, b, fmt), fmt)
        true = bits.to_fraction(a, fmt) * bits.to_fraction(b, fmt)
        if op == "pam_div":
            true = bits.to_fraction(a, fmt) / bits.to_fraction(b, fmt)
        assert abs(data.error[i, j] - float((got - true) / true)) <= 2**-50


def test_pam_error_data_refuses_what_it_cannot_draw() -> None:
    with pytest.raises(UsageError, match="use one of pam_mul, pam_div"):
        plots.pam_error_data("bf16", "pa_log2")
    with pytest.raises(UsageError, match="too many cells"):
        plots.pam_error_data("fp32")


# ---- BDIA ------------------------------------------------------------------------------------------


def test_bdia_float_error_doubles_per_block_and_the_quantized_stack_is_exact() -> None:
    data = plots.bdia_reconstruction_data(depth=16, width=32, batch=4)
    assert (data.quantized_error == 0).all() and data.quantized_error.shape == (15,)
    assert (data.float_error > 0).all()
    assert 1.7 < data.growth_per_block < 2.4, data.growth_per_block
    assert data.float_error[0] > 1000 * data.float_error[-1]  # state 0 is reconstructed last
    again = plots.bdia_reconstruction_data(depth=16, width=32, batch=4)
    np.testing.assert_array_equal(again.float_error, data.float_error)  # seeded


# ---- coverage ----------------------------------------------------------------------------------------


def test_coverage_from_pairs_counts_every_pair_once() -> None:
    fmt = formats.get("fp4_e2m1fn")
    a, b = (np.repeat(np.arange(16, dtype=np.uint8), 16), np.tile(np.arange(16, dtype=np.uint8), 16))
    wrong = (a == 0x3) & (b == 0x9)  # +1.5 with -0.5: +normal row, -subnormal column
    data = plots.coverage_from_pairs(fmt, "pam_mul", "ieee", a, b, wrong, "test")
    assert data.classes == ("-normal", "-subnormal", "-zero", "+zero", "+subnormal", "+normal")
    assert data.checked.sum() == 256 == data.total and data.mismatches.sum() == 1 == data.total_mismatches
    assert data.checked[data.classes.index("+normal"), data.classes.index("-subnormal")] == 6 * 1
    assert data.mismatches[data.classes.index("+normal"), data.classes.index("-subnormal")] == 1


def test_testfloat_coverage_of_the_real_kernel_is_clean_and_of_a_buggy_one_points_at_underflow() -> None:
    clean = plots.coverage_from_testfloat("pam_mul", "bf16", kernels.pam_mul)
    assert clean.total == clean.checked.sum() == 16_900 and clean.total_mismatches == 0
    from revcheck.audit.target import load_target

    buggy = plots.coverage_from_testfloat("pam_mul", "bf16", load_target(USER_KERNEL))
    assert buggy.total_mismatches == buggy.mismatches.sum() > 0
    rows, columns = np.nonzero(buggy.mismatches)
    involved = {buggy.classes[i] for i in rows} | {buggy.classes[j] for j in columns}
    assert involved <= {"+normal", "-normal", "+subnormal", "-subnormal"}  # underflow; specials are right
    # A kernel without a `mode` keyword implements the mode declared (docs/spec.md D2.10): the user's
    # kernel flushes nothing, so declared as an ftz kernel it is wrong on subnormal inputs as well.
    declared = plots.coverage_from_testfloat("pam_mul", "bf16", load_target(USER_KERNEL), mode="ftz")
    assert declared.mode == "ftz" and declared.total_mismatches > 0


def test_sweep_coverage_reads_a_state_directory(tmp_path: Path) -> None:
    config = SweepConfig("pam_div", "fp4_e2m1fn", "ftz", "torch", state_dir=tmp_path, workers=1, quiet=True)
    result = run_sweep(config)
    assert result.mismatches == 0 and result.inputs_checked == 256
    data = plots.coverage_from_sweep(tmp_path)
    assert (data.op, data.fmt, data.mode, data.total, data.total_mismatches) == (
        "pam_div",
        "fp4_e2m1fn",
        "ftz",
        256,
        0,
    )
    assert (data.checked > 0).all()  # every pair of classes reached
    # A recorded counterexample (as a sweep of a wrong kernel writes it) lands in its classes' cell.
    state_file = next(tmp_path.glob("*.jsonl"))
    header, record, *rest = state_file.read_text().splitlines()
    chunk = json.loads(record)
    chunk["mismatches"] = 7
    chunk["examples"] = [[0x3, 0x9, 0x0, 0x1]]
    state_file.write_text("\n".join([header, json.dumps(chunk), *rest]) + "\n")
    marked = plots.coverage_from_sweep(tmp_path)
    assert marked.total_mismatches == 7 and marked.mismatches.sum() == 1
    assert marked.mismatches[marked.classes.index("+normal"), marked.classes.index("-subnormal")] == 1


def test_sweep_coverage_explains_an_empty_or_ambiguous_directory(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no sweep state files"):
        plots.coverage_from_sweep(tmp_path)
    for fmt in ("fp4_e2m1fn", "fp6_e2m3fn"):
        run_sweep(SweepConfig("pam_mul", fmt, state_dir=tmp_path, workers=1, quiet=True))
    with pytest.raises(UsageError, match="holds several sweeps"):
        plots.coverage_from_sweep(tmp_path)
    assert plots.coverage_from_sweep(tmp_path, "pam_mul-fp6_e2m3fn-ieee-torch-chunk12").total == 4096


# ---- audit summary -------------------------------------------------------------------------------------


def test_audit_summary_of_a_buggy_kernel_and_of_skipped_formats() -> None:
    report = audit(USER_KERNEL, "pam_mul", formats=["bf16", "fp16"], max_examples=20, seed=0)
    data = plots.audit_summary_data(report)
    assert data.formats == ("bf16", "fp16") and data.modes == ("ieee",)
    assert (data.status == 1).all()  # failed
    assert all("normal" in text or "subnormal" in text for row in data.text for text in row)

    def no_fmt_keyword(a, b, *, mode="ieee"):  # type: ignore[no-untyped-def]
        return kernels.pam_mul(a, b, mode=mode)

    report = audit(no_fmt_keyword, "pam_mul", max_examples=5, seed=0)
    data = plots.audit_summary_data(report)
    skipped = {name for name, row in zip(data.formats, data.status, strict=True) if row[0] == 2}
    assert skipped == {"fp6_e3m2fn", "fp6_e2m3fn", "fp4_e2m1fn"}  # uint8 patterns need fmt= (D1.10)
    assert set(data.formats) - skipped == {n for n in formats.names() if formats.get(n).torch_dtype_name}
    assert (data.status[[data.formats.index(n) for n in data.formats if n not in skipped]] == 0).all()


# ---- the preservation matrix ----------------------------------------------------------------------------


def _cell(name: str, ratio: str, dtype: str, reached: str, code: str) -> SimpleNamespace:
    return SimpleNamespace(
        growth=SimpleNamespace(name=name, ratio=ratio), dtype=dtype, size="small", attention="explicit",
        reached=reached, code=code,
    )  # fmt: skip


def test_preservation_data_places_every_cell() -> None:
    cells = [
        _cell("expand_mlp", "x4", "fp32", "K bit-exact", "K"),
        _cell("expand_mlp", "x4", "bf16", "O only", "O (K 3)"),
        _cell("expand_hidden", "x1.5", "fp32", "R only", "R (O 1797)"),
    ]
    data = plots.preservation_data(cells)
    assert data.rows == ("expand_mlp x4", "expand_hidden x1.5")
    assert data.columns == ("fp32 small explicit", "bf16 small explicit")
    np.testing.assert_array_equal(data.level, [[0, 2], [3, -1]])
    assert data.text[1][0] == "R (O 1797)" and data.text[1][1] == ""


def test_preservation_data_from_a_real_quick_measurement() -> None:
    data = plots.preservation_data(quick=True)
    assert data.level.shape == (12, 1) and (data.level >= 0).all()
    assert plots.LEVELS[int(data.level[data.rows.index("expand_mlp x4"), 0])] == "K bit-exact"


# ---- the README's pictures ---------------------------------------------------------------------------------


def test_the_readme_shows_every_picture_that_plot_all_writes() -> None:
    from revcheck.plots.cli import README_PICTURES

    readme = (ROOT / "README.md").read_text()
    assert "revcheck plot all --out docs/images" in readme
    for stem in README_PICTURES:
        picture = ROOT / "docs" / "images" / f"{stem}.png"
        assert picture.stat().st_size < 200_000, f"{picture} is larger than 200 kB: keep the pictures small"
        assert f"](docs/images/{stem}.png)" in readme, f"the README does not show {stem}.png"
