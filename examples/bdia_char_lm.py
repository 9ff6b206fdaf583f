"""Train a tiny character-level GPT with a reversible BDIA stack, next to a plain one.

Both models start from the same parameters and see the same batches in the same order; the
only difference is the residual stack: ``BDIAStack`` in reversible mode (γ = ±1/2 drawn per
sample and per block while training, activations on the grid 2**-l, only the top two states
plus side bits kept for backward) against ordinary autograd.  Evaluation uses γ = 0, i.e. the
unchanged architecture up to the activation quantizer.

    python examples/bdia_char_lm.py                 # 300 steps: about a minute on 2 idle CPU cores
    python examples/bdia_char_lm.py --quick --steps 5   # smoke test

Measured on the project's 2-core machine: about 160 ms per step for both models together
when the machine is idle (300 steps in under a minute), but 2 to 5 s per step while other
jobs load it (two torch threads then wait on each other: 300 steps take 10 minutes or
more; ``OMP_NUM_THREADS=1`` helps there).  A progress bar on stderr shows the rate and the
time left; the figures go to stdout.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # runnable from a checkout without installing
    sys.path.insert(0, str(REPO_ROOT))

from revcheck.bench.bdia import model_saved_bytes, stack_saved_bytes  # noqa: E402
from revcheck.nn.transformer import TinyGPT  # noqa: E402

DEFAULT_DATA = Path(__file__).resolve().parent / "data" / "public_domain_english.txt"
COMPARED_STACKS = ("bdia", "plain")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options; ``--quick`` shrinks the model for a smoke test."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=300, help="optimizer steps (default 300)")
    parser.add_argument(
        "--depth", type=int, default=None, help="number of blocks (default 6; 2 with --quick)"
    )
    parser.add_argument("--d-model", type=int, default=None, help="width (default 64; 32 with --quick)")
    parser.add_argument("--heads", type=int, default=4, help="attention heads (default 4)")
    parser.add_argument(
        "--seq-len", type=int, default=None, help="context length (default 32; 16 with --quick)"
    )
    parser.add_argument("--batch", type=int, default=None, help="batch size (default 16; 4 with --quick)")
    parser.add_argument("--lr", type=float, default=3e-3, help="AdamW learning rate (default 3e-3)")
    parser.add_argument("--dropout", type=float, default=0.0, help="dropout probability (default 0)")
    parser.add_argument("--l", type=int, default=9, help="BDIA fixed-point exponent: grid 2**-l (default 9)")
    parser.add_argument("--log-every", type=int, default=None, help="print losses every N steps")
    parser.add_argument("--seed", type=int, default=0, help="seed for init, data order and γ draws")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="a text file to train on")
    parser.add_argument("--quick", action="store_true", help="tiny model and data for a smoke test")
    args = parser.parse_args(argv)
    quick = args.quick
    # Defaults sized to finish in about a minute on 2 idle CPU cores (both losses fall clearly within
    # 300 steps); raise --depth / --seq-len / --steps for a longer run.
    args.depth = args.depth if args.depth is not None else (2 if quick else 6)
    args.d_model = args.d_model if args.d_model is not None else (32 if quick else 64)
    args.seq_len = args.seq_len if args.seq_len is not None else (16 if quick else 32)
    args.batch = args.batch if args.batch is not None else (4 if quick else 16)
    args.log_every = args.log_every if args.log_every is not None else max(1, min(50, args.steps // 6))
    if args.steps < 1:
        parser.error(f"--steps {args.steps}: use a positive number of steps, e.g. --steps 300")
    if args.d_model % args.heads:
        parser.error(f"--d-model {args.d_model} is not a multiple of --heads {args.heads}; use e.g. 64 and 4")
    return args


def load_corpus(path: Path, seq_len: int) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    """Characters of the text, and the 90% / 10% train / validation token streams."""
    text = path.read_text(encoding="utf-8")
    alphabet = sorted(set(text))
    code = {ch: i for i, ch in enumerate(alphabet)}
    tokens = torch.tensor([code[ch] for ch in text], dtype=torch.long)
    split = int(0.9 * len(tokens))
    if split <= seq_len + 1 or len(tokens) - split <= seq_len + 1:
        raise ValueError(
            f"{path} has {len(tokens)} characters; use a text over {20 * (seq_len + 1)} characters"
        )
    return alphabet, tokens[:split], tokens[split:]


def batch_at(stream: torch.Tensor, offsets: torch.Tensor, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and next-character targets for windows starting at ``offsets``."""
    windows = torch.stack([stream[o : o + seq_len + 1] for o in offsets.tolist()])
    return windows[:, :-1], windows[:, 1:]


@torch.no_grad()
def evaluate(model: TinyGPT, stream: torch.Tensor, seq_len: int, batch: int, batches: int = 8) -> float:
    """Mean loss over fixed, evenly spaced windows of ``stream`` (eval mode: γ = 0, no dropout)."""
    model.eval()
    starts = torch.linspace(0, len(stream) - seq_len - 2, batches * batch).long()
    losses = [model.loss(*batch_at(stream, chunk, seq_len)).item() for chunk in starts.split(batch)]
    model.train()
    return sum(losses) / len(losses)


def main(argv: list[str] | None = None) -> int:
    """Train both models in lockstep and print losses and memory figures."""
    args = parse_args(argv)
    torch.manual_seed(args.seed)  # dropout masks draw from the global RNG
    alphabet, train, val = load_corpus(args.data, args.seq_len)
    models = {
        kind: TinyGPT(
            len(alphabet),
            args.d_model,
            args.heads,
            args.depth,
            args.seq_len,
            stack=kind,
            dropout=args.dropout,
            l=args.l,
            seed=args.seed,
        )
        for kind in COMPARED_STACKS
    }
    same_init = all(
        torch.equal(p, q)
        for p, q in zip(models["bdia"].parameters(), models["plain"].parameters(), strict=True)
    )
    parameters = sum(p.numel() for p in models["plain"].parameters())
    print(f"data: {args.data.name}, {len(train)} train / {len(val)} val characters, vocab {len(alphabet)}")
    print(
        f"model: depth {args.depth}, d_model {args.d_model}, {args.heads} heads, seq {args.seq_len}, "
        f"batch {args.batch}, {parameters} parameters, l={args.l}, dropout {args.dropout}"
    )
    print(f"identical initialisation: {'yes' if same_init else 'NO'}")

    # Memory: what one training step's forward keeps for backward (parameters and inputs excluded).
    probe_x, probe_y = batch_at(train, torch.arange(args.batch) * args.seq_len, args.seq_len)
    for kind, model in models.items():
        hidden = model.embed(probe_x).detach().requires_grad_(True)
        stack = stack_saved_bytes(model, hidden)
        whole = model_saved_bytes(model, probe_x, probe_y)
        print(
            f"memory {kind:5s}: residual stack saves {stack.nbytes / 1024:9.1f} KiB for backward, "
            f"whole model {whole.nbytes / 1024:9.1f} KiB per step"
        )

    optimizers = {
        kind: torch.optim.AdamW(m.parameters(), lr=args.lr, weight_decay=0.0) for kind, m in models.items()
    }
    order = torch.Generator().manual_seed(args.seed + 1)
    running = {kind: 0.0 for kind in models}
    seconds = {kind: 0.0 for kind in models}
    window = 0
    train_loss = {kind: math.nan for kind in models}
    # The bar goes to stderr: stdout keeps the figures (tests and users read them).
    for step in tqdm(
        range(1, args.steps + 1), desc="training both", unit="step", file=sys.stderr, leave=False
    ):
        offsets = torch.randint(0, len(train) - args.seq_len - 1, (args.batch,), generator=order)
        inputs, targets = batch_at(train, offsets, args.seq_len)
        for kind, model in models.items():
            start = time.perf_counter()
            optimizers[kind].zero_grad(set_to_none=True)
            loss = model.loss(inputs, targets)
            loss.backward()
            optimizers[kind].step()
            seconds[kind] += time.perf_counter() - start
            running[kind] += loss.item()
        window += 1
        if step % args.log_every == 0 or step == args.steps:
            train_loss = {kind: running[kind] / window for kind in models}
            tqdm.write(
                f"step {step:5d}  train loss  bdia {train_loss['bdia']:.4f}  plain {train_loss['plain']:.4f}",
                file=sys.stdout,
            )
            sys.stdout.flush()
            running = {kind: 0.0 for kind in models}
            window = 0

    val_loss = {kind: evaluate(m, val, args.seq_len, args.batch) for kind, m in models.items()}
    print(f"final train loss  bdia {train_loss['bdia']:.4f}  plain {train_loss['plain']:.4f}")
    print(f"final val loss  bdia {val_loss['bdia']:.4f}  plain {val_loss['plain']:.4f}")
    per_step = {kind: 1e3 * seconds[kind] / args.steps for kind in models}
    print(
        f"time per step  bdia {per_step['bdia']:.1f} ms  plain {per_step['plain']:.1f} ms  "
        f"(ratio {per_step['bdia'] / per_step['plain']:.2f}x)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
