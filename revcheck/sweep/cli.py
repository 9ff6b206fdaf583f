"""The sweep's command line: ``revcheck sweep ...`` and ``python -m revcheck.sweep ...``.

``revcheck sweep campaign ...`` (and ``python -m revcheck.sweep campaign ...``) is the
campaign's own command line: :mod:`revcheck.sweep.campaign`.

Exit status: 0 every checked input matched, 1 some did not, 2 bad usage
(one line on stderr), 130 interrupted (Ctrl-C: the finished chunks are saved
when ``--state-dir`` is given, and the message says how to resume).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from revcheck.audit import registry
from revcheck.cli import (
    EXIT_COUNTEREXAMPLE,
    EXIT_INTERRUPTED,
    EXIT_OK,
    Parser,
    attach_option_values,
    run_command,
)
from revcheck.modes import MODES
from revcheck.sweep.config import SweepConfig, small_formats, validate
from revcheck.sweep.run import SweepInterrupted, format_summary, run_sweep

__all__ = ["PROG", "add_arguments", "config_from", "main", "parse_args", "run_from"]

PROG = "python -m revcheck.sweep"
DESCRIPTION = (
    "Exhaustive sweep: every input of an op in a small format (up to 2^32: binary ops on 8/16-bit formats, "
    "unary ops up to fp32), implementation vs the NumPy oracle.  `... sweep campaign --help`: every "
    "2^32 sweep in one command."
)


def _shard(text: str) -> tuple[int, int]:
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--shard {text!r} is not I/N (e.g. 0/4)") from None
    if count < 1:
        raise argparse.ArgumentTypeError(f"--shard {text}: N = {count} shards; use I/N with N >= 1")
    if index < 0:
        raise argparse.ArgumentTypeError(
            f"--shard {text}: the shard index {index} is negative; use I/N with 0 <= I < N"
        )
    if not 0 <= index < count:
        raise argparse.ArgumentTypeError(f"--shard {text}: use I/N with 0 <= I < N")
    return index, count


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The sweep's flags, on ``parser`` (the ``revcheck sweep`` subcommand or the module's own)."""
    parser.add_argument("--op", required=True, choices=list(registry.sweepable()))
    parser.add_argument("--format", required=True, choices=small_formats())
    parser.add_argument("--mode", default="ieee", choices=MODES)
    parser.add_argument("--impl", default="torch", choices=registry.implementation_names())
    parser.add_argument("--shard", type=_shard, default=(0, 1), metavar="I/N")
    parser.add_argument("--state-dir", type=Path, default=None, help="record finished chunks here; resume")
    parser.add_argument("--chunk-bits", type=int, default=None, help="log2 of inputs per chunk")
    parser.add_argument("--limit-chunks", type=int, default=None, help="run at most this many chunks now")
    parser.add_argument(
        "--workers",
        type=int,
        default=0,
        help="processes, or Dask workers with --scheduler local (default: one per CPU)",
    )
    parser.add_argument(
        "--scheduler",
        default=None,
        metavar="local|tcp://HOST:PORT",
        help="run chunks on Dask: a LocalCluster here, or the scheduler at this address "
        "(pip install 'revcheck[dask]')",
    )
    parser.add_argument("--block-bits", type=int, default=None, help="log2 of inputs per call (default 15)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--quiet", action="store_true", help="no progress display")


def config_from(args: argparse.Namespace) -> SweepConfig:
    """The validated :class:`SweepConfig` of parsed arguments; raises :class:`~revcheck.errors.UsageError`."""
    config = SweepConfig(
        op=args.op,
        format=args.format,
        mode=args.mode,
        impl=args.impl,
        shard=args.shard[0],
        num_shards=args.shard[1],
        state_dir=args.state_dir,
        chunk_bits=args.chunk_bits,
        limit_chunks=args.limit_chunks,
        workers=args.workers,
        device=args.device,
        quiet=args.quiet,
        scheduler=args.scheduler,
        block_bits=args.block_bits,
    )
    validate(config)
    return config


def parse_args(argv: Sequence[str] | None = None) -> SweepConfig:
    """The :class:`SweepConfig` of a command line; raises :class:`~revcheck.errors.UsageError` if bad."""
    parser = Parser(prog=PROG, description=DESCRIPTION)
    add_arguments(parser)
    return config_from(parser.parse_args(attach_option_values(argv, ("--shard",))))


def run_from(args: argparse.Namespace) -> int:
    """Run the sweep of parsed arguments, print its summary; the exit status.

    0 clean, 1 mismatches, 130 after Ctrl-C (with a line that says what was saved and how to resume).
    """
    try:
        result = run_sweep(config_from(args))
    except SweepInterrupted as interrupted:
        print(f"{PROG if args.command is None else 'revcheck sweep'}: {interrupted}", file=sys.stderr)
        return EXIT_INTERRUPTED
    print(format_summary(result))
    return EXIT_COUNTEREXAMPLE if result.mismatches else EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m revcheck.sweep``; returns the exit status (0 clean, 1 mismatches, 2 bad usage)."""

    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["campaign"]:
        from revcheck.sweep import campaign

        return campaign.main(args[1:], prog=f"{PROG} campaign")

    def command() -> int:
        parser = Parser(prog=PROG, description=DESCRIPTION)
        add_arguments(parser)
        parser.set_defaults(command=None)
        return run_from(parser.parse_args(attach_option_values(args, ("--shard",))))

    return run_command(PROG, command)
