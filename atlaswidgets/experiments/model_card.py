"""The kitchen model's card: the world's numbers plus the noodles patch attack.

    python -m atlaswidgets.experiments.model_card [--n 2000] [--seed 777]

The world's facts (accuracy, confusion, the planted cues) come from ``zoo.kitchen.evaluate``;
the patch attack is an experiment on that world (``aw.patch_attack``), so it lives here and the
world does not depend on it. Everything is measured on a fresh dataset seed (not the training
seed 0 or the validation seed ``VAL_OFFSET``).
"""

from __future__ import annotations

import json

import torch
from torch import nn

from ..zoo.kitchen import evaluate
from ..zoo.kitchen.world import CLASSES, KitchenData, dataset, render_object
from ..zoo.weights import card_parser
from .patch import NOISE, patch_attack

__all__ = ["patch_experiment", "report", "main"]


def patch_experiment(net: nn.Module, data: KitchenData, sizes=(16, 20, 24), source="frying pan",
                     target="wok", patch_seed: int = 0, preds: torch.Tensor | None = None) -> dict:
    """Noodles patch vs same-size uniform noise patch on correctly classified ``source`` images.

    Images that already hold noodles are left out, so the patch is the only noodles in view. The
    attack is ``aw.patch_attack`` (best corner and size per image, and one fixed placement).
    preds : unused, kept for callers that computed them; patch_attack classifies the images itself
    Returns a dict: n_images, sizes, noodles_flip, noise_flip (best placement per image),
    noodles_static, noise_static (one placement) and static_placement.
    """
    keep = (data.labels == CLASSES.index(source)) & ~evaluate.has_context(data, "noodles")
    noodles = render_object("noodles", max(sizes), seed=patch_seed)
    table = patch_attack(net, data.images[keep], {"noodles": noodles}, target, source=source,
                         labels=data.labels[keep], classes=CLASSES, sizes=list(sizes),
                         noise_seed=patch_seed)
    row, noise = table.row("noodles"), table.row(NOISE)
    return {"n_images": row["n_images"], "sizes": list(sizes),
            "noodles_flip": row["dynamic_rate"], "noise_flip": noise["dynamic_rate"],
            "noodles_static": row["static_rate"], "noise_static": noise["static_rate"],
            "static_placement": f"{row['static_corner']}, {row['static_size']} px"}


def report(net: nn.Module, n: int = 2000, seed: int = 777) -> dict:
    """All model-card numbers on ``dataset(n, seed)``: ``evaluate.report``'s plus "patch"."""
    data = dataset(n, seed=seed)
    rep = evaluate.report(net, n, seed, data=data)
    rep["patch"] = patch_experiment(net, data)
    return rep


def main(argv: list[str] | None = None) -> None:
    from ..zoo.kitchen.net import model

    parser = card_parser("python -m atlaswidgets.experiments.model_card", __doc__.splitlines()[0], n=2000)
    args = parser.parse_args(argv)
    rep = report(model(args.weights), args.n, args.seed)
    if args.json:
        print(json.dumps(rep, indent=1))
        return
    evaluate.print_report(rep)
    p = rep["patch"]
    print(f"patch flips frying pan -> wok on {p['n_images']} correct pans, sizes {p['sizes']}: "
          f"noodles {p['noodles_flip']:.3f}, noise {p['noise_flip']:.3f} (best placement per image); "
          f"at one placement: noodles {p['noodles_static']:.3f} ({p['static_placement']}), "
          f"noise {p['noise_static']:.3f}")


if __name__ == "__main__":
    main()
