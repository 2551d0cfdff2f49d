"""Refused values: a bad message from the page is rolled back whole (and the page told what holds),
and a widget refuses a cache that is not the one its atlas was built from."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import traitlets

import atlaswidgets as aw
from atlaswidgets.layout.atlas import build_atlas, cache_identity
from atlaswidgets.widgets.atlas import AtlasWidget
from atlaswidgets.widgets.examples import ExamplePanel
from atlaswidgets.widgets.link import link
from atlaswidgets.zoo import kitchen

from ..layout._synthetic import clustered_cache


def _sent(widget, monkeypatch) -> list[dict]:
    """The state updates the widget sends to the page from now on."""
    sent: list[dict] = []
    monkeypatch.setattr(widget, "_send", lambda msg, buffers=None: sent.append(msg))
    return sent


def _updates(sent: list[dict]) -> list[dict]:
    """The states of the update messages (ipywidgets also echoes what the page sent)."""
    return [m["state"] for m in sent if m["method"] == "update"]


# ---- A: a bad message from the page changes nothing ----------------------------------------------


def test_bad_selection_from_the_page_is_rolled_back_on_linked_widgets(small, monkeypatch):
    cache, atlas = small
    w, p = AtlasWidget(atlas, cache), ExamplePanel(atlas, cache)
    ids = [int(i) for i in atlas.cells.ids]
    link(w, p)
    w.selected = [ids[3]]
    shown = p.example_arrays()["sample_ids"].copy()
    sent = _sent(w, monkeypatch)
    with pytest.raises(ValueError, match=r"cell ids \[1000000\] are not visible cells") as info:
        w.set_state({"selected": [10**6]})  # what ipywidgets does with the page's message
    assert isinstance(info.value, traitlets.TraitError)
    assert w.selected == p.selected == [ids[3]]
    np.testing.assert_array_equal(p.example_arrays()["sample_ids"], shown)
    # the page is sent the selection that holds, so it stops showing the refused one
    assert _updates(sent) == [{"selected": [ids[3]]}]
    # ids that are no ints: refused the same way, as a TypeError
    with pytest.raises(TypeError, match="cell ids must be ints"):
        w.set_state({"selected": ["3"]})
    assert w.selected == p.selected == [ids[3]]
    # and from the panel's side of the link
    with pytest.raises(ValueError, match="not visible cells"):
        p.set_state({"selected": [ids[0], 10**6]})
    assert w.selected == p.selected == [ids[3]]
    # a good message still goes through and the link follows
    w.set_state({"selected": [ids[1]]})
    assert p.selected == [ids[1]]


def test_size_set_after_construction_is_checked_like_the_constructors(small):
    # issue #17, item 8: AtlasWidget.size = -100 was accepted from Python
    cache, atlas = small
    w = AtlasWidget(atlas, cache, size=300)
    for bad in (-100, 119, 4001):
        with pytest.raises(ValueError, match=r"size must be an int in \[120, 4000\] \(CSS pixels\)"):
            w.size = bad
    with pytest.raises(traitlets.TraitError, match="'size' trait .* expected an int"):
        w.size = "big"
    assert w.size == 300
    w.size = 640
    assert w.size == 640


def test_a_refused_message_leaves_all_its_traits(small, monkeypatch):
    cache, atlas = small
    w = AtlasWidget(atlas, cache)
    ids = [int(i) for i in atlas.cells.ids]
    w.highlighted = [ids[0]]
    sent = _sent(w, monkeypatch)
    # one message with a good and a bad trait: neither is applied
    with pytest.raises(ValueError, match=r"level must be in \[0, 1\], got 5"):
        w.set_state({"highlighted": [ids[2]], "level": 5})
    assert w.highlighted == [ids[0]] and (w.level, w.cells_level, w.grid_size) == (0, 0, 6)
    assert _updates(sent) == [{"highlighted": [ids[0]], "level": 0}]
    with pytest.raises(ValueError, match="icons must be one of"):
        w.set_state({"icons": "sketches"})
    assert w.icons == w.sprite_icons == "examples"
    # set from Python the errors stay ValueError / TypeError with their messages
    with pytest.raises(ValueError, match="not visible cells"):
        w.selected = [10**6]
    with pytest.raises(TypeError, match=r"1-D list of ints, got shape \(1, 1\)"):
        w.selected = np.zeros((1, 1), dtype=np.int64)


def test_panel_refuses_bad_k_from_the_page(small):
    cache, atlas = small
    p = ExamplePanel(atlas, cache, k=5)
    p.selected = [int(atlas.cells.ids[0])]
    with pytest.raises(ValueError, match="k must be between 1 and 200"):
        p.set_state({"k": 0})
    assert p.k == 5 and p.n_examples == 5


def test_diff_widget_rolls_back_too(small):
    cache, atlas = small
    novelty = np.linspace(0, 1, len(atlas.xy), dtype=np.float32)
    w = aw.DiffWidget.from_cache(cache, novelty, ("a", "b"), "block", grid_size=6, min_count=2,
                                 xy=atlas.xy, icon_size=12)
    with pytest.raises(ValueError, match="not visible cells"):
        w.set_state({"selected": [10**6]})
    assert w.selected == []


# ---- B: an atlas knows its cache ----------------------------------------------------------------


def _with_fingerprint(cache, data: str, **policy):
    """The same rows under a capture fingerprint of the given data hash."""
    fp = {"model": "m" * 64, "model_class": "Net", "layers": ["block"], "data": data,
          "policy": {"sample": "random", "per_image": 4, "seed": 0, "dtype": "float32", **policy}}
    return dataclasses.replace(cache, meta={"fingerprint": fp})


def test_widgets_refuse_a_cache_of_other_data():
    base, xy, _ = clustered_cache()
    a = _with_fingerprint(base, "aaaa")
    b = _with_fingerprint(base, "bbbb")  # as many rows, other data: the case row counts miss
    atlas = build_atlas(a, "block", grid_size=6, min_count=2, xy=xy, icon_size=12)
    assert atlas.built_from == cache_identity(a) and atlas.built_from["data"] == "aaaa"
    for make in (AtlasWidget, ExamplePanel):
        with pytest.raises(ValueError, match=r"built from another cache \(its data differs.*"
                                             r"aw\.build_atlas\(cache, 'block', \.\.\.\) or pass"):
            make(atlas, b)
    with pytest.raises(ValueError, match="built from another cache"):
        atlas.regrid(b, 12)
    with pytest.raises(ValueError, match="built from another cache"):
        atlas.example_images(b, atlas.cells.ids[:1], k=2, size=32)
    # a panel of cache b cannot be handed this atlas either (what link() does on a level switch)
    other = build_atlas(b, "block", grid_size=6, min_count=2, xy=xy, icon_size=12)
    p = ExamplePanel(other, b)
    with pytest.raises(ValueError, match="built from another cache"):
        p.atlas = atlas
    assert p.atlas is other


def test_equal_fingerprints_and_hand_made_caches_pass():
    base, xy, _ = clustered_cache()
    a = _with_fingerprint(base, "aaaa")
    atlas = build_atlas(a, "block", grid_size=6, min_count=2, xy=xy, icon_size=12)
    # another capture of the same model and data, with images kept and statistics streamed too
    same = _with_fingerprint(base, "aaaa", keep_images=False, stats={"hist_bins": 64})
    same = dataclasses.replace(same, layers=dict(same.layers))
    AtlasWidget(atlas, same).selected = [int(atlas.cells.ids[0])]
    ExamplePanel(atlas, same)
    # a cache without a fingerprint (put together by hand) is checked by layer and rows only
    AtlasWidget(atlas, base)
    assert build_atlas(base, "block", grid_size=6, min_count=2, xy=xy, icon_size=12).built_from is None
    # but the row count still counts
    fewer, _, _ = clustered_cache(samples_per_cluster=5)
    with pytest.raises(ValueError, match="pass the cache the atlas was built from"):
        AtlasWidget(atlas, fewer)


def test_real_captures_of_other_data_are_refused(tmp_path):
    # the audit's case: the capture cell re-run on other data, the atlas cell not
    model = kitchen.model()
    a = aw.capture(model, kitchen.dataset(16, seed=1), "block4", per_image=2, progress=False)
    b = aw.capture(model, kitchen.dataset(16, seed=2), "block4", per_image=2, progress=False)
    again = aw.capture(model, kitchen.dataset(16, seed=1), ["block3", "block4"], per_image=2,
                       progress=False)
    xy = np.random.default_rng(0).normal(size=(a["block4"].n_rows, 2)).astype(np.float32)
    atlas = build_atlas(a, "block4", grid_size=3, min_count=1, xy=xy, icon_size=8)
    with pytest.raises(ValueError, match="built from another cache"):
        AtlasWidget(atlas, b)
    with pytest.raises(ValueError, match="built from another cache"):
        ExamplePanel(atlas, b)
    # the same model and data again (other layers too), or the cache saved and loaded: the same rows
    loaded = aw.ActivationCache.load(a.save(tmp_path / "a"))
    for cache in (again, loaded):
        p = ExamplePanel(atlas, cache, k=2)
        p.selected = [int(atlas.cells.ids[0])]
        assert p.n_examples > 0
