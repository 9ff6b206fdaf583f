"""Run the benchmark families and print one table each (progress bars on stderr while they measure)."""

from __future__ import annotations

import argparse
import importlib
import platform
import sys
import time

import torch

from revcheck.bench._harness import describe_machine, print_table

FAMILIES = ("pam", "bdia", "tying", "expand", "mulfree", "memxl")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m revcheck.bench", description=__doc__)
    parser.add_argument("--only", choices=FAMILIES, action="append", help="run only these families")
    parser.add_argument("--quick", action="store_true", help="smaller sizes, fewer pairs, for a smoke test")
    args = parser.parse_args(argv)
    cuda = torch.cuda.get_device_name() if torch.cuda.is_available() else "no CUDA"
    print(
        f"# revcheck benchmarks: torch {torch.__version__}, {platform.machine()}, "
        f"{torch.get_num_threads()} threads, {cuda}, {describe_machine()}",
        flush=True,
    )
    families = args.only or FAMILIES
    for number, family in enumerate(families, start=1):
        module = importlib.import_module(f"revcheck.bench.{family}")
        print(f"[{number}/{len(families)}] measuring {module.TITLE} ...", file=sys.stderr, flush=True)
        start = time.perf_counter()
        rows = module.run(args)
        print_table(module.TITLE, rows)
        print(f"({family}: {time.perf_counter() - start:.0f} s, {describe_machine()})", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
