"""Train TinyLM on the text world (CPU, minutes) and ship its weights as safetensors.

    python -m atlaswidgets.zoo.text.train [--steps N] [--n-train N] [--seed S] [--out PATH]

Deterministic given its seed and thread count (fixed with ``--threads``, default 1): the corpus
is a function of the seed, weights are initialised after ``torch.manual_seed``, batches are drawn
from a seeded generator, and torch runs with deterministic algorithms.

Seeds used: training documents ``corpus(n_train, seed)``, validation ``corpus(n_val, seed +
VAL_OFFSET)``. Evaluate on any other seed (the model card uses 777) for fresh text.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ...cache.checks import int_at_least
from ...cache.hooks import eval_mode
from ..weights import save_weights
from .net import WEIGHTS, TinyLM
from .world import VOCAB, TextData, corpus

VAL_OFFSET = 10_000


def next_token_loss(logits: torch.Tensor, input_ids: torch.Tensor,
                    attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean cross-entropy of predicting token t + 1 at t over real targets, and the hit mask.

    logits (N, T, V), input_ids and attention_mask (N, T). Returns (loss, right) where right is
    (N, T - 1) bool, True where the argmax equals the next token (False where it is padding).
    """
    target = input_ids[:, 1:]
    real = attention_mask[:, 1:].bool()
    pred = logits[:, :-1]
    loss = nn.functional.cross_entropy(pred[real], target[real])
    return loss, (pred.argmax(-1) == target) & real


@torch.no_grad()
def evaluate_loss(net: nn.Module, data: TextData, batch_size: int = 500) -> dict:
    """{"loss", "accuracy", "tokens"}: next-token cross-entropy and top-1 accuracy over real targets."""
    total, right, count = 0.0, 0, 0
    with eval_mode(net):
        for s in range(0, len(data), batch_size):
            ids, mask = data.input_ids[s:s + batch_size], data.attention_mask[s:s + batch_size]
            loss, hit = next_token_loss(net(ids, mask), ids, mask)
            n = int(mask[:, 1:].sum())
            total += float(loss) * n
            right += int(hit.sum())
            count += n
    return {"loss": total / count, "accuracy": right / count, "tokens": count}


def train(n_train: int = 20_000, steps: int = 2000, seed: int = 0, batch_size: int = 64,
          lr: float = 3e-3, n_val: int = 1000, d_model: int = 96, n_layers: int = 2,
          n_heads: int = 4, log=print):
    """Train a fresh TinyLM; return (model in eval mode, history of per-log dicts)."""
    n_train, steps, batch_size, n_val, seed = (int_at_least(value, name, low) for name, value, low in (
        ("n_train", n_train, 1), ("steps", steps, 1), ("batch_size", batch_size, 1), ("n_val", n_val, 0),
        ("seed", seed, 0)))
    torch.use_deterministic_algorithms(True)
    t0 = time.perf_counter()
    data = corpus(n_train, seed)
    val = corpus(n_val, seed + VAL_OFFSET) if n_val else None
    if log:
        log(f"generated {n_train} + {n_val} documents in {time.perf_counter() - t0:.1f} s")
    torch.manual_seed(seed)
    net = TinyLM(len(VOCAB), d_model, n_layers, n_heads)
    decay = [p for n, p in net.named_parameters() if p.ndim == 2 and not n.startswith("pos")]
    rest = [p for n, p in net.named_parameters() if not (p.ndim == 2 and not n.startswith("pos"))]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05},
                             {"params": rest, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.98))
    warm = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + np.cos(np.pi * min(s / steps, 1.0))))
    gen = torch.Generator().manual_seed(seed)
    history, loss_sum, t_log = [], 0.0, time.perf_counter()
    every = max(1, steps // 10)
    net.train()
    for step in range(steps):
        idx = torch.randint(n_train, (batch_size,), generator=gen)
        ids, mask = data.input_ids[idx], data.attention_mask[idx]
        t = int(mask.sum(1).max())  # trim the padding every row of this batch has
        ids, mask = ids[:, :t], mask[:, :t]
        loss, _ = next_token_loss(net(ids, mask), ids, mask)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        sched.step()
        loss_sum += float(loss.detach())
        if (step + 1) % every == 0 or step + 1 == steps:
            row = {"step": step + 1, "train_loss": loss_sum / ((step % every) + 1),
                   "seconds": time.perf_counter() - t_log}
            if val is not None:
                v = evaluate_loss(net, val)
                row.update(val_loss=v["loss"], val_acc=v["accuracy"])
                net.train()
            history.append(row)
            loss_sum, t_log = 0.0, time.perf_counter()
            if log:
                log(" ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                             for k, v in row.items()))
    return net.eval(), history


def save(net: TinyLM, path: str | Path, facts: dict | None = None) -> None:
    """Write the weights as safetensors (n_heads in its metadata) and ``facts`` as JSON beside."""
    save_weights(net, path, facts, metadata={"n_heads": str(net.blocks[0].attn.n_heads)})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m atlaswidgets.zoo.text.train",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--n-train", type=int, default=20_000)
    parser.add_argument("--n-val", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--d-model", type=int, default=96)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (fixed, so reruns give the same bytes)")
    parser.add_argument("--out", type=Path, default=WEIGHTS,
                        help=f"weights file (default: the shipped {WEIGHTS.name})")
    args = parser.parse_args(argv)
    # check where the weights go before minutes of training, not after
    if args.out.suffix != ".safetensors":
        parser.error(f"--out must name a .safetensors file, got {args.out}")
    if args.out.exists() and args.out.is_dir():
        parser.error(f"--out {args.out} is a directory; name a .safetensors file inside it")
    if args.threads < 1:
        parser.error(f"--threads must be >= 1, got {args.threads}")
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    net, history = train(args.n_train, args.steps, args.seed, args.batch_size, args.lr,
                         args.n_val, args.d_model, args.layers, args.heads)
    seconds = time.perf_counter() - t0
    facts = {"seed": args.seed, "steps": args.steps, "n_train": args.n_train,
             "n_val": args.n_val, "batch_size": args.batch_size, "lr": args.lr,
             "d_model": args.d_model, "n_layers": args.layers, "n_heads": args.heads,
             "val_seed": args.seed + VAL_OFFSET, "val_loss": history[-1].get("val_loss"),
             "val_acc": history[-1].get("val_acc"), "train_seconds": round(seconds, 1),
             "torch": torch.__version__, "threads": torch.get_num_threads(),
             "history": [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in h.items()}
                         for h in history]}
    save(net, args.out, facts)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB) after {seconds:.0f} s")


if __name__ == "__main__":
    main()
