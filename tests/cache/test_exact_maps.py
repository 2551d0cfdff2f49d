"""The viewer's re-run of a model gives exactly the captured activations: an ImageNet-normalised
image model re-run on its raw inputs through the capture's preprocessing, and a text model re-run
from cache.tokens (issue #15: the maps were re-run without the preprocessing, corr 0.78)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import atlaswidgets as aw
from atlaswidgets.cache.facts import LayerOutputs, activation_maps, checked_inputs, map_error
from atlaswidgets.zoo import text

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def imagenet(x: torch.Tensor) -> torch.Tensor:
    return (x - MEAN.to(x.device)) / STD.to(x.device)


class SmallNet(nn.Module):
    """A small conv net that expects ImageNet-normalised inputs (as torchvision's do)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.head = nn.Linear(16, 5)

    def forward(self, x):
        h = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        return self.head(h.mean((2, 3)))


@pytest.fixture(scope="module")
def image_world():
    torch.manual_seed(0)
    model = SmallNet().eval()
    x = torch.rand(24, 3, 16, 16)  # floats in [0, 1], not multiples of 1/255
    cache = aw.capture(model, x, "conv2", sample="all", preprocess=imagenet, progress=False)
    return model, x, cache


def _rows_of(cache, layer, ids):
    la = cache[layer]
    sid = la.sample_id.cpu().numpy()
    return [np.nonzero(sid == i)[0] for i in ids]


def test_image_maps_from_raw_inputs_through_preprocess_are_exact(image_world):
    model, x, cache = image_world
    assert cache.preprocess is imagenet
    ids = np.array([0, 3, 7, 23])
    maps = activation_maps(LayerOutputs(model, cache.input_hw, cache.preprocess), x, ids, "conv2", 5,
                           cache["conv2"].hw)
    la = cache["conv2"]
    for k, rows in enumerate(_rows_of(cache, "conv2", ids)):
        yx = la.yx[rows].numpy()
        np.testing.assert_allclose(maps[k, yx[:, 0], yx[:, 1]], la.acts[rows, 5].numpy(), atol=1e-5, rtol=0)


def test_display_images_are_close_but_not_exact_and_map_error_says_so(image_world):
    model, x, cache = image_world
    ids = np.arange(6)
    la = cache["conv2"]
    out = LayerOutputs(model, cache.input_hw, cache.preprocess)
    maps = activation_maps(out, cache.images, ids, "conv2", 5, la.hw)
    rows = np.concatenate(_rows_of(cache, "conv2", ids))
    yx, vals = la.yx[rows].numpy(), la.acts[rows, 5].numpy()
    k = np.searchsorted(ids, la.sample_id[rows].numpy())
    err = map_error(maps[k], yx, vals)
    assert 1e-5 < err < 0.05 * np.abs(vals).max()  # uint8 quantisation: close, not exact
    # without the preprocessing (the old bug) the maps are far off
    wrong = activation_maps(LayerOutputs(model, cache.input_hw, None), x, ids, "conv2", 5, la.hw)
    assert map_error(wrong[k], yx, vals) > 0.1 * np.abs(vals).max()


def test_text_maps_from_cache_tokens_are_exact():
    model = text.model()
    data = text.corpus(40, seed=3)
    cache = aw.capture(model, data.columns, "blocks.1.mlp.act", sample="all", progress=False)
    la = cache["blocks.1.mlp.act"]
    ids = np.array([0, 5, 17, 39, 5])
    direction = np.random.default_rng(0).normal(size=la.n_channels)
    out = LayerOutputs(model, cache.input_hw, None)
    for unit, want in ((11, la.acts[:, 11].numpy()), (direction, la.acts.numpy() @ direction)):
        maps = activation_maps(out, cache.tokens, ids, "blocks.1.mlp.act", unit, la.hw)
        assert maps.shape == (len(ids), 1, cache.tokens.shape[1])
        for k, rows in enumerate(_rows_of(cache, "blocks.1.mlp.act", ids)):
            t = la.yx[rows, 1].numpy()
            np.testing.assert_allclose(maps[k, 0, t], want[rows], atol=1e-5, rtol=0)
            n = int((cache.tokens[ids[k]] >= 0).sum())
            assert len(t) == n and np.isnan(maps[k, 0, n:]).all()  # after the sample: unknown


def test_checked_inputs_refuses_what_capture_was_not_given(image_world):
    _, x, cache = image_world
    assert checked_inputs(None, cache) is None
    assert checked_inputs(x.numpy(), cache).shape == x.shape
    with pytest.raises(ValueError, match=r"images given to capture: float, shape \(24, C, H, W\)"):
        checked_inputs(x[:5], cache)
    with pytest.raises(ValueError, match="images given to capture"):
        checked_inputs((x * 255).to(torch.uint8), cache)
    with pytest.raises(TypeError, match="float tensor"):
        checked_inputs([1, 2], cache)
