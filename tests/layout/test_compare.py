"""Comparison atlas: x scaling and binning, per-cell attribution, errors, and the kitchen ground truth."""

from __future__ import annotations

import re
import time

import numpy as np
import pytest
import torch

import atlaswidgets as aw
from atlaswidgets.cache.crops import crop_rows
from atlaswidgets.layout.compare import ComparisonAtlas, compare_atlas
from tests.layout._synthetic import clustered_cache


def _with_row_sums(cache, key, sums, seed=0):
    """Store an attribution under ``key`` whose per-row channel sums are ``sums``."""
    la = cache["block"]
    rng = np.random.default_rng(seed)
    # spread each row's total over the channels unevenly, so a wrong axis of summation shows
    parts = rng.dirichlet(np.ones(la.n_channels), size=la.n_rows)
    la.attributions[key] = torch.as_tensor(parts * np.asarray(sums)[:, None], dtype=torch.float32)


@pytest.fixture()
def synthetic():
    cache, _, cluster = clustered_cache()
    n = cache["block"].n_rows
    y = np.random.default_rng(1).uniform(-5, 3, n)  # not in [0, 1]: compare_atlas rescales it
    return cache, y, cluster


def test_x_is_the_difference_over_its_99th_percentile_clipped(synthetic):
    cache, y, _ = synthetic
    n = cache["block"].n_rows
    diff = np.random.default_rng(2).normal(0.5, 2.0, n)
    diff[:3] = [40.0, -40.0, 0.0]  # outliers must clip, not set the scale
    _with_row_sums(cache, "class1-class0", diff)
    comp = compare_atlas(cache, "class1", "class0", y=y, grid_size=4, min_count=1)
    scale = np.percentile(np.abs(diff), 99)
    assert comp.scale == pytest.approx(scale, rel=1e-5)
    np.testing.assert_allclose(comp.diff, diff, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(comp.x, np.clip(diff / scale, -1, 1), rtol=1e-5, atol=1e-6)
    assert comp.x[0] == 1.0 and comp.x[1] == -1.0 and comp.x[2] == 0.0
    np.testing.assert_allclose(comp.y, (y - y.min()) / (y.max() - y.min()), atol=1e-6)
    assert comp.xy.shape == (n, 2) and comp.xy.dtype == np.float32
    assert (comp.a, comp.b) == ("class1", "class0")


def test_columns_split_minus_one_to_one_and_rows_split_y(synthetic):
    cache, _, _ = synthetic
    n = cache["block"].n_rows
    diff = np.zeros(n)
    # away from the bin edges by more than float32 rounding of the channel sums
    diff[:8] = [1.0, -1.0, 0.0, -0.01, 0.49, 0.51, -0.51, -0.49]
    diff[8:16] = 1.0  # more than 1% of rows at |diff| = 1, so the scale is exactly 1
    y = np.zeros(n)
    y[:8] = [0.0, 1.0, 0.24, 0.26, 0.51, 0.74, 0.76, 0.99]
    y[8] = 1.0
    _with_row_sums(cache, "class1-class0", diff)
    comp = compare_atlas(cache, 1, 0, y=y, grid_size=4, min_count=1)
    assert comp.scale == pytest.approx(1.0, rel=1e-5)
    cells = comp.cells
    row_ij = cells.ij[cells.row_cell[:8]]
    # columns: [-1, -.5) [-.5, 0) [0, .5) [.5, 1]; rows: [0, .25) [.25, .5) [.5, .75) [.75, 1]
    np.testing.assert_array_equal(row_ij[:, 1], [3, 0, 2, 1, 2, 3, 0, 1])
    np.testing.assert_array_equal(row_ij[:, 0], [0, 3, 0, 1, 2, 2, 3, 3])


def test_columns_keep_their_meaning_when_every_row_favours_a(synthetic):
    cache, y, _ = synthetic
    n = cache["block"].n_rows
    _with_row_sums(cache, "class1-class0", np.random.default_rng(3).uniform(0.1, 2.0, n))
    comp = compare_atlas(cache, "class1", "class0", y=y, grid_size=6, min_count=1)
    assert (comp.cells.ij[:, 1] >= 3).all()  # the left (class0) half stays empty
    assert (comp.x > 0).all()


def test_cells_carry_members_counts_and_mean_attributions(synthetic):
    cache, y, _ = synthetic
    n = cache["block"].n_rows
    rng = np.random.default_rng(4)
    to_a, to_b = rng.normal(1.0, 1.0, n), rng.normal(0.0, 1.0, n)
    _with_row_sums(cache, "class2", to_a, seed=5)
    _with_row_sums(cache, "class3", to_b, seed=6)
    comp = compare_atlas(cache, "class2", "class3", y=y, grid_size=5, min_count=2)
    cells = comp.cells
    np.testing.assert_allclose(comp.diff, to_a - to_b, rtol=1e-4, atol=1e-4)
    acts = cache["block"].acts.numpy()
    col = np.minimum(((comp.x + 1) / 2 * 5).astype(int), 4)
    row = np.minimum((comp.y * 5).astype(int), 4)
    every = row * 5 + col
    for k, cid in enumerate(cells.ids):
        members = np.flatnonzero(every == cid)
        np.testing.assert_array_equal(np.sort(comp.rows_of([cid])), members)
        assert cells.count[k] == len(members) >= 2
        assert comp.mean_attr_a[k] == pytest.approx(to_a[members].mean(), abs=1e-4)
        assert comp.mean_attr_b[k] == pytest.approx(to_b[members].mean(), abs=1e-4)
        assert comp.mean_diff[k] == pytest.approx((to_a - to_b)[members].mean(), abs=1e-4)
        np.testing.assert_allclose(cells.mean_act[k], acts[members].mean(0), rtol=1e-5, atol=1e-6)
    per_cell = np.bincount(every, minlength=25)
    assert set(cells.ids) == set(np.flatnonzero(per_cell >= 2))  # the rest are hidden
    assert comp.icons.shape == (len(cells.ids), 3, 48, 48) and comp.icons.dtype == torch.uint8
    # inherited from Atlas: ranked examples of a selection and the class names
    ex = comp.examples(cells.ids[:2], k=3)
    assert 1 <= len(ex.rows) <= 3 and set(ex.rows) <= set(comp.rows_of(cells.ids[:2]))
    assert len(comp.top_class_names) == len(cells.ids)
    assert "'class2' vs 'class3'" in repr(comp)


def test_examples_by_attribution_follow_the_side_of_the_selection(synthetic):
    cache, y, _ = synthetic
    n = cache["block"].n_rows
    diff = np.random.default_rng(8).normal(0, 1, n)
    _with_row_sums(cache, "class0-class1", diff)
    comp = compare_atlas(cache, "class0", "class1", y=y, grid_size=4, min_count=1)
    la = cache["block"]
    for side, cells in ((1, comp.cells.ids[comp.mean_diff > 0]), (-1, comp.cells.ids[comp.mean_diff < 0])):
        rows = comp.rows_of(cells)
        ex = comp.examples(cells, k=5, by="attribution")
        # the strongest arguments for the selection's side, one row per sample, best first
        per_sample = {}
        for r in rows:
            s = int(la.sample_id[r])
            per_sample[s] = max(per_sample.get(s, -np.inf), side * comp.diff[r])
        best = sorted(per_sample.values(), reverse=True)[:5]
        np.testing.assert_allclose(ex.values, best, rtol=1e-5)
        assert len(set(ex.sample_id.tolist())) == len(ex.rows)
        assert side * np.sign(comp.diff[rows].mean()) > 0
    ex, pics = comp.example_images(cache, comp.cells.ids[:1], k=2, size=40, by="attribution")
    assert pics.shape == (len(ex.rows), 3, 40, 40) and pics.dtype == torch.uint8
    with pytest.raises(ValueError, match='by must be "alignment" or "attribution"'):
        comp.examples(comp.cells.ids[:1], by="diff")
    assert len(comp.examples([], by="attribution").rows) == 0


def test_each_cell_is_drawn_with_its_first_example_by_attribution(synthetic):
    cache, y, _ = synthetic
    n = cache["block"].n_rows
    diff = np.random.default_rng(9).normal(0, 1, n)
    diff[:4] = [3.0, 3.0, -3.0, -3.0]  # ties inside a cell go to the lower row, as in examples()
    _with_row_sums(cache, "class0-class1", diff)
    comp = compare_atlas(cache, "class0", "class1", y=y, grid_size=4, min_count=1)
    assert (comp.mean_diff > 0).any() and (comp.mean_diff < 0).any()  # both sides are checked
    first = [comp.examples([c], k=1, by="attribution").rows[0] for c in comp.cells.ids]
    np.testing.assert_array_equal(comp.icon_row, first)
    assert comp.icon_row.dtype == np.int64 and not np.array_equal(comp.icon_row, comp.typical_row)
    assert torch.equal(comp.icons, crop_rows(cache, "block", comp.icon_row, size=comp.icons.shape[-1]))
    # a plain atlas still draws the member nearest the mean
    plain = aw.build_atlas(cache, "block", grid_size=4, min_count=1, xy=comp.xy)
    np.testing.assert_array_equal(plain.icon_row, plain.typical_row)


def test_pair_key_wins_and_the_reversed_pair_is_negated(synthetic):
    cache, y, _ = synthetic
    n = cache["block"].n_rows
    rng = np.random.default_rng(7)
    pair = rng.normal(0, 1, n)
    _with_row_sums(cache, "class0-class1", pair)
    comp = compare_atlas(cache, "class1", "class0", y=y, grid_size=3, min_count=1)
    np.testing.assert_allclose(comp.diff, -pair, rtol=1e-5, atol=1e-5)
    assert comp.mean_attr_a is None and comp.mean_attr_b is None
    _with_row_sums(cache, "class1", rng.normal(0, 1, n))
    _with_row_sums(cache, "class0", rng.normal(0, 1, n))
    comp = compare_atlas(cache, "class0", "class1", y=y, grid_size=3, min_count=1)
    np.testing.assert_allclose(comp.diff, pair, rtol=1e-5, atol=1e-5)  # the pair, not a - b
    assert comp.mean_attr_a is not None


def test_missing_attributions_say_which_call_to_make(synthetic):
    cache, y, _ = synthetic
    _with_row_sums(cache, "class1", np.ones(cache["block"].n_rows))  # b is still missing
    call = ("cache.add_attribution(aw.attribute(model, data, 'block', ('class1', 'class0'), "
            "cache=cache, store=False))")
    with pytest.raises(ValueError, match=re.escape(call)):
        compare_atlas(cache, "class1", "class0", y=y)


def test_bad_input(synthetic):
    cache, y, _ = synthetic
    n = cache["block"].n_rows
    _with_row_sums(cache, "class1-class0", np.linspace(-1, 1, n))
    with pytest.raises(ValueError, match="two different classes"):
        compare_atlas(cache, "class1", 1, y=y)
    with pytest.raises(ValueError, match=r"Unknown class name 'clas1'.*Did you mean"):
        compare_atlas(cache, "clas1", "class0", y=y)
    with pytest.raises(ValueError, match="out of range"):
        compare_atlas(cache, 9, 0, y=y)
    with pytest.raises(ValueError, match="was not captured"):
        compare_atlas(cache, "class1", "class0", layer="block9", y=y)
    with pytest.raises(ValueError, match="grid_size must be an int >= 1"):
        compare_atlas(cache, "class1", "class0", y=y, grid_size=0)
    with pytest.raises(ValueError, match=rf"y must be numeric with shape \({n},\)"):
        compare_atlas(cache, "class1", "class0", y=y[:-1])
    with pytest.raises(ValueError, match="No cell"):
        compare_atlas(cache, "class1", "class0", y=y, min_count=n + 1)
    with pytest.raises(TypeError, match="ActivationCache"):
        compare_atlas({"block": None}, "class1", "class0", y=y)
    _with_row_sums(cache, "class1-class0", np.zeros(n))
    with pytest.raises(ValueError, match="0 at every row"):
        compare_atlas(cache, "class1", "class0", y=y)


def test_too_few_rows_and_no_images():
    small, _, _ = clustered_cache(n_clusters=2, samples_per_cluster=1, per_image=2)
    _with_row_sums(small, "class1-class0", np.arange(4.0))
    with pytest.raises(ValueError, match="too few for a UMAP"):
        compare_atlas(small, "class1", "class0")  # 4 rows, n_neighbors=15
    cache, _, _ = clustered_cache()
    _with_row_sums(cache, "class1-class0", np.ones(cache["block"].n_rows))
    cache.images = None
    with pytest.raises(ValueError, match="keep_images=True"):
        compare_atlas(cache, "class1", "class0", y=np.zeros(cache["block"].n_rows))


def test_public_names():
    assert aw.compare_atlas is compare_atlas and aw.ComparisonAtlas is ComparisonAtlas


def test_kitchen_noodles_fill_the_wok_side():
    """Ground truth: the most wok-over-pan cells see noodles far more often than positions overall."""
    from atlaswidgets.zoo import kitchen

    start = time.perf_counter()
    net = kitchen.model()
    data = kitchen.dataset(500, seed=11)
    cache = aw.capture(net, data, "block4", sample="random", per_image=8, classes=kitchen.CLASSES,
                       progress=False, keep_images=True)
    cache.add_attribution(aw.attribute(net, data, "block4", ("wok", "frying pan"), cache=cache,
                                       store=False, progress=False))
    comp = aw.compare_atlas(cache, "wok", "frying pan")  # the one UMAP run of this file
    m = len(comp.cells.ids)
    top = comp.cells.ids[np.argsort(-comp.mean_diff, kind="stable")[: max(1, int(np.ceil(0.1 * m)))]]
    rows = comp.rows_of(top)
    top_share = aw.overlaps_context(cache, "block4", rows, data.annotations, "noodles").mean()
    all_share = aw.overlaps_context(cache, "block4", None, data.annotations, "noodles").mean()
    took = time.perf_counter() - start
    print(f"kitchen compare_atlas wok vs frying pan: {m} visible cells, top {len(top)} cells "
          f"({len(rows)} rows): noodles share {top_share:.3f} vs {all_share:.3f} over all "
          f"{cache['block4'].n_rows} rows, ratio {top_share / all_share:.2f}; {took:.1f} s")
    assert 0 < all_share < 1
    assert top_share >= 3 * all_share
    assert (comp.x[rows] > 0).mean() > 0.9  # those cells lie on the wok (right) side

    # each of those cells is drawn with the example its panel shows first (ranked by attribution,
    # as notebook 02's panel is): the member that argues most for wok, not the member nearest the
    # mean activation, which was a pot or a kettle in some of them (issue #18, item 4)
    panel = aw.ExamplePanel(comp, cache, k=8, by="attribution")
    pos = comp.cells.index(top)
    for c, k in zip(top, pos):
        panel.selected = [int(c)]
        assert comp.icon_row[k] == panel.rows[0], c
    assert torch.equal(comp.icons[pos], crop_rows(cache, "block4", comp.icon_row[pos], size=48))
    # the pictures show the cue at least as often as the members nearest the mean did (0.40 and
    # 0.20 here: some of the top cells hold only kettle or stock-pot positions, drawn as such)
    sees = aw.overlaps_context(cache, "block4", None, data.annotations, "noodles")
    drawn, nearest = sees[comp.icon_row[pos]].mean(), sees[comp.typical_row[pos]].mean()
    print(f"top wok cells' pictures that see noodles: {drawn:.2f} (member nearest the mean: {nearest:.2f})")
    assert drawn >= nearest
