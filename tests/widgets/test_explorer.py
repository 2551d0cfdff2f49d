"""Explorer: atlas and comparison selections drive the viewer, viewer channels select atlas cells,
and neither loops back."""

from __future__ import annotations

import ipywidgets as W
import numpy as np
import pytest
import torch

import atlaswidgets as aw
from atlaswidgets.widgets import explorer
from atlaswidgets.layout.select import selection_direction, strongest_cells
from atlaswidgets.widgets.explorer import Explorer
from atlaswidgets.zoo import kitchen

from .conftest import XSS


def _pca(acts: torch.Tensor, k: int) -> np.ndarray:
    """A cheap deterministic layout (top-k principal components), so no UMAP runs in these tests."""
    x = acts.float() - acts.float().mean(0)
    _, _, v = torch.linalg.svd(x, full_matrices=False)
    return (x @ v[:k].T).numpy().astype(np.float32)


@pytest.fixture(scope="module")
def world():
    """A 160-image kitchen cache of block4 with statistics, a wok/frying-pan attribution, a hostile
    class name, and precomputed layouts for the atlas and the comparison."""
    model = kitchen.model()
    data = kitchen.dataset(160, seed=2)
    classes = list(kitchen.CLASSES)
    classes[classes.index("baking tray")] = XSS
    cache = aw.capture(model, data, "block4", per_image=4, stats=True, classes=classes, progress=False)
    cache.add_attribution(aw.attribute(model, data, "block4", ("wok", "frying pan"), cache=cache,
                                       store=False, progress=False))
    acts = cache["block4"].acts
    xy, y = _pca(acts, 2), _pca(acts, 1)[:, 0]
    atlas = aw.build_atlas(cache, "block4", grid_size=8, min_count=2, xy=xy, icon_size=12)
    comparison = aw.compare_atlas(cache, "wok", "frying pan", "block4", grid_size=6, min_count=2, y=y,
                                  icon_size=12)
    return model, cache, atlas, comparison


def _explorer(world, **kw):
    _, cache, atlas, comparison = world
    kw.setdefault("viewer_options", {"n": 3, "thumb_size": 24})
    return Explorer(cache, atlas=atlas, comparison=comparison, k=4, size=200, **kw)


def _members_mean(cache, atlas, cells) -> np.ndarray:
    rows = atlas.rows_of(cells)
    return cache["block4"].acts[torch.as_tensor(rows)].double().mean(0).numpy()


def test_atlas_selection_shows_the_members_mean_in_the_viewer(world):
    _, cache, atlas, _ = world
    ex = _explorer(world)
    cells = [int(c) for c in atlas.cells.ids[[0, 3]]]
    version = ex.viewer.version
    ex.atlas_widget.set_state({"selected": cells})  # a click (shift-click) in the page
    assert ex.viewer.version == version + 1  # one redraw, no echo
    assert ex.atlas_panel.shown_cells == cells  # the panel follows through link()
    assert ex.viewer.unit["kind"] == "direction" and ex.source == "atlas"
    assert ex.viewer.unit["label"] == f"cells {cells[0]}, {cells[1]} mean"
    want = _members_mean(cache, atlas, cells)
    np.testing.assert_allclose(ex.direction, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ex.viewer.unit["norm"], np.linalg.norm(want), rtol=1e-5)
    # the viewer's examples are that direction's: the top one is the best row of the whole layer
    la = cache["block4"]
    scores = la.acts.double() @ torch.as_tensor(want)
    got = ex.viewer.activation_arrays()
    assert got["sample_ids"][0] == int(la.sample_id[int(scores.argmax())])
    np.testing.assert_allclose(got["values"][0], float(scores.max()), rtol=1e-4)
    # and the plain function gives the same vector
    np.testing.assert_allclose(selection_direction(atlas, cells), want, rtol=1e-5, atol=1e-6)


def test_the_viewer_box_names_the_cells_and_its_arrows_step_through_them(world):
    _, cache, atlas, comparison = world
    ex = _explorer(world)
    ids = [int(c) for c in atlas.cells.ids]
    ex.show_cells([ids[1]])
    assert ex.viewer.unit["short"] == f"cell {ids[1]}" and ex.viewer.unit["steps"] is True

    def arrow(delta):  # what the page's → and ← send
        ex.viewer.set_state({"request": {"kind": "step", "delta": delta, "id": ex.viewer.answered + 1}})

    arrow(1)  # the next cell of the atlas, selected as a click would: the panel follows
    assert ex.atlas_widget.selected == [ids[2]] and ex.atlas_panel.shown_cells == [ids[2]]
    assert ex.viewer.unit["short"] == f"cell {ids[2]}" and ex.viewer.error == ""
    np.testing.assert_allclose(ex.direction, _members_mean(cache, atlas, [ids[2]]), rtol=1e-5, atol=1e-6)
    arrow(-1)
    arrow(-1)
    assert ex.atlas_widget.selected == [ids[0]]
    arrow(-1)  # nothing before the first cell: said, not wrapped around
    assert f"cell {ids[0]} is the first cell of the atlas" in ex.viewer.error
    assert ex.atlas_widget.selected == [ids[0]]
    # a comparison's cells step through the comparison
    cids = [int(c) for c in comparison.cells.ids]
    ex.show_cells(cids[:2], which="comparison")
    assert ex.viewer.unit["short"] == f"cells {cids[0]}, {cids[1]}"
    arrow(1)
    assert ex.comparison_widget.selected == [cids[2]] and ex.source == "comparison"
    # a channel steps through channels again
    ex.viewer.show_channel(5)
    arrow(1)
    assert ex.viewer.unit == {"kind": "channel", "layer": "block4", "channel": 6}


def test_layout_puts_the_atlases_left_and_the_viewer_right(world):
    ex = _explorer(world)
    atlases, viewer = ex.children
    assert ex.layout.flex_flow == "row wrap"  # side by side where they fit, stacked where not
    assert [w for w in atlases.children if not isinstance(w, W.Label)] == [
        ex.atlas_widget, ex.atlas_panel, ex.comparison_widget, ex.comparison_panel]
    assert viewer.children[-1] is ex.viewer and viewer.layout.min_width == "360px"
    assert Explorer.__init__.__kwdefaults__["size"] == 380  # atlas and viewer fit 1400 px side by side


def test_comparison_selection_drives_its_panel_and_the_viewer(world):
    _, cache, _, comparison = world
    ex = _explorer(world)
    cell = int(comparison.cells.ids[np.argmax(comparison.mean_diff)])  # the most wok-leaning cell
    ex.comparison_widget.set_state({"selected": [cell]})
    assert ex.comparison_panel.shown_cells == [cell] and ex.atlas_panel.shown_cells == []
    assert ex.source == "comparison"
    assert ex.viewer.unit["label"] == f"wok vs frying pan: cell {cell} mean"
    np.testing.assert_allclose(ex.direction, _members_mean(cache, comparison, [cell]), rtol=1e-5, atol=1e-6)


def test_a_channel_highlights_the_cells_where_it_is_strongest(world):
    _, cache, atlas, comparison = world
    ex = _explorer(world, highlight=3)
    col = cache["block4"].acts[:, 84].double().numpy()
    for which, w, a in (("atlas", ex.atlas_widget, atlas), ("comparison", ex.comparison_widget, comparison)):
        means = np.array([col[a.cells.members(k)].mean() for k in range(len(a.cells.ids))])
        want = sorted(int(i) for i in a.cells.ids[np.argsort(-means)[:3]])
        assert strongest_cells(a, 84, 3) == want, which
    picked = [int(atlas.cells.ids[0])]
    ex.atlas_widget.selected = picked
    shown = list(ex.atlas_panel.shown_cells)
    version = ex.viewer.version
    # the page's request, as ipywidgets hands it over
    ex.viewer.set_state({"request": {"kind": "channel", "channel": 84, "id": 1}})
    assert ex.viewer.error == ""
    # the viewer drew the channel once and kept it
    assert ex.viewer.version == version + 1
    assert ex.viewer.unit == {"kind": "channel", "layer": "block4", "channel": 84}
    assert ex.atlas_widget.highlighted == strongest_cells(atlas, 84, 3)
    assert ex.comparison_widget.highlighted == strongest_cells(comparison, 84, 3)
    # a highlight is not a selection: the user's selection and its panel stay
    assert ex.atlas_widget.selected == picked and ex.atlas_panel.shown_cells == shown
    assert ex.direction is None
    # next() is a channel switch too
    ex.viewer.next()
    assert ex.atlas_widget.highlighted == strongest_cells(atlas, 85, 3)
    assert ex.viewer.unit["channel"] == 85 and ex.viewer.version == version + 2
    # a new selection shows its direction and clears the channel's highlight everywhere
    ex.atlas_widget.selected = [int(atlas.cells.ids[1])]
    assert ex.viewer.unit["kind"] == "direction"
    assert ex.atlas_widget.highlighted == [] and ex.comparison_widget.highlighted == []


def test_no_update_cycles(world):
    """Count every change: one click gives one redraw and one panel update, and a channel gives one
    redraw and one highlight per atlas and no selection, however the two links chain."""
    _, _, atlas, comparison = world
    ex = _explorer(world)
    counts = {"unit": 0, "atlas": 0, "panel": 0, "comparison": 0}
    ex.viewer.observe(lambda c: counts.__setitem__("unit", counts["unit"] + 1), names="unit")
    ex.atlas_widget.observe(lambda c: counts.__setitem__("atlas", counts["atlas"] + 1), names="selected")
    ex.atlas_panel.observe(lambda c: counts.__setitem__("panel", counts["panel"] + 1), names="shown_cells")
    ex.comparison_widget.observe(lambda c: counts.__setitem__("comparison", counts["comparison"] + 1),
                                 names="selected")
    ids = [int(i) for i in atlas.cells.ids]
    for i in range(3):
        ex.atlas_widget.selected = [ids[i], ids[i + 1]]
    assert counts == {"unit": 3, "atlas": 3, "panel": 3, "comparison": 0}
    ex.viewer.show_channel(7)
    assert counts == {"unit": 4, "atlas": 3, "panel": 3, "comparison": 0}
    assert ex.viewer.unit["kind"] == "channel" and ex.atlas_widget.highlighted
    # the same channel again: nothing moves
    ex.highlight_channel(7)
    assert counts == {"unit": 4, "atlas": 3, "panel": 3, "comparison": 0}
    # a click after a highlight shows a direction again
    ex.atlas_widget.selected = [ids[0]]
    assert ex.viewer.unit["kind"] == "direction" and counts["unit"] == 5
    # clearing a selection keeps what the viewer shows
    ex.atlas_widget.selected = []
    assert counts["unit"] == 5 and ex.viewer.unit["kind"] == "direction"


def test_a_zoom_carries_selection_and_highlight_without_redrawing_the_viewer(world):
    _, cache, atlas, _ = world
    ex = _explorer(world)
    ex.atlas_widget.selected = [int(atlas.cells.ids[0])]
    ex.viewer.show_channel(84)
    picked = list(ex.atlas_widget.highlighted)
    version = ex.viewer.version
    ex.atlas_widget.level = 1  # the page zooms in
    # the children of the selected and of the highlighted cells
    assert ex.atlas_widget.cells_level == 1 and ex.atlas_widget.selected and ex.atlas_widget.highlighted
    assert ex.atlas_widget.highlighted != picked
    assert ex.atlas_panel.atlas is ex.atlas_widget.atlas
    assert ex.viewer.version == version and ex.viewer.unit["channel"] == 84
    # and a click at the new level still drives the viewer
    fine = ex.atlas_widget.atlas
    cell = next(int(c) for c in fine.cells.ids if int(c) not in ex.atlas_widget.selected)
    ex.atlas_widget.selected = [cell]
    assert ex.viewer.version == version + 1
    np.testing.assert_allclose(ex.direction, _members_mean(cache, fine, [cell]), rtol=1e-5, atol=1e-6)
    # a channel picked while zoomed in highlights cells of the level shown
    ex.viewer.show_channel(84)
    assert ex.atlas_widget.highlighted == strongest_cells(fine, 84, 4)


def test_show_cells_and_errors_in_the_viewer(world, monkeypatch):
    _, cache, atlas, _ = world
    ex = _explorer(world)
    ids = [int(i) for i in atlas.cells.ids[:2]]
    d = ex.show_cells(ids)
    np.testing.assert_allclose(d, _members_mean(cache, atlas, ids), rtol=1e-5, atol=1e-6)
    ex.viewer.show_channel(3)
    # the same cells again: their direction comes back (the selection did not change, so it is
    # show_cells that resends it), and the channel's highlight goes
    assert ex.atlas_widget.selected == sorted(ids) and ex.atlas_widget.highlighted
    ex.show_cells(ids)
    assert ex.viewer.unit["kind"] == "direction" and ex.atlas_widget.highlighted == []
    with pytest.raises(ValueError, match="selection is empty"):
        ex.show_cells([])
    with pytest.raises(ValueError, match="not visible cells"):
        ex.show_cells([10_000])
    with pytest.raises(ValueError, match='"atlas" or "comparison"'):
        ex.show_cells(ids, which="nope")
    # a selection whose members never fire (a dead ReLU region) has an all-zero mean: the viewer
    # shows the message, the click does not raise through the comm, and the next click recovers
    monkeypatch.setattr(explorer, "selection_direction", lambda atlas, cells: np.zeros(128, np.float32))
    version = ex.viewer.version
    ex.atlas_widget.set_state({"selected": [ids[0]]})
    assert "all zeros" in ex.viewer.error and ex.viewer.version == version
    monkeypatch.undo()
    ex.atlas_widget.set_state({"selected": [ids[1]]})
    assert ex.viewer.error == "" and ex.viewer.version == version + 1


def test_without_comparison_and_auto_built(world):
    _, cache, atlas, _ = world
    ex = Explorer(cache, atlas=atlas, comparison=False, viewer_options={"n": 2})
    assert ex.comparison_widget is None and ex.comparison_panel is None
    assert "comparison" not in ex.highlight_channel(0)
    with pytest.raises(ValueError, match="no comparison atlas"):
        ex.show_cells([int(atlas.cells.ids[0])], which="comparison")
    y = _pca(cache["block4"].acts, 1)[:, 0]
    auto = Explorer(cache, atlas=atlas, y=y, compare_grid_size=5, viewer_options={"n": 2})
    assert auto.comparison_widget.pair == ["wok", "frying pan"]
    assert auto.comparison_widget.atlas.cells.n == 5
    assert "Explorer(layer='block4'" in repr(auto)


def test_bad_input(world):
    _, cache, atlas, comparison = world
    with pytest.raises(TypeError, match="ActivationCache"):
        Explorer("cache")
    with pytest.raises(TypeError, match="comparison="):
        Explorer(cache, atlas=comparison)
    with pytest.raises(TypeError, match="comparison must be"):
        Explorer(cache, atlas=atlas, comparison="wok")
    with pytest.raises(ValueError, match="was not captured"):
        Explorer(cache, layer="block9", atlas=atlas)
    with pytest.raises(ValueError, match="highlight must be"):
        Explorer(cache, atlas=atlas, highlight=0)
    with pytest.raises(ValueError, match="pair must be two classes"):
        Explorer(cache, atlas=atlas, pair=("wok",))
    nostats = aw.capture(kitchen.model(), kitchen.dataset(8, seed=3), "block4", per_image=2, progress=False)
    with pytest.raises(ValueError, match="stats=True"):
        Explorer(nostats, xy=np.zeros((16, 2), np.float32))
    with pytest.raises(ValueError, match="out of range"):
        strongest_cells(atlas, 128, 2)
    with pytest.raises(ValueError, match="n must be"):
        strongest_cells(atlas, 0, 0)


def test_unnamed_classes_build_the_comparison():
    """A cache without class names: the auto-built comparison takes the stored pair by the kit's
    own spelling ("class:1"), which resolves again (it used to fail with "Class name 'class:1'
    cannot be looked up")."""
    model = kitchen.model()
    data = kitchen.dataset(48, seed=4)
    cache = aw.capture(model, data, "block4", per_image=4, stats=True, progress=False)
    cache.classes = None  # as a model without names would leave it
    cache.add_attribution(aw.attribute(model, data, "block4", ("wok", "frying pan"), cache=cache,
                                       store=False, progress=False))  # names from the model
    acts = cache["block4"].acts
    atlas = aw.build_atlas(cache, "block4", grid_size=4, min_count=1, xy=_pca(acts, 2), icon_size=8)
    ex = Explorer(cache, atlas=atlas, y=_pca(acts, 1)[:, 0], compare_grid_size=4,
                  viewer_options={"n": 2})
    assert ex.comparison_widget.pair == ["class:1", "class:0"]
    assert ex.comparison_widget.pairs == [["class:1", "class:0"]]
    assert all(name.startswith("class:") or name == "?" for name in ex.atlas_widget.cell_class)
