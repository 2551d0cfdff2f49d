"""render() on the kitchen model: the icon acceptance numbers of issue #5, seeding, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import atlaswidgets as aw
from atlaswidgets.render import objectives as ob
from atlaswidgets.render.fv import forward_layers, render
from atlaswidgets.render.icons import render_icons
from atlaswidgets.zoo import kitchen

LAYER = "block4"
STEPS = 64


def _kmeans(x: torch.Tensor, k: int, iters: int = 15, seed: int = 0) -> torch.Tensor:
    """Cluster labels of the rows of x (plain Lloyd iterations, seeded start)."""
    gen = torch.Generator().manual_seed(seed)
    centres = x[torch.randperm(len(x), generator=gen)[:k]].clone()
    for _ in range(iters):
        label = torch.cdist(x, centres).argmin(1)
        for j in range(k):
            if (label == j).any():
                centres[j] = x[label == j].mean(0)
    return torch.cdist(x, centres).argmin(1)


@pytest.fixture(scope="module")
def world():
    """Kitchen model, a block4 cache, its whitening, the noodles direction and 6 cell directions.

    Cells are k-means clusters of the rows that see no noodles; the noodles direction is the mean
    of the rows whose receptive field overlaps a noodles annotation.
    """
    net = kitchen.model()
    data = kitchen.dataset(300, seed=5)
    cache = aw.capture(net, (data.images, data.labels), LAYER, sample="random", per_image=4,
                       progress=False)
    acts = cache[LAYER].acts.float()
    noodles = torch.as_tensor(aw.overlaps_context(cache, LAYER, None, data.annotations, "noodles"))
    rest = acts[~noodles]
    label = _kmeans(rest, 6)
    cells = torch.stack([rest[label == j].mean(0) for j in range(6)])
    return dict(net=net, cache=cache, acts=acts, S=ob.whitening(acts),
                noodles=acts[noodles].mean(0), cells=cells)


@pytest.fixture(scope="module")
def icons(world):
    """Icons of the 6 cell directions and the noodles direction (last), in one batch."""
    dirs = torch.cat([world["cells"], world["noodles"][None]])
    return render_icons(world["net"], LAYER, dirs, size=64, steps=STEPS, whiten=world["S"],
                        seed=0, progress=False)


def test_icon_beats_95_percent_of_dataset_positions(world, icons):
    dirs = torch.cat([world["cells"], world["noodles"][None]])
    shares = []
    for i, v in enumerate(dirs):
        data_values = ob.icon_value(world["acts"], v, world["S"])
        shares.append(float((data_values < float(icons.values[i])).float().mean()))
    print("share of dataset positions below the icon:", np.round(shares, 4))
    assert min(shares) >= 0.95


def test_noodles_icon_is_closest_to_the_noodles_direction(world, icons):
    x = icons.of(len(icons) - 1).float() / 255
    with torch.no_grad():
        out = forward_layers(world["net"], (LAYER,), x)[LAYER]
    h = ob.layer_vectors(out, "center")[0]
    cos = lambda v: float(torch.nn.functional.cosine_similarity(h, v, dim=0))  # noqa: E731
    to_noodles = cos(world["noodles"])
    to_cells = [cos(v) for v in world["cells"]]
    print(f"cosine to noodles {to_noodles:.3f}, to other cells {np.round(to_cells, 3)}")
    assert to_noodles > max(to_cells)


def test_same_seed_same_icon_on_cpu(world):
    obj = ob.icon(LAYER, world["noodles"], whiten=world["S"])
    a = render(world["net"], obj, size=64, steps=8, seed=3)
    b = render(world["net"], obj, size=64, steps=8, seed=3)
    c = render(world["net"], obj, size=64, steps=8, seed=4)
    assert torch.equal(a.images, b.images) and np.array_equal(a.values, b.values)
    assert not torch.equal(a.images, c.images)


def test_render_raises_the_objective_and_leaves_the_model_clean(world):
    net = world["net"]
    net.train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    # two channels that are alive on dataset images (a dead ReLU channel has no gradient to climb)
    busy = world["acts"].mean(0).topk(2).indices.tolist()
    obj = ob.channel(LAYER, busy)
    short = render(net, obj, size=64, steps=2, seed=0, transforms=None)
    longer = render(net, obj, size=64, steps=40, seed=0, transforms=None, output="float")
    assert net.training  # mode restored
    net.eval()
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert all(p.grad is None for p in net.parameters())
    assert not any(m._forward_hooks for m in net.modules())
    assert (longer.values > short.values).all()
    assert longer.images.dtype == torch.float32 and longer.images.shape == (2, 3, 64, 64)
    pix = render(net, ob.channel(LAYER, 3), size=32, steps=3, param="pixel", batch=2)
    assert pix.images.shape == (2, 3, 32, 32) and pix.images.dtype == torch.uint8


class _Detached(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.after = nn.Identity()

    def forward(self, x):
        return self.after(self.conv(x).detach())


def test_bad_input(world):
    net = world["net"]
    with pytest.raises(ValueError, match="Unknown layer 'block5'. Close matches: .*'block4'"):
        render(net, ob.channel("block5", 0), size=64, steps=1)
    with pytest.raises(ValueError, match="channel 200 is out of range for layer 'block4', which has 128"):
        render(net, ob.channel(LAYER, 200), size=64, steps=1)
    with pytest.raises(ValueError, match="direction has length 64 but layer 'block4' has 128"):
        render(net, ob.direction(LAYER, np.ones(64)), size=64, steps=1)
    with pytest.raises(ValueError, match=r"size must be an int in \[8, 2048\]"):
        render(net, ob.channel(LAYER, 0), size=4, steps=1)
    # issue #17, item 8: size=100000 tried to allocate ~120 GB before failing
    with pytest.raises(ValueError, match=r"size must be an int in \[8, 2048\].*got 100000"):
        render(net, ob.channel(LAYER, 0), size=100000, steps=1)
    with pytest.raises(ValueError, match="batch=3 but the objective is built for 2 images"):
        render(net, ob.channel(LAYER, [0, 1]), size=64, steps=1, batch=3)
    with pytest.raises(ValueError, match="does not depend differentiably on the image"):
        render(_Detached(), ob.channel("after", 0), size=16, steps=1)
    with pytest.raises(TypeError, match="objective must be an Objective"):
        render(net, "block4:0", size=64, steps=1)
