"""Shared set-up of the patch-attack tests: a tiny model whose flips are known exactly, and the
kitchen world's ground truth (model, attack images, comparison atlas), built once per session."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from torch import nn

TINY_CLASSES = ["cat", "dog", "fish"]


class BlockModel(nn.Module):
    """8x8 RGB -> logits for ("cat", "dog", "fish"), decided by two pixel blocks.

    dog wins iff the top-left 2x2 block of channel 0 is brighter than 0.5 on average and the
    centre pixel (4, 4) of channel 2 (a veto no corner patch up to 3 px reaches) is dark; else cat.
    fish never wins. So a bright patch flips exactly the non-vetoed images, and only from the
    top-left corner.
    """

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(20.0))  # a parameter, so the model has a device
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        m = x[:, 0, :2, :2].mean((1, 2))
        veto = x[:, 2, 4, 4]
        dog = self.scale * (m - 0.5) - 40.0 * veto
        return torch.stack([torch.zeros_like(dog), dog, torch.full_like(dog, -10.0)], dim=1)


@pytest.fixture()
def tiny():
    """(model, images (10, 3, 8, 8), veto mask (10,)): all dark, images 0, 3, 5, 8 vetoed."""
    images = torch.zeros(10, 3, 8, 8)
    images[:, 1] = torch.linspace(0.0, 0.4, 10)[:, None, None]  # unused channel, varied
    veto = torch.zeros(10, dtype=torch.bool)
    veto[[0, 3, 5, 8]] = True
    images[veto, 2, 4, 4] = 1.0
    return BlockModel(), images, veto


# ----------------------------------------------------------------------------- kitchen world


@pytest.fixture(scope="session")
def kitchen_net():
    from atlaswidgets.zoo import kitchen

    return kitchen.model()


@pytest.fixture(scope="session")
def kitchen_pans():
    """Frying pans without noodles from a fresh seed (not the training or validation seeds)."""
    from atlaswidgets.zoo import kitchen
    from atlaswidgets.zoo.kitchen.evaluate import has_context

    data = kitchen.dataset(1500, seed=777)
    keep = (data.labels == kitchen.CLASSES.index("frying pan")) & ~has_context(data, "noodles")
    return data.images[keep]


@pytest.fixture(scope="session")
def kitchen_comparison(kitchen_net):
    """(cache, data, ComparisonAtlas wok vs frying pan on block4) over dataset(500, seed=11)."""
    import atlaswidgets as aw
    from atlaswidgets.zoo import kitchen

    start = time.perf_counter()
    data = kitchen.dataset(500, seed=11)
    cache = aw.capture(kitchen_net, data, "block4", sample="random", per_image=8,
                       classes=kitchen.CLASSES, progress=False, keep_images=True)
    cache.add_attribution(aw.attribute(kitchen_net, data, "block4", ("wok", "frying pan"), cache=cache,
                                       store=False, progress=False))
    # y: the first principal component of the activations instead of a 1-D UMAP, to save the
    # UMAP run; the cells the tests pick come from x (the attribution), which y does not change
    acts = cache["block4"].acts.float()
    centred = acts - acts.mean(0)
    _, _, v = torch.linalg.svd(centred, full_matrices=False)
    y = (centred @ v[0]).numpy()
    comp = aw.compare_atlas(cache, "wok", "frying pan", y=y)
    print(f"kitchen comparison atlas set-up: {time.perf_counter() - start:.1f} s")
    return cache, data, comp


@pytest.fixture(scope="session")
def noodles_cell(kitchen_comparison):
    """Among the 10% most wok-attributed cells, the one whose members most often see noodles."""
    import atlaswidgets as aw

    cache, data, comp = kitchen_comparison
    m = len(comp.cells.ids)
    top = comp.cells.ids[np.argsort(-comp.mean_diff, kind="stable")[: max(1, int(np.ceil(0.1 * m)))]]
    shares = [aw.context_share(cache, "block4", comp.rows_of([c]), data.annotations, "noodles")
              for c in top]
    best = int(np.argmax(shares))
    print(f"noodles cell {int(top[best])}: noodles share {shares[best]:.2f} "
          f"(top cells: {dict(zip(top.tolist(), np.round(shares, 2).tolist()))})")
    return int(top[best]), float(shares[best])


@pytest.fixture(scope="session")
def kitchen_attack(kitchen_net, kitchen_pans, kitchen_comparison, noodles_cell):
    """One attack of the noodles patch and the noodles-cell patch on the test frying pans."""
    from atlaswidgets.experiments.cells import patch_from_cell
    from atlaswidgets.experiments.patch import patch_attack
    from atlaswidgets.zoo import kitchen

    cache, data, comp = kitchen_comparison
    # the cell's top example, as a person would take it: no look at the annotations here
    patches = {
        "noodles": kitchen.render_object("noodles", 24, seed=0),
        "noodles cell": patch_from_cell(comp, cache, noodles_cell[0]),
    }
    start = time.perf_counter()
    table = patch_attack(kitchen_net, kitchen_pans, patches, "wok", source="frying pan",
                            classes=kitchen.CLASSES)
    took = time.perf_counter() - start
    # the clean pass over every image, then one pass per counted image, placement and patch
    forwards = len(kitchen_pans) + len(table.image_index) * len(table.placements) * len(table.rows)
    print(f"\n{table}\nkitchen patch attack: {took:.1f} s, {forwards} image forwards "
          f"({forwards / took:.0f} images/s)")
    return table, took
