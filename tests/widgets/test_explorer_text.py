"""The Explorer on a text cache: atlas cells as tokens, the linked panel's token strips, and the
viewer following a selection as a direction over token contexts (issue #15, item 4)."""

import numpy as np

import atlaswidgets as aw
from atlaswidgets.zoo import text


def test_explorer_links_a_text_atlas_panel_and_viewer():
    lm, data = text.model(), text.corpus(60, seed=4)
    cache = aw.capture(lm, data.columns, "blocks.0.mlp.act", per_image=6, stats=True, progress=False)
    ex = aw.Explorer(cache, model=lm)
    assert ex.viewer.mode == "text"
    cells = ex.atlas_widget.atlas.cells.ids[:2]
    direction = ex.show_cells(cells)
    assert direction.shape == (cache["blocks.0.mlp.act"].n_channels,)
    assert ex.viewer.unit["kind"] == "direction" and ex.viewer.contexts
    assert all(isinstance(t, str) for c in ex.viewer.contexts for t in c["tokens"])
    shown = ex.atlas_panel.contexts()
    assert shown and list(ex.atlas_panel.selected) == sorted(int(c) for c in cells)
    # the panel marks each example's own token, and its value there is known
    assert all(np.isfinite(values[i]) for _, i, values in shown)
