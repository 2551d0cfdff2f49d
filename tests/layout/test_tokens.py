"""Text atlases: the token that stands for each cell, and the contexts of a selection's examples."""

from collections import Counter

import numpy as np
import pytest
import torch

import atlaswidgets as aw
from atlaswidgets.layout.tokens import cell_tokens, selection_contexts
from atlaswidgets.zoo import text

from ._synthetic import clustered_cache
from ._text import hostile_text_data, pca_xy

LAYER = "blocks.1.mlp.act"


@pytest.fixture(scope="module")
def world():
    model, data = text.model(), hostile_text_data(60, seed=3)
    full = aw.capture(model, data, layers=LAYER, sample="all", progress=False)
    sampled = aw.capture(model, data, layers=LAYER, sample="random", per_image=6, seed=0,
                         progress=False)
    atlas = aw.build_atlas(full, LAYER, grid_size=8, xy=pca_xy(full, LAYER))
    small = aw.build_atlas(sampled, LAYER, grid_size=6, xy=pca_xy(sampled, LAYER))
    return full, atlas, sampled, small


def _member_tokens(cache, rows):
    la = cache[LAYER]
    return cache.tokens[la.sample_id[rows], la.yx[rows, 1]].numpy()


def test_each_cell_shows_its_most_frequent_token_at_its_member_nearest_the_mean(world):
    full, atlas, _, _ = world
    ct = cell_tokens(atlas, full)
    acts = atlas.acts.acts.float()
    assert len(ct) == len(atlas.cells.ids) == len(ct.contexts) == len(ct.token)
    for k in range(len(atlas.cells.ids)):
        members = atlas.cells.members(k)
        toks = _member_tokens(full, torch.as_tensor(members))
        counts = Counter(toks.tolist())
        top = max(counts.values())
        assert counts[int(ct.token_id[k])] == top  # a most frequent token (ties: see below)
        assert ct.share[k] == pytest.approx(top / len(members))
        assert ct.token[k] == text.VOCAB[int(ct.token_id[k])]
        # the row shown is a member with that token, the nearest (cosine) to the cell's mean
        assert ct.row[k] in members
        mean = torch.as_tensor(atlas.cells.mean_act[k])
        cos = torch.nn.functional.cosine_similarity(acts[torch.as_tensor(members)], mean[None], dim=1)
        with_token = toks == ct.token_id[k]
        assert cos[torch.as_tensor(with_token)].max() == pytest.approx(
            float(cos[members.tolist().index(ct.row[k])]), abs=1e-6)
        # ties go to the token whose best member is nearer the mean
        best = {t: float(cos[torch.as_tensor(toks == t)].max()) for t, c in counts.items() if c == top}
        assert best[int(ct.token_id[k])] == pytest.approx(max(best.values()), abs=1e-6)
        ctx = ct.contexts[k]
        la = full[LAYER]
        assert ctx.token == ct.token[k] and ctx.sample_id == int(la.sample_id[ct.row[k]])
        assert ctx.start + ctx.index == int(la.yx[ct.row[k], 1])
        assert ctx.index <= 2 and len(ctx.tokens) - ctx.index - 1 <= 1  # before=2, after=1


def test_the_hostile_token_gets_a_cell_and_stays_the_plain_string(world):
    full, atlas, _, _ = world
    ct = cell_tokens(atlas, full)
    assert text.HOSTILE in ct.token  # the appended source lines gather in a cell of their own
    k = ct.token.index(text.HOSTILE)
    assert ct.contexts[k].tokens[ct.contexts[k].index] == "<img src=x onerror=alert(1)>"


def test_selection_contexts_value_every_token_along_the_selection(world):
    full, atlas, _, _ = world
    cells = [int(atlas.cells.ids[0]), int(atlas.cells.ids[3])]
    ex = atlas.examples(cells, k=5)
    got = selection_contexts(atlas, full, cells, ex.rows, before=4, after=2)
    assert len(got) == len(ex)
    la = full[LAYER]
    for c, row, value in zip(got, ex.rows, ex.values):
        assert c.start + c.index == int(la.yx[row, 1])
        # the marked token's value is the example's value (the same direction)
        assert c.values[c.index] == pytest.approx(float(value), rel=1e-4)
        assert np.isfinite(c.values).all()  # sample="all" knows every token of the window


def test_a_sampled_cache_leaves_unsampled_tokens_without_a_value(world):
    _, _, sampled, small = world
    cells = [int(small.cells.ids[0])]
    ex = small.examples(cells, k=3)
    got = selection_contexts(small, sampled, cells, ex.rows)
    for c, value in zip(got, ex.values):
        assert c.values[c.index] == pytest.approx(float(value), rel=1e-4)
        assert np.isnan(c.values).any()  # 6 of ~45 tokens per sample were kept


def test_bad_input_is_refused(world):
    full, atlas, sampled, _ = world
    with pytest.raises(ValueError, match="selection is empty"):
        selection_contexts(atlas, full, [], [0])
    with pytest.raises(ValueError, match="rows must be row indices"):
        selection_contexts(atlas, full, [int(atlas.cells.ids[0])], [10**7])
    with pytest.raises(ValueError, match="not visible"):
        selection_contexts(atlas, full, [10**6], [0])
    with pytest.raises(ValueError, match="rows"):
        cell_tokens(atlas, sampled)  # another capture's rows
    with pytest.raises(TypeError, match="Atlas"):
        cell_tokens("atlas", full)
    images, xy, _ = clustered_cache()
    image_atlas = aw.build_atlas(images, "block", grid_size=4, min_count=2, xy=xy, icon_size=8)
    with pytest.raises(ValueError, match="not a text layer"):
        cell_tokens(image_atlas, images)
