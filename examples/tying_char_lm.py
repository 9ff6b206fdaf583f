"""Train a tiny character-level GPT while a Q-learning agent ties its layers, next to an untied one.

Both models start from the same parameters and see the same batches in the same order.  The
tied one runs the agent of docs/spec.md §5 (revcheck.nn.tying): every ``--steps-per-action``
steps it decides, for one layer, "independent" or "tie to layer j < i" with the declared
meaning ``--mode`` (share by default: one Parameter at both positions); its reward is the
decrease of validation log-perplexity on held-out text (the last 10% of the file).  The
untied baseline trains the same number of steps.  At the end: validation perplexities,
trainable parameters (per storage, and per Parameter object as the public code counts them),
the storage audit, and memory in two parts, persistent training state and activations.

    python examples/tying_char_lm.py            # about 2 minutes on 2 CPU cores
    python examples/tying_char_lm.py --quick    # smoke test, a few seconds
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # runnable from a checkout without installing
    sys.path.insert(0, str(REPO_ROOT))

from revcheck.audit.ops_tying import (  # noqa: E402
    audit_storage,
    count_parameters,
    count_parameters_per_object,
    measure_training_step,
)
from revcheck.nn.transformer import TinyGPT  # noqa: E402
from revcheck.nn.tying import (  # noqa: E402
    TIE_MODES,
    TyingAgent,
    TyingController,
    clipped_perplexity_reward,
    heldout_loss,
    train_with_agent,
)

DEFAULT_DATA = Path(__file__).resolve().parent / "data" / "public_domain_english.txt"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--episodes", type=int, default=None, help="agent episodes (default 30; 2 with --quick)"
    )
    parser.add_argument(
        "--steps-per-action", type=int, default=4, help="LM steps after each decision (default 4)"
    )
    parser.add_argument("--depth", type=int, default=None, help="layers (default 6; 3 with --quick)")
    parser.add_argument("--d-model", type=int, default=None, help="width (default 64; 16 with --quick)")
    parser.add_argument("--heads", type=int, default=4, help="attention heads (default 4)")
    parser.add_argument("--seq-len", type=int, default=None, help="context (default 32; 8 with --quick)")
    parser.add_argument("--batch", type=int, default=None, help="batch size (default 16; 4 with --quick)")
    parser.add_argument("--lr", type=float, default=3e-3, help="AdamW learning rate (default 3e-3)")
    parser.add_argument(
        "--mode", choices=TIE_MODES, default="share", help="meaning of every tie (default share)"
    )
    parser.add_argument(
        "--parameter-weight",
        type=float,
        default=0.0,
        help="reward bonus per fraction of layer parameters freed (default 0: perplexity only)",
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="torch intra-op threads (default 1: fastest for tiny models)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of init, batches and exploration")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="a text file")
    parser.add_argument("--quick", action="store_true", help="tiny sizes for a smoke test")
    args = parser.parse_args(argv)
    quick = args.quick
    args.episodes = args.episodes if args.episodes is not None else (2 if quick else 30)
    args.depth = args.depth if args.depth is not None else (3 if quick else 6)
    args.d_model = args.d_model if args.d_model is not None else (16 if quick else 64)
    args.seq_len = args.seq_len if args.seq_len is not None else (8 if quick else 32)
    args.batch = args.batch if args.batch is not None else (4 if quick else 16)
    if args.heads > args.d_model or args.d_model % args.heads:
        args.heads = 2 if args.d_model % 2 == 0 else 1
    if args.episodes < 1 or args.steps_per_action < 1 or args.depth < 2:
        parser.error("use --episodes >= 1, --steps-per-action >= 1 and --depth >= 2 (a tie needs two layers)")
    return args


def load_corpus(path: Path, seq_len: int) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    """Characters of the text, and the 90% / 10% train / held-out token streams."""
    text = path.read_text(encoding="utf-8")
    alphabet = sorted(set(text))
    code = {ch: i for i, ch in enumerate(alphabet)}
    tokens = torch.tensor([code[ch] for ch in text], dtype=torch.long)
    split = int(0.9 * len(tokens))
    if len(tokens) - split <= 4 * (seq_len + 1):
        raise SystemExit(
            f"{path} has {len(tokens)} characters; use a text over {50 * (seq_len + 1)} characters"
        )
    return alphabet, tokens[:split], tokens[split:]


def windows(stream: torch.Tensor, starts: list[int], seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    chunk = torch.stack([stream[s : s + seq_len + 1] for s in starts])
    return chunk[:, :-1], chunk[:, 1:]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    alphabet, train, val = load_corpus(args.data, args.seq_len)
    models = {
        kind: TinyGPT(len(alphabet), args.d_model, args.heads, args.depth, args.seq_len, seed=args.seed)
        for kind in ("tied", "untied")
    }
    same = all(
        torch.equal(p, q)
        for p, q in zip(models["tied"].parameters(), models["untied"].parameters(), strict=True)
    )
    optimizers = {kind: torch.optim.AdamW(m.parameters(), lr=args.lr) for kind, m in models.items()}
    tying = TyingController(models["tied"], optimizer=optimizers["tied"])
    agent = TyingAgent(args.depth)
    # Held-out text: fixed windows of the last 10%, never trained on; the reward is computed there.
    val_starts = torch.linspace(0, len(val) - args.seq_len - 2, 8 * args.batch).long().tolist()
    held_out = [
        windows(val, val_starts[k : k + args.batch], args.seq_len)
        for k in range(0, len(val_starts), args.batch)
    ]
    decisions_total = args.episodes * (args.depth - 1)
    steps = decisions_total * args.steps_per_action
    print(
        f"data: {args.data.name}, {len(train)} train / {len(val)} held-out characters, vocab {len(alphabet)}"
    )
    print(
        f"model: depth {args.depth}, d_model {args.d_model}, {args.heads} heads, seq {args.seq_len}, "
        f"batch {args.batch}; agent: {args.episodes} episodes x {args.depth - 1} decisions x "
        f"{args.steps_per_action} steps = {steps} steps, "
        f"mode {args.mode}, {args.threads} thread(s)"
    )
    print(f"identical initialisation: {'yes' if same else 'NO'}")

    def batches(seed: int):  # the same sequence of training windows for both models
        generator = torch.Generator().manual_seed(seed)
        while True:
            yield windows(
                train,
                torch.randint(0, len(train) - args.seq_len - 1, (args.batch,), generator=generator).tolist(),
                args.seq_len,
            )

    start = time.perf_counter()
    tied_batches = batches(args.seed + 1)
    decisions = train_with_agent(
        models["tied"],
        optimizers["tied"],
        tying,
        agent,
        train_batch=lambda: next(tied_batches),
        val_loss=lambda: heldout_loss(models["tied"], held_out),
        episodes=args.episodes,
        steps_per_action=args.steps_per_action,
        mode=args.mode,
        parameter_weight=args.parameter_weight,
        progress=True,
    )
    tied_seconds = time.perf_counter() - start
    from tqdm.auto import tqdm

    start = time.perf_counter()
    untied_batches = batches(args.seed + 1)
    for _ in tqdm(range(steps), desc="untied baseline", unit="step"):
        optimizers["untied"].zero_grad(set_to_none=True)
        models["untied"].loss(*next(untied_batches)).backward()
        optimizers["untied"].step()
    untied_seconds = time.perf_counter() - start

    for d in decisions:
        if d.layer == args.depth - 1:
            print(
                f"episode {d.episode + 1:3d}  state {list(d.state)}  val loss {d.val_loss_after:.4f}  "
                f"reward {d.reward:+.4f}  trainable {d.trainable_elements}  epsilon {d.epsilon:.3f}"
            )
    rewards = [d.reward for d in decisions]
    public = sorted({clipped_perplexity_reward(d.val_loss_before, d.val_loss_after) for d in decisions})
    print(
        f"rewards: {len(rewards)} decisions, {len(set(rewards))} distinct, "
        f"min {min(rewards):+.4f}, max {max(rewards):+.4f}; "
        f"the public clipped reward on the same decisions takes {len(public)} value(s): {public[:3]}"
    )
    print("ties: " + "; ".join(tying.describe()))
    val_loss = {kind: heldout_loss(m, held_out) for kind, m in models.items()}
    print(
        f"final val perplexity  tied {math.exp(val_loss['tied']):.3f}  "
        f"untied {math.exp(val_loss['untied']):.3f}  "
        f"(loss {val_loss['tied']:.4f} / {val_loss['untied']:.4f} nats)"
    )
    print(
        f"trainable parameters  tied {count_parameters(models['tied'], trainable=True)} "
        f"(per Parameter object {count_parameters_per_object(models['tied'], trainable=True)})  "
        f"untied {count_parameters(models['untied'], trainable=True)}"
    )
    report = audit_storage(models["tied"], optimizers["tied"])
    print(
        f"storage audit (tied): {'clean' if report.ok else report.problems()}; "
        f"aliased storages {len(report.aliased)}"
    )
    probe = windows(train, list(range(0, args.batch * args.seq_len, args.seq_len)), args.seq_len)
    for kind, model in models.items():
        memory = measure_training_step(
            model, optimizers[kind], lambda m=model: m.loss(*probe), inputs=list(probe)
        )
        p = memory.persistent
        print(
            f"memory {kind:6s}: persistent {p.total / 1024:8.1f} KiB "
            f"(parameters {p.parameter_bytes / 1024:.1f}, "
            f"gradients {p.gradient_bytes / 1024:.1f}, AdamW {p.optimizer_state_bytes / 1024:.1f}); "
            f"activations {memory.activation_bytes / 1024:8.1f} KiB"
        )
    print(
        f"time  tied {tied_seconds:.1f} s (with {len(decisions)} evaluations)  untied {untied_seconds:.1f} s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
