"""The direction of a selection of cells, and the cells where a channel is strongest."""

from __future__ import annotations

import numpy as np
import pytest

from atlaswidgets.layout.atlas import build_atlas
from atlaswidgets.layout.select import selection_direction, strongest_cells

from ._synthetic import clustered_cache


@pytest.fixture(scope="module")
def built():
    cache, xy, cluster = clustered_cache()
    atlas = build_atlas(cache, "block", grid_size=4, min_count=2, xy=xy, icon_size=8)
    return cache, atlas, cluster


def test_direction_is_the_mean_of_all_member_rows(built):
    cache, atlas, _ = built
    cells = [int(c) for c in atlas.cells.ids[:2]]
    rows = atlas.rows_of(cells)
    want = cache["block"].acts.numpy()[rows].mean(0)
    got = selection_direction(atlas, cells)
    assert got.dtype == np.float32 and got.shape == (8,)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    with pytest.raises(ValueError, match="selection is empty"):
        selection_direction(atlas, [])


def test_a_cluster_channel_is_strongest_in_its_own_cells(built):
    cache, atlas, cluster = built
    for channel in range(4):
        picked = strongest_cells(atlas, channel, 1)
        assert len(picked) == 1
        members = atlas.rows_of(picked)
        assert (cluster[members] == channel).mean() > 0.5  # the cell of that channel's cluster
    assert strongest_cells(atlas, 0, 1000) == sorted(int(i) for i in atlas.cells.ids)
    with pytest.raises(ValueError, match="out of range"):
        strongest_cells(atlas, 8)
    with pytest.raises(ValueError, match="n must be"):
        strongest_cells(atlas, 0, 0)
