"""AtlasWidget zoom levels and icon sets: finer grids of the same layout, feature-vis icons, links."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from atlaswidgets.layout.atlas import build_atlas
from atlaswidgets.layout.compare import compare_atlas
from atlaswidgets.widgets.atlas import AtlasWidget
from atlaswidgets.widgets.compare import ComparisonWidget
from atlaswidgets.widgets.examples import ExamplePanel
from atlaswidgets.widgets.link import link

from ..layout._synthetic import clustered_cache

FV = dict(steps=2, size=16, chunk=64, progress=False)


class _Tiny(nn.Module):
    """A layer named "block" with the synthetic cache's 8 channels, then a 4-class head."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.block = nn.Conv2d(3, 8, 3, padding=1)
        self.head = nn.Linear(8, 4)

    def forward(self, x):
        return self.head(torch.relu(self.block(x)).mean((2, 3)))


@pytest.fixture(scope="module")
def world():
    cache, xy, _ = clustered_cache(samples_per_cluster=30, per_image=6)
    atlas = build_atlas(cache, "block", grid_size=4, min_count=2, xy=xy, icon_size=12)
    return cache, atlas


@pytest.fixture(scope="module")
def tiny():
    return _Tiny().eval()


def _sheet_tile(widget, i):
    sheet = np.asarray(Image.open(io.BytesIO(widget.sprite)))
    s, cols = widget.icon_size, widget.sprite_cols
    r, c = divmod(i, cols)
    return sheet[r * s:(r + 1) * s, c * s:(c + 1) * s, :3]


def test_level_one_regrids_the_same_layout_at_twice_the_side(world):
    cache, atlas = world
    w = AtlasWidget(atlas, cache)
    assert (w.level, w.cells_level, w.n_levels, w.grid_size) == (0, 0, 2, 4)
    w.level = 1
    fine = w.atlas
    assert fine is w.atlas_at(1) and w.atlas_at(0) is atlas
    assert w.cells_level == 1 and w.grid_size == 8 and fine.cells.n == 8
    assert fine.xy is atlas.xy or np.array_equal(fine.xy, atlas.xy)  # no new layout
    assert fine.min_count == atlas.min_count == 2
    np.testing.assert_array_equal(w.cell_arrays()["ids"], fine.cells.ids)
    assert w.n_cells == len(fine.cells.ids) > len(atlas.cells.ids)
    # every fine cell lies inside one coarse cell: its rows are a subset of the parent's rows
    for k, (r, c) in enumerate(fine.cells.ij):
        parent = int((r // 2) * 4 + c // 2)
        assert set(fine.cells.members(k)) <= set(atlas.rows_of([parent]))
    # the sprite is this level's example icons, in cell order
    np.testing.assert_array_equal(_sheet_tile(w, 5), fine.icons[5].permute(1, 2, 0).numpy())
    w.level = 0
    assert w.grid_size == 4 and w.atlas is atlas


def test_selection_is_carried_to_children_and_back_to_parents(world):
    cache, atlas = world
    w = AtlasWidget(atlas, cache)
    coarse = int(atlas.cells.ids[np.argmax(atlas.cells.count)])
    w.selected = [coarse]
    w.level = 1
    fine = w.atlas
    r, c = divmod(coarse, 4)
    children = {(2 * r + dr) * 8 + 2 * c + dc for dr in (0, 1) for dc in (0, 1)}
    assert w.selected and set(w.selected) == children & set(fine.cells.ids.tolist())
    assert set(w.selected_rows()) <= set(atlas.rows_of([coarse]))
    # ids name cells of the level shown: a coarse id that is no visible fine cell is refused
    hidden = next(i for i in range(64) if i not in set(fine.cells.ids.tolist()))
    with pytest.raises(ValueError, match="not visible cells of this 8x8 grid"):
        w.selected = [hidden]
    w.selected = [w.selected[0]]
    w.level = 0
    assert w.selected == [coarse]


def test_level_bad_input(world):
    cache, atlas = world
    w = AtlasWidget(atlas, cache, levels=2)
    with pytest.raises(ValueError, match=r"level must be in \[0, 1\], got 2"):
        w.level = 2
    assert w.level == 0 and w.grid_size == 4
    with pytest.raises(ValueError, match="zoom levels need the cache"):
        AtlasWidget(atlas).atlas_at(1)
    with pytest.raises(ValueError, match=r"levels must be an int in \[1, 6\]"):
        AtlasWidget(atlas, cache, levels=0)
    # a level too fine for the data: refused, and the page is told to stop asking
    most = int(atlas.regrid(cache, 8).cells.count.max()) + 1  # more than any 8x8 cell holds
    sparse = AtlasWidget(build_atlas(cache, "block", grid_size=4, min_count=most,
                                     xy=atlas.xy, icon_size=12), cache, levels=3)
    with pytest.raises(ValueError, match=f"No cell of the 8x8 grid holds {most} rows"):
        sparse.level = 1
    assert (sparse.level, sparse.cells_level, sparse.n_levels) == (0, 0, 1)


def test_linked_panel_follows_the_level(world):
    cache, atlas = world
    w = AtlasWidget(atlas, cache)
    panel = ExamplePanel(atlas, cache, k=4, thumb_size=16)
    link(w, panel)
    coarse = int(atlas.cells.ids[0])
    w.selected = [coarse]
    pages = []  # what the panel's page is sent to show during the zoom
    panel.observe(lambda change: pages.append(change["new"]), names="shown_cells")
    w.level = 1
    assert panel.atlas is w.atlas and panel.selected == w.selected
    # the old examples stay until the carried selection's arrive: the panel never goes blank
    assert pages == [w.selected] and not w.switching
    fine_id = w.selected[0]
    w.selected = [fine_id]
    assert panel.shown_cells == [fine_id]
    ex = w.atlas.examples([fine_id], k=4)
    assert panel.example_arrays()["sample_ids"].tolist() == ex.sample_id.tolist()
    w.level = 0
    assert panel.atlas is atlas and panel.selected == [coarse]


def test_feature_vis_icons_render_once_per_level_and_are_cached(world, tiny, tmp_path):
    cache, atlas = world
    w = AtlasWidget(atlas, cache, model=tiny, fv_options=dict(FV, store=tmp_path))
    assert w.can_feature_vis and w.icons == w.sprite_icons == "examples"
    examples_sheet = w.sprite
    w.use_icons("feature-vis", wait=True)
    assert w.fv_state == "" and w.fv_progress == 1.0
    assert w.sprite_icons == "feature-vis" and w.icon_size == 16 and w.sprite != examples_sheet
    fv0 = w.icons_at(0, "feature-vis")
    assert fv0.shape == (len(atlas.cells.ids), 3, 16, 16) and fv0.dtype == torch.uint8
    np.testing.assert_array_equal(_sheet_tile(w, 2), fv0[2].permute(1, 2, 0).numpy())
    assert len(list(tmp_path.glob("icons-*"))) == 1  # stored under fv_options["store"]
    # zooming in renders the finer level's own icons (one per fine cell)
    w.level = 1
    assert w.sprite_icons == "examples"  # the level's own icons render in the background
    w.wait_icons()
    fv1 = w.icons_at(1, "feature-vis")
    assert w.sprite_icons == "feature-vis" and fv1.shape[0] == len(w.atlas.cells.ids)
    assert len(list(tmp_path.glob("icons-*"))) == 2
    # kept per level: going back does not render again, and matches the disk store
    w.level = 0
    assert w.icons_at(0, "feature-vis") is fv0
    again = AtlasWidget(atlas, cache, model=tiny, icons="feature-vis", fv_options=dict(FV, store=tmp_path))
    again.wait_icons()
    assert again.sprite_icons == "feature-vis" and torch.equal(again.icons_at(0), fv0)
    w.use_icons("examples")
    assert w.sprite == examples_sheet and w.icon_size == 12


def test_precomputed_icons(world):
    cache, atlas = world
    w = AtlasWidget(atlas, cache)
    assert not w.can_feature_vis
    m = len(atlas.cells.ids)
    icons = torch.arange(m * 3 * 10 * 10, dtype=torch.int64).remainder(256).to(torch.uint8)
    icons = icons.reshape(m, 3, 10, 10)
    w.set_icons(0, icons.numpy())
    assert w.can_feature_vis and w.sprite_icons == "examples"
    w.use_icons("feature-vis")
    assert w.icon_size == 10
    np.testing.assert_array_equal(_sheet_tile(w, m - 1), icons[m - 1].permute(1, 2, 0).numpy())
    # level 1 has no feature-vis icons and no model to render them: refused, nothing changes
    with pytest.raises(ValueError, match=r"need a model.*set_icons\(1, icons\)"):
        w.level = 1
    assert (w.level, w.cells_level, w.grid_size) == (0, 0, 4)


def test_icon_bad_input(world, tiny):
    cache, atlas = world
    w = AtlasWidget(atlas, cache)
    with pytest.raises(ValueError, match=r"icons must be one of \['examples', 'feature-vis'\]"):
        w.use_icons("crops")
    with pytest.raises(ValueError, match="icons must be one of"):
        AtlasWidget(atlas, cache, icons="fv")
    with pytest.raises(ValueError, match="need a model"):
        AtlasWidget(atlas, cache, icons="feature-vis")
    with pytest.raises(ValueError, match="need a model"):
        w.use_icons("feature-vis")
    assert w.icons == w.sprite_icons == "examples"  # the refused switch was undone
    m = len(atlas.cells.ids)
    with pytest.raises(ValueError, match=rf"must have shape \({m}, 3, s, s\)"):
        w.set_icons(0, torch.zeros(m + 1, 3, 8, 8, dtype=torch.uint8))
    with pytest.raises(ValueError, match=rf"must have shape \({m}, 3, s, s\)"):
        w.set_icons(0, torch.zeros(m, 3, 8, 6, dtype=torch.uint8))
    with pytest.raises(TypeError, match="must be uint8"):
        w.set_icons(0, torch.zeros(m, 3, 8, 8))
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        AtlasWidget(atlas, cache, model="net")
    no_size = AtlasWidget(atlas, None, model=tiny)
    with pytest.raises(ValueError, match=r"fv_options=\{'size'"):
        no_size.use_icons("feature-vis")


def test_comparison_widget_has_levels_and_feature_vis(tiny):
    cache, _, _ = clustered_cache(samples_per_cluster=30, per_image=6)
    rng = np.random.default_rng(0)
    n = cache["block"].n_rows
    cache["block"].attributions["class1-class0"] = torch.as_tensor(
        rng.normal(size=(n, 8)).astype(np.float32))
    y = rng.uniform(size=n).astype(np.float32)
    comp = compare_atlas(cache, "class1", "class0", "block", y=y, grid_size=4, min_count=2,
                         icon_size=12)
    w = ComparisonWidget(comp, cache, model=tiny, fv_options=FV)
    panel = ExamplePanel(comp, cache, k=3, thumb_size=16)
    link(w, panel)
    w.level = 1
    fine = w.atlas
    assert isinstance(fine, type(comp)) and fine.cells.n == 8 and w.grid_size == 8
    np.testing.assert_array_equal(fine.y, comp.y)
    np.testing.assert_allclose(w.value_arrays()["diff"], fine.mean_diff)
    assert panel.atlas is fine
    w.use_icons("feature-vis", wait=True)
    assert w.sprite_icons == "feature-vis" and w.icons_at().shape[0] == len(fine.cells.ids)
    # a new pair starts again at level 0 with the icon set asked for
    w.show_pair("class0", "class1")
    w.wait_icons()
    assert (w.level, w.cells_level, w.grid_size, w.sprite_icons) == (0, 0, 4, "feature-vis")
    assert panel.atlas is w.atlas and w.atlas.a == "class0"


def test_requests_from_the_page(world):
    # what ipywidgets does with the page's comm messages after a zoom and a toggle click
    cache, atlas = world
    w = AtlasWidget(atlas, cache)
    w.set_state({"level": 1})
    assert (w.level, w.cells_level, w.grid_size) == (1, 1, 8)
    # a refused toggle (no model) is undone, so the page's toggle and status recover
    with pytest.raises(ValueError, match="need a model"):
        w.set_state({"icons": "feature-vis"})
    assert w.icons == w.sprite_icons == "examples"


def test_feature_vis_renders_in_the_background_with_progress_and_cancel(world, tiny, tmp_path):
    cache, atlas = world
    w = AtlasWidget(atlas, cache, model=tiny, fv_options=dict(FV, steps=100_000, store=tmp_path))
    seen = []
    w.observe(lambda c: seen.append(c["new"]), names="fv_progress")
    w.use_icons("feature-vis")  # returns at once: the render runs in a thread
    assert w.fv_state == "rendering" and w.sprite_icons == "examples" and w.icons == "feature-vis"
    assert not w.wait_icons(timeout=1.0)
    assert seen and 0 < seen[-1] < 1  # progress arrives while it runs
    # the model answers other work meanwhile: hooks of this thread see only its own passes
    before = build_atlas(cache, "block", grid_size=4, min_count=2, xy=atlas.xy, icon_size=12)
    from atlaswidgets.cache.hooks import forward_layers
    x = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        out = forward_layers(tiny, ("block",), x)["block"]
    torch.testing.assert_close(out, tiny.block(x))
    assert before.cells.n == 4
    w.cancel_icons()  # the page's Cancel: ask for examples again
    assert w.wait_icons(timeout=30)
    assert (w.fv_state, w.icons, w.sprite_icons) == ("cancelled", "examples", "examples")
    assert (0, "feature-vis") not in w._icon_sets


def test_a_failed_background_render_is_shown_and_the_toggle_recovers(world, tiny):
    cache, atlas = world
    w = AtlasWidget(atlas, cache, model=tiny, fv_options=dict(FV, lr=float("nan")))
    w.use_icons("feature-vis")
    with pytest.raises(ValueError, match="lr"):
        w.wait_icons()
    assert w.fv_state == "failed" and "lr" in w.fv_message
    assert w.icons == w.sprite_icons == "examples"
