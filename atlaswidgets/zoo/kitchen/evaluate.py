"""Measure what the kitchen model learned: accuracy, confusion, the planted cues.

    python -m atlaswidgets.zoo.kitchen.evaluate [--n 2000] [--seed 777]

The whole model card, with the noodles patch attack (an experiment on this world), is
``python -m atlaswidgets.experiments.model_card``.

These are the numbers of the model card. Everything is measured on a fresh dataset seed (not
the training seed 0 or the validation seed ``VAL_OFFSET``).
"""

from __future__ import annotations

import json

import torch
from torch import nn

from ..weights import card_parser
from .world import CLASSES, CONTEXTS, KitchenData, dataset


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


def report(net: nn.Module, n: int = 2000, seed: int = 777, data: KitchenData | None = None) -> dict:
    """The world's model-card numbers on ``dataset(n, seed)``: accuracy, confusion, the cues.

    data : ``dataset(n, seed)`` when the caller made it already

    The patch-attack numbers are an experiment on this world, not a fact of it: the full card,
    with them, is ``atlaswidgets.experiments.model_card.report``.
    """
    data = dataset(n, seed=seed) if data is None else data
    preds = predict(net, data.images)
    m = confusion(data.labels, preds)
    return {"seed": seed, "n": n, "accuracy": float((preds == data.labels).float().mean()),
            "confusion": m.tolist(), "classes": CLASSES, "cues": cue_table(data, preds)}


def print_report(rep: dict) -> None:
    """Print the world's part of a model card (``report``'s dict) as text."""
    print(f"accuracy on dataset({rep['n']}, seed={rep['seed']}): {rep['accuracy']:.3f}")
    print("confusion (rows true, columns predicted):")
    print(" " * 12 + " ".join(f"{c[:7]:>7}" for c in CLASSES))
    for cls, row in zip(CLASSES, rep["confusion"]):
        print(f"{cls:>12}" + " ".join(f"{v:7d}" for v in row))
    print("accuracy with / without context (classes x planted cues):")
    for r in rep["cues"]:
        if r["context"] in ("noodles", "eggs", "steam") and r["n_with"] >= 5:
            print(f"  {r['class']:>12} {r['context']:>8}: with {r['acc_with']:.3f} "
                  f"(n={r['n_with']}), without {r['acc_without']:.3f} (n={r['n_without']})")


def main(argv: list[str] | None = None) -> None:
    from .net import model

    parser = card_parser("python -m atlaswidgets.zoo.kitchen.evaluate", __doc__.splitlines()[0], n=2000)
    args = parser.parse_args(argv)
    rep = report(model(args.weights), args.n, args.seed)
    if args.json:
        print(json.dumps(rep, indent=1))
        return
    print_report(rep)
    print("patch-attack numbers: python -m atlaswidgets.experiments.model_card")


def __getattr__(name: str):
    # deprecated: the patch experiment lives in experiments/ (a world does not depend on an
    # experiment); this forward goes in the next release
    if name == "patch_experiment":
        import importlib
        import warnings

        warnings.warn("atlaswidgets.zoo.kitchen.evaluate.patch_experiment moved to "
                      "atlaswidgets.experiments.model_card.patch_experiment; the old name goes in "
                      "the next release.", FutureWarning, stacklevel=2)
        return importlib.import_module("atlaswidgets.experiments.model_card").patch_experiment
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if __name__ == "__main__":
    main()
