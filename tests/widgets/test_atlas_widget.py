"""AtlasWidget trait state: binary buffers, sprite sheet, selection both ways, text kept as text."""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from atlaswidgets.widgets.atlas import AtlasWidget
from atlaswidgets.widgets.examples import ExamplePanel

from ..layout._synthetic import clustered_cache
from .conftest import XSS

WIDGETS = Path(__file__).resolve().parents[2] / "atlaswidgets" / "widgets"
SOURCES = Path(__file__).resolve().parents[2] / "js" / "src"


def test_buffers_decode_to_the_atlas_arrays(small):
    cache, atlas = small
    w = AtlasWidget(atlas, cache)
    # what ipywidgets sends: the bytes as a binary buffer, with their dtype and shape
    wire = w.get_state(["cell_ij", "cell_count"])
    assert isinstance(wire["cell_ij"]["view"], memoryview) and isinstance(wire["cell_count"]["view"], memoryview)
    got = w.cell_arrays()
    m = len(atlas.cells)
    assert w.n_cells == m and w.grid_size == 6
    assert w.n_positions == int(atlas.cells.count.sum())
    np.testing.assert_array_equal(got["ids"], atlas.cells.ids)
    np.testing.assert_array_equal(got["ij"], atlas.cells.ij)
    np.testing.assert_array_equal(got["count"], atlas.cells.count)
    np.testing.assert_array_equal(got["share"], atlas.top_class_share)
    # little-endian on the wire whatever the host
    ij = wire["cell_ij"]
    assert (ij["dtype"], ij["shape"]) == ("uint32", [m, 2])
    assert np.frombuffer(ij["view"], dtype="<u4").reshape(ij["shape"]).tolist() == atlas.cells.ij.tolist()


def test_sprite_holds_every_icon_in_order(small):
    cache, atlas = small
    w = AtlasWidget(atlas, cache)
    sheet = np.asarray(Image.open(io.BytesIO(w.sprite)))
    s, cols, m = w.icon_size, w.sprite_cols, w.n_cells
    assert s == 12
    assert sheet.shape == (-(-m // cols) * s, cols * s, 4)
    for i in (0, m - 1):
        r, c = divmod(i, cols)
        tile = sheet[r * s : (r + 1) * s, c * s : (c + 1) * s, :3]
        np.testing.assert_array_equal(tile, atlas.icons[i].permute(1, 2, 0).numpy())


def test_selection_from_python(small):
    cache, atlas = small
    w = AtlasWidget(atlas, cache)
    assert w.selected == []
    ids = atlas.cells.ids
    w.selected = np.array([ids[3], ids[1], ids[3]])  # numpy, unsorted, repeated
    assert w.selected == sorted({int(ids[1]), int(ids[3])})
    np.testing.assert_array_equal(w.selected_rows(), atlas.rows_of(w.selected))
    hidden = next(i for i in range(36) if i not in set(ids.tolist()))
    with pytest.raises(ValueError, match=rf"cell ids \[{hidden}\] are not visible cells"):
        w.selected = [hidden]
    with pytest.raises(TypeError, match="cell ids must be ints"):
        w.selected = [1.5]
    assert w.selected == sorted({int(ids[1]), int(ids[3])})  # a refused value changes nothing



def test_highlight_is_checked_carried_and_apart_from_the_selection(small):
    cache, atlas = small
    w = AtlasWidget(atlas, cache, levels=2)
    ids = [int(i) for i in atlas.cells.ids]
    w.selected = [ids[0]]
    w.highlighted = [ids[2], ids[1]]
    assert w.highlighted == sorted(ids[1:3]) and w.selected == [ids[0]]
    hidden = next(i for i in range(36) if i not in set(ids))
    with pytest.raises(ValueError, match="not visible cells"):
        w.highlighted = [hidden]
    # zooming in highlights the visible children of the highlighted cells, and only them
    w.level = 1
    fine = w.atlas
    n = atlas.cells.n
    parents = {(c // (2 * n)) // 2 * n + (c % (2 * n)) // 2 for c in w.highlighted}
    assert w.highlighted and parents == set(ids[1:3])
    assert set(w.highlighted) <= set(int(i) for i in fine.cells.ids)
    w.level = 0
    assert w.highlighted == sorted(ids[1:3])


def test_selection_from_the_page(small):
    # what ipywidgets does with a comm message from the browser after a click
    cache, atlas = small
    w = AtlasWidget(atlas, cache)
    seen = []
    w.observe(lambda c: seen.append(c["new"]), names="selected")
    w.set_state({"selected": [int(atlas.cells.ids[2])]})
    assert w.selected == [int(atlas.cells.ids[2])] and seen == [w.selected]


def test_class_names_stay_plain_strings(small):
    cache, atlas = small
    w = AtlasWidget(atlas, cache)
    assert XSS in w.cell_class
    assert "b&w <b>bold</b>" in w.cell_class
    assert w.cell_class == atlas.top_class_names


def test_from_cache_and_bad_input(small):
    cache, atlas = small
    other, xy, _ = clustered_cache(samples_per_cluster=5)
    w = AtlasWidget.from_cache(other, "block", grid_size=4, min_count=1, xy=xy, icon_size=8)
    assert w.grid_size == 4 and w.atlas.layer == "block"
    with pytest.raises(ValueError, match="pass the cache the atlas was built from"):
        AtlasWidget(atlas, other)
    with pytest.raises(TypeError, match="needs an Atlas"):
        AtlasWidget(cache)
    with pytest.raises(ValueError, match="size"):
        AtlasWidget(atlas, cache, size=10)
    with pytest.raises(ValueError, match="grid_size"):
        AtlasWidget(atlas, cache).grid_size = 0


def test_front_end_files_never_parse_html():
    for name in ["dom.js", "array.js", "atlas.js", "examples.js"]:
        text = (SOURCES / name).read_text()
        assert not re.search(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write", text), name
        assert "textContent" in text or name in ("dom.js", "array.js")
    for name in ["atlas.css", "examples.css", "static/atlas.js", "static/examples.js"]:
        assert (WIDGETS / name).stat().st_size > 0
    # each module is the widget's bundle: the shared helpers and the widget's own code
    esm = str(AtlasWidget._esm)
    assert esm == (WIDGETS / "static" / "atlas.js").read_text()
    assert not re.search(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write", esm)
    assert "// src/dom.js" in esm and "// src/atlas.js" in esm
    assert "function readArray" in str(ExamplePanel._esm) and "function render" in str(ExamplePanel._esm)
