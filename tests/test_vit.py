"""A ViT block end to end (issue #15): capture -> atlas -> panel -> viewer -> feature vis, with the
CLS token named once at capture and read from the cache everywhere after."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import atlaswidgets as aw

from .cache.conftest import TinyViT


@pytest.fixture(scope="module")
def vit_cache():
    torch.manual_seed(0)
    vit = TinyViT(0).eval()
    images, labels = torch.rand(120, 3, 16, 16), torch.randint(0, 3, (120,))
    cache = aw.capture(vit, (images, labels), "block", per_image=6, prefix_tokens=1, stats=True,
                       progress=False)
    return vit, images, cache


def test_atlas_and_linked_panel_on_patch_tokens(vit_cache):
    _, _, cache = vit_cache
    atlas = aw.build_atlas(cache, "block", grid_size=5)
    widget, panel = aw.AtlasWidget(atlas, cache), aw.ExamplePanel(atlas, cache)
    aw.link(widget, panel)
    widget.selected = [int(atlas.cells.ids[0])]
    assert panel.selected == widget.selected
    ex = atlas.examples(widget.selected, k=4)
    assert len(ex) and (ex.yx >= 0).all() and (ex.yx < 4).all()  # positions on the 4x4 patch grid


def test_the_viewer_maps_are_the_cached_patch_activations(vit_cache):
    vit, images, cache = vit_cache
    viewer = aw.NeuronViewer(cache, model=vit, layer="block", channel=3, inputs=images)
    assert viewer.marking == "heatmap" and tuple(viewer.map_hw) == (4, 4)
    assert viewer.map_error <= 1e-5  # re-run from the images capture got, CLS token left out
    maps, ex = viewer.maps, viewer.activation_arrays()
    y, x = ex["yx"][:, 0], ex["yx"][:, 1]
    assert np.allclose(maps[np.arange(len(y)), y, x], ex["values"], atol=1e-5)


def test_feature_vis_of_a_vit_channel(vit_cache):
    vit, _, _ = vit_cache
    out = aw.feature_vis(vit, aw.objectives.channel("block", 3, prefix_tokens=1), size=16, steps=6)
    assert out.images.shape == (1, 3, 16, 16) and torch.isfinite(out.images).all()
    with pytest.raises(ValueError, match="pass prefix_tokens=1"):  # 17 tokens: the CLS must be named
        aw.feature_vis(vit, aw.objectives.channel("block", 3), size=16, steps=2)
