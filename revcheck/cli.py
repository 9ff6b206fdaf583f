"""The ``revcheck`` command line: ``revcheck audit``, ``revcheck ops``, ``revcheck sweep``, ``revcheck plot``.

::

    revcheck audit MODULE:FUNCTION --op pam_mul --format bf16   # audit a kernel
    revcheck audit-stack MODULE:FORWARD --reconstruct MODULE:F  # audit a whole BDIA stack
    revcheck ops                                                # the ops and their signatures
    revcheck sweep --op pam_mul --format bf16                   # = python -m revcheck.sweep ...
    revcheck sweep campaign --state-dir sweeps                  # every 2**32 sweep, with a report
    revcheck plot all --out docs/images                         # the pictures (revcheck.plots.cli)

Exit status: 0 when every check passed, 1 when a counterexample was found,
2 for a usage error (unimportable target, missing function, unknown op,
unsupported format or device): every :class:`~revcheck.errors.UsageError`,
explained in one line on stderr (:func:`run_command`); 3 when no check failed
but not everything was checked (the time budget skipped or cut short some
check: verdict ``NOT CHECKED`` or ``INCOMPLETE``, never ``PASSED``); 130 after
Ctrl-C; 141 when the reader of stdout went away (``revcheck ... | head``: the
shell's code for a writer ended by SIGPIPE, 128 + 13; no traceback).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

from revcheck.errors import UsageError
from revcheck.modes import MODES

__all__ = [
    "EXIT_BROKEN_PIPE",
    "EXIT_COUNTEREXAMPLE",
    "EXIT_INTERRUPTED",
    "EXIT_NOT_CHECKED",
    "EXIT_OK",
    "EXIT_USAGE",
    "Parser",
    "attach_option_values",
    "check_output_directory",
    "check_output_file",
    "main",
    "run_command",
]

EXIT_OK = 0
EXIT_COUNTEREXAMPLE = 1
EXIT_USAGE = 2
#: Nothing failed, but not everything asked for was checked (time budget): never a pass.
EXIT_NOT_CHECKED = 3
#: Ctrl-C (SIGINT), as a shell reports a command it interrupted: 128 + 2.
EXIT_INTERRUPTED = 130
#: stdout's reader went away (``| head``), as a shell reports a writer ended by SIGPIPE: 128 + 13.
EXIT_BROKEN_PIPE = 141
PROG = "revcheck"


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is a :class:`~revcheck.errors.UsageError` (one line), not usage text."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def run_command(prog: str, command: Callable[[], int]) -> int:
    """Run ``command``; a :class:`~revcheck.errors.UsageError` becomes one line on stderr and exit status 2.

    Every revcheck command line (``revcheck ...``, ``python -m revcheck.sweep``) goes through here.
    A closed stdout (``revcheck audit ... | head``) ends the command quietly with
    :data:`EXIT_BROKEN_PIPE`; Ctrl-C ends it with :data:`EXIT_INTERRUPTED` and one line
    (a command that can say more, like the sweep, catches ``KeyboardInterrupt`` itself).
    """
    try:
        status = command()
        sys.stdout.flush()  # a closed pipe shows up here, while BrokenPipeError can still be caught
        return status
    except UsageError as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:
        # The standard recipe (Python docs, "Note on SIGPIPE"): point stdout at devnull so that the
        # interpreter's final flush does not raise again, and exit as a SIGPIPE'd writer would.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return EXIT_BROKEN_PIPE
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def attach_option_values(argv: Sequence[str] | None, options: Sequence[str]) -> list[str]:
    """``argv`` with ``--opt -1/2`` written ``--opt=-1/2`` for the ``options`` given.

    argparse reads a value that starts with ``-`` (and is not a plain negative number)
    as the next option, so ``--shard -1/2`` would be "expected one argument"; attached,
    the value reaches the option's own check, which says what is wrong with it.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    joined: list[str] = []
    index = 0
    while index < len(args):
        arg = args[index]
        if arg in options and index + 1 < len(args) and args[index + 1].startswith("-"):
            value = args[index + 1]
            if value[1:2].isdigit():
                joined.append(f"{arg}={value}")
                index += 2
                continue
        joined.append(arg)
        index += 1
    return joined


def _nearest_existing(path: Path) -> Path:
    """``path`` itself or its nearest ancestor that exists (``.`` for a relative path with none)."""
    for candidate in [path, *path.parents]:
        if candidate.exists():
            return candidate
    return Path(".")


def check_output_file(path_text: str | os.PathLike[str], what: str) -> Path:
    """``path`` if a file can be written there now, else :class:`~revcheck.errors.UsageError` saying why.

    Checked before any work, so that a bad path never costs (or hides) a result: the path
    must not be a directory, its folder must exist (as a folder, not under a file) and be writable.
    """
    path = Path(path_text)
    if path.is_dir():
        raise UsageError(
            f"{what} {str(path)!r} is a directory; give a file name, e.g. {path / 'report.json'}"
        )
    folder = path.parent
    existing = _nearest_existing(folder)
    if not existing.is_dir():
        raise UsageError(f"{what} {str(path)!r} lies under {str(existing)!r}, which is a file, not a folder")
    if existing != folder:
        raise UsageError(f"{what} {str(path)!r}: the folder {str(folder)!r} does not exist; create it first")
    if path.exists() and not os.access(path, os.W_OK):
        raise UsageError(f"{what} {str(path)!r} is not writable")
    if not os.access(folder, os.W_OK):
        raise UsageError(f"{what} {str(path)!r}: the folder {str(folder)!r} is not writable")
    return path


def check_output_directory(path_text: str | os.PathLike[str], what: str) -> Path:
    """``path`` if it is, or can be created as, a writable folder; else :class:`~revcheck.errors.UsageError`.

    Checked before any work: the path must not be a file nor lie under one, and the folder
    that would hold it must be writable.  Nothing is created here.
    """
    path = Path(path_text)
    existing = _nearest_existing(path)
    if not existing.is_dir():
        if existing == path:
            raise UsageError(f"{what} {str(path)!r} is a file, not a folder; give a folder (it is created)")
        raise UsageError(f"{what} {str(path)!r} lies under {str(existing)!r}, which is a file, not a folder")
    if not os.access(existing, os.W_OK):
        raise UsageError(f"{what} {str(path)!r}: {str(existing)!r} is not writable")
    return path


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
    stack = commands.add_parser(
        "audit-stack",
        help="audit a whole reversible BDIA stack: forward, reconstruction, gradients",
        description=(
            "Audit a whole BDIA stack (revcheck.audit.audit_stack): every state code and side bit against "
            "the oracle's forward, the reconstruction against the oracle's inverse, and the gradients bit "
            "for bit against a stored-activation run of the same blocks, over drawn depths, gamma patterns, "
            "weights, dropout seeds and magnitudes up to |X| < 2^62."
        ),
    )
    stack.add_argument("forward", help="the stack's forward: MODULE:FUNCTION or path/to/file.py:FUNCTION")
    stack.add_argument("--reconstruct", metavar="TARGET", help="its reconstruction from the top two states")
    stack.add_argument("--backward", metavar="TARGET", help="its training forward, whose autograd is checked")
    stack.add_argument("--blocks", metavar="TARGET", help="block family blocks(depth, width, seed, scale)")
    stack.add_argument("--cases", type=int, default=None, help="stacks to draw (default: 72)")
    stack.add_argument("--max-depth", type=int, default=8, help="deepest stack drawn (default 8)")
    stack.add_argument("--width", type=int, default=8, help="state width D (default 8)")
    stack.add_argument("--batch", type=int, default=3, help="samples B (default 3)")
    stack.add_argument("-l", type=int, default=None, dest="grid_bits", help="grid exponent (default 9)")
    stack.add_argument("--compute-dtype", default="fp32", help="fp32 (default) or fp64")
    stack.add_argument("--seed", type=int, default=None, help="draw other cases (default: the fixed ones)")
    stack.add_argument("--json", dest="json_path", metavar="PATH", help="also write the report as JSON here")
    commands.add_parser("ops", help="list the operations an audit knows, with the candidate signatures")
    sweep = commands.add_parser(
        "sweep",
        help="check every input of a small format (`revcheck sweep campaign`: every 2^32 sweep)",
        description=sweep_cli.DESCRIPTION,
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

    if args.json_path:
        check_output_file(args.json_path, "--json")
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
    status = {"passed": EXIT_OK, "failed": EXIT_COUNTEREXAMPLE}.get(report.verdict, EXIT_NOT_CHECKED)
    if args.json_path:
        try:
            with open(args.json_path, "w", encoding="utf-8") as handle:
                handle.write(report.to_json())
        except OSError as error:
            # Checked before the audit, so this is rare (the disk filled up, the folder went away);
            # the verdict is printed above, and the exit status says the report is missing.
            raise UsageError(
                f"cannot write the JSON report to {args.json_path!r}: {error.strerror} (the verdict above "
                f"stands: {report.verdict})"
            ) from None
    return status


def _audit_stack(args: argparse.Namespace) -> int:
    from revcheck.audit.stack import DEFAULT_CASES, audit_stack
    from revcheck.oracle.bdia import PAPER_L

    if args.json_path:
        check_output_file(args.json_path, "--json")
    report = audit_stack(
        args.forward,
        args.reconstruct,
        backward=args.backward,
        blocks=args.blocks,
        cases=DEFAULT_CASES if args.cases is None else args.cases,
        max_depth=args.max_depth,
        width=args.width,
        batch=args.batch,
        l=PAPER_L if args.grid_bits is None else args.grid_bits,
        compute_dtype=args.compute_dtype,
        seed=args.seed,
    )
    print(report)
    if args.json_path:
        with open(args.json_path, "w", encoding="utf-8") as handle:
            handle.write(report.to_json())
    return {"passed": EXIT_OK, "failed": EXIT_COUNTEREXAMPLE}.get(report.verdict, EXIT_NOT_CHECKED)


def _ops() -> int:
    from revcheck.audit.registry import MODEL_AUDITS, REGISTRY

    for spec in REGISTRY.values():
        modes = f"; modes: {', '.join(spec.modes)}" if spec.modes else ""
        sweep = f"; sweep: {', '.join(spec.implementations)}" if spec.sweepable else ""
        print(f"{spec.name}\n    {spec.signature}\n    {spec.summary}")
        print(f"    formats: {', '.join(spec.formats)}{modes}{sweep}")
    print("\nwhole-model audits (Python API; audit_stack also as `revcheck audit-stack`):")
    for model_audit in MODEL_AUDITS:
        print(f"{model_audit.name}  ({model_audit.function})\n    takes {model_audit.takes}")
        print(f"    proves {model_audit.proves}\n    level: {model_audit.levels}")
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (the console script exits with it)."""

    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:2] == ["sweep", "campaign"]:  # its own command line (revcheck.sweep.campaign)
        from revcheck.sweep import campaign

        return campaign.main(arguments[2:])

    def command() -> int:
        args = _parser().parse_args(attach_option_values(arguments, ("--shard",)))
        if args.command == "audit":
            return _audit(args)
        if args.command == "audit-stack":
            return _audit_stack(args)
        if args.command == "ops":
            return _ops()
        if args.command == "sweep":
            from revcheck.sweep import cli as sweep_cli

            return sweep_cli.run_from(args)
        if args.command == "plot":
            from revcheck.plots import cli as plots_cli

            return plots_cli.run_from(args)
        raise UsageError(
            "no command given; use `revcheck audit MODULE:FUNCTION --op OP`, `revcheck audit-stack "
            "MODULE:FORWARD`, `revcheck ops` or `revcheck sweep --op OP --format FORMAT`"
        )

    return run_command(PROG, command)


if __name__ == "__main__":
    sys.exit(main())
