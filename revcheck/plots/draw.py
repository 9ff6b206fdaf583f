"""Drawing the pictures of :mod:`revcheck.plots.data` with matplotlib (the optional ``plots`` extra).

Every ``plot_*`` function takes the data object, draws it on a new
:class:`matplotlib.figure.Figure` (no pyplot, no global state, no display
needed), writes it to ``path`` when one is given (PNG or SVG, by the suffix),
and returns the figure, so that tests can read back exactly the arrays that were
drawn.  matplotlib is imported when a picture is drawn, never at import.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from revcheck.errors import UsageError
from revcheck.plots.data import (
    LEVELS,
    AuditSummaryData,
    BDIAReconstructionData,
    CoverageData,
    PamErrorData,
    PreservationData,
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "IMAGE_FORMATS",
    "plot_audit_summary",
    "plot_bdia_reconstruction",
    "plot_coverage",
    "plot_pam_error",
    "plot_preservation",
]

IMAGE_FORMATS = ("png", "svg")
_DPI = 110


def _figure(width: float, height: float) -> Figure:
    try:
        from matplotlib.figure import Figure
    except ModuleNotFoundError as error:
        raise ModuleNotFoundError(
            "revcheck.plots draws with matplotlib: pip install 'revcheck[plots]' (the data functions of "
            "revcheck.plots.data work without it)",
            name="matplotlib",
        ) from error
    return Figure(figsize=(width, height), dpi=_DPI, layout="constrained")


def _save(figure: Figure, path: str | Path | None) -> Figure:
    if path is None:
        return figure
    target = Path(path)
    suffix = target.suffix.lstrip(".").lower()
    if suffix not in IMAGE_FORMATS:
        raise UsageError(
            f"cannot write {target}: the picture formats are {', '.join(IMAGE_FORMATS)} (by suffix)"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    # SVG without a date and with fixed ids: regenerating a picture does not change its file needlessly.
    metadata: dict[str, Any] = {"Date": None} if suffix == "svg" else {"Software": None}
    figure.savefig(target, format=suffix, metadata=metadata)
    return figure


def plot_pam_error(data: PamErrorData | list[PamErrorData], path: str | Path | None = None) -> Figure:
    """Heat maps of the relative error over (Ma, Mb), one panel per op, the worst case marked."""
    panels = data if isinstance(data, list) else [data]
    figure = _figure(5.2 * len(panels), 4.4)
    axes = figure.subplots(1, len(panels), squeeze=False)[0]
    for axis, panel in zip(axes, panels, strict=True):
        low, high = (float(v) for v in panel.bounds)
        image = axis.imshow(
            panel.error,
            origin="lower",
            extent=(0.0, 1.0, 0.0, 1.0),
            cmap="viridis" if panel.op == "pam_mul" else "magma",
            vmin=low,
            vmax=high,
            interpolation="nearest",
        )
        axis.plot(
            [float(panel.worst_mb)], [float(panel.worst_ma)], marker="x", color="red", markersize=10, mew=2
        )
        symbol = "⊡" if panel.op == "pam_mul" else "⊘"
        axis.annotate(
            f"worst {panel.worst} at Ma={panel.worst_ma}, Mb={panel.worst_mb}",
            (float(panel.worst_mb), float(panel.worst_ma)),
            xytext=(0.02, 0.94),
            textcoords="axes fraction",
            color="white",
            fontsize=9,
        )
        axis.set_title(f"relative error of a {symbol} b, {panel.fmt}")
        axis.set_xlabel("Mb (b = 1 + Mb)")
        axis.set_ylabel("Ma (a = 1 + Ma)")
        figure.colorbar(image, ax=axis, label="(PA - exact) / exact")
    return _save(figure, path)


def plot_bdia_reconstruction(data: BDIAReconstructionData, path: str | Path | None = None) -> Figure:
    """Reconstruction error against depth: the float stack (log scale) next to the quantized stack."""
    figure = _figure(10.0, 4.0)
    left, right = figure.subplots(1, 2)
    left.semilogy(data.block_index, data.float_error, marker="o", color="tab:red")
    left.set_title(f"float BDIA, no quantizer ({data.dtype}, K={data.depth})", fontsize=10)
    left.set_xlabel("state k (reconstructed from the top: K-1 ... 0)")
    left.set_ylabel("max |reconstructed - forward|")
    left.invert_xaxis()
    left.annotate(
        f"x{data.growth_per_block:.2f} per block", (0.05, 0.9), xycoords="axes fraction", color="tab:red"
    )
    right.plot(data.block_index, data.quantized_error, marker="o", color="tab:green")
    right.set_ylim(-1.0, 1.0)
    right.set_title(f"BDIAStack (grid 2^-{data.l}), reversible backward", fontsize=10)
    right.set_xlabel("state k (reconstructed from the top: K-1 ... 0)")
    right.set_ylabel("max |reconstructed - forward|")
    right.invert_xaxis()
    exact = "every state bit-identical: error exactly 0" if not data.quantized_error.any() else "NOT exact"
    right.annotate(exact, (0.05, 0.9), xycoords="axes fraction", color="tab:green")
    return _save(figure, path)


def plot_coverage(data: CoverageData, path: str | Path | None = None) -> Figure:
    """Class-by-class grid: checked pairs (shade, log scale) and mismatching pairs (red text)."""
    figure = _figure(7.2, 6.2)
    axis = figure.subplots()
    shown = np.log10(np.maximum(data.checked, 1)).astype(np.float64)
    shown[data.checked == 0] = np.nan
    image = axis.imshow(shown, cmap="Blues", origin="upper")
    size = len(data.classes)
    axis.set_xticks(range(size), data.classes, rotation=60, ha="right")
    axis.set_yticks(range(size), data.classes)
    for i in range(size):
        for j in range(size):
            count, wrong = int(data.checked[i, j]), int(data.mismatches[i, j])
            if count == 0:
                axis.text(j, i, "-", ha="center", va="center", color="gray", fontsize=7)
                continue
            label = f"{count:,}" if not wrong else f"{count:,}\n{wrong:,} ✗"
            axis.text(j, i, label, ha="center", va="center", fontsize=6, color="red" if wrong else "black")
    axis.set_xlabel("class of b")
    axis.set_ylabel("class of a")
    axis.set_title(
        f"{data.op} [{data.fmt}, {data.mode}]: {data.total:,} pairs checked, "
        f"{data.total_mismatches:,} wrong\n{data.source}",
        fontsize=9,
    )
    figure.colorbar(image, ax=axis, label="log10 pairs checked")
    return _save(figure, path)


def plot_audit_summary(data: AuditSummaryData, path: str | Path | None = None) -> Figure:
    """Format-by-mode grid of an audit's verdicts: passed (green), failed (red), skipped (gray)."""
    from matplotlib.colors import ListedColormap

    figure = _figure(2.6 + 2.4 * len(data.modes), 1.2 + 0.55 * len(data.formats))
    axis = figure.subplots()
    colors = ListedColormap(["white", "#7bc47f", "#e06666", "#bbbbbb"])  # -1 .. 2
    axis.imshow(data.status, cmap=colors, vmin=-1.5, vmax=2.5, aspect="auto")
    axis.set_xticks(range(len(data.modes)), [f"mode={m}" for m in data.modes])
    axis.set_yticks(range(len(data.formats)), data.formats)
    for i in range(len(data.formats)):
        for j in range(len(data.modes)):
            axis.text(j, i, data.text[i][j], ha="center", va="center", fontsize=7)
    axis.set_title(f"audit of {data.candidate} as {data.op}", fontsize=9)
    return _save(figure, path)


def plot_preservation(data: PreservationData, path: str | Path | None = None) -> Figure:
    """The preservation matrix as a heat map: one colour per level reached, the pivot table's text in it."""
    import textwrap

    from matplotlib.colors import BoundaryNorm, ListedColormap

    figure = _figure(max(7.0, 3.5 + 1.3 * len(data.columns)), 1.6 + 0.42 * len(data.rows))
    axis = figure.subplots()
    colors = ListedColormap(["#1a9850", "#91cf60", "#d9ef8b", "#fee08b", "#fc8d59", "#d73027"][: len(LEVELS)])
    norm = BoundaryNorm(np.arange(-0.5, len(LEVELS)), colors.N)
    measured = np.ma.masked_less(data.level, 0)  # -1: not measured, left white
    image = axis.imshow(measured, cmap=colors, norm=norm, aspect="auto")
    axis.set_xticks(range(len(data.columns)), data.columns, rotation=35, ha="right", fontsize=8)
    axis.set_yticks(range(len(data.rows)), data.rows, fontsize=8)
    for i in range(len(data.rows)):
        for j in range(len(data.columns)):
            axis.text(j, i, data.text[i][j], ha="center", va="center", fontsize=6)
    bar = figure.colorbar(image, ax=axis, ticks=range(len(LEVELS)))
    bar.ax.set_yticklabels(list(LEVELS), fontsize=7)
    header = "\n".join(textwrap.wrap(data.header, 90))
    axis.set_title(f"function-preserving growths: the level each reaches\n{header}", fontsize=8)
    return _save(figure, path)
