"""ComparisonWidget trait state: the comparison's buffers, switching pairs, the pair menu, links, errors."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from atlaswidgets.layout.atlas import build_atlas
from atlaswidgets.layout.compare import compare_atlas
from atlaswidgets.widgets.atlas import AtlasWidget
from atlaswidgets.widgets.compare import ComparisonWidget, available_pairs, class_color
from atlaswidgets.widgets.examples import ExamplePanel
from atlaswidgets.widgets.link import link

from ..layout._synthetic import clustered_cache
from .conftest import XSS

HOSTILE = "b&w <b>bold</b>"
CLASSES = [XSS, "wok", "frying pan", HOSTILE]


def _store(cache, key, sums, seed):
    """Store an attribution under ``key`` whose per-row channel sums are ``sums``."""
    la = cache["block"]
    parts = np.random.default_rng(seed).dirichlet(np.ones(la.n_channels), size=la.n_rows)
    la.attributions[key] = torch.as_tensor(parts * np.asarray(sums)[:, None], dtype=torch.float32)


@pytest.fixture()
def setup():
    """A cache with each class's own attribution for wok and frying pan, and the XSS-named pair."""
    cache, _, cluster = clustered_cache(classes=CLASSES)
    n = cache["block"].n_rows
    rng = np.random.default_rng(3)
    # wok rows lean to wok, frying-pan rows to frying pan, the rest in between
    lean = np.select([cluster == 1, cluster == 2], [1.5, -1.5], 0.0)
    _store(cache, "wok", lean + rng.normal(0, 0.5, n), seed=1)
    _store(cache, "frying pan", -lean + rng.normal(0, 0.5, n), seed=2)
    _store(cache, f"{XSS}-{HOSTILE}", rng.normal(0, 1, n), seed=4)
    y = rng.uniform(-2, 5, n)
    comp = compare_atlas(cache, "wok", "frying pan", y=y, grid_size=6, min_count=2, icon_size=12)
    return cache, comp


def test_traits_encode_the_comparison(setup):
    cache, comp = setup
    w = ComparisonWidget(comp, cache)
    assert isinstance(w, AtlasWidget) and w.mode == "compare"
    assert (w.left_label, w.right_label, w.pair) == ("frying pan", "wok", ["wok", "frying pan"])
    cells = w.cell_arrays()
    np.testing.assert_array_equal(cells["ids"], comp.cells.ids)
    np.testing.assert_array_equal(cells["ij"], comp.cells.ij)
    got = w.value_arrays()
    np.testing.assert_allclose(got["value"], np.clip(comp.mean_diff / comp.scale, -1, 1), rtol=1e-6)
    np.testing.assert_allclose(got["diff"], comp.mean_diff, rtol=1e-6)
    np.testing.assert_allclose(got["attr_a"], comp.mean_attr_a, rtol=1e-6)
    np.testing.assert_allclose(got["attr_b"], comp.mean_attr_b, rtol=1e-6)
    assert w.diff_scale == pytest.approx(comp.scale)
    assert got["value"].min() >= -1 and got["value"].max() <= 1
    # the colour follows the side: right-half cells lean to wok, left-half to frying pan
    right = comp.cells.ij[:, 1] >= 3
    assert (got["value"][right] > 0).all() and (got["value"][~right] < 0).all()
    assert w.cell_class == comp.top_class_names


def test_show_pair_swaps_sides_keeps_y_and_clears_the_selection(setup):
    cache, comp = setup
    w = ComparisonWidget.from_cache(cache, "wok", "frying pan", y=comp.y, grid_size=6, min_count=2,
                                    icon_size=12)
    np.testing.assert_array_equal(w.cell_ids, ComparisonWidget(comp, cache).cell_ids)
    w.selected = [int(comp.cells.ids[0])]
    before = w.value_arrays()["value"]
    before_ij = {tuple(ij): v for ij, v in zip(comp.cells.ij.tolist(), before)}

    new = w.show_pair("frying pan", "wok")
    assert w.atlas is new and (new.a, new.b) == ("frying pan", "wok")
    assert (w.left_label, w.right_label, w.pair) == ("wok", "frying pan", ["frying pan", "wok"])
    assert w.selected == []
    np.testing.assert_array_equal(new.y, comp.y)  # the same embedding: no UMAP rerun
    np.testing.assert_allclose(new.x, -comp.x, atol=1e-6)
    assert new.cells.n == 6 and w.grid_size == 6 and w.icon_size == 12
    assert new.cells.count.min() >= 2  # min_count from from_cache is kept
    # every cell moves to the mirrored column with the opposite colour
    after = w.value_arrays()["value"]
    for (r, c), v in zip(new.cells.ij.tolist(), after):
        assert before_ij[(r, 5 - c)] == pytest.approx(-v, abs=1e-5)
    np.testing.assert_array_equal(w.cell_arrays()["ids"], new.cells.ids)
    assert w.n_cells == len(new.cells.ids) and w.cell_class == new.top_class_names
    # colours follow the class, not the side: wok keeps its colour on the left
    wok, pan = class_color("wok", cache.classes), class_color("frying pan", cache.classes)
    assert wok != pan and w.side_colors == [list(wok), list(pan)]
    assert ComparisonWidget(comp, cache).side_colors == [list(pan), list(wok)]
    w.selected = [int(new.cells.ids[-1])]  # selections now refer to the new cells
    np.testing.assert_array_equal(w.selected_rows(), new.rows_of(w.selected))


def test_pairs_come_from_the_cache_keys(setup):
    cache, comp = setup
    w = ComparisonWidget(comp, cache)
    # singles "wok" and "frying pan" make one pair (in the current orientation); the pair key another
    assert w.pairs == [["wok", "frying pan"], [XSS, HOSTILE]]
    assert available_pairs(cache, "block") == [["wok", "frying pan"], [XSS, HOSTILE]]
    assert available_pairs(cache, "block", ("frying pan", "wok"))[0] == ["frying pan", "wok"]
    # a pair key whose reverse is already listed adds nothing; a new single adds its pairs
    _store(cache, f"{HOSTILE}-{XSS}", np.ones(cache["block"].n_rows), seed=5)
    _store(cache, XSS, np.ones(cache["block"].n_rows), seed=6)
    assert available_pairs(cache, "block") == [
        ["wok", "frying pan"], [XSS, HOSTILE], ["wok", XSS], ["frying pan", XSS],
    ]
    # no cache: nothing to switch to
    assert ComparisonWidget(comp).pairs == []


def test_the_page_picks_a_pair(setup):
    cache, comp = setup
    w = ComparisonWidget(comp, cache)
    w.set_state({"pair": [XSS, HOSTILE]})  # what ipywidgets does when the menu changes
    assert (w.atlas.a, w.atlas.b) == (XSS, HOSTILE)
    assert (w.right_label, w.left_label) == (XSS, HOSTILE)
    np.testing.assert_array_equal(w.atlas.y, comp.y)
    assert w.atlas.mean_attr_a is None and w.value_arrays()["attr_a"] is None
    w.set_state({"pair": ["frying pan", "wok"]})  # the swap button
    assert w.pair == ["frying pan", "wok"] and w.left_label == "wok"
    # a pair the cache cannot show is refused and the page is told the pair it still shows
    with pytest.raises(ValueError, match="needs their attribution"):
        w.set_state({"pair": ["wok", XSS]})
    assert w.pair == ["frying pan", "wok"] and w.atlas.a == "frying pan"
    with pytest.raises(ValueError, match="two class names"):
        w.pair = ["wok"]


def test_linked_with_an_example_panel(setup):
    cache, comp = setup
    w, panel = ComparisonWidget(comp, cache), ExamplePanel(comp, cache, k=4)
    link(w, panel)
    busiest = int(comp.cells.ids[np.argmax(comp.cells.count)])
    w.set_state({"selected": [busiest]})  # a click in the page
    assert panel.selected == [busiest] and panel.shown_cells == [busiest]
    np.testing.assert_array_equal(panel.example_arrays()["sample_ids"],
                                  comp.examples([busiest], k=4).sample_id)
    panel.selected = [int(comp.cells.ids[0]), int(comp.cells.ids[1])]
    assert w.selected == panel.selected
    w.show_pair("frying pan", "wok")
    assert panel.selected == [] and panel.n_examples == 0  # the old pair's cells are gone
    # the link handed the new comparison to the panel: a click on a new cell shows its examples
    assert panel.atlas is w.atlas and w.atlas.a == "frying pan"
    new = int(w.atlas.cells.ids[np.argmax(w.atlas.cells.count)])
    w.set_state({"selected": [new]})
    np.testing.assert_array_equal(panel.example_arrays()["sample_ids"],
                                  w.atlas.examples([new], k=4).sample_id)


def test_panel_ranks_by_attribution_and_takes_a_new_atlas(setup):
    cache, comp = setup
    panel = ExamplePanel(comp, cache, k=3, by="attribution")
    side = [int(c) for c in comp.cells.ids[comp.mean_diff > 0][:2]]
    panel.selected = side
    np.testing.assert_array_equal(panel.example_arrays()["sample_ids"],
                                  comp.examples(side, k=3, by="attribution").sample_id)
    with pytest.raises(ValueError, match="by must be"):
        ExamplePanel(comp, cache, by="loudness")
    with pytest.raises(ValueError, match="by must be"):  # a plain atlas ranks one way only
        ExamplePanel(build_atlas(cache, "block", xy=np.random.default_rng(0).normal(size=(cache["block"].n_rows, 2)), grid_size=3), cache, by="attribution")
    other = compare_atlas(cache, "frying pan", "wok", y=comp.y, grid_size=6, min_count=2, icon_size=12)
    panel.atlas = other
    assert panel.selected == [] and panel.atlas is other
    with pytest.raises(TypeError, match="needs an Atlas"):
        panel.atlas = "wok"


def test_hostile_class_names_stay_text(setup):
    cache, comp = setup
    _store(cache, XSS, np.linspace(-1, 1, cache["block"].n_rows), seed=7)
    w = ComparisonWidget.from_cache(cache, XSS, HOSTILE, y=comp.y, grid_size=4, min_count=1,
                                    icon_size=8)
    assert (w.right_label, w.left_label) == (XSS, HOSTILE)
    assert w.pair == [XSS, HOSTILE] and [XSS, HOSTILE] in w.pairs
    assert XSS in w.cell_class or HOSTILE in w.cell_class


def test_bad_input(setup):
    cache, comp = setup
    with pytest.raises(TypeError, match=r"needs a ComparisonAtlas \(from aw\.compare_atlas"):
        ComparisonWidget(comp.cells)
    plain = build_atlas(cache, "block", grid_size=4, min_count=1, xy=np.c_[comp.x, comp.y], icon_size=8)
    with pytest.raises(TypeError, match="compare_atlas"):
        ComparisonWidget(plain, cache)
    other, _, _ = clustered_cache(samples_per_cluster=5)
    with pytest.raises(ValueError, match="pass the cache the atlas was built from"):
        ComparisonWidget(comp, other)
    with pytest.raises(ValueError, match="size"):
        ComparisonWidget(comp, cache, size=10)
    w = ComparisonWidget(comp, cache)
    w.selected = [int(comp.cells.ids[0])]
    with pytest.raises(ValueError, match=r"Unknown class name 'wokk'.*Did you mean"):
        w.show_pair("wokk", "frying pan")
    with pytest.raises(ValueError, match="two different classes"):
        w.show_pair("wok", 1)
    with pytest.raises(ValueError, match=r"needs their attribution.*aw\.attribute"):
        w.show_pair("wok", HOSTILE)
    # a refused pair changes nothing
    assert w.atlas is comp and w.selected == [int(comp.cells.ids[0])] and w.pair == ["wok", "frying pan"]
    with pytest.raises(ValueError, match="show_pair needs the cache"):
        ComparisonWidget(comp).show_pair("frying pan", "wok")
    with pytest.raises(ValueError, match="not visible cells"):
        w.selected = [10_000]


def test_refused_page_messages_and_another_capture(setup):
    cache, comp = setup
    w = ComparisonWidget(comp, cache)
    first = int(comp.cells.ids[0])
    w.selected = [first]
    # what ipywidgets does with the page's messages: refused ones leave the widget as it was
    with pytest.raises(ValueError, match="not visible cells"):
        w.set_state({"selected": [10_000]})
    assert w.selected == [first]
    with pytest.raises(ValueError, match="two class names"):
        w.set_state({"pair": ["wok"]})
    assert w.pair == ["wok", "frying pan"] and w.atlas is comp and w.selected == [first]
    # a comparison remembers its capture: another one of as many rows is refused
    fingerprint = {"model": "m", "data": "a", "policy": {"sample": "random", "seed": 0}}
    a = dataclasses.replace(cache, meta={"fingerprint": fingerprint})
    b = dataclasses.replace(cache, meta={"fingerprint": {**fingerprint, "data": "b"}})
    made = compare_atlas(a, "wok", "frying pan", y=comp.y, grid_size=6, min_count=2, icon_size=12)
    with pytest.raises(ValueError, match=r"built from another cache.*made this ComparisonAtlas"):
        ComparisonWidget(made, b)
    with pytest.raises(ValueError, match="built from another cache"):
        ExamplePanel(made, b, by="attribution")
    assert ComparisonWidget(made, a).atlas is made


def test_one_front_end_for_both_widgets():
    # comparison mode lives in atlas.js; the widget has no second copy of the drawing code
    assert ComparisonWidget._esm == AtlasWidget._esm
    assert ComparisonWidget._css == AtlasWidget._css


def test_unnamed_classes_round_trip_through_pairs_and_the_widget():
    """Without class names the kit spells classes "class:3"; those names go from the stored keys
    through available_pairs, compare_atlas and the page's pair menu and resolve again."""
    cache, _, cluster = clustered_cache()
    cache.classes = None
    n = cache["block"].n_rows
    lean = np.select([cluster == 1, cluster == 2], [1.5, -1.5], 0.0)
    rng = np.random.default_rng(7)
    _store(cache, "class:1", lean + rng.normal(0, 0.5, n), seed=1)
    _store(cache, "class:2", -lean + rng.normal(0, 0.5, n), seed=2)
    _store(cache, "class:3-class:0", rng.normal(0, 1, n), seed=3)
    pairs = available_pairs(cache, "block")
    assert pairs == [["class:1", "class:2"], ["class:3", "class:0"]]
    y = rng.uniform(0, 1, n)
    comp = compare_atlas(cache, *pairs[0], y=y, grid_size=4, min_count=1, icon_size=8)
    assert (comp.a, comp.b) == ("class:1", "class:2")
    assert set(comp.top_class_names) <= {f"class:{i}" for i in range(4)}
    w = ComparisonWidget(comp, cache)
    assert w.pairs == pairs and w.left_label == "class:2"
    w.set_state({"pair": ["class:3", "class:0"]})  # the page's pair menu
    assert (w.atlas.a, w.atlas.b) == ("class:3", "class:0") and w.pair == ["class:3", "class:0"]
    w.set_state({"pair": ["class:0", "class:3"]})  # the swap button: the stored pair, reversed
    np.testing.assert_allclose(w.atlas.diff, -comp_diff(cache, 3, 0, y), rtol=1e-6)
    assert w.cell_class == w.atlas.top_class_names


def comp_diff(cache, a, b, y):
    return compare_atlas(cache, a, b, y=y, grid_size=4, min_count=1, icon_size=8).diff


def test_pairs_are_read_from_recorded_targets_not_from_key_spelling(setup):
    """A key whose spelling reads two ways ("stir-fry pan" against the pair "stir", "fry pan") is
    taken as the target recorded beside it."""
    from atlaswidgets.cache.targets import Target

    names = ["stir", "fry pan", "stir-fry pan", "wok"]
    cache, _, _ = clustered_cache(classes=names)
    n = cache["block"].n_rows
    _store(cache, "x", np.linspace(-1, 1, n), seed=1)
    cache["block"].attribution_targets["x"] = Target("pair", (0, 1))
    _store(cache, "stir-fry pan", np.linspace(-1, 1, n), seed=2)  # the class, by its name
    _store(cache, "wok", np.linspace(1, -1, n), seed=3)
    assert available_pairs(cache, "block") == [["stir", "fry pan"], ["stir-fry pan", "wok"]]
