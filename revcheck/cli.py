"""The ``revcheck`` command line: ``revcheck audit MODULE:FUNCTION --op pam_mul --format bf16``.

Exit status: 0 when every check passed, 1 when a counterexample was found,
2 for a usage error (unimportable target, missing function, unknown op,
unsupported format or device), explained in one line on stderr.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import NoReturn

__all__ = ["EXIT_COUNTEREXAMPLE", "EXIT_OK", "EXIT_USAGE", "main"]

EXIT_OK = 0
EXIT_COUNTEREXAMPLE = 1
EXIT_USAGE = 2


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (and exit status 2), not the whole usage text."""

    def error(self, message: str) -> NoReturn:
        raise _UsageError(f"{message} (see `{self.prog} --help`)")


def _parser() -> _Parser:
    parser = _Parser(prog="revcheck", description="Bit-exact verification of PAM and BDIA kernels.")
    commands = parser.add_subparsers(dest="command", parser_class=_Parser)
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
    audit.add_argument("--mode", default="ieee", help="ieee (default), ftz or all (PAM ops only)")
    audit.add_argument(
        "--examples", type=int, default=None, help="Hypothesis examples per check (default 100)"
    )
    audit.add_argument("--exhaustive", action="store_true", help="also enumerate up to 2**32 inputs (slow)")
    audit.add_argument("--seed", type=int, default=None, help="seed Hypothesis (default: derandomized)")
    audit.add_argument("--time-budget", type=float, default=None, help="seconds for the whole audit")
    audit.add_argument("--determinism", action="store_true", help="also check run-to-run bit equality")
    audit.add_argument("--json", dest="json_path", metavar="PATH", help="also write the report as JSON here")
    commands.add_parser("ops", help="list the operations an audit knows, with the candidate signatures")
    return parser


def _audit(args: argparse.Namespace) -> int:
    from revcheck.audit import AuditUsageError, audit

    try:
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
    except AuditUsageError as error:
        raise _UsageError(str(error)) from None
    print(report)
    if args.json_path:
        try:
            with open(args.json_path, "w", encoding="utf-8") as handle:
                handle.write(report.to_json())
        except OSError as error:
            raise _UsageError(
                f"cannot write the JSON report to {args.json_path!r}: {error.strerror}"
            ) from None
    return EXIT_OK if report.passed else EXIT_COUNTEREXAMPLE


def _ops() -> int:
    from revcheck.audit.registry import REGISTRY

    for spec in REGISTRY.values():
        modes = f"; modes: {', '.join(spec.modes)}" if spec.modes else ""
        print(f"{spec.name}\n    {spec.signature}\n    {spec.summary}")
        print(f"    formats: {', '.join(spec.formats)}{modes}")
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (the console script exits with it)."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
        if args.command == "audit":
            return _audit(args)
        if args.command == "ops":
            return _ops()
        raise _UsageError("no command given; use `revcheck audit MODULE:FUNCTION --op OP` or `revcheck ops`")
    except _UsageError as error:
        print(f"revcheck: error: {error}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
