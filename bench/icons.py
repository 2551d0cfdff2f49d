"""Icons per second: batched render_icons vs one icon at a time, side by side in one run.

Two models: the kitchen model (64 px, block4) and a randomly initialised ResNet-like model at
224 px defined here (no ImageNet weights needed: speed does not depend on what the weights learned).
Both ways render the same directions with the same settings; only ``chunk`` differs (all
directions in one batch vs chunk=1). Absolute times on a shared machine are noise, so the ratio
is the number to read.

    python bench/icons.py [--icons 16] [--steps 32] [--device cpu] [--threads T]

``--threads`` sets torch's CPU threads (default: torch's choice, one per core): the ratio at 1
and at 2 threads shows how it grows with cores, since one small image leaves cores idle that a
batch keeps busy.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn

from atlaswidgets.render.fv import forward_layers
from atlaswidgets.render.icons import render_icons
from atlaswidgets.render.objectives import layer_vectors
from atlaswidgets.zoo import kitchen


class _Block(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.skip = (nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))
                     if stride != 1 or c_in != c_out else nn.Identity())

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(y)) + self.skip(x))


class SmallResNet(nn.Module):
    """ResNet-18-shaped, half width: 224 px input, layer3 is 128 x 14 x 14."""

    def __init__(self, n_classes: int = 1000, widths=(32, 64, 128, 256)):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, widths[0], 7, 2, 3, bias=False),
                                  nn.BatchNorm2d(widths[0]), nn.ReLU(), nn.MaxPool2d(3, 2, 1))
        c = widths[0]
        for i, w in enumerate(widths, start=1):
            stride = 1 if i == 1 else 2
            setattr(self, f"layer{i}", nn.Sequential(_Block(c, w, stride), _Block(w, w, 1)))
            c = w
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, n_classes))

    def forward(self, x):
        x = self.stem(x)
        for i in range(1, 5):
            x = getattr(self, f"layer{i}")(x)
        return self.head(x)


def _directions(model, layer, images):
    with torch.no_grad():
        out = forward_layers(model, (layer,), images)[layer]
    return layer_vectors(out, "center")


def _time(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _compare(name, model, layer, dirs, size, steps, device):
    n = len(dirs)
    kw = dict(size=size, steps=steps, progress=False, device=device, seed=0)
    render_icons(model, layer, dirs[:1], chunk=1, **dict(kw, steps=2))  # warm-up
    batched = _time(lambda: render_icons(model, layer, dirs, chunk=n, **kw))
    single = _time(lambda: render_icons(model, layer, dirs, chunk=1, **kw))
    print(f"{name:<28} {n:>3} icons x {steps} steps: batched {n / batched:7.2f} icons/s "
          f"({batched:6.1f} s), one at a time {n / single:7.2f} icons/s ({single:6.1f} s), "
          f"ratio {single / batched:5.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--icons", type=int, default=16)
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--steps224", type=int, default=8)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = ap.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    print(f"device {dev}, torch threads {torch.get_num_threads()}")

    net = kitchen.model().to(dev)
    images = kitchen.dataset(args.icons, seed=3).images.to(dev)
    _compare("kitchen 64 px, block4", net, "block4", _directions(net, "block4", images), 64,
             args.steps, dev)

    torch.manual_seed(0)
    res = SmallResNet().eval().to(dev)
    pics = torch.rand(args.icons, 3, 224, 224, generator=torch.Generator().manual_seed(0)).to(dev)
    _compare("ResNet-like 224 px, layer3", res, "layer3", _directions(res, "layer3", pics), 224,
             args.steps224, dev)


if __name__ == "__main__":
    main()
