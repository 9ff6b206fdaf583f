"""The ``revcheck`` command line: ``revcheck audit``, ``revcheck ops``, ``revcheck sweep``, ``revcheck plot``.

::

    revcheck audit MODULE:FUNCTION --op pam_mul --format bf16   # audit a kernel
    revcheck ops                                                # the ops and their signatures
    revcheck sweep --op pam_mul --format bf16                   # = python -m revcheck.sweep ...
    revcheck plot all --out docs/images                         # the pictures (revcheck.plots.cli)

Exit status: 0 when every check passed, 1 when a counterexample was found,
2 for a usage error (unimportable target, missing function, unknown op,
unsupported format or device): every :class:`~revcheck.errors.UsageError`,
explained in one line on stderr (:func:`run_command`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from revcheck.errors import UsageError
from revcheck.modes import MODES

__all__ = ["EXIT_COUNTEREXAMPLE", "EXIT_OK", "EXIT_USAGE", "Parser", "main", "run_command"]

EXIT_OK = 0
EXIT_COUNTEREXAMPLE = 1
EXIT_USAGE = 2
PROG = "revcheck"


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is a :class:`~revcheck.errors.UsageError` (one line), not usage text."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def run_command(prog: str, command: Callable[[], int]) -> int:
    """Run ``command``; a :class:`~revcheck.errors.UsageError` becomes one line on stderr and exit status 2.

    Every revcheck command line (``revcheck ...``, ``python -m revcheck.sweep``) goes through here.
    """
    try:
        return command()
    except UsageError as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return EXIT_USAGE


def _parser() -> Parser:
    from revcheck.sweep import cli as sweep_cli

    parser = Parser(prog=PROG, description="Bit-exact verification of PAM and BDIA kernels.")
    commands = parser.add_subparsers(dest="command", parser_class=Parser)
    audit = commands.add_parser(
        "audit",
        help="audit a kernel against the oracle",
        description=(
            "Audit a kernel against revcheck's oracle: Hypothesis with TestFloat-style inputs, every input "
            "where that is cheap (8-bit formats, 16-bit unary ops), a minimal counterexample per failure."
        ),
    )
    audit.add_argument("target", help="the kernel: MODULE:FUNCTION or path/to/file.py:FUNCTION")
    audit.add_argument("--op", required=True, help="the operation it implements (see `revcheck ops`)")
    audit.add_argument(
        "--format",
        dest="formats",
        action="append",
        metavar="FORMAT",
        help="format to audit (repeatable, or 'all'; default: every format the op supports)",
    )
    audit.add_argument("--device", default="cpu", help="torch device: cpu (default), cuda, cuda:1 ...")
    audit.add_argument(
        "--mode", default="ieee", help=f"{' or '.join(MODES)} (default {MODES[0]}), or all (PAM ops only)"
    )
    audit.add_argument(
        "--examples",
        type=int,
        default=None,
        help="Hypothesis examples generated per check (default 100; shrinking a failure runs more cases)",
    )
    audit.add_argument("--exhaustive", action="store_true", help="also enumerate up to 2**32 inputs (slow)")
    audit.add_argument("--seed", type=int, default=None, help="seed Hypothesis (default: derandomized)")
    audit.add_argument("--time-budget", type=float, default=None, help="seconds for the whole audit")
    audit.add_argument("--determinism", action="store_true", help="also check run-to-run bit equality")
    audit.add_argument("--json", dest="json_path", metavar="PATH", help="also write the report as JSON here")
    commands.add_parser("ops", help="list the operations an audit knows, with the candidate signatures")
    sweep = commands.add_parser(
        "sweep", help="check every input of an 8/16-bit format", description=sweep_cli.DESCRIPTION
    )
    sweep_cli.add_arguments(sweep)
    from revcheck.plots import cli as plots_cli

    plot = commands.add_parser(
        "plot", help="draw results as PNG/SVG pictures", description=plots_cli.DESCRIPTION
    )
    plots_cli.add_arguments(plot)
    return parser


def _audit(args: argparse.Namespace) -> int:
    from revcheck.audit import audit

    report = audit(
        args.target,
        args.op,
        formats=args.formats,
        device=args.device,
        mode=args.mode,
        max_examples=args.examples,
        exhaustive=args.exhaustive,
        seed=args.seed,
        time_budget=args.time_budget,
        determinism=args.determinism,
    )
    print(report)
    if args.json_path:
        try:
            with open(args.json_path, "w", encoding="utf-8") as handle:
                handle.write(report.to_json())
        except OSError as error:
            raise UsageError(
                f"cannot write the JSON report to {args.json_path!r}: {error.strerror}"
            ) from None
    return EXIT_OK if report.passed else EXIT_COUNTEREXAMPLE


def _ops() -> int:
    from revcheck.audit.registry import REGISTRY

    for spec in REGISTRY.values():
        modes = f"; modes: {', '.join(spec.modes)}" if spec.modes else ""
        sweep = f"; sweep: {', '.join(spec.implementations)}" if spec.sweepable else ""
        print(f"{spec.name}\n    {spec.signature}\n    {spec.summary}")
        print(f"    formats: {', '.join(spec.formats)}{modes}{sweep}")
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (the console script exits with it)."""

    def command() -> int:
        args = _parser().parse_args(argv)
        if args.command == "audit":
            return _audit(args)
        if args.command == "ops":
            return _ops()
        if args.command == "sweep":
            from revcheck.sweep import cli as sweep_cli

            return sweep_cli.run_from(args)
        if args.command == "plot":
            from revcheck.plots import cli as plots_cli

            return plots_cli.run_from(args)
        raise UsageError(
            "no command given; use `revcheck audit MODULE:FUNCTION --op OP`, `revcheck ops` "
            "or `revcheck sweep --op OP --format FORMAT`"
        )

    return run_command(PROG, command)


if __name__ == "__main__":
    sys.exit(main())
