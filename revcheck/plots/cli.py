"""``revcheck plot ...``: the pictures of :mod:`revcheck.plots` from the shell.

::

    revcheck plot all --out docs/images                  # every picture of the README (PNG)
    revcheck plot pam-error --fmt bf16 --out pam.svg     # PAM ⊡ and ⊘ relative error over (Ma, Mb)
    revcheck plot bdia --depth 24 --out bdia.png         # reconstruction error against depth
    revcheck plot coverage --state-dir sweeps/ --out c.png              # a sweep's class coverage
    revcheck plot coverage --kernel k.py:pam_mul --op pam_mul --fmt bf16  # TestFloat pairs on a kernel
    revcheck plot audit --kernel k.py:pam_mul --op pam_mul --fmt bf16 --fmt fp16
    revcheck plot preservation --quick --out matrix.png  # revcheck.bench.expand's matrix

Exit status 0; 2 for a usage error (bad arguments, matplotlib missing).
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from revcheck.cli import EXIT_OK
from revcheck.errors import UsageError
from revcheck.modes import MODES

__all__ = ["DESCRIPTION", "KINDS", "README_PICTURES", "add_arguments", "run_from", "write_all"]

DESCRIPTION = (
    "Draw revcheck's results as PNG or SVG pictures (needs matplotlib: pip install 'revcheck[plots]')."
)
KINDS = ("all", "pam-error", "bdia", "coverage", "audit", "preservation")
DEFAULT_KERNEL = "examples/audit_my_kernel.py:pam_mul"
# The pictures `revcheck plot all` writes, by file stem; the README shows them from docs/images/.
README_PICTURES = (
    "pam_error",
    "bdia_reconstruction",
    "coverage_sweep",
    "coverage_testfloat",
    "audit_summary",
    "preservation",
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``revcheck plot``."""
    parser.add_argument("kind", choices=KINDS, help="which picture ('all': every README picture)")
    parser.add_argument("--out", type=Path, default=None, help="file (.png/.svg); for 'all' a directory")
    parser.add_argument(
        "--image-format", choices=("png", "svg"), default="png", help="for 'all' (default png)"
    )
    parser.add_argument("--fmt", action="append", default=None, help="float format (repeatable for audit)")
    parser.add_argument("--op", default="pam_mul", help="op of coverage/audit (default pam_mul)")
    parser.add_argument("--mode", default="ieee", help=f"{' or '.join(MODES)} (audit: also 'all')")
    parser.add_argument(
        "--kernel", default=None, help=f"MODULE:FUNCTION or file.py:FUNCTION (default {DEFAULT_KERNEL})"
    )
    parser.add_argument("--state-dir", type=Path, default=None, help="coverage: a sweep's state directory")
    parser.add_argument("--key", default=None, help="coverage: which sweep of the state directory")
    parser.add_argument("--depth", type=int, default=24, help="bdia: blocks (default 24)")
    parser.add_argument("--examples", type=int, default=None, help="audit: Hypothesis examples per check")
    parser.add_argument("--quick", action="store_true", help="preservation: fp32, small, explicit rows only")


def run_from(args: argparse.Namespace) -> int:
    """Draw the picture(s) of parsed arguments; print the written paths."""
    try:
        import matplotlib  # noqa: F401
    except ModuleNotFoundError:
        raise UsageError("revcheck plot needs matplotlib: pip install 'revcheck[plots]'") from None
    if args.kind == "all":
        for path in write_all(
            args.out or Path("."), image_format=args.image_format, quick=args.quick, kernel=args.kernel
        ):
            print(path)
        return EXIT_OK
    out = args.out or Path(f"{args.kind.replace('-', '_')}.png")
    print(_draw_one(args, out))
    return EXIT_OK


def _draw_one(args: argparse.Namespace, out: Path) -> Path:
    from revcheck import plots

    fmt = (args.fmt or [None])[0]
    if args.kind == "pam-error":
        name = fmt or "bf16"
        plots.plot_pam_error(
            [plots.pam_error_data(name, "pam_mul"), plots.pam_error_data(name, "pam_div")], out
        )
    elif args.kind == "bdia":
        plots.plot_bdia_reconstruction(plots.bdia_reconstruction_data(depth=args.depth), out)
    elif args.kind == "coverage":
        if args.state_dir is not None:
            plots.plot_coverage(plots.coverage_from_sweep(args.state_dir, args.key), out)
        else:
            kernel = _load(args.kernel or DEFAULT_KERNEL)
            data = plots.coverage_from_testfloat(args.op, fmt or "bf16", kernel, mode=args.mode)
            plots.plot_coverage(data, out)
    elif args.kind == "audit":
        plots.plot_audit_summary(
            plots.audit_summary_data(_audit(args.kernel, args.op, args.fmt, args.mode, args.examples)), out
        )
    else:
        plots.plot_preservation(plots.preservation_data(quick=args.quick), out)
    return out


def _load(target: str) -> Callable[..., Any]:
    from revcheck.audit.target import load_target

    return load_target(target)


def _audit(kernel: str | None, op: str, fmts: list[str] | None, mode: str, examples: int | None) -> object:
    from revcheck.audit import audit

    return audit(kernel or DEFAULT_KERNEL, op, formats=fmts, mode=mode, max_examples=examples, seed=0)


def write_all(
    out_dir: Path, *, image_format: str = "png", quick: bool = False, kernel: str | None = None
) -> list[Path]:
    """Every README picture, in ``out_dir``: the :data:`README_PICTURES`, from real runs.

    The coverage of a sweep: ``pam_mul`` on every fp8_e4m3fnuz pair (torch kernel,
    a fresh state directory); the TestFloat coverage and the audit: ``kernel``
    (default :data:`DEFAULT_KERNEL`, a user's PAM multiply with a subnormal bug) on
    bf16 (and fp16, fp32 for the audit); the preservation matrix: every row of
    :mod:`revcheck.bench.expand` unless ``quick``.
    """
    from revcheck import plots
    from revcheck.sweep.config import SweepConfig
    from revcheck.sweep.run import run_sweep

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {stem: out_dir / f"{stem}.{image_format}" for stem in README_PICTURES}
    plots.plot_pam_error(
        [plots.pam_error_data("bf16", "pam_mul"), plots.pam_error_data("bf16", "pam_div")], paths["pam_error"]
    )
    plots.plot_bdia_reconstruction(plots.bdia_reconstruction_data(depth=24), paths["bdia_reconstruction"])
    with tempfile.TemporaryDirectory() as state_dir:
        config = SweepConfig(
            "pam_mul", "fp8_e4m3fnuz", "ieee", "torch", state_dir=Path(state_dir), workers=1, quiet=True
        )
        run_sweep(config)
        plots.plot_coverage(plots.coverage_from_sweep(state_dir), paths["coverage_sweep"])
    target = kernel or DEFAULT_KERNEL
    plots.plot_coverage(
        plots.coverage_from_testfloat("pam_mul", "bf16", _load(target)), paths["coverage_testfloat"]
    )
    report = _audit(target, "pam_mul", ["bf16", "fp16", "fp32"], "ieee", None)
    plots.plot_audit_summary(plots.audit_summary_data(report), paths["audit_summary"])
    plots.plot_preservation(plots.preservation_data(quick=quick), paths["preservation"])
    return list(paths.values())
