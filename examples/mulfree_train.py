"""Train a tiny transformer with NO floating-point multiply, under the certificate, next to a standard one.

The multiplication-free model: PAMLinear (as the registered op revcheck::pam_linear)
for every linear map, PA attention (pa_bmm, pa_scale by the PA head_dim**-1/2,
pa_softmax with a per-row shift), PA layer norm, ReLU, PA dropout, PA
cross-entropy (in bits) and PA Adam with PA gradient clipping.  Every PA
training step runs under revcheck.mulfree.MulFreeMode in strict mode, descending
into the registered PA ops: one float multiply, divide or transcendental in
forward, backward or optimizer would stop the run with FloatMultiplyError.  The
standard model has the same architecture, the same initial parameters and sees
the same batches, with nn.Linear, float attention, nn.LayerNorm, nn.Dropout,
F.cross_entropy and torch.optim.Adam.  Losses are printed in nats (the PA loss,
in bits, is converted on the host for display only).

At the end: the certificate of the PA run, the static make_fx proof of one PA
step, and the same certificate in record mode over one ordinary PyTorch
training step, counting its float multiplies per phase.

    python examples/mulfree_train.py            # 40 steps, a few minutes on 2 CPU cores
    python examples/mulfree_train.py --quick    # smoke test, seconds
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

from revcheck.mulfree import Kind, MulFreeMode, prove_step  # noqa: E402
from revcheck.nn.mulfree import TinyTransformer, make_optimizer, training_step  # noqa: E402

DEFAULT_DATA = Path(__file__).resolve().parent / "data" / "public_domain_english.txt"
LN2 = math.log(2.0)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=None, help="training steps (default 40; 6 with --quick)")
    parser.add_argument("--d-model", type=int, default=None, help="width (default 32; 16 with --quick)")
    parser.add_argument("--heads", type=int, default=None, help="heads (default 2; 1 with --quick)")
    parser.add_argument("--depth", type=int, default=None, help="blocks (default 2; 1 with --quick)")
    parser.add_argument("--seq-len", type=int, default=None, help="context (default 16; 8 with --quick)")
    parser.add_argument("--batch", type=int, default=None, help="batch size (default 8; 4 with --quick)")
    parser.add_argument("--lr", type=float, default=1e-2, help="Adam learning rate (default 1e-2)")
    parser.add_argument("--dropout", type=float, default=0.1, help="dropout probability (default 0.1)")
    parser.add_argument(
        "--descend-every",
        type=int,
        default=1,
        help="check inside the PA ops every N steps (default 1: every step); the other steps "
        "are still strict, with the PA ops allowed by name",
    )
    parser.add_argument("--log-every", type=int, default=None, help="print losses every N steps")
    parser.add_argument("--seed", type=int, default=0, help="seed of initialisation, data order and dropout")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="a text file to train on")
    parser.add_argument("--quick", action="store_true", help="tiny model and few steps, for a smoke test")
    args = parser.parse_args(argv)
    quick = args.quick
    defaults = {
        "steps": (60, 6),
        "d_model": (32, 16),
        "heads": (2, 1),
        "depth": (2, 1),
        "seq_len": (16, 8),
        "batch": (8, 4),
    }
    for name, (full, small) in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, small if quick else full)
    args.log_every = args.log_every or max(1, min(10, args.steps // 4))
    if args.steps < 2 or args.descend_every < 1:
        parser.error("use --steps >= 2 and --descend-every >= 1")
    if args.d_model % args.heads:
        parser.error(f"--d-model {args.d_model} is not a multiple of --heads {args.heads}")
    tokens = args.batch * args.seq_len
    if tokens & (tokens - 1):
        print(
            f"note: batch x seq-len = {tokens} is not a power of two, so the PA mean of the loss is not an "
            "exact division",
            file=sys.stderr,
        )
    return args


def load_corpus(path: Path) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    text = path.read_text(encoding="utf-8")
    alphabet = sorted(set(text))
    code = {ch: i for i, ch in enumerate(alphabet)}
    stream = torch.tensor([code[ch] for ch in text], dtype=torch.long)
    split = int(0.9 * len(stream))
    return alphabet, stream[:split], stream[split:]


def batch_at(stream: torch.Tensor, offsets: torch.Tensor, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    windows = torch.stack([stream[o : o + seq_len + 1] for o in offsets.tolist()])
    return windows[:, :-1], windows[:, 1:]


@torch.no_grad()
def validation_nats(model: TinyTransformer, stream: torch.Tensor, args: argparse.Namespace) -> float:
    model.eval()
    starts = torch.arange(4 * args.batch) * ((len(stream) - args.seq_len - 2) // (4 * args.batch))
    losses = [model.loss(*batch_at(stream, chunk, args.seq_len)).item() for chunk in starts.split(args.batch)]
    model.train()
    scale = LN2 if model.arithmetic == "pa" else 1.0  # PA cross-entropy is in bits
    return scale * sum(losses) / len(losses)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    alphabet, train, val = load_corpus(args.data)
    config = (len(alphabet), args.d_model, args.heads, args.depth, args.seq_len)
    standard = TinyTransformer(*config, arithmetic="standard", dropout=args.dropout)
    pa = TinyTransformer(
        *config, arithmetic="pa", dropout=args.dropout, generator=torch.Generator().manual_seed(args.seed + 2)
    )
    pa.load_state_dict(standard.state_dict())
    same = all(torch.equal(p, q) for p, q in zip(pa.parameters(), standard.parameters(), strict=True))
    optimizers = {"pa": make_optimizer(pa, args.lr), "standard": make_optimizer(standard, args.lr)}
    parameters = sum(p.numel() for p in pa.parameters())
    print(f"data: {args.data.name}, {len(train)} train / {len(val)} val characters, vocab {len(alphabet)}")
    print(
        f"model: depth {args.depth}, d_model {args.d_model}, {args.heads} heads, seq {args.seq_len}, "
        f"batch {args.batch}, {parameters} parameters, dropout {args.dropout}, lr {args.lr}"
    )
    print(f"identical initialisation: {'yes' if same else 'NO'}")

    deep, shallow = MulFreeMode(), MulFreeMode(descend=False)
    order = torch.Generator().manual_seed(args.seed + 1)
    window: dict[str, list[float]] = {"pa": [], "standard": []}
    history: dict[str, list[float]] = {"pa": [], "standard": []}
    seconds = {"pa": 0.0, "standard": 0.0}
    progress = tqdm(range(1, args.steps + 1), desc="training", file=sys.stderr, leave=False)
    for step in progress:
        offsets = torch.randint(0, len(train) - args.seq_len - 1, (args.batch,), generator=order)
        inputs, targets = batch_at(train, offsets, args.seq_len)
        mode = deep if (step - 1) % args.descend_every == 0 else shallow
        start = time.perf_counter()
        with mode:  # strict: any float multiply in forward, backward or optimizer raises here
            loss = training_step(
                pa, optimizers["pa"], inputs, targets, optimizer_phase=lambda m=mode: m.phase("optimizer")
            )
        seconds["pa"] += time.perf_counter() - start
        window["pa"].append(loss.item() * LN2)  # bits -> nats, on the host, for display only
        start = time.perf_counter()
        loss = training_step(standard, optimizers["standard"], inputs, targets)
        seconds["standard"] += time.perf_counter() - start
        window["standard"].append(loss.item())
        if step % args.log_every == 0 or step == args.steps:
            means = {kind: sum(values) / len(values) for kind, values in window.items()}
            for kind in history:
                history[kind].append(means[kind])
            print(
                f"step {step:4d}  train loss (nats)  pa {means['pa']:.4f}  standard {means['standard']:.4f}",
                flush=True,
            )
            progress.set_postfix(pa=f"{means['pa']:.3f}", standard=f"{means['standard']:.3f}")
            window = {"pa": [], "standard": []}
    with deep:  # the PA forward of validation is certified too
        val_pa = validation_nats(pa, val, args)
    val_standard = validation_nats(standard, val, args)
    print(f"initial vocabulary-uniform loss (nats): {math.log(len(alphabet)):.4f}")
    print(f"final val loss (nats)  pa {val_pa:.4f}  standard {val_standard:.4f}")
    for kind in ("pa", "standard"):
        falling = history[kind][-1] < history[kind][0]
        print(
            f"loss falling {kind}: {'yes' if falling else 'NO'} "
            f"({history[kind][0]:.4f} -> {history[kind][-1]:.4f})"
        )
    ms = {kind: 1e3 * s / args.steps for kind, s in seconds.items()}
    print(
        f"time per step  pa {ms['pa']:.0f} ms (under the certificate)  standard {ms['standard']:.1f} ms  "
        f"(ratio {ms['pa'] / ms['standard']:.0f}x; see python -m revcheck.bench --only mulfree)"
    )

    print("\n== certificate of the multiplication-free run (strict, descending into every PA op) ==")
    print(deep.report.table())
    print(deep.report.certificate())
    if shallow.report.records:
        print(
            "steps checked with the PA ops allowed by name: "
            f"{shallow.report.count(kind=Kind.PA)} PA op calls, "
            f"{shallow.report.count(kind=Kind.MULTIPLY)} float multiplies"
        )
    constants = next(iter(optimizers["pa"].host_constants().values()))  # type: ignore[attr-defined]
    print(
        "declared host constants of the last PA Adam step (exact rationals, rounded once to fp32): "
        + ", ".join(f"{name}={value:.6g}" for name, value in constants.items())
    )

    offsets = torch.randint(0, len(train) - args.seq_len - 1, (args.batch,), generator=order)
    inputs, targets = batch_at(train, offsets, args.seq_len)

    def logged_pa_step() -> torch.Tensor:
        return training_step(pa, optimizers["pa"], inputs, targets) * LN2  # the nats conversion: monitoring

    print("\n== static proof of one PA training step (make_fx) ==")
    proof = prove_step(logged_pa_step)
    print(proof.summary())
    proof.assert_multiplication_free()

    print("\n== the same certificate in record mode over one ordinary PyTorch training step ==")
    print(
        "(python examples/mulfree_train.py: nn.Linear, float attention, nn.LayerNorm, nn.Dropout, "
        "F.cross_entropy, clip_grad_norm_ and torch.optim.Adam)"
    )
    with MulFreeMode(record=True) as record:
        training_step(
            standard,
            optimizers["standard"],
            inputs,
            targets,
            optimizer_phase=lambda: record.phase("optimizer"),
        )
    print(record.report.table(top=5))
    print(
        "float multiplies per phase: "
        + ", ".join(
            f"{phase} {record.report.count(kind=Kind.MULTIPLY, phase=phase)}"
            for phase in record.report.phases()
        )
    )
    return 0 if not deep.report.violations() and proof.multiplication_free else 1


if __name__ == "__main__":
    raise SystemExit(main())
