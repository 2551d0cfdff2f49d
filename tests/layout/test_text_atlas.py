"""Atlases on a text cache: build_atlas, compare_atlas of two next-token targets, class_atlas of
a next token; no icons (tokens have no pictures), examples as (sample, token index) rows."""

from __future__ import annotations

import numpy as np
import pytest

import atlaswidgets as aw
from atlaswidgets.cache.crops import crop_rows

from ..test_attribution_text import CausalLM, ids_mask


@pytest.fixture(scope="module")
def text_cache():
    lm = CausalLM().eval()
    ids, mask = ids_mask(n=40, length=9, seed=3)
    cols = {"input_ids": ids, "attention_mask": mask}
    cache = aw.capture(lm, cols, "mix", sample="all", progress=False)
    attrs = aw.attribute(lm, cols, "mix", ["token:t1", "token:t2", "token:t4"], cache=cache,
                         store=False, progress=False)
    cache.add_attribution(attrs)
    return cache


def test_build_atlas_on_tokens_has_cells_without_icons(text_cache):
    atlas = aw.build_atlas(text_cache, grid_size=5, n_neighbors=5, min_count=2)
    assert atlas.icons is None and "text cells" in repr(atlas)
    assert len(atlas.cells.ids) > 0 and atlas.typical_row.shape == (len(atlas.cells.ids),)
    ex = atlas.examples(atlas.cells.ids[:2], k=4)
    la = text_cache["mix"]
    assert np.array_equal(ex.sample_id, la.sample_id.numpy()[ex.rows])
    assert np.array_equal(ex.yx, la.yx.numpy()[ex.rows]) and bool((ex.yx[:, 0] == 0).all())
    assert len(set(ex.sample_id.tolist())) == len(ex)  # one row per sample
    finer = atlas.regrid(text_cache, 10)
    assert finer.icons is None and finer.cells.n == 10
    with pytest.raises(ValueError, match="text layer.*examples"):
        atlas.example_images(text_cache, atlas.cells.ids[:1])
    with pytest.raises(ValueError, match="text cache.*no pictures"):
        crop_rows(text_cache, "mix", [0])


def test_compare_and_class_atlas_of_next_tokens(text_cache):
    comp = aw.compare_atlas(text_cache, "token:t1", "token:t2", grid_size=4, n_neighbors=5,
                            min_count=1)
    assert (comp.a, comp.b) == ("token:t1", "token:t2") and comp.icons is None
    t1 = text_cache.attribution("mix", "token:t1").sum(1).numpy()
    t2 = text_cache.attribution("mix", "token:t2").sum(1).numpy()
    assert np.allclose(comp.diff, t1 - t2, atol=1e-5)  # from the two single targets
    ex = comp.examples(comp.cells.ids, k=3, by="attribution")
    assert len(ex) == 3
    # the other way round gives the mirror image
    back = aw.compare_atlas(text_cache, "token:t2", "token:t1", grid_size=4, min_count=1, y=comp.y)
    assert np.allclose(back.x, -comp.x, atol=1e-6)
    cls = aw.class_atlas(text_cache, "token:t4", top_n=10, grid_size=4, n_neighbors=5, min_count=1)
    assert cls.cls == "token:t4" and cls.compared == ["token:t1", "token:t2", "token:t4"]
    assert cls.icons is None and cls.kept.sum() >= 10
    with pytest.raises(ValueError, match="per token.*'token:wok'"):
        aw.compare_atlas(text_cache, 1, 2)
    with pytest.raises(ValueError, match="not one of each"):
        aw.compare_atlas(text_cache, "token:t1", 2)
    with pytest.raises(ValueError, match=r"needs their attribution.*token:t1.*token:t3"):
        aw.compare_atlas(text_cache, "token:t1", "token:t3")
    with pytest.raises(ValueError, match="pair"):
        aw.class_atlas(text_cache, ("token:t1", "token:t2"))
