"""Run the benchmark families and print one table each."""

from __future__ import annotations

import argparse
import importlib
import platform

import torch

from revcheck.bench._harness import print_table

FAMILIES = ("pam", "bdia", "tying", "expand", "mulfree", "memxl")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m revcheck.bench", description=__doc__)
    parser.add_argument("--only", choices=FAMILIES, action="append", help="run only these families")
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke test")
    args = parser.parse_args(argv)
    cuda = torch.cuda.get_device_name() if torch.cuda.is_available() else "no CUDA"
    print(
        f"# revcheck benchmarks: torch {torch.__version__}, {platform.machine()}, "
        f"{torch.get_num_threads()} threads, {cuda}"
    )
    for family in args.only or FAMILIES:
        module = importlib.import_module(f"revcheck.bench.{family}")
        print_table(module.TITLE, module.run(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
