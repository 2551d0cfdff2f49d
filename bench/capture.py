"""Capture cost against a plain forward pass over the same data, measured side by side.

    python bench/capture.py [--n 512] [--batch-size 64] [--repeats 5] [--device cpu] [--threads T]

Two measurements, each printed as the ratio capture / forward (goal: <= 1.10 on CPU):

1. batch-paired: ``capture()`` reads its batches from an iterable that, just before handing over
   each batch, runs a copy of the model on that same batch and times it. Capture's own time is the
   total minus those forward passes. Each batch's two passes run seconds apart at most, so a shared
   machine whose speed drifts (other jobs starting and stopping) hits both alike: the steady figure.
2. whole runs: the model alone over the data, then ``capture(...)``, interleaved and repeated in
   rotating order; medians of wall and process CPU time. Simple, but on a busy machine the speed
   changes between runs and these ratios wander by 10-30%.

Policies: sample="random" (``--per-image`` rows per image) and sample="all". Model: the shipped
kitchen model when its weights are present, else KitchenNet with random weights (the same cost per
image), else a small conv net defined here.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without install

from atlaswidgets.cache.capture import capture  # noqa: E402


class _SmallNet(nn.Module):
    """Fallback: four conv blocks on 64 px inputs, like the kitchen model."""

    def __init__(self, n_classes: int = 6):
        super().__init__()

        def block(c_in, c_out, pool):
            pre = [nn.MaxPool2d(2)] if pool else []
            return nn.Sequential(*pre, nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU())

        self.block1, self.block2 = block(3, 16, False), block(16, 32, True)
        self.block3, self.block4 = block(32, 64, True), block(64, 128, True)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, n_classes))

    def forward(self, x):
        return self.head(self.block4(self.block3(self.block2(self.block1(x)))))


def _model_and_data(n: int) -> tuple[nn.Module, torch.Tensor, torch.Tensor, str]:
    try:
        from atlaswidgets.zoo import kitchen
    except ImportError:
        kitchen = None
    if kitchen is not None:
        try:
            model, what = kitchen.model(), "kitchen.model() (shipped weights)"
        except (FileNotFoundError, OSError):
            model, what = kitchen.KitchenNet().eval(), "KitchenNet, random weights (no shipped weights yet)"
        data = kitchen.dataset(n, seed=12345)
        return model, data.images, data.labels, what + ", kitchen.dataset images"
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(n, 3, 64, 64, generator=gen)
    labels = torch.randint(0, 6, (n,), generator=gen)
    return _SmallNet().eval(), images, labels, "fallback conv net (bench/capture.py), random images"


def _forward(model: nn.Module, images: torch.Tensor, batch_size: int, device: torch.device) -> None:
    with torch.no_grad():
        for i in range(0, len(images), batch_size):
            model(images[i : i + batch_size].to(device))
    _sync(device)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


class _PairedBatches:
    """(images, labels) batches; before yielding each, times ``twin`` (a model copy) on it.

    A copy, because capture's hooks sit on the model it was given. ``dataset`` tells capture the
    size up front, as a DataLoader's does.
    """

    def __init__(self, twin: nn.Module, images, labels, batch_size: int, device: torch.device):
        self.twin, self.images, self.labels = twin, images, labels
        self.batch_size, self.device = batch_size, device
        self.dataset = range(len(images))
        self.forward_s = 0.0

    def __iter__(self):
        self.forward_s = 0.0
        for i in range(0, len(self.images), self.batch_size):
            batch = self.images[i : i + self.batch_size]
            start = time.perf_counter()
            with torch.no_grad():
                self.twin(batch.to(self.device))
            _sync(self.device)
            self.forward_s += time.perf_counter() - start
            yield batch, self.labels[i : i + self.batch_size]


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=512, help="images (default 512)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--layers", nargs="+", default=["block3", "block4"])
    parser.add_argument("--per-image", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    device = torch.device(args.device)
    model, images, labels, what = _model_and_data(args.n)
    model = model.to(device).eval()
    twin = copy.deepcopy(model)
    policies = ("random", "all")

    def run_capture(sample: str, data) -> None:
        capture(model, data, args.layers, sample=sample, per_image=args.per_image,
                batch_size=args.batch_size, device=device, progress=False)
        _sync(device)

    print(f"model: {what}")
    print(f"data: {args.n} images {tuple(images.shape[1:])}, batch {args.batch_size}, device {device}, "
          f"torch threads {torch.get_num_threads()}, layers {args.layers}, per_image {args.per_image}, "
          f"{args.repeats} repeats")
    _forward(model, images, args.batch_size, device)  # warm-up: allocator, oneDNN kernels
    _forward(twin, images, args.batch_size, device)
    ratios: dict[str, float] = {}

    # 1. batch-paired
    print("1. batch-paired (capture's own time / forward time of the same batches), median of repeats:")
    for sample in policies:
        paired = _PairedBatches(twin, images, labels, args.batch_size, device)
        run_capture(sample, paired)  # warm-up
        values = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            run_capture(sample, paired)
            total = time.perf_counter() - start
            values.append((total - paired.forward_s) / paired.forward_s)
        ratios[f"paired {sample}"] = statistics.median(values)
        spread = f"{min(values):.3f}..{max(values):.3f}"
        print(f"   capture {sample:<7} {statistics.median(values):.3f}   (range {spread})")

    # 2. whole runs
    steps = {"forward": lambda: _forward(model, images, args.batch_size, device)}
    steps.update({f"capture {p}": (lambda p=p: run_capture(p, (images, labels))) for p in policies})
    names = list(steps)
    for step in steps.values():
        step()
    wall: dict[str, list[float]] = {name: [] for name in names}
    cpu: dict[str, list[float]] = {name: [] for name in names}
    for r in range(args.repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:  # rotating order
            w, c = time.perf_counter(), time.process_time()
            steps[name]()
            wall[name].append(time.perf_counter() - w)
            cpu[name].append(time.process_time() - c)
    print("2. whole runs, medians (wall s, process CPU s) and ratios to the forward pass:")
    for name in names:
        mw, mc = statistics.median(wall[name]), statistics.median(cpu[name])
        line = f"   {name:<15} wall {mw:7.3f}  cpu {mc:7.3f}"
        if name != "forward":
            rw, rc = mw / statistics.median(wall["forward"]), mc / statistics.median(cpu["forward"])
            line += f"   ratio wall {rw:.3f}  cpu {rc:.3f}"
            ratios[f"whole {name}"] = rw
        print(line)
    return ratios


if __name__ == "__main__":
    main()
