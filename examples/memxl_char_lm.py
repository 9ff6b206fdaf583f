"""Train a small character-level Transformer-XL on the bundled text, with and without Skip Cross-head.

Two models start from the same parameters and read the same segments in the same order, carrying
their memories from segment to segment (the text is cut into ``--batch`` contiguous streams, as in
kimiyoung's ordered iterator):

* ``plain``: Transformer-XL, empty memories at the start, memories of the layer inputs;
* ``scxl``: the same model trained in two phases: phase 1 with skip-retain (layer ``l`` of ``L``
  skipped with probability ``0.5 l / L``, never the last) and cross-head (``--ch-prob``), phase 2
  (the last ``--phase2`` fraction of the steps) fine-tunes the same weights without them.

Both are evaluated in eval mode (no skipping, no permutation) over the validation text with
memories; the script prints bits per character, what one training step keeps for backward
(measured with saved-tensor hooks), and the time per step.

    python examples/memxl_char_lm.py            # 300 steps, a few minutes on 2 CPU cores
    python examples/memxl_char_lm.py --quick    # seconds: a smoke test
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # runnable from a checkout without installing
    sys.path.insert(0, str(REPO_ROOT))

from revcheck.bench.memxl import step_saved_bytes  # noqa: E402
from revcheck.nn.memxl import Memory, MemTransformerXL, TwoPhaseTrainer  # noqa: E402

DEFAULT_DATA = Path(__file__).resolve().parent / "data" / "public_domain_english.txt"
KINDS = ("plain", "scxl")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options; ``--quick`` shrinks everything for a smoke test."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--steps", type=int, default=None, help="training segments (default 300; 8 with --quick)"
    )
    parser.add_argument("--layers", type=int, default=None, help="layers (default 4; 2 with --quick)")
    parser.add_argument("--d-model", type=int, default=None, help="width (default 64; 16 with --quick)")
    parser.add_argument("--heads", type=int, default=4, help="attention heads (default 4)")
    parser.add_argument(
        "--segment", type=int, default=None, help="segment length (default 32; 8 with --quick)"
    )
    parser.add_argument(
        "--mem-len", type=int, default=None, help="memory rows per layer (default 32; 8 with --quick)"
    )
    parser.add_argument(
        "--batch", type=int, default=None, help="parallel streams (default 8; 2 with --quick)"
    )
    parser.add_argument("--lr", type=float, default=2e-3, help="Adam learning rate (default 2e-3)")
    parser.add_argument(
        "--ch-prob", type=float, default=0.1, help="cross-head probability in phase 1 (default 0.1)"
    )
    parser.add_argument(
        "--phase2", type=float, default=0.25, help="fraction of steps in phase 2 (default 0.25)"
    )
    parser.add_argument(
        "--eval-segments",
        type=int,
        default=None,
        help="validation segments per stream (default all; 4 with --quick)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed for parameters and random decisions")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="a text file to train on")
    parser.add_argument("--quick", action="store_true", help="tiny model and few steps, for a smoke test")
    args = parser.parse_args(argv)
    quick = args.quick
    for name, full, small in (
        ("steps", 300, 8),
        ("layers", 4, 2),
        ("d_model", 64, 16),
        ("segment", 32, 8),
        ("mem_len", 32, 8),
        ("batch", 8, 2),
    ):
        if getattr(args, name) is None:
            setattr(args, name, small if quick else full)
    if args.eval_segments is None and quick:
        args.eval_segments = 4
    if args.steps < 2:
        parser.error(f"--steps {args.steps}: use at least 2 (one per phase)")
    if args.d_model % args.heads:
        parser.error(f"--d-model {args.d_model} is not a multiple of --heads {args.heads}; use e.g. 64 and 4")
    if not 0.0 < args.phase2 < 1.0:
        parser.error(f"--phase2 {args.phase2}: use a fraction in (0, 1), e.g. 0.25")
    return args


def load_streams(path: Path, batch: int, segment: int) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    """Characters of the text, and train / validation token streams ``(batch, length)`` (90% / 10%)."""
    text = path.read_text(encoding="utf-8")
    alphabet = sorted(set(text))
    code = {ch: i for i, ch in enumerate(alphabet)}
    tokens = torch.tensor([code[ch] for ch in text], dtype=torch.long)
    split = int(0.9 * len(tokens))

    def streams(part: torch.Tensor) -> torch.Tensor:
        length = len(part) // batch
        if length < 2 * segment + 1:
            raise SystemExit(
                f"{path}: too short for {batch} streams of segments of {segment}; use a longer text"
            )
        return part[: length * batch].view(batch, length)

    return alphabet, streams(tokens[:split]), streams(tokens[split:])


def segment_at(stream: torch.Tensor, index: int, segment: int) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """Inputs and next-character targets of segment ``index`` (wrapping); True when the stream restarts."""
    count = (stream.shape[1] - 1) // segment
    start = (index % count) * segment
    return stream[:, start : start + segment], stream[:, start + 1 : start + segment + 1], index % count == 0


@torch.no_grad()
def evaluate_bpc(
    model: MemTransformerXL, stream: torch.Tensor, segment: int, limit: int | None = None
) -> float:
    """Bits per character over the stream (its first ``limit`` segments), with memories, in eval mode."""
    was_training = model.training
    model.eval()
    mems: Memory | None = None
    total, count = 0.0, 0
    count_segments = (stream.shape[1] - 1) // segment
    for index in range(count_segments if limit is None else min(limit, count_segments)):
        x, y, _ = segment_at(stream, index, segment)
        loss, mems = model.loss(x, y, mems)
        total += float(loss) * y.numel()
        count += y.numel()
    model.train(was_training)
    return total / count / math.log(2)


def main(argv: list[str] | None = None) -> int:
    """Train both models in lockstep; print bits per character, memory figures and step time."""
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    alphabet, train, val = load_streams(args.data, args.batch, args.segment)
    models = {}
    for kind in KINDS:
        torch.manual_seed(args.seed)  # the same parameters and the same random-decision seed for both
        models[kind] = MemTransformerXL(
            len(alphabet), args.layers, args.heads, args.d_model, mem_len=args.mem_len, dropout=0.0
        )
    same_init = all(
        torch.equal(p, q)
        for p, q in zip(models["plain"].parameters(), models["scxl"].parameters(), strict=True)
    )
    parameters = sum(p.numel() for p in models["plain"].parameters())
    phase1_steps = max(1, round(args.steps * (1 - args.phase2)))
    print(
        f"data: {args.data.name}, {train.numel()} train / {val.numel()} val characters, vocab {len(alphabet)}"
    )
    print(
        f"model: {args.layers} layers, d_model {args.d_model}, {args.heads} heads, segment {args.segment}, "
        f"mem_len {args.mem_len}, batch {args.batch}, {parameters} parameters"
    )
    print(
        f"scxl: phase 1 = steps 1-{phase1_steps} with skip-retain and cross-head (ch_prob {args.ch_prob}), "
        f"phase 2 = steps {phase1_steps + 1}-{args.steps} without"
    )
    print(f"identical initialisation: {'yes' if same_init else 'NO'}")

    trainers = {
        kind: TwoPhaseTrainer(
            model,
            torch.optim.Adam(model.parameters(), lr=args.lr),
            phase1_steps=phase1_steps if kind == "scxl" else 0,
            ch_prob=args.ch_prob,
        )
        for kind, model in models.items()
    }

    # Memory: what one phase-1 training step keeps for backward (memories full), over a few draws.
    draws = 3 if args.quick else 8
    x, y, _ = segment_at(train, 1, args.segment)
    warm, _, _ = segment_at(train, 0, args.segment)
    for kind, model in models.items():
        model.train()
        with torch.no_grad():
            mems = model(warm).mems
        state = model.generator.get_state()
        figures = [step_saved_bytes(model, mems, x, y) for _ in range(draws)]
        model.generator.set_state(state)  # the measurement does not change the training run's draws
        print(
            f"memory {kind:5s}: saved for backward per step {statistics.fmean(figures) / 1024:8.1f} KiB mean "
            f"(min {min(figures) / 1024:.1f}, max {max(figures) / 1024:.1f} over {draws} steps)"
        )

    seconds = {kind: [] for kind in KINDS}  # type: dict[str, list[float]]
    running = {kind: 0.0 for kind in KINDS}
    window = 0
    log_every = max(1, args.steps // 8)
    progress = tqdm(
        range(1, args.steps + 1), desc="training", unit="segment", file=sys.stderr, mininterval=1.0
    )
    for step in progress:
        x, y, restart = segment_at(train, step - 1, args.segment)
        for kind, trainer in trainers.items():
            if restart:
                trainer.reset_memory()
            start = time.perf_counter()
            loss = trainer.step(x, y)
            seconds[kind].append(time.perf_counter() - start)
            running[kind] += loss / math.log(2)
        window += 1
        if step % log_every == 0 or step == args.steps:
            tqdm.write(
                f"step {step:5d}  train bpc  plain {running['plain'] / window:.4f}  "
                f"scxl {running['scxl'] / window:.4f}  (scxl phase {1 if step <= phase1_steps else 2})"
            )
            running = {kind: 0.0 for kind in KINDS}
            window = 0
    progress.close()

    bpc = {kind: evaluate_bpc(model, val, args.segment, args.eval_segments) for kind, model in models.items()}
    print(f"final val bpc  plain {bpc['plain']:.4f}  scxl {bpc['scxl']:.4f}")
    # Both models step in turn on every segment, so the per-step ratio compares them under the same load.
    for phase, steps in ((1, slice(0, phase1_steps)), (2, slice(phase1_steps, None))):
        plain_ms = statistics.median(seconds["plain"][steps]) * 1e3
        scxl_ms = statistics.median(seconds["scxl"][steps]) * 1e3
        ratios = [a / b for a, b in zip(seconds["scxl"][steps], seconds["plain"][steps], strict=True)]
        print(
            f"time per step, phase {phase} (median)  plain {plain_ms:.1f} ms  scxl {scxl_ms:.1f} ms  "
            f"scxl / plain per step {statistics.median(ratios):.2f}x"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
