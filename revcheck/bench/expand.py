"""The preservation matrix: transformation x ratio x dtype x kernel -> the level each growth reaches.

For every row a random base model (every parameter random, eps = 1e-5) is grown
and compared with itself at three levels:

* **K** — torch on this machine (CPU kernels: MKL / oneDNN matmuls, vectorised
  softmax, SDPA), bits of the logits: measured, never assumed;
* **O** — the declared-order oracle, bits of the logits;
* **R** — where O fails: the exact model (mpmath, 200 bits, exact growth
  factors from the certificate) on a tiny model grown by the same
  transformation and ratio (R does not depend on the size; the exact model is
  too slow for the measured sizes).

"level reached": ``K bit-exact`` (K and O), ``O only`` (O, not K: a finding
about the kernel), ``R only`` (not O, but R), ``broken`` (not even R).  Counts
are differing logits / all logits.  "small" keeps every matmul reduction at
most 256 long, "large" has reductions beyond 256 (up to 1280).

Run: ``python -m revcheck.bench.expand`` (markdown table; ``--quick`` for fewer
rows), or ``python -m revcheck.bench --only expand``.
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import torch

from revcheck.bench._harness import Row

TITLE = "Function-preserving expansions: the preservation matrix"

SIZES: dict[str, dict[str, int]] = {
    # every reduction (h, p, E*k per head k, E*v, T) <= 256 before and after growth
    "small": {"hidden": 16, "mlp": 64, "heads": 2, "qk": 8, "v": 8},
    # reductions beyond 256 after growth (hidden 768, mlp 1280, E*v 640, k 320 / 1280)
    "large": {"hidden": 192, "mlp": 320, "heads": 2, "qk": 80, "v": 160},
}
TINY = {"hidden": 4, "mlp": 8, "heads": 1, "qk": 2, "v": 2}
VOCAB, MAX_LEN, LAYERS, EPS, BATCH, TIME = 64, 16, 2, 1e-5, 2, 16


@dataclass(frozen=True)
class Growth:
    """One row's transformation: a label, its ratio text and how to apply it to a model."""

    name: str
    ratio: str
    apply: Callable[[Any], Any]


def _rebuild(model: Any, **changes: Any) -> Any:
    from revcheck.nn.expand import ReferenceTransformer

    params = {name: p.detach().clone() for name, p in model.named_parameters()}
    return ReferenceTransformer.from_parameters(model.config.replace(**changes), params)


def growths() -> list[Growth]:
    from revcheck.expand import (
        add_heads,
        expand_head_dim,
        expand_hidden,
        expand_mlp,
        expand_qk_dim,
        insert_layer,
    )

    def scaled(attribute: str, ratio: Fraction) -> Callable[[Any], int]:
        return lambda m: int(getattr(m.config, attribute) * ratio)

    def notebook_eps(m: Any) -> Any:
        return _rebuild(expand_hidden(m, 4 * m.config.hidden, seed=1), eps=m.config.eps)

    return [
        Growth("expand_mlp", "x4", lambda m: expand_mlp(m, scaled("mlp", Fraction(4))(m), seed=1)),
        Growth("expand_mlp", "x1.5", lambda m: expand_mlp(m, scaled("mlp", Fraction(3, 2))(m), seed=1)),
        Growth("add_heads", "2 -> 3", lambda m: add_heads(m, m.config.heads + 1, seed=1)),
        Growth("expand_head_dim", "x2", lambda m: expand_head_dim(m, 2 * m.config.v, seed=1)),
        Growth("expand_qk_dim", "x4", lambda m: expand_qk_dim(m, 4 * m.config.qk, seed=1)),
        Growth("expand_qk_dim", "x16", lambda m: expand_qk_dim(m, 16 * m.config.qk, seed=1)),
        Growth("expand_qk_dim", "x1.5", lambda m: expand_qk_dim(m, scaled("qk", Fraction(3, 2))(m), seed=1)),
        Growth("expand_hidden", "x4", lambda m: expand_hidden(m, 4 * m.config.hidden, seed=1)),
        Growth(
            "expand_hidden", "x1.5", lambda m: expand_hidden(m, scaled("hidden", Fraction(3, 2))(m), seed=1)
        ),
        Growth("expand_hidden", "x4, eps kept (notebook)", notebook_eps),
        Growth("insert_layer", "at 0", lambda m: insert_layer(m, 0, seed=1)),
        Growth("insert_layer", "at N", lambda m: insert_layer(m, m.config.layers, seed=1)),
    ]


def base_model(size: dict[str, int], dtype: torch.dtype, attention: str, seed: int = 0) -> Any:
    """A random base model: embeddings, weights, gains (around 1) and biases all drawn."""
    from revcheck.nn.expand import ModelConfig, ReferenceTransformer

    config = ModelConfig(
        vocab=VOCAB,
        max_len=MAX_LEN,
        layers=LAYERS,
        eps=EPS,
        activation="gelu",
        attention=attention,
        **size,  # type: ignore[arg-type]
    )
    model = ReferenceTransformer(config, dtype=dtype, seed=seed)
    generator = torch.Generator().manual_seed(seed + 100)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith(("norm1.weight", "norm2.weight")):
                parameter.copy_(
                    (1 + 0.3 * torch.randn(parameter.shape, generator=generator, dtype=torch.float64)).to(
                        dtype
                    )
                )
            elif name.endswith(("b1", "b2")):
                parameter.copy_(
                    (0.1 * torch.randn(parameter.shape, generator=generator, dtype=torch.float64)).to(dtype)
                )
    return model


@dataclass
class Cell:
    """What one row measured."""

    growth: Growth
    dtype: str
    size: str
    attention: str
    k_diff: tuple[int, int]
    o_diff: tuple[int, int]
    certified: str
    r_holds: bool
    seconds: float

    @property
    def reached(self) -> str:
        """The strongest level that holds, from the measurements (never from the certificate)."""
        k_equal, o_equal = self.k_diff[0] == 0, self.o_diff[0] == 0
        if self.r_holds is False:
            return "broken" if not (k_equal or o_equal) else "broken in R, bits equal here"
        if o_equal:
            return "K bit-exact" if k_equal else "O only"
        return "K bit-exact, not O" if k_equal else "R only"

    @property
    def code(self) -> str:
        """A short cell for the pivot table: the level reached and the count that separates it."""
        k, o = self.k_diff[0], self.o_diff[0]
        return {
            "K bit-exact": "K",
            "O only": f"O (K {k})",
            "R only": f"R (O {o})",
            "K bit-exact, not O": f"K, not O ({o})",
            "broken": f"broken (O {o})",
            "broken in R, bits equal here": f"broken in R (K {k}, O {o})",
        }[self.reached]


def _diff(before: Any, after: Any, ids: torch.Tensor, level: str) -> tuple[int, int]:
    from revcheck.expand import FunctionNotPreservedError, assert_function_preserved

    try:
        report = assert_function_preserved(before, after, ids, level=level, certificate=None)
        assert report.comparison is not None
        return 0, report.comparison.total
    except FunctionNotPreservedError as error:
        comparison = error.comparison
        assert comparison is not None and comparison.reason == "values"
        return comparison.mismatch_count, comparison.total


_R_CACHE: dict[tuple[str, str, str], bool] = {}


def _r_holds(growth: Growth, attention: str) -> bool:
    """Level R of the transformation itself, on a tiny fp64 model (exact factors from the certificate)."""
    from revcheck.expand import FunctionNotPreservedError, assert_function_preserved

    key = (growth.name, growth.ratio, attention)
    if key not in _R_CACHE:
        before = base_model(TINY, torch.float64, attention)
        after = growth.apply(before)
        certificate = getattr(after, "growth_certificate", None)
        ids = torch.arange(3).reshape(1, 3)
        try:
            assert_function_preserved(before, after, ids, level="R", certificate=certificate)
            _R_CACHE[key] = True
        except FunctionNotPreservedError:
            _R_CACHE[key] = False
    return _R_CACHE[key]


def measure(
    *,
    dtypes: tuple[str, ...] = ("fp32", "bf16", "fp64"),
    sizes: tuple[str, ...] = ("small", "large"),
    attentions: tuple[str, ...] = ("explicit", "sdpa"),
    progress: bool = True,
) -> Iterator[Cell]:
    """Measure every row (tqdm progress on stderr)."""
    from tqdm import tqdm

    from revcheck.expand import GrowthCertificate
    from revcheck.nn.expand import DTYPES

    plan = [(g, d, s, a) for s in sizes for a in attentions for d in dtypes for g in growths()]
    ids = torch.randint(0, VOCAB, (BATCH, TIME), generator=torch.Generator().manual_seed(3))
    models: dict[tuple[str, str, str], Any] = {}
    for growth, dtype, size, attention in tqdm(plan, desc="preservation matrix", disable=not progress):
        start = time.perf_counter()
        key = (dtype, size, attention)
        if key not in models:
            models[key] = base_model(SIZES[size], DTYPES[dtype], attention)
        before = models[key]
        after = growth.apply(before)
        certificate = getattr(after, "growth_step", None)
        certified = str(certificate.level) if isinstance(certificate, GrowthCertificate) else "-"
        if growth.ratio.endswith("(notebook)"):
            certified = "none (hand-made)"
        k_diff = _diff(before, after, ids, "K")
        o_diff = _diff(before, after, ids, "O")
        r_holds = _r_holds(growth, attention)
        yield Cell(
            growth, dtype, size, attention, k_diff, o_diff, certified, r_holds, time.perf_counter() - start
        )


def markdown(cells: list[Cell]) -> str:
    headers = (
        "transformation",
        "ratio",
        "dtype",
        "kernel",
        "K: differing",
        "O: differing",
        "certified",
        "level reached",
    )
    rows = [
        (
            c.growth.name,
            c.growth.ratio,
            c.dtype,
            f"{c.size}, {c.attention}",
            f"{c.k_diff[0]}/{c.k_diff[1]}",
            f"{c.o_diff[0]}/{c.o_diff[1]}",
            c.certified,
            c.reached,
        )
        for c in cells
    ]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def pivot(cells: list[Cell]) -> str:
    """One row per transformation and ratio, one column per dtype and kernel; cells are :attr:`Cell.code`."""
    columns = list(dict.fromkeys((c.dtype, c.size, c.attention) for c in cells))
    row_keys = list(dict.fromkeys((c.growth.name, c.growth.ratio) for c in cells))
    table = {((c.growth.name, c.growth.ratio), (c.dtype, c.size, c.attention)): c.code for c in cells}
    headers = [
        "transformation",
        "ratio",
        *(f"{d} {s} {'expl' if a == 'explicit' else a}" for d, s, a in columns),
    ]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    for key in row_keys:
        lines.append("| " + " | ".join([*key, *(table.get((key, col), "") for col in columns)]) + " |")
    return "\n".join(lines)


def header() -> str:
    return (
        f"torch {torch.__version__}, {platform.machine()}, {torch.get_num_threads()} threads, CPU kernels; "
        f"logits of a {LAYERS}-layer GELU model, batch {BATCH} x time {TIME} x vocab {VOCAB} "
        f"= {BATCH * TIME * VOCAB} elements, eps {EPS:g}"
    )


LEGEND = (
    "K: bit-exact on the kernel (and in the oracle). O (K n): oracle bit-exact, n logits differ on the "
    "kernel. "
    "R (O n): exact in real numbers only, n logits differ in the oracle. K, not O (n): the kernel is "
    "bit-exact "
    "where the declared order is not. broken: not even R (R checked on a tiny fp64 model, exact factors)."
)


def run(args: argparse.Namespace) -> list[Row]:
    """Rows for ``python -m revcheck.bench`` (``--quick``: fp32, small, explicit only)."""
    quick = bool(getattr(args, "quick", False))
    options: dict[str, Any] = (
        {"dtypes": ("fp32",), "sizes": ("small",), "attentions": ("explicit",)} if quick else {}
    )
    return [
        Row(
            f"{c.growth.name} {c.growth.ratio}, {c.dtype}, {c.size} {c.attention}",
            f"{c.reached} (K {c.k_diff[0]}/{c.k_diff[1]}, O {c.o_diff[0]}/{c.o_diff[1]} differ)",
        )
        for c in measure(progress=True, **options)
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m revcheck.bench.expand", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--quick", action="store_true", help="fp32, small, explicit attention only")
    parser.add_argument(
        "--long", action="store_true", help="one line per measurement instead of the pivot table"
    )
    args = parser.parse_args(argv)
    options: dict[str, Any] = (
        {"dtypes": ("fp32",), "sizes": ("small",), "attentions": ("explicit",)} if args.quick else {}
    )
    start = time.perf_counter()
    cells = list(measure(**options))
    print(header())
    print()
    print(markdown(cells) if args.long else pivot(cells))
    print()
    print(LEGEND)
    print()
    counts: dict[str, int] = {}
    for cell in cells:
        counts[cell.reached] = counts.get(cell.reached, 0) + 1
    print("rows by level reached: " + ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())))
    print(f"measured in {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
