"""build_atlas on a synthetic clustered cache: cells, typical rows, classes, icons, examples."""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pytest
import torch

from atlaswidgets.layout.atlas import build_atlas
from atlaswidgets.cache.crops import crop_rows

from ._synthetic import clustered_cache


@pytest.fixture(scope="module")
def built():
    cache, xy, cluster = clustered_cache()
    atlas = build_atlas(cache, "block", grid_size=6, min_count=2, xy=xy, icon_size=16)
    return cache, xy, cluster, atlas


def test_cells_group_the_clusters(built):
    cache, _, cluster, atlas = built
    cells = atlas.cells
    assert len(cells) >= 4
    for k in range(len(cells)):
        members = cells.members(k)
        assert len(set(cluster[members].tolist())) == 1  # no cell mixes two clusters
        assert atlas.top_class[k] == cluster[members[0]]
    np.testing.assert_allclose(atlas.top_class_share, 1.0)
    assert atlas.top_class_names[0] == cache.classes[atlas.top_class[0]]


def test_typical_row_is_the_member_closest_to_the_mean(built):
    cache, _, _, atlas = built
    acts = cache["block"].acts
    for k in range(len(atlas.cells)):
        members = atlas.cells.members(k)
        mean = acts[members].mean(0)
        cos = torch.nn.functional.cosine_similarity(acts[members], mean[None], dim=1)
        assert atlas.typical_row[k] == members[int(cos.argmax())]


def test_icons_are_crops_of_the_typical_rows(built):
    cache, _, _, atlas = built
    assert atlas.icons.shape == (len(atlas.cells), 3, 16, 16) and atlas.icons.dtype == torch.uint8
    assert torch.equal(atlas.icons, crop_rows(cache, "block", atlas.typical_row, size=16))


def test_examples_rank_distinct_samples_by_alignment_with_the_selection(built):
    cache, _, _, atlas = built
    ids = atlas.cells.ids[:2]
    ex = atlas.examples(ids, k=5)
    rows = atlas.rows_of(ids)
    acts = cache["block"].acts
    direction = acts[rows].mean(0)
    assert len(ex) == 5
    assert set(ex.rows.tolist()) <= set(rows.tolist())
    assert len(set(ex.sample_id.tolist())) == 5
    assert (np.diff(ex.values) <= 1e-6).all()
    np.testing.assert_allclose(ex.values, (acts[ex.rows] @ direction).numpy(), rtol=1e-5)
    # the best example is the best member overall; every other sample's best row scores lower
    scores = (acts[rows] @ direction).numpy()
    assert ex.rows[0] == rows[scores.argmax()]
    others = ~np.isin(cache["block"].sample_id.numpy()[rows], ex.sample_id)
    assert (scores[others] <= ex.values[-1] + 1e-6).all()
    np.testing.assert_array_equal(ex.yx, cache["block"].yx.numpy()[ex.rows])


def test_examples_edge_cases(built):
    _, _, _, atlas = built
    assert len(atlas.examples([])) == 0
    many = atlas.examples(atlas.cells.ids[:1], k=1000)
    samples_in_cell = set(atlas.acts.sample_id.numpy()[atlas.cells.members(0)].tolist())
    assert len(many) == len(samples_in_cell)  # one row per sample, however large k is
    with pytest.raises(ValueError, match="not visible cells"):
        atlas.examples([10_000])
    with pytest.raises(ValueError, match="k must be"):
        atlas.examples(atlas.cells.ids[:1], k=0)


def test_build_with_umap_layout():
    cache, _, cluster = clustered_cache(samples_per_cluster=10)
    atlas = build_atlas(cache, grid_size=5, min_count=1, n_neighbors=8, icon_size=8)
    assert atlas.xy.shape == (cache["block"].n_rows, 2) and atlas.xy.dtype == np.float32
    # UMAP keeps these well-separated clusters apart, so cells stay nearly pure
    assert np.average(atlas.top_class_share, weights=atlas.cells.count) > 0.9


def test_bad_input():
    cache, xy, _ = clustered_cache(samples_per_cluster=3)
    with pytest.raises(ValueError, match="was not captured"):
        build_atlas(cache, "nope", xy=xy)
    with pytest.raises(ValueError, match=r"xy must have shape \(48, 2\)"):
        build_atlas(cache, xy=xy[:10])
    with pytest.raises(ValueError, match="grid_size"):
        build_atlas(cache, grid_size=0, xy=xy)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the error alone, without grid's all-hidden warning
        with pytest.raises(ValueError, match="lower min_count"):
            build_atlas(cache, grid_size=2, min_count=1000, xy=xy)
    with pytest.raises(ValueError, match="keep_images=True"):
        build_atlas(dataclasses.replace(cache, images=None), xy=xy)
    two = dataclasses.replace(cache, layers={"a": cache["block"], "b": cache["block"]})
    with pytest.raises(ValueError, match="pass layer="):
        build_atlas(two, xy=xy)
    bad = dataclasses.replace(cache["block"], acts=cache["block"].acts.clone())
    bad.acts[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        build_atlas(dataclasses.replace(cache, layers={"block": bad}), xy=xy)
