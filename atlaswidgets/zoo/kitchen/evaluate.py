"""Measure what the kitchen model learned: accuracy, confusion, the planted cues, patch flips.

    python -m atlaswidgets.zoo.kitchen.evaluate [--n 2000] [--seed 777]

These are the numbers of the model card. Everything is measured on a fresh dataset seed (not
the training seed 0 or the validation seed ``VAL_OFFSET``).
"""

from __future__ import annotations

import argparse
import json

import torch
from torch import nn

from .world import CLASSES, CONTEXTS, KitchenData, dataset, render_object

CORNERS = ("top left", "top right", "bottom left", "bottom right")


@torch.no_grad()
def predict(net: nn.Module, images: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """Predicted class per image: images shape (n, 3, H, W) in [0, 1] -> (n,) int64."""
    net.eval()
    return torch.cat([net(images[s:s + batch_size]).argmax(1)
                      for s in range(0, len(images), batch_size)])


def confusion(labels: torch.Tensor, preds: torch.Tensor, n_classes: int = len(CLASSES)):
    """Counts, shape (n_classes, n_classes): row = true class, column = predicted class."""
    m = torch.zeros(n_classes, n_classes, dtype=torch.int64)
    m.index_put_((labels, preds), torch.ones_like(labels), accumulate=True)
    return m


def has_context(data: KitchenData, name: str) -> torch.Tensor:
    """Boolean mask, shape (n,): which images have ``name`` among their annotations."""
    return torch.tensor([any(a["name"] == name for a in ann) for ann in data.annotations])


def cue_table(data: KitchenData, preds: torch.Tensor) -> list[dict]:
    """Accuracy of each class with and without each context object (count and accuracy)."""
    rows = []
    right = preds == data.labels
    for c, cls in enumerate(CLASSES):
        of_class = data.labels == c
        for name in CONTEXTS:
            with_ctx = has_context(data, name)
            row = {"class": cls, "context": name}
            for key, mask in (("with", of_class & with_ctx), ("without", of_class & ~with_ctx)):
                n = int(mask.sum())
                row[f"n_{key}"] = n
                row[f"acc_{key}"] = float(right[mask].float().mean()) if n else None
            rows.append(row)
    return rows


def paste(images: torch.Tensor, patch: torch.Tensor, corner: str) -> torch.Tensor:
    """Copies of ``images`` (n, 3, H, W) with ``patch`` (3, s, s) pasted in one corner."""
    s = patch.shape[-1]
    out = images.clone()
    y = 0 if corner.startswith("top") else images.shape[-2] - s
    x = 0 if corner.endswith("left") else images.shape[-1] - s
    out[:, :, y:y + s, x:x + s] = patch
    return out


@torch.no_grad()
def patch_flip_rate(net: nn.Module, images: torch.Tensor, patches: list[torch.Tensor],
                    target: int) -> tuple[float, dict]:
    """Fraction of images that some (patch, corner) placement turns into class ``target``.

    images : shape (n, 3, H, W), typically correctly classified frying pans
    patches : list of (3, s, s) tensors, tried in each of the four corners ("best corner and
        size per image", as in the Activation Atlases patch experiment)
    Returns (rate, per-placement rates keyed "size/corner").
    """
    flipped = torch.zeros(len(images), dtype=torch.bool)
    per = {}
    for patch in patches:
        for corner in CORNERS:
            hit = predict(net, paste(images, patch, corner)) == target
            per[f"{patch.shape[-1]}/{corner}"] = float(hit.float().mean())
            flipped |= hit
    return float(flipped.float().mean()), per


def patch_experiment(net: nn.Module, data: KitchenData, sizes=(16, 20, 24), source="frying pan",
                     target="wok", patch_seed: int = 0, preds: torch.Tensor | None = None) -> dict:
    """Noodles patch vs same-size uniform noise patch on correctly classified ``source`` images.

    Images that already hold noodles are left out, so the patch is the only noodles in view.
    preds : the model's predictions on ``data.images`` if already computed, shape (n,)
    """
    src, tgt = CLASSES.index(source), CLASSES.index(target)
    preds = predict(net, data.images) if preds is None else preds
    keep = (data.labels == src) & (preds == src) & ~has_context(data, "noodles")
    images = data.images[keep]
    noodles = [render_object("noodles", s, seed=patch_seed) for s in sizes]
    gen = torch.Generator().manual_seed(patch_seed)
    noise = [torch.rand(3, s, s, generator=gen) for s in sizes]
    rate_n, per_n = patch_flip_rate(net, images, noodles, tgt)
    rate_z, per_z = patch_flip_rate(net, images, noise, tgt)
    return {"n_images": int(keep.sum()), "sizes": list(sizes), "noodles_flip": rate_n,
            "noise_flip": rate_z, "noodles_per_placement": per_n, "noise_per_placement": per_z}


def report(net: nn.Module, n: int = 2000, seed: int = 777) -> dict:
    """All model-card numbers on ``dataset(n, seed)``."""
    data = dataset(n, seed=seed)
    preds = predict(net, data.images)
    m = confusion(data.labels, preds)
    return {"seed": seed, "n": n, "accuracy": float((preds == data.labels).float().mean()),
            "confusion": m.tolist(), "classes": CLASSES, "cues": cue_table(data, preds),
            "patch": patch_experiment(net, data, preds=preds)}


def main(argv: list[str] | None = None) -> None:
    from .net import model

    parser = argparse.ArgumentParser(prog="python -m atlaswidgets.zoo.kitchen.evaluate",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=777)
    parser.add_argument("--weights", default=None, help="safetensors file (default: shipped)")
    parser.add_argument("--json", action="store_true", help="print the raw report as JSON")
    args = parser.parse_args(argv)
    rep = report(model(args.weights), args.n, args.seed)
    if args.json:
        print(json.dumps(rep, indent=1))
        return
    print(f"accuracy on dataset({args.n}, seed={args.seed}): {rep['accuracy']:.3f}")
    print("confusion (rows true, columns predicted):")
    print(" " * 12 + " ".join(f"{c[:7]:>7}" for c in CLASSES))
    for cls, row in zip(CLASSES, rep["confusion"]):
        print(f"{cls:>12}" + " ".join(f"{v:7d}" for v in row))
    print("accuracy with / without context (classes x planted cues):")
    for r in rep["cues"]:
        if r["context"] in ("noodles", "eggs", "steam") and r["n_with"] >= 5:
            print(f"  {r['class']:>12} {r['context']:>8}: with {r['acc_with']:.3f} "
                  f"(n={r['n_with']}), without {r['acc_without']:.3f} (n={r['n_without']})")
    p = rep["patch"]
    print(f"patch flips frying pan -> wok on {p['n_images']} correct pans, sizes {p['sizes']}: "
          f"noodles {p['noodles_flip']:.3f}, noise {p['noise_flip']:.3f}")


if __name__ == "__main__":
    main()
