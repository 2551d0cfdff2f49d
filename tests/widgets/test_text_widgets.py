"""AtlasWidget and ExamplePanel on a text atlas: cells as tokens, examples as token strips, linked
as for images; tokens stay the literal strings they are."""

from __future__ import annotations

import json

import numpy as np
import pytest

import atlaswidgets as aw
from atlaswidgets.layout.tokens import cell_tokens
from atlaswidgets.widgets.atlas import AtlasWidget
from atlaswidgets.widgets.examples import ExamplePanel
from atlaswidgets.zoo import text

from ..layout._text import hostile_text_data, pca_xy

LAYER = "blocks.1.mlp.act"
HOSTILE = "<img src=x onerror=alert(1)>"


@pytest.fixture(scope="module")
def world():
    model, data = text.model(), hostile_text_data(60, seed=3)
    full = aw.capture(model, data, layers=LAYER, sample="all", progress=False)
    atlas = aw.build_atlas(full, LAYER, grid_size=8, xy=pca_xy(full, LAYER))
    sampled = aw.capture(model, data, layers=LAYER, sample="random", per_image=6, seed=0,
                         progress=False)
    small = aw.build_atlas(sampled, LAYER, grid_size=6, xy=pca_xy(sampled, LAYER))
    return model, full, atlas, sampled, small


def test_text_atlas_sends_each_cell_as_its_token_in_context(world):
    model, full, atlas, _, _ = world
    w = AtlasWidget(atlas, full, model=model)
    ct = cell_tokens(atlas, full)
    assert w.text_cells and w.sprite == b"" and not w.can_feature_vis
    assert w.cell_token == ct.token and len(w.cell_token) == w.n_cells
    np.testing.assert_allclose(w.cell_token_share, ct.share)
    for k, c in enumerate(ct.contexts):
        assert w.cell_before[k] == " ".join(c.tokens[: c.index])
        assert w.cell_after[k] == " ".join(c.tokens[c.index + 1:])
    # the hostile token goes to the page as the literal string, in JSON, not escaped or dropped
    assert HOSTILE in w.cell_token
    assert HOSTILE in json.dumps(w.get_state(["cell_token"])["cell_token"], ensure_ascii=False)


def test_zoom_levels_send_the_finer_cells_tokens(world):
    _, full, atlas, _, _ = world
    w = AtlasWidget(atlas, full, levels=2)
    assert w.n_levels == 2
    w.selected = [int(atlas.cells.ids[0])]
    w.level = 1
    fine = w.atlas
    assert w.cells_level == 1 and fine.cells.n == 16
    assert w.cell_token == cell_tokens(fine, full).token == w.cell_tokens().token
    assert len(w.cell_before) == len(w.cell_after) == len(fine.cells.ids) == w.n_cells
    assert w.selected  # carried to the children


def test_text_atlas_refuses_pictures_and_needs_its_cache(world):
    model, full, atlas, _, _ = world
    with pytest.raises(ValueError, match="text atlas.*pass it"):
        AtlasWidget(atlas)
    with pytest.raises(ValueError, match="no feature-vis icons"):
        AtlasWidget(atlas, full, model=model, icons="feature-vis")
    w = AtlasWidget(atlas, full, model=model)
    with pytest.raises(ValueError, match="no feature-vis icons"):
        w.use_icons("feature-vis")
    with pytest.raises(ValueError, match="no feature-vis icons"):
        w.set_icons(0, np.zeros((w.n_cells, 3, 8, 8), np.uint8))
    assert w.icons == "examples" and w.sprite_icons == "examples"


def test_a_click_on_a_text_cell_fills_the_linked_panel_with_its_token_strips(world):
    _, full, atlas, _, _ = world
    w = AtlasWidget(atlas, full)
    p = ExamplePanel(atlas, full, k=12, context=(5, 2))
    aw.link(w, p)
    assert p.kind == "text" and p.context_tokens == [] and p.n_examples == 0
    k = w.cell_token.index(HOSTILE)
    cell = int(atlas.cells.ids[k])
    w.selected = [cell]  # what a click on the page sets
    ex = atlas.examples([cell], k=12)
    assert p.shown_cells == [cell] and p.n_examples == len(ex) and p.sprite == b""
    np.testing.assert_array_equal(p.rows, ex.rows)
    la = full[LAYER]
    got = p.contexts()
    assert len(got) == len(ex)
    off = p.context_offsets
    assert off[0] == 0 and off[-1] == len(p.context_tokens) == len(p.context_values)
    for (tokens, marked, values), row, value in zip(got, ex.rows, ex.values):
        sid, t = int(la.sample_id[row]), int(la.yx[row, 1])
        assert tokens[marked] == text.VOCAB[int(full.tokens[sid, t])]
        assert marked <= 5 and len(tokens) - marked - 1 <= 2
        assert values[marked] == pytest.approx(float(value), rel=1e-4)
        assert np.isfinite(values).all()  # a sample="all" cache knows every token
    # the hostile cell's examples hold the hostile token, as the literal string
    assert HOSTILE in p.context_tokens
    assert p.labels == [tokens[marked] for tokens, marked, _ in got]
    state = p.get_state(["context_tokens"])["context_tokens"]
    assert HOSTILE in json.dumps(state, ensure_ascii=False)

    w.selected = []
    assert p.n_examples == 0 and p.context_tokens == [] and len(p.context_values) == 0


def test_tokens_without_a_row_go_without_a_value(world):
    _, _, _, sampled, small = world
    p = ExamplePanel(small, sampled, k=4)
    p.selected = [int(small.cells.ids[0])]
    values = np.asarray(p.context_values)
    assert p.n_examples > 0 and np.isnan(values).any() and np.isfinite(values).any()
    for tokens, marked, v in p.contexts():
        assert np.isfinite(v[marked])  # the example's own token is a row of the cache


def test_panel_context_is_checked(world):
    _, full, atlas, _, _ = world
    for bad in [(1,), (-1, 2), (2, 100), ("a", 1), (True, 2)]:
        with pytest.raises(ValueError, match="context must be"):
            ExamplePanel(atlas, full, context=bad)


def test_an_image_panel_sends_no_token_contexts(small):
    cache, atlas = small
    p = ExamplePanel(atlas, cache, k=3)
    p.selected = [int(atlas.cells.ids[0])]
    assert p.kind == "images" and p.n_examples > 0 and p.sprite != b""
    assert p.context_tokens == [] and len(p.context_offsets) == 1 and len(p.context_values) == 0
    w = AtlasWidget(atlas, cache)
    assert not w.text_cells and w.cell_token == [] and w.sprite != b""
