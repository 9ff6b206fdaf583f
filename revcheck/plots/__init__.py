"""Pictures of revcheck's results (the optional ``plots`` extra: ``pip install 'revcheck[plots]'``).

Each picture is a data function (:mod:`revcheck.plots.data`, no matplotlib) and
a drawing function (:mod:`revcheck.plots.draw`) that writes PNG or SVG::

    from revcheck import plots
    plots.plot_pam_error([plots.pam_error_data("bf16"), plots.pam_error_data("bf16", "pam_div")], "pam.png")
    plots.plot_bdia_reconstruction(plots.bdia_reconstruction_data(depth=24), "bdia.svg")

From the shell: ``revcheck plot all --out docs/images`` (every picture of the
README), or one of ``revcheck plot pam-error|bdia|coverage|audit|preservation``
(:mod:`revcheck.plots.cli`).
"""

from __future__ import annotations

from revcheck.plots.data import (
    LEVELS,
    AuditSummaryData,
    BDIAReconstructionData,
    CoverageData,
    PamErrorData,
    PreservationData,
    audit_summary_data,
    bdia_reconstruction_data,
    coverage_from_pairs,
    coverage_from_sweep,
    coverage_from_testfloat,
    pam_error_data,
    preservation_data,
    signed_classes,
)
from revcheck.plots.draw import (
    IMAGE_FORMATS,
    plot_audit_summary,
    plot_bdia_reconstruction,
    plot_coverage,
    plot_pam_error,
    plot_preservation,
)

__all__ = [
    "IMAGE_FORMATS",
    "LEVELS",
    "AuditSummaryData",
    "BDIAReconstructionData",
    "CoverageData",
    "PamErrorData",
    "PreservationData",
    "audit_summary_data",
    "bdia_reconstruction_data",
    "coverage_from_pairs",
    "coverage_from_sweep",
    "coverage_from_testfloat",
    "pam_error_data",
    "plot_audit_summary",
    "plot_bdia_reconstruction",
    "plot_coverage",
    "plot_pam_error",
    "plot_preservation",
    "preservation_data",
    "signed_classes",
]
