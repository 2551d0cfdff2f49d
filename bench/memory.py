"""Peak memory of a capture against the bytes of the cache it returns.

    python bench/memory.py [--n 2000] [--size 224] [--batch-size 16] [--full-size] [--cases known,unknown]

``--full-size`` captures with ``display_size=None`` (full-size display copies, as before display
copies were shrunk), to compare the buffers alone with an older checkout.

Each case runs in a fresh Python subprocess, so one case's freed memory cannot hide another's
peak. A case builds the model, warms up with a capture of two images (so that the modules capture
imports and torch's kernels are loaded before the baseline), reads its resident memory (VmRSS of
/proc/self/status), captures, and reports the peak resident memory of the process
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``) minus that baseline: everything the capture
touched, torch's allocations, the model's forward pass and the data loader included. The figures
printed are that peak over the cache's own bytes (every tensor the cache holds: activations, ids,
positions, labels, logits, display images, digests), and the same after taking off the peak of
the "forward" case: what capture adds to what reading the data through the model costs anyway
(the loader's batches, the layers' outputs; tens of MB at 224 px, and the allocator keeps some of
it, so it weighs more the smaller the cache). Figures move by about +-20 MB between runs.

Cases (random images, generated per index by a map-style dataset, so the data itself is never
resident; batches of ``--batch-size``):
- forward: the model alone over the data, no capture (the transient cost of the forward pass)
- known: capture from a DataLoader, whose ``dataset`` has a length
- unknown: capture from a generator over the same DataLoader (no length)

Model: a small conv net defined here whose "features" layer sees a 14 x 14 grid of 64 channels
with a 91 px receptive field at 224 px, like the mid layers atlases are made of in ImageNet
models; captured with sample="all" (196 rows per image, float32).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without install


class _Net(nn.Module):
    """conv 7x7/2, max-pool 3x3/2, conv 5x5/2, conv 5x5/2, conv 3x3 ("features"), then a linear head."""

    def __init__(self, n_classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 7, stride=2, padding=3), nn.ReLU(), nn.MaxPool2d(3, 2, 1))
        self.mid = nn.Sequential(nn.Conv2d(16, 32, 5, stride=2, padding=2), nn.ReLU(),
                                 nn.Conv2d(32, 64, 5, stride=2, padding=2), nn.ReLU())
        self.features = nn.Sequential(nn.Conv2d(64, 64, 3, padding=1), nn.ReLU())
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, n_classes))

    def forward(self, x):
        return self.head(self.features(self.mid(self.stem(x))))


class _Images(torch.utils.data.Dataset):
    """Random images in [0, 1], image i the same on every run; labels i % 10."""

    def __init__(self, n: int, size: int):
        self.n, self.size = n, size

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        return torch.rand(3, self.size, self.size, generator=g), i % 10


def _rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status (this benchmark needs Linux)")


def _cache_bytes(cache) -> int:
    tensors = [cache.labels, cache.logits, cache.images, cache.sample_digest, cache.tokens]
    for la in cache.layers.values():
        tensors += [la.acts, la.sample_id, la.yx]
    return sum(t.numel() * t.element_size() for t in tensors if t is not None)


def run_case(case: str, n: int, size: int, batch_size: int, full_size: bool = False) -> dict:
    from atlaswidgets.cache.capture import capture

    torch.manual_seed(0)
    model = _Net().eval()
    loader = torch.utils.data.DataLoader(_Images(n, size), batch_size=batch_size)
    warm = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(-1))
    capture(model, warm, "features", sample="all", progress=False, device="cpu")
    base = _rss_bytes()
    if case == "forward":
        with torch.no_grad():
            for x, _ in loader:
                model(x)
        cache_bytes, images = 0, None
    else:
        data = loader if case == "known" else (batch for batch in loader)
        extra = {"display_size": None} if full_size else {}
        cache = capture(model, data, "features", sample="all", progress=False, device="cpu", **extra)
        cache_bytes = _cache_bytes(cache)
        images = list(cache.images.shape) if cache.images is not None else None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    return {"case": case, "peak_bytes": peak, "held_bytes": _rss_bytes() - base, "cache_bytes": cache_bytes,
            "images": images}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--full-size", action="store_true", help="display_size=None")
    parser.add_argument("--cases", default="forward,known,unknown")
    parser.add_argument("--case", choices=["forward", "known", "unknown"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:  # one case, in this fresh process
        print(json.dumps(run_case(args.case, args.n, args.size, args.batch_size, args.full_size)))
        return
    print(f"{args.n} random images at {args.size} px, batches of {args.batch_size}; "
          "peak RSS over the baseline, each case in a fresh process")
    mb = 1 << 20
    forward = 0
    for case in ("forward", "known", "unknown"):
        if case not in args.cases.split(","):
            continue
        out = subprocess.run([sys.executable, __file__, "--case", case, "--n", str(args.n), "--size",
                              str(args.size), "--batch-size", str(args.batch_size)]
                             + (["--full-size"] if args.full_size else []),
                             check=True, capture_output=True, text=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        line = f"{case:>8}: peak {r['peak_bytes'] / mb:7.1f} MB, held after {r['held_bytes'] / mb:7.1f} MB"
        if case == "forward":
            forward = r["peak_bytes"]
        else:
            line += (f"   cache {r['cache_bytes'] / mb:7.1f} MB (images {tuple(r['images'])})"
                     f"   peak / cache {r['peak_bytes'] / r['cache_bytes']:.2f}"
                     f"   (peak - forward) / cache {(r['peak_bytes'] - forward) / r['cache_bytes']:.2f}")
        print(line, flush=True)


if __name__ == "__main__":
    main()
