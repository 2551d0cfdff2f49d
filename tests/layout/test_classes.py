"""Class atlas: which rows it keeps, that its cells index the layer's own rows, and its errors."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

import atlaswidgets as aw
from atlaswidgets.layout.classes import ClassAtlas, class_atlas
from tests.layout._synthetic import clustered_cache


def _attribute_clusters(cache, cluster, classes, seed=0):
    """Store single-class attributions: rows of cluster c argue for class c, noise elsewhere."""
    la = cache["block"]
    rng = np.random.default_rng(seed)
    for c in classes:
        total = rng.normal(0, 0.1, la.n_rows) + np.where(cluster == c, 1.0 + rng.uniform(0, 1, la.n_rows), 0)
        parts = rng.dirichlet(np.ones(la.n_channels), size=la.n_rows)
        la.attributions[cache.classes[c]] = torch.as_tensor(parts * total[:, None], dtype=torch.float32)


@pytest.fixture()
def synthetic():
    cache, _, cluster = clustered_cache(samples_per_cluster=20)
    _attribute_clusters(cache, cluster, range(4))
    return cache, cluster


def test_keeps_the_top1_rows_plus_the_top_n(synthetic):
    cache, cluster = synthetic
    la = cache["block"]
    atlas = class_atlas(cache, "class1", top_n=10, grid_size=4, n_neighbors=10)
    assert isinstance(atlas, ClassAtlas) and atlas.cls == "class1"
    assert atlas.compared == ["class0", "class1", "class2", "class3"]
    totals = np.stack([la.attributions[k].sum(1).numpy() for k in atlas.compared], 1)
    np.testing.assert_array_equal(atlas.top1, totals.argmax(1) == 1)
    np.testing.assert_allclose(atlas.attribution, totals[:, 1], rtol=1e-5, atol=1e-6)
    top10 = np.argsort(-totals[:, 1])[:10]
    expected = atlas.top1.copy()
    expected[top10] = True
    np.testing.assert_array_equal(atlas.kept, expected)
    # the planted cluster is exactly what argues for class1
    assert (cluster[atlas.kept] == 1).mean() > 0.95
    # rows outside the class atlas have no point and no cell; kept rows do
    assert np.isnan(atlas.xy[~atlas.kept]).all() and np.isfinite(atlas.xy[atlas.kept]).all()
    assert (atlas.cells.row_cell[~atlas.kept] == -1).all()
    members = atlas.rows_of(atlas.cells.ids)
    assert atlas.kept[members].all() and len(members) == atlas.cells.count.sum()
    # per-cell mean attribution toward the class
    for k in range(len(atlas.cells.ids)):
        rows = atlas.cells.members(k)
        assert atlas.mean_attr[k] == pytest.approx(totals[rows, 1].mean(), rel=1e-5)
    assert "class1" in repr(atlas) and "top-1 among 4 classes" in repr(atlas)


def test_works_with_the_widgets_and_queries_of_the_full_cache(synthetic):
    cache, cluster = synthetic
    atlas = class_atlas(cache, 2, top_n=0, grid_size=4, n_neighbors=10)
    widget = aw.AtlasWidget(atlas, cache)  # the full cache: row indices are the layer's
    panel = aw.ExamplePanel(atlas, cache, k=5)
    aw.link(widget, panel)
    first = int(atlas.cells.ids[0])
    widget.selected = [first]
    assert panel.selected == [first]
    ex = atlas.examples([first], k=5)
    assert set(ex.rows.tolist()) <= set(np.flatnonzero(atlas.kept).tolist())
    assert (cluster[ex.rows] == 2).all()


def test_bad_input(synthetic):
    cache, _ = synthetic
    with pytest.raises(ValueError, match=re.escape("Did you mean ['class1'")):
        class_atlas(cache, "clas1")
    with pytest.raises(ValueError, match="top_n must be an int >= 0"):
        class_atlas(cache, "class1", top_n=-1)
    only_one, _, _ = clustered_cache(samples_per_cluster=20)
    la = only_one["block"]
    la.attributions["class1"] = torch.ones(la.n_rows, la.n_channels)
    with pytest.raises(ValueError, match="toward only one class"):
        class_atlas(only_one, "class1")
    with pytest.raises(ValueError, match=re.escape("no attribution toward 'class2'")):
        class_atlas(only_one, "class2")
    la.attributions["class0"] = torch.ones(la.n_rows, la.n_channels)
    la.attributions["class0"][:, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN or infinite"):
        class_atlas(only_one, "class1")
    # a class that wins almost nowhere, with no top_n to make up for it
    cache2, _, cluster2 = clustered_cache(samples_per_cluster=20)
    _attribute_clusters(cache2, cluster2, [0, 1])
    cache2["block"].attributions["class1"] -= 5.0
    with pytest.raises(ValueError, match="too few for a UMAP"):
        class_atlas(cache2, "class1", top_n=0)


def test_grid_keep_mask_bins_only_kept_rows():
    xy = np.array([[0, 0], [1, 1], [np.nan, np.nan], [0.9, 0.9]], dtype=np.float32)
    keep = np.array([True, True, False, True])
    cells = aw.grid(xy, 2, min_count=1, keep=keep)
    assert cells.row_cell[2] == -1 and cells.count.sum() == 3
    with pytest.raises(ValueError, match="bool mask with shape"):
        aw.grid(xy, 2, keep=[1, 0, 1, 1])
    with pytest.raises(ValueError, match="NaN"):
        aw.grid(xy, 2, keep=np.ones(4, bool))
    with pytest.raises(ValueError, match="selects no rows"):
        aw.grid(xy, 2, keep=np.zeros(4, bool))


def test_public_names():
    assert aw.class_atlas is class_atlas and aw.ClassAtlas is ClassAtlas
