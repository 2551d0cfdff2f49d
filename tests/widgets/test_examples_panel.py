"""ExamplePanel: recomputes its examples when the selection changes; text stays text."""

from __future__ import annotations

import dataclasses
import io

import numpy as np
import pytest
from PIL import Image

from atlaswidgets.widgets.examples import ExamplePanel

from .conftest import XSS


def test_empty_until_something_is_selected(small):
    cache, atlas = small
    p = ExamplePanel(atlas, cache)
    assert p.shown_cells == [] and p.n_examples == 0 and p.sprite == b"" and p.labels == []


def test_selection_sends_the_atlas_examples(small):
    cache, atlas = small
    p = ExamplePanel(atlas, cache, k=5, thumb_size=40)
    ids = [int(i) for i in atlas.cells.ids[:2]]
    p.selected = ids
    ex = atlas.examples(ids, k=5)
    got = p.example_arrays()
    assert p.shown_cells == ids and p.n_examples == 5
    assert p.n_positions == len(atlas.rows_of(ids))
    np.testing.assert_array_equal(got["rows"], ex.rows)
    np.testing.assert_array_equal(got["sample_ids"], ex.sample_id)
    np.testing.assert_array_equal(got["yx"], ex.yx)
    np.testing.assert_allclose(got["values"], ex.values)
    assert p.labels == cache.label_names(ex.sample_id)
    sheet = Image.open(io.BytesIO(p.sprite))
    assert sheet.size == (p.sprite_cols * 40, -(-5 // p.sprite_cols) * 40)

    p.selected = [ids[1]]  # a new selection replaces everything
    assert p.shown_cells == [ids[1]]
    np.testing.assert_array_equal(p.example_arrays()["rows"], atlas.examples([ids[1]], k=5).rows)
    p.k = 2
    assert p.n_examples == 2
    p.selected = []
    assert p.n_examples == 0 and p.sprite == b"" and p.shown_cells == []


def test_labels_stay_plain_strings(small):
    cache, atlas = small
    p = ExamplePanel(atlas, cache)
    xss_cells = [int(c) for c, t in zip(atlas.cells.ids, atlas.top_class) if t == 0]
    p.selected = xss_cells[:1]
    assert p.labels and all(label == XSS for label in p.labels)


def test_bad_input(small):
    cache, atlas = small
    p = ExamplePanel(atlas, cache)
    with pytest.raises(ValueError, match="not visible cells"):
        p.selected = [10_000]
    with pytest.raises(ValueError, match="k must be"):
        p.k = 0
    with pytest.raises(ValueError, match="thumb_size"):
        p.thumb_size = 2
    with pytest.raises(ValueError, match="keep_images=True"):
        ExamplePanel(atlas, dataclasses.replace(cache, images=None))
    with pytest.raises(TypeError, match="needs an Atlas"):
        ExamplePanel(cache, cache)
