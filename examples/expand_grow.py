"""Grow a tiny character-level model while it trains: hidden 32 -> 128, MLP x4, one inserted layer.

A reference transformer (docs/spec.md §4) is trained on the bundled text, then
grown in three function-preserving steps with revcheck.expand:

1. ``expand_hidden`` 32 -> 128 (ratio 4: gains x 1/2, eps x 1/4; certified O),
2. ``expand_mlp`` x4 (new W2 rows 0; certified O),
3. ``insert_layer`` after the last layer (its W_O, W2, b2 = 0; certified O).

After each step the loss on a fixed evaluation batch is printed before and
after (no jump), with what was checked: level O (the declared-order oracle,
bit-exact: a proof for these inputs) and level K (this machine's kernels:
measured, and printed whatever it is).  Training then continues on the grown model.

    python examples/expand_grow.py            # about a minute on 2 CPU cores
    python examples/expand_grow.py --quick    # a few seconds
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

try:
    from tqdm import tqdm
except ImportError:  # progress bars are optional

    def tqdm(iterable, **_):  # type: ignore[no-redef]
        return iterable


REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # runnable from a checkout without installing
    sys.path.insert(0, str(REPO_ROOT))

from revcheck.expand import (  # noqa: E402
    FunctionNotPreservedError,
    assert_function_preserved,
    expand_hidden,
    expand_mlp,
    insert_layer,
)
from revcheck.nn.expand import ModelConfig, ReferenceTransformer  # noqa: E402

DEFAULT_DATA = Path(__file__).resolve().parent / "data" / "public_domain_english.txt"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps-before", type=int, default=None, help="steps before growing (default 200)")
    parser.add_argument("--steps-after", type=int, default=None, help="steps after growing (default 100)")
    parser.add_argument("--seq-len", type=int, default=None, help="context length (default 32)")
    parser.add_argument("--batch", type=int, default=None, help="batch size (default 16)")
    parser.add_argument("--lr", type=float, default=3e-3, help="AdamW learning rate (default 3e-3)")
    parser.add_argument("--seed", type=int, default=0, help="seed for init, data order and new parameters")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="a text file to train on")
    parser.add_argument("--quick", action="store_true", help="few steps, short context: a smoke test")
    args = parser.parse_args(argv)
    args.steps_before = args.steps_before if args.steps_before is not None else (20 if args.quick else 200)
    args.steps_after = args.steps_after if args.steps_after is not None else (20 if args.quick else 100)
    args.seq_len = args.seq_len if args.seq_len is not None else (16 if args.quick else 32)
    args.batch = args.batch if args.batch is not None else (4 if args.quick else 16)
    if min(args.steps_before, args.steps_after) < 1:
        parser.error("--steps-before and --steps-after must be positive")
    return args


def load_tokens(path: Path) -> tuple[list[str], torch.Tensor]:
    text = path.read_text(encoding="utf-8")
    alphabet = sorted(set(text))
    code = {ch: i for i, ch in enumerate(alphabet)}
    return alphabet, torch.tensor([code[ch] for ch in text], dtype=torch.long)


def batch(
    tokens: torch.Tensor, size: int, seq_len: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    starts = torch.randint(0, len(tokens) - seq_len - 1, (size,), generator=generator)
    window = torch.stack([tokens[s : s + seq_len + 1] for s in starts.tolist()])
    return window[:, :-1], window[:, 1:]


def train(
    model: ReferenceTransformer,
    tokens: torch.Tensor,
    steps: int,
    args: argparse.Namespace,
    generator: torch.Generator,
    label: str,
) -> list[float]:
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr)
    losses = []
    for _ in tqdm(range(steps), desc=label, leave=False):
        ids, targets = batch(tokens, args.batch, args.seq_len, generator)
        loss = model.loss(ids, targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(loss))
    return losses


def report_step(
    number: int,
    before: ReferenceTransformer,
    after: ReferenceTransformer,
    ids: torch.Tensor,
    targets: torch.Tensor,
) -> None:
    with torch.no_grad():
        loss_before, loss_after = float(before.loss(ids, targets)), float(after.loss(ids, targets))
    try:
        assert_function_preserved(before, after, ids, level="O")
        level_o = "holds"
    except FunctionNotPreservedError as error:
        level_o = "FAILS: " + str(error).splitlines()[1]
    try:
        assert_function_preserved(before, after, ids, level="K")
        level_k = "bit-exact"
    except FunctionNotPreservedError as error:
        assert error.comparison is not None
        comparison = error.comparison
        level_k = (
            f"{comparison.mismatch_count} of {comparison.total} logits differ (max {comparison.max_ulp} ulp)"
        )
    c = after.config
    print(
        f"growth step {number}: {after.growth_step.transformation} -> h={c.hidden} p={c.mlp} N={c.layers}, "
        f"{sum(p.numel() for p in after.parameters())} parameters"
    )
    print(
        f"  eval loss before {loss_before:.9f}  after {loss_after:.9f}  "
        f"difference {loss_after - loss_before:.1e}"
    )
    print(f"  certified level {after.growth_step.level}; level O: {level_o}; level K (this CPU): {level_k}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    alphabet, tokens = load_tokens(args.data)
    split = int(0.9 * len(tokens))
    train_tokens, val_tokens = tokens[:split], tokens[split:]
    config = ModelConfig(
        vocab=len(alphabet),
        max_len=args.seq_len,
        hidden=32,
        mlp=64,
        heads=2,
        qk=16,
        v=16,
        layers=1,
        eps=1e-5,
        activation="gelu",
    )
    model = ReferenceTransformer(config, seed=args.seed)
    data_order = torch.Generator().manual_seed(args.seed)
    eval_ids, eval_targets = batch(val_tokens, 8, args.seq_len, torch.Generator().manual_seed(args.seed + 1))

    losses = train(model, train_tokens, args.steps_before, args, data_order, "training h=32")
    print(
        f"trained {args.steps_before} steps: train loss {losses[0]:.4f} -> "
        f"{sum(losses[-10:]) / len(losses[-10:]):.4f}"
    )

    steps = [
        lambda m: expand_hidden(m, 128, seed=args.seed),
        lambda m: expand_mlp(m, 4 * m.config.mlp, seed=args.seed),
        lambda m: insert_layer(m, m.config.layers, seed=args.seed),
    ]
    for number, grow in enumerate(steps, start=1):
        grown = grow(model)
        report_step(number, model, grown, eval_ids, eval_targets)
        model = grown

    losses_after = train(model, train_tokens, args.steps_after, args, data_order, "training grown")
    with torch.no_grad():
        val = float(model.loss(eval_ids, eval_targets))
    print(
        f"trained the grown model {args.steps_after} more steps: train loss {losses_after[0]:.4f} -> "
        f"{sum(losses_after[-10:]) / len(losses_after[-10:]):.4f}; eval loss {val:.4f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
