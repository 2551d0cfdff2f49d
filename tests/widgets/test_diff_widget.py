"""DiffWidget trait state: the novelty buffers, zoom levels, the most-novel selection, links, errors."""

from __future__ import annotations

import numpy as np
import pytest

from atlaswidgets.layout.diff import DiffAtlas, diff_atlas
from atlaswidgets.widgets._common import bundle
from atlaswidgets.widgets.atlas import AtlasWidget
from atlaswidgets.widgets.diff import DiffWidget
from atlaswidgets.widgets.examples import ExamplePanel
from atlaswidgets.widgets.link import link

from ..layout._synthetic import clustered_cache
from .conftest import XSS

HOSTILE_B = "b&w <b>bold</b>"


@pytest.fixture(scope="module")
def setup():
    """A 4-cluster cache whose cluster-3 rows are wholly novel (1) and the rest shared (0)."""
    cache, xy, cluster = clustered_cache(classes=["wok", "frying pan", "kettle", "eggs"])
    novelty = (cluster == 3).astype(np.float32)
    diff = diff_atlas(cache, novelty, (XSS, HOSTILE_B), "block", grid_size=6, min_count=2,
                      icon_size=12, xy=xy)
    return cache, diff, cluster


def _novel_cells(diff: DiffAtlas, cluster) -> set[int]:
    """Cells whose members are all cluster-3 rows."""
    return {int(i) for i in diff.cells.ids if (cluster[diff.rows_of([int(i)])] == 3).all()}


def test_traits_encode_the_novelty(setup):
    cache, diff, cluster = setup
    w = DiffWidget(diff, cache)
    assert isinstance(w, AtlasWidget) and w.mode == "diff"
    assert w.names == [XSS, HOSTILE_B]  # as given, for the page to show as text
    np.testing.assert_array_equal(w.cell_arrays()["ids"], diff.cells.ids)
    got = w.value_arrays()
    np.testing.assert_allclose(got["novelty"], diff.mean_novelty, rtol=1e-6)
    np.testing.assert_allclose(got["value"], diff.mean_novelty / diff.scale, rtol=1e-6)
    assert w.novelty_scale == pytest.approx(diff.scale) == pytest.approx(1.0)
    # the corner of cluster 3 is at the top of the scale, every other cell at the bottom
    novel = _novel_cells(diff, cluster)
    assert novel and len(novel) < len(diff.cells.ids)
    for i, v in zip(diff.cells.ids.tolist(), got["value"]):
        assert v == (1.0 if i in novel else 0.0)


def test_select_most_novel_and_a_linked_panel(setup):
    cache, diff, cluster = setup
    w = DiffWidget(diff, cache)
    panel = ExamplePanel(diff, cache, k=4)
    link(w, panel)
    novel = _novel_cells(diff, cluster)
    top = w.select_most_novel(len(novel))
    assert set(top) == novel and w.selected == sorted(novel)
    assert panel.selected == w.selected
    # the panel's examples are images of cluster-3 samples (samples 45..59)
    ids = panel.example_arrays()["sample_ids"]
    assert len(ids) == 4 and (ids // 15 == 3).all()
    assert w.select_most_novel(1000) == diff.ranked_cells().tolist()  # capped at the visible cells
    for bad in (0, -1, 2.5, True, "3"):
        with pytest.raises(ValueError, match="positive int"):
            w.select_most_novel(bad)


def test_zoom_level_keeps_novelty_and_scale(setup):
    cache, diff, cluster = setup
    w = DiffWidget(diff, cache, levels=2)
    assert w.n_levels == 2
    w.selected = sorted(_novel_cells(diff, cluster))
    w.level = 1  # what the page asks for on zoom
    fine = w.atlas
    assert isinstance(fine, DiffAtlas) and fine.cells.n == 12 and w.grid_size == 12
    np.testing.assert_array_equal(fine.novelty, diff.novelty)
    np.testing.assert_array_equal(fine.xy, diff.xy)
    got = w.value_arrays()
    np.testing.assert_allclose(got["novelty"], fine.mean_novelty, rtol=1e-6)
    np.testing.assert_allclose(got["value"], np.clip(fine.mean_novelty / diff.scale, 0, 1), rtol=1e-6)
    assert w.names == [XSS, HOSTILE_B] and w.novelty_scale == pytest.approx(diff.scale)
    # the selection carried over covers only novel fine cells
    assert w.selected and all(v == 1.0 for v in got["value"][np.isin(fine.cells.ids, w.selected)])
    assert set(w.select_most_novel(3)) <= set(fine.cells.ids[fine.mean_novelty == 1].tolist())


def test_from_cache_builds_the_diff(setup):
    cache, diff, cluster = setup
    w = DiffWidget.from_cache(cache, diff.novelty, ("base", "variant"), "block", grid_size=6,
                              min_count=2, icon_size=12, xy=diff.xy)
    np.testing.assert_array_equal(w.cell_ids, DiffWidget(diff, cache).cell_ids)
    assert w.names == ["base", "variant"] and w.icon_size == 12


def test_from_model_diff_shows_the_laid_out_model():
    """A ModelDiff's atlas, cache and model reach the widget, for either direction."""
    from torch import nn

    from atlaswidgets.experiments.diff import ModelDiff

    cache_b, xy, _ = clustered_cache()
    cache_a, _, _ = clustered_cache()  # the same rows; a lacks one of b's channels
    cache_a["block"].acts[:, 3] = 0.0
    model_a, model_b = nn.Identity(), nn.Identity()
    d = ModelDiff.from_caches(model_a, model_b, None, cache_a, cache_b, ("base", "variant"))
    settings = dict(grid_size=6, min_count=2, icon_size=12, xy=xy)
    w = DiffWidget.from_model_diff(d, "block", **settings)
    want = d.atlas("block", **settings)
    assert w.names == ["base", "variant"] and w._cache is cache_b and w._model is model_b
    np.testing.assert_array_equal(w.cell_arrays()["ids"], want.cells.ids)
    np.testing.assert_allclose(w.value_arrays()["novelty"], want.mean_novelty, rtol=1e-6)
    assert w.select_most_novel(3) == want.ranked_cells()[:3].tolist()
    back = DiffWidget.from_model_diff(d, "block", direction="a", **settings)
    assert back.names == ["variant", "base"] and back._cache is cache_a and back._model is model_a
    with pytest.raises(TypeError, match="needs a ModelDiff"):
        DiffWidget.from_model_diff(want)


def test_bad_input(setup, small):
    cache, diff, _ = setup
    _, atlas = small
    with pytest.raises(TypeError, match="needs a DiffAtlas .*diff_atlas"):
        DiffWidget(atlas)
    with pytest.raises(TypeError, match="needs a DiffAtlas"):
        DiffWidget(diff.novelty)
    with pytest.raises(ValueError, match="novelty must have shape"):
        DiffWidget.from_cache(cache, diff.novelty[:-1], xy=diff.xy)
    other, _, _ = clustered_cache(samples_per_cluster=10)
    with pytest.raises(ValueError, match="pass the cache the atlas was built from"):
        DiffWidget(diff, other)
    w = DiffWidget(diff)  # no cache: one level
    assert w.n_levels == 1
    with pytest.raises(ValueError, match="need the cache"):
        w.level = 1


def test_the_page_module_is_split_and_sets_only_text():
    module = str(DiffWidget._esm)
    assert DiffWidget._esm == AtlasWidget._esm and module == bundle("atlas").read_text()
    # one module (js/src/atlas.js with the scored modes and input it imports) with one default export
    for part in ("atlas_scored.js", "atlas_input.js", "atlas.js"):
        assert f"// src/{part}\n" in module
    assert module.count("as default") == 1 and module.rstrip().endswith("atlas_default as default\n};")
    # names reach the page only through textContent and title
    for risky in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert risky not in module
    with pytest.raises(FileNotFoundError, match="npm run build"):
        bundle("atlas_scored")  # a part, not a widget: it has no bundle of its own
