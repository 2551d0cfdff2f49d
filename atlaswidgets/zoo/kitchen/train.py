"""Train KitchenNet on the kitchen world (CPU, minutes) and ship its weights as safetensors.

    python -m atlaswidgets.zoo.kitchen.train [--epochs N] [--n-train N] [--seed S] [--out PATH]

Deterministic given its seed (same machine, same torch, same thread count): the data are a
function of the seed, weights are initialised after ``torch.manual_seed``, batches come in an
order drawn from a seeded generator, and torch runs with deterministic algorithms.

Seeds used: training images ``dataset(n_train, seed)``, validation images
``dataset(n_val, seed + VAL_OFFSET)``. Evaluate on any other seed for a fresh test set.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ...cache.checks import int_at_least
from ...cache.hooks import as_model_input, eval_mode
from ..weights import save_weights
from .net import WEIGHTS, KitchenNet
from .world import CLASSES, render_range

VAL_OFFSET = 10_000


def _images(seed: int, n: int, size: int, chunk: int = 1000):
    """(uint8 images as a tensor (n, 3, size, size), int64 labels (n,))."""
    xs, ys = [], []
    for start in range(0, n, chunk):
        images, labels, _ = render_range(start, min(start + chunk, n), seed, size)
        xs.append(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous())
        ys.append(torch.from_numpy(labels))
    return torch.cat(xs), torch.cat(ys)


def _float(x_uint8: torch.Tensor) -> torch.Tensor:
    return x_uint8.float().div_(255.0)


@torch.no_grad()
def accuracy(net: nn.Module, images: torch.Tensor, labels: torch.Tensor,
             batch_size: int = 500) -> float:
    """Fraction of images (uint8 or float in [0, 1], shape (n, 3, H, W)) classified right."""
    right = 0
    with eval_mode(net):  # each submodule's mode back after, even on an error
        for start in range(0, len(images), batch_size):
            x = images[start:start + batch_size]
            x = _float(x) if x.dtype == torch.uint8 else x
            right += int((net(as_model_input(net, x)).argmax(1).cpu() == labels[start:start + batch_size]).sum())
    return right / len(images)


def train(n_train: int = 10_000, epochs: int = 6, seed: int = 0, batch_size: int = 64,
          lr: float = 3e-3, n_val: int = 1000, size: int = 64, log=print, *,
          data: tuple | None = None, init: dict | None = None):
    """Train a fresh KitchenNet; return (model in eval mode, history).

    n_train : training images, generated with ``dataset(n_train, seed)``
    epochs : passes over them; the learning rate follows one cosine cycle with a short warm-up
    n_val : validation images from seed ``seed + VAL_OFFSET`` (0 to skip validation)
    log : called with one line per epoch (``None`` for silence)
    data : optional ``(x_train, y_train, x_val, y_val)`` made by the caller instead of the
        kitchen world's (the planted-flaw worlds of ``experiments.audit``): x uint8 tensors,
        shape (n, 3, size, size), y int64 (n,); x_val/y_val may be None. n_train, n_val and
        size then come from them.
    init : optional state dict to start from (fine-tuning) instead of a random initialisation
    history : list of per-epoch dicts (epoch, loss, train_acc, val_acc, seconds)
    """
    n_train, epochs, batch_size, n_val, seed = (int_at_least(value, name, low) for name, value, low in (
        ("n_train", n_train, 1), ("epochs", epochs, 1), ("batch_size", batch_size, 1), ("n_val", n_val, 0),
        ("seed", seed, 0)))
    torch.use_deterministic_algorithms(True)
    t0 = time.perf_counter()
    if data is None:
        x_train, y_train = _images(seed, n_train, size)
        x_val, y_val = _images(seed + VAL_OFFSET, n_val, size) if n_val else (None, None)
    else:
        x_train, y_train, x_val, y_val = data
        n_train, n_val = len(x_train), (0 if x_val is None else len(x_val))
    if log:
        log(f"generated {n_train} + {n_val} images in {time.perf_counter() - t0:.1f} s")
    torch.manual_seed(seed)
    net = KitchenNet(len(CLASSES))
    if init is not None:
        net.load_state_dict(init)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=5e-4)
    steps_per_epoch = -(-n_train // batch_size)
    total = epochs * steps_per_epoch
    warm = max(1, total // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + np.cos(np.pi * min(s / total, 1.0))))
    order_gen = torch.Generator().manual_seed(seed)
    history = []
    for epoch in range(epochs):
        t_epoch = time.perf_counter()
        net.train()
        order = torch.randperm(n_train, generator=order_gen)
        flips = torch.rand(n_train, generator=order_gen) < 0.5
        loss_sum, right = 0.0, 0
        for start in range(0, n_train, batch_size):
            idx = order[start:start + batch_size]
            x = _float(x_train[idx])
            flip = flips[idx]
            # mirror half the images: the world has no left/right preference
            x[flip] = x[flip].flip(-1)
            y = y_train[idx]
            logits = net(x)
            loss = nn.functional.cross_entropy(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += float(loss.detach()) * len(idx)
            right += int((logits.argmax(1) == y).sum())
        row = {"epoch": epoch + 1, "loss": loss_sum / n_train, "train_acc": right / n_train,
               "val_acc": accuracy(net, x_val, y_val) if n_val else None,
               "seconds": time.perf_counter() - t_epoch}
        history.append(row)
        if log:
            val = f"{row['val_acc']:.3f}" if n_val else "-"
            log(f"epoch {epoch + 1}/{epochs}: loss {row['loss']:.3f} "
                f"train acc {row['train_acc']:.3f} val acc {val} ({row['seconds']:.0f} s)")
    return net.eval(), history


def save(net: nn.Module, path: str | Path, facts: dict | None = None) -> None:
    """Write the weights as safetensors (and ``facts`` as JSON beside them, same stem)."""
    save_weights(net, path, facts)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m atlaswidgets.zoo.kitchen.train",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--n-train", type=int, default=10_000)
    parser.add_argument("--n-val", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--out", type=Path, default=WEIGHTS,
                        help=f"weights file (default: the shipped {WEIGHTS.name})")
    args = parser.parse_args(argv)
    # check where the weights go before minutes of training, not after
    if args.out.suffix != ".safetensors":
        parser.error(f"--out must name a .safetensors file, got {args.out}")
    if args.out.exists() and args.out.is_dir():
        parser.error(f"--out {args.out} is a directory; name a .safetensors file inside it")
    t0 = time.perf_counter()
    net, history = train(args.n_train, args.epochs, args.seed, args.batch_size, args.lr,
                         args.n_val)
    seconds = time.perf_counter() - t0
    facts = {"seed": args.seed, "epochs": args.epochs, "n_train": args.n_train,
             "n_val": args.n_val, "batch_size": args.batch_size, "lr": args.lr,
             "val_seed": args.seed + VAL_OFFSET, "val_acc": history[-1]["val_acc"],
             "train_seconds": round(seconds, 1), "torch": torch.__version__,
             "threads": torch.get_num_threads(), "classes": CLASSES,
             "history": [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in h.items()}
                         for h in history]}
    save(net, args.out, facts)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.1f} MB) after {seconds:.0f} s")


if __name__ == "__main__":
    main()
