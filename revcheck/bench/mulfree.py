"""Multiplication-free training benchmarks: the PA step against the standard one, and the certificate's cost.

One tiny transformer (revcheck.nn.mulfree.TinyTransformer), one batch, one full
training step (forward, backward, gradient clipping, Adam) per call.  Every
ratio is measured INTERLEAVED: in each round the compared commands run back to
back, and the figure is the median over rounds of the per-round ratio, with the
min-max spread -- so load changes on a shared machine hit both sides alike.

    python -m revcheck.bench --only mulfree            # the README figures
    python -m revcheck.bench --only mulfree --quick    # a smoke test
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable

import torch

from revcheck.bench._harness import DEFAULT_PAIRS, QUICK_PAIRS, Row, interleaved, load_average, ratio_rows

TITLE = "multiplication-free training (CPU)"


def _row(
    case: str,
    candidate: Callable[[], object],
    baseline: Callable[[], object],
    *,
    rounds: int,
    loops: int = 1,
) -> Row:
    """The interleaved ratio candidate / baseline with its spread, and both median step times."""
    loads = [load_average()]
    samples = interleaved(
        {"candidate": candidate, "baseline": baseline},
        pairs=rounds,
        loops=loops,
        desc=f"mulfree: {case[:30]}",
    )
    loads.append(load_average())
    (row,) = ratio_rows(samples, "baseline", {"candidate": case}, loads=loads)
    t_candidate, t_baseline = (statistics.median(samples[k]) for k in ("candidate", "baseline"))
    row.figure += f"; {1e3 * t_candidate:.1f} vs {1e3 * t_baseline:.1f} ms"
    return row


def run(args: argparse.Namespace) -> list[Row]:
    """All rows, measured in this run; ``args.quick`` shrinks the model and the number of rounds."""
    from revcheck.mulfree import MulFreeMode
    from revcheck.nn.mulfree import TinyTransformer, make_optimizer, training_step

    quick = bool(getattr(args, "quick", False))
    vocab, d_model, heads, depth, seq_len, batch = (71, 16, 1, 1, 8, 4) if quick else (71, 32, 2, 2, 16, 8)
    rounds = QUICK_PAIRS if quick else DEFAULT_PAIRS
    torch.manual_seed(0)
    standard = TinyTransformer(vocab, d_model, heads, depth, seq_len, arithmetic="standard", dropout=0.1)
    pa = TinyTransformer(
        vocab,
        d_model,
        heads,
        depth,
        seq_len,
        arithmetic="pa",
        dropout=0.1,
        generator=torch.Generator().manual_seed(1),
    )
    pa.load_state_dict(standard.state_dict())
    optimizers = {"pa": make_optimizer(pa, 1e-3), "standard": make_optimizer(standard, 1e-3)}
    gen = torch.Generator().manual_seed(2)
    tokens = torch.randint(0, vocab, (batch, seq_len), generator=gen)
    targets = torch.randint(0, vocab, (batch, seq_len), generator=gen)
    shape = (
        f"depth {depth}, d {d_model}, seq {seq_len}, batch {batch}, fp32, {torch.get_num_threads()} threads"
    )

    def pa_step() -> None:
        training_step(pa, optimizers["pa"], tokens, targets)

    def standard_step() -> None:
        training_step(standard, optimizers["standard"], tokens, targets)

    def certified(
        step: Callable[[], None], *, record: bool = False, descend: bool = True
    ) -> Callable[[], None]:
        def run_under_mode() -> None:
            with MulFreeMode(record=record, descend=descend):
                step()

        return run_under_mode

    return [
        _row(f"PA step / standard step ({shape})", pa_step, standard_step, rounds=rounds),
        _row(
            "PA step under MulFreeMode (strict, descending into PA ops) / PA step",
            certified(pa_step),
            pa_step,
            rounds=rounds,
        ),
        _row(
            "PA step under MulFreeMode (strict, PA ops by name) / PA step",
            certified(pa_step, descend=False),
            pa_step,
            rounds=rounds,
        ),
        _row(
            "standard step under MulFreeMode (record) / standard step",
            certified(standard_step, record=True),
            standard_step,
            rounds=rounds,
            loops=3,
        ),
    ]
