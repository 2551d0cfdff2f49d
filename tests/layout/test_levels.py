"""Zoom levels of an atlas and selections carried between them, without a widget."""

from __future__ import annotations

import numpy as np
import pytest

from atlaswidgets.layout.atlas import build_atlas
from atlaswidgets.layout.levels import AtlasLevels, carry_selection

from ._synthetic import clustered_cache


@pytest.fixture(scope="module")
def built():
    cache, xy, _ = clustered_cache()
    atlas = build_atlas(cache, "block", grid_size=4, min_count=2, xy=xy, icon_size=8)
    return cache, atlas


def test_levels_are_built_once_from_the_same_layout(built):
    cache, atlas = built
    calls = []

    def regrid(base, n):
        calls.append(n)
        return base.regrid(cache, n)

    levels = AtlasLevels(atlas, regrid)
    assert levels[0] is atlas and levels.grid_size(2) == 16
    fine = levels[1]
    assert fine.cells.n == 8 and levels[1] is fine and calls == [8]
    np.testing.assert_array_equal(fine.xy, atlas.xy)
    with pytest.raises(ValueError, match="level must be >= 0"):
        levels[-1]
    with pytest.raises(TypeError, match="level must be an int"):
        levels[1.0]


def test_selection_goes_to_the_visible_children_and_back_to_the_parent(built):
    cache, atlas = built
    fine = atlas.regrid(cache, 8)
    coarse = int(atlas.cells.ids[np.argmax(atlas.cells.count)])
    r, c = divmod(coarse, 4)
    children = {(2 * r + dr) * 8 + 2 * c + dc for dr in (0, 1) for dc in (0, 1)}
    down = carry_selection(atlas, fine, [coarse])
    assert down and set(down) == children & set(fine.cells.ids.tolist()) and down == sorted(down)
    assert carry_selection(fine, atlas, down) == [coarse]
    assert carry_selection(fine, atlas, down[:1]) == [coarse]
    assert carry_selection(atlas, fine, []) == []
