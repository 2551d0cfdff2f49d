"""The ComparisonWidget on a text cache: next-token pairs in its menu, token cells, linked panel."""

import numpy as np
import pytest
import torch

import atlaswidgets as aw
from atlaswidgets.widgets.compare import available_pairs
from atlaswidgets.zoo import text

LAYER = "blocks.0.mlp.act"


@pytest.fixture(scope="module")
def text_cache():
    torch.manual_seed(0)
    lm, data = text.model(), text.corpus(40, seed=11)
    cache = aw.capture(lm, data.columns, LAYER, sample="random", per_image=6, progress=False)
    attrs = aw.attribute(lm, data.columns, LAYER, ["token:wok", "token:pan", ("token:oil", "token:salt")],
                         cache=cache, store=False, progress=False)
    for a in attrs:
        cache.add_attribution(a)
    return cache


def test_the_menu_lists_token_pairs_by_their_keys(text_cache):
    pairs = available_pairs(text_cache, LAYER)
    assert ["token:wok", "token:pan"] in pairs and ["token:oil", "token:salt"] in pairs
    assert available_pairs(text_cache, LAYER, current=("token:pan", "token:wok"))[0] == ["token:pan", "token:wok"]


def test_a_text_comparison_widget_draws_token_cells_and_switches_pairs(text_cache):
    comp = aw.compare_atlas(text_cache, "token:wok", "token:pan", layer=LAYER, grid_size=6)
    assert comp.icons is None
    widget = aw.ComparisonWidget(comp, text_cache)
    panel = aw.ExamplePanel(comp, text_cache, by="attribution")
    aw.link(widget, panel)
    assert ["token:oil", "token:salt"] in [list(p) for p in widget.pairs]
    cell = int(comp.cells.ids[np.argmax(comp.mean_diff)])
    widget.selected = [cell]
    assert panel.selected == [cell]
    shown = panel.contexts()
    assert shown and all(isinstance(t, str) for tokens, _, _ in shown for t in tokens)
    widget.show_pair("token:oil", "token:salt")
    assert list(widget.pair) == ["token:oil", "token:salt"]
    assert (widget.right_label, widget.left_label) == ("token:oil", "token:salt")
