"""The whole path, from capture to widgets, with the cache on each device there is.

The same test body runs with the cache on the CPU (everywhere) and on CUDA (where there is a GPU;
skipped otherwise), the model staying on the CPU: that mix is what a user gets from
``capture(model, data, layers, device="cuda")``. Results on CUDA must match the CPU's. Run
only these with ``make gpu-check`` on a GPU machine.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import atlaswidgets as aw
from atlaswidgets.cache.hooks import model_device
from atlaswidgets.layout.neighbors import exact_neighbors
from atlaswidgets.zoo import kitchen

LAYER = "block4"
DEVICES = ["cpu", pytest.param("cuda", marks=[pytest.mark.cuda, pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs CUDA")])]


@pytest.fixture(scope="module")
def world():
    model = kitchen.model()
    data = kitchen.dataset(96, seed=31)
    reference = aw.capture(model, data, LAYER, sample="all", stats=True, device="cpu", progress=False)
    return model, data, reference


@pytest.mark.parametrize("device", DEVICES)
def test_capture_query_store_and_attribute_on(device, world, tmp_path):
    model, data, ref = world
    cache = aw.capture(model, data, LAYER, sample="all", stats=True, device=device, progress=False)
    la = cache[LAYER]
    assert la.acts.device.type == device and cache.stats[LAYER].device.type == device
    assert model_device(model).type == "cpu"  # moved back after the capture
    assert torch.equal(la.yx.cpu(), ref[LAYER].yx) and torch.equal(la.sample_id.cpu(), ref[LAYER].sample_id)
    torch.testing.assert_close(la.acts.cpu(), ref[LAYER].acts, atol=1e-4, rtol=1e-4)

    direction = ref[LAYER].acts[:50].mean(0)
    for per_sample in (False, True):
        got = cache.top_examples(direction, k=8, per_sample=per_sample)
        want = ref.top_examples(direction, k=8, per_sample=per_sample)
        np.testing.assert_array_equal(got.sample_id, want.sample_id)
    got, want = cache.stats[LAYER].top(84, 5), ref.stats[LAYER].top(84, 5)
    np.testing.assert_array_equal(got.sample_id, want.sample_id)
    np.testing.assert_allclose(got.values, want.values, rtol=1e-4, atol=1e-4)

    back = aw.ActivationCache.load(cache.save(tmp_path / "store"), model=model, device=device)
    assert back[LAYER].acts.device.type == device
    torch.testing.assert_close(back[LAYER].acts, la.acts)

    # a cache on the device and the model run on the CPU: attributions land beside the activations
    for c in (cache, ref):
        c.add_attribution(aw.attribute(model, data, LAYER, ("wok", "frying pan"), cache=c,
                                       store=False, device="cpu", progress=False))
    got = cache.attribution(LAYER, ("wok", "frying pan"))
    assert got.device.type == device
    torch.testing.assert_close(got.cpu(), ref.attribution(LAYER, ("wok", "frying pan")), atol=1e-4, rtol=1e-3)


@pytest.mark.parametrize("device", DEVICES)
def test_atlas_widgets_and_icons_from_a_cache_on(device, world):
    model, _, ref = world
    cache = ref.to(device)
    acts = cache[LAYER].acts
    # UMAP's neighbour graph is searched where the activations are (exact, chunked)
    idx, dist = exact_neighbors(acts, 15)
    want_idx, want_dist = exact_neighbors(ref[LAYER].acts, 15)
    assert (idx == want_idx).mean() > 0.99  # near-ties may swap between devices
    np.testing.assert_allclose(dist, want_dist, atol=1e-4)
    # the layout itself is umap-learn's on the CPU; a fixed projection stands in for it here (the
    # UMAP compile would double this test's time) so the rest of the path sees device tensors
    xy = (ref[LAYER].acts @ torch.randn(acts.shape[1], 2, generator=torch.Generator().manual_seed(0))).numpy()
    atlas = aw.build_atlas(cache, LAYER, grid_size=6, min_count=2, icon_size=16, xy=xy)
    same = aw.build_atlas(ref, LAYER, grid_size=6, min_count=2, icon_size=16, xy=xy)
    np.testing.assert_array_equal(atlas.cells.ids, same.cells.ids)
    np.testing.assert_allclose(atlas.cells.mean_act, same.cells.mean_act, atol=1e-4)
    widget = aw.AtlasWidget(atlas, cache)
    assert widget.n_cells == len(atlas.cells.ids)
    assert np.frombuffer(widget.cell_ids, np.uint32).tolist() == [int(i) for i in atlas.cells.ids]
    panel = aw.ExamplePanel(atlas, cache)
    aw.link(widget, panel)
    widget.selected = [int(atlas.cells.ids[0])]
    assert list(panel.shown_cells) == [int(atlas.cells.ids[0])] and panel.n_examples > 0
    rows = np.frombuffer(panel.rows, np.uint32)
    assert len(rows) == panel.n_examples
    assert set(rows.tolist()) <= set(atlas.cells.rows_of([int(atlas.cells.ids[0])]).tolist())
    viewer = aw.NeuronViewer(cache, LAYER, 84, model=model, n=2)
    assert viewer.n_examples > 0
    icons = aw.render_icons(model, LAYER, atlas.cells.mean_act[:2], size=64, steps=4, whiten=cache,
                            device=device, progress=False)
    assert icons.icons.shape == (2, 3, 64, 64) and np.isfinite(icons.values).all()
    assert model_device(model).type == "cpu"
