"""The diff atlas: model b's layer laid out, each cell scored by its members' mean novelty."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from atlaswidgets.layout.atlas import Atlas
from atlaswidgets.layout.diff import DiffAtlas, diff_atlas

from ._synthetic import clustered_cache


@pytest.fixture()
def synthetic():
    """(cache, xy, cluster of each row, novelty): cluster 2's rows are novel (0.8 to 1.0), the
    others nearly not (0 to 0.1)."""
    cache, xy, cluster = clustered_cache()
    rng = np.random.default_rng(1)
    novelty = np.where(cluster == 2, rng.uniform(0.8, 1.0, len(cluster)),
                       rng.uniform(0.0, 0.1, len(cluster))).astype(np.float32)
    return cache, xy, cluster, novelty


def test_cells_carry_their_members_mean_novelty(synthetic):
    cache, xy, cluster, novelty = synthetic
    atlas = diff_atlas(cache, novelty, ("base", "variant"), grid_size=6, min_count=1, xy=xy)
    assert isinstance(atlas, DiffAtlas) and isinstance(atlas, Atlas)
    assert atlas.names == ("base", "variant") and atlas.layer == "block"
    assert atlas.novelty.dtype == np.float32 and atlas.novelty.shape == (len(xy),)
    m = len(atlas.cells.ids)
    assert atlas.mean_novelty.shape == (m,)
    for k, cid in enumerate(atlas.cells.ids):
        rows = atlas.rows_of([cid])
        assert atlas.mean_novelty[k] == pytest.approx(novelty[rows].mean(), rel=1e-5)
    assert atlas.scale == pytest.approx(float(atlas.mean_novelty.max()))
    # the most novel cells are cluster 2's
    ranked = atlas.ranked_cells()
    assert sorted(ranked.tolist()) == sorted(atlas.cells.ids.tolist())
    novel_cells = [c for c in atlas.cells.ids if (cluster[atlas.rows_of([c])] == 2).all()]
    assert set(ranked[: len(novel_cells)].tolist()) == set(novel_cells)
    means = dict(zip(atlas.cells.ids.tolist(), atlas.mean_novelty.tolist()))
    assert [means[c] for c in ranked] == sorted(means.values(), reverse=True)
    assert "'variant' against 'base'" in repr(atlas)


def test_regrid_keeps_layout_and_novelty(synthetic):
    cache, xy, _, novelty = synthetic
    atlas = diff_atlas(cache, novelty, ("a", "b"), grid_size=3, min_count=1, icon_size=16, xy=xy)
    finer = atlas.regrid(cache, 6)
    assert isinstance(finer, DiffAtlas) and finer.cells.n == 6
    np.testing.assert_array_equal(finer.xy, atlas.xy)
    np.testing.assert_array_equal(finer.novelty, atlas.novelty)
    assert finer.icons.shape[-1] == 16 and finer.names == ("a", "b")
    # the overall mean is the same whatever the grid (every row visible with min_count=1)
    total = (finer.mean_novelty * finer.cells.count).sum() / finer.cells.count.sum()
    assert total == pytest.approx(float(novelty.mean()), rel=1e-5)


def test_tensor_novelty_and_layout_are_accepted(synthetic):
    cache, xy, _, novelty = synthetic
    atlas = diff_atlas(cache, torch.from_numpy(novelty), ("a", "b"), grid_size=4,
                       xy=torch.from_numpy(xy))
    np.testing.assert_array_equal(atlas.novelty, novelty)


def test_bad_input(synthetic):
    cache, xy, _, novelty = synthetic
    with pytest.raises(ValueError, match=r"novelty must have shape \(240,\)"):
        diff_atlas(cache, novelty[:-1], xy=xy)
    with pytest.raises(ValueError, match=r"finite values in \[0, 1\]"):
        diff_atlas(cache, novelty * 2, xy=xy)
    bad = novelty.copy()
    bad[0] = np.nan
    with pytest.raises(ValueError, match="finite"):
        diff_atlas(cache, bad, xy=xy)
    with pytest.raises(TypeError, match="names must be a pair"):
        diff_atlas(cache, novelty, names="ab", xy=xy)
    with pytest.raises(ValueError, match=r"xy must have shape \(240, 2\)"):
        diff_atlas(cache, novelty, xy=xy[:, :1])
    with pytest.raises(ValueError, match="grid_size"):
        diff_atlas(cache, novelty, grid_size=0, xy=xy)
