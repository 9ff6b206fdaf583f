"""revcheck.plots.draw and ``revcheck plot``: the pictures show exactly the data arrays, as PNG and SVG.

Needs matplotlib (``pip install 'revcheck[plots]'``); skipped with the reason without it.
Pixels are never compared: each test reads back from the returned figure the
arrays and texts matplotlib was given and compares them with the data object.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("matplotlib", reason="matplotlib is not installed (pip install 'revcheck[plots]')")

from revcheck import plots
from revcheck.cli import EXIT_OK, EXIT_USAGE, main
from revcheck.errors import UsageError
from revcheck.kernels import pam as kernels


def _texts(figure: object) -> list[str]:
    return [text.get_text() for axis in figure.axes for text in axis.texts]  # type: ignore[attr-defined]


@pytest.mark.parametrize("suffix", ["png", "svg"])
def test_pam_error_map_draws_the_error_array_and_marks_the_worst_case(tmp_path: Path, suffix: str) -> None:
    panels = [plots.pam_error_data("bf16", "pam_mul"), plots.pam_error_data("bf16", "pam_div")]
    path = tmp_path / f"pam.{suffix}"
    figure = plots.plot_pam_error(panels, path)
    assert path.stat().st_size > 1000
    images = [axis.images[0] for axis in figure.axes if axis.images]
    assert len(images) == 2
    for image, panel in zip(images, panels, strict=True):
        np.testing.assert_array_equal(np.asarray(image.get_array()), panel.error)
        assert image.get_clim() == (float(panel.bounds[0]), float(panel.bounds[1]))
    marker = figure.axes[0].lines[0]
    assert (np.asarray(marker.get_xdata())[0], np.asarray(marker.get_ydata())[0]) == (0.5, 0.5)
    assert any("worst -1/9 at Ma=1/2, Mb=1/2" in text for text in _texts(figure))


def test_bdia_picture_draws_both_error_curves(tmp_path: Path) -> None:
    data = plots.bdia_reconstruction_data(depth=10, width=16, batch=2)
    figure = plots.plot_bdia_reconstruction(data, tmp_path / "bdia.svg")
    float_line, quantized_line = figure.axes[0].lines[0], figure.axes[1].lines[0]
    np.testing.assert_array_equal(float_line.get_ydata(), data.float_error)
    np.testing.assert_array_equal(quantized_line.get_ydata(), data.quantized_error)
    np.testing.assert_array_equal(quantized_line.get_xdata(), data.block_index)
    assert figure.axes[0].get_yscale() == "log"
    assert any("error exactly 0" in text for text in _texts(figure))


def test_coverage_picture_writes_every_count_and_mismatch() -> None:
    data = plots.coverage_from_testfloat("pam_mul", "fp8_e4m3fnuz", kernels.pam_mul)
    figure = plots.plot_coverage(data)
    shown = np.asarray(figure.axes[0].images[0].get_array())
    expected = np.log10(np.maximum(data.checked, 1)).astype(float)
    np.testing.assert_array_equal(
        np.where(data.checked > 0, shown, 0), np.where(data.checked > 0, expected, 0)
    )
    labels = [tick.get_text() for tick in figure.axes[0].get_xticklabels()]
    assert tuple(labels) == data.classes
    assert sorted(_texts(figure)) == sorted(f"{int(c):,}" if c else "-" for c in data.checked.ravel())


def test_coverage_picture_marks_mismatching_cells_in_red() -> None:
    fmt_pairs = np.repeat(np.arange(16, dtype=np.uint8), 16), np.tile(np.arange(16, dtype=np.uint8), 16)
    wrong = (fmt_pairs[0] == 0x3) & (fmt_pairs[1] == 0x9)
    data = plots.coverage_from_pairs("fp4_e2m1fn", "pam_mul", "ieee", *fmt_pairs, wrong, "test")
    figure = plots.plot_coverage(data)
    red = [t.get_text() for t in figure.axes[0].texts if t.get_color() == "red"]
    assert red == ["6\n1 ✗"]


def test_audit_summary_and_preservation_pictures_show_their_grids() -> None:
    results = [
        SimpleNamespace(format="bf16", mode="ieee", status="failed", elements=83, exhaustive=False,
                        counterexample=SimpleNamespace(labels=("+normal", "+normal"))),
        SimpleNamespace(format="fp4_e2m1fn", mode="ieee", status="skipped", elements=0, exhaustive=False,
                        counterexample=None),
    ]  # fmt: skip
    report = SimpleNamespace(op="pam_mul", candidate="k.py:pam_mul", results=results)
    data = plots.audit_summary_data(report)
    figure = plots.plot_audit_summary(data)
    np.testing.assert_array_equal(np.asarray(figure.axes[0].images[0].get_array()), data.status)
    assert _texts(figure) == ["83 elements\n+normal, +normal", "skipped"]
    cells = [
        SimpleNamespace(growth=SimpleNamespace(name="expand_mlp", ratio="x4"), dtype="fp32", size="small",
                        attention="explicit", reached="K bit-exact", code="K"),
        SimpleNamespace(growth=SimpleNamespace(name="expand_hidden", ratio="x1.5"), dtype="fp32",
                        size="small", attention="explicit", reached="R only", code="R (O 1797)"),
    ]  # fmt: skip
    matrix = plots.preservation_data(cells)
    figure = plots.plot_preservation(matrix)
    np.testing.assert_array_equal(np.asarray(figure.axes[0].images[0].get_array()), matrix.level)
    assert _texts(figure) == ["K", "R (O 1797)"]


def test_a_picture_needs_a_png_or_svg_path(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="the picture formats are png, svg"):
        plots.plot_pam_error(plots.pam_error_data("fp4_e2m1fn"), tmp_path / "pam.jpg")


def test_revcheck_plot_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "error.svg"
    assert main(["plot", "pam-error", "--fmt", "fp6_e2m3fn", "--out", str(out)]) == EXIT_OK
    assert out.read_text().startswith("<?xml") and str(out) in capsys.readouterr().out
    assert main(["plot", "nonsense"]) == EXIT_USAGE
    assert "invalid choice: 'nonsense'" in capsys.readouterr().err


def test_revcheck_plot_without_matplotlib_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert main(["plot", "bdia", "--out", str(tmp_path / "b.png")]) == EXIT_USAGE
    assert "pip install 'revcheck[plots]'" in capsys.readouterr().err
