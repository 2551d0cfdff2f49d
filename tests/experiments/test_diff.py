"""Model diffing: the base kitchen model against each shipped planted-flaw variant, a model
against itself, the tables, and bad input."""

from __future__ import annotations

import copy
import time

import numpy as np
import pytest
import torch
from torch import nn

import atlaswidgets as aw
from atlaswidgets.experiments import audit
from atlaswidgets.experiments.diff import (DiffTable, ModelDiff, align, diff_models,
                                          linear_cka, novelty_of)
from atlaswidgets.layout.diff import DiffAtlas
from atlaswidgets.zoo import kitchen

from .test_audit import _cue_name, _rivals

SHIPPED = audit.variants()
LAYER = "block4"


# ----------------------------------------------------------------------------- set-up


@pytest.fixture(scope="session")
def diff_data():
    return audit.dataset(400, seed=5)


@pytest.fixture(scope="session")
def base_capture(diff_data):
    """The base model and its capture, shared by the diffs against every variant."""
    net = kitchen.model()
    start = time.perf_counter()
    cache = aw.capture(net, diff_data, LAYER, sample="random", per_image=16, seed=0,
                       progress=False, keep_images=True)
    print(f"base capture: {time.perf_counter() - start:.1f} s")
    return net, cache


@pytest.fixture(scope="session")
def variant_diffs():
    return {}


def _diff(variant_id, diff_data, base_capture, variant_diffs) -> ModelDiff:
    if variant_id not in variant_diffs:
        start = time.perf_counter()
        base, cache_a = base_capture
        net = audit.load(variant_id)
        cache_b = aw.capture(net, diff_data, LAYER, sample="random", per_image=16, seed=0,
                             progress=False, keep_images=True)
        variant_diffs[variant_id] = ModelDiff.from_caches(base, net, diff_data, cache_a, cache_b,
                                                          ("base", variant_id))
        print(f"{variant_id} capture: {time.perf_counter() - start:.1f} s")
    return variant_diffs[variant_id]


def _pca_xy(cache) -> np.ndarray:
    """The first two principal components of the layer: a layout without a 2-D UMAP run."""
    acts = cache[LAYER].acts.float()
    centred = acts - acts.mean(0)
    _, _, v = torch.linalg.svd(centred, full_matrices=False)
    return (centred @ v[:2].T).numpy()


# ----------------------------------------------------------------------------- the method


def test_a_feature_only_b_has_is_novel_and_shared_ones_are_not():
    """b is a rotation of a plus, on 5% of the samples, a new direction a has no trace of: those
    rows, and only those, score high. Rows near-empty in both (scaled down 100x) stay low thanks
    to the floor, although most of what is left of them is b's noise, which a cannot explain."""
    g = torch.Generator().manual_seed(0)
    n_samples, per = 200, 4
    sample_id = torch.arange(n_samples).repeat_interleave(per)
    x = torch.randn(n_samples * per, 16, generator=g)
    quiet = (sample_id % 20 == 10)
    x[quiet] *= 0.01  # near-empty rows in both models: what is left of them is b's own noise
    rot, _ = torch.linalg.qr(torch.randn(16, 16, generator=g))
    y = torch.cat([x @ rot, torch.zeros(len(x), 1)], 1) + 0.05 * torch.randn(len(x), 17,
                                                                              generator=g)
    novel = (sample_id % 20 == 0)
    y[novel, 16] = 4.0
    al = align(x, y, sample_id, n_samples)
    nov = novelty_of(y, al.pred_b)
    assert nov.dtype == np.float32 and ((nov >= 0) & (nov <= 1)).all()
    top = np.argsort(-nov)[: int(novel.sum())]
    assert novel.numpy()[top].mean() > 0.95
    assert nov[quiet.numpy()].max() < 0.05 < nov[novel.numpy()].min()
    without_floor = novelty_of(y, al.pred_b, floor_share=0.0)
    assert without_floor[quiet.numpy()].mean() > 10 * nov[quiet.numpy()].mean()
    # the reverse direction: a has nothing b lacks
    assert float(novelty_of(x, al.pred_a).max()) < 0.1
    assert 0.8 < al.cka < 1 and al.r2_a > 0.95


def test_linear_cka_ignores_rotation_and_scale():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(300, 8, generator=g)
    rot, _ = torch.linalg.qr(torch.randn(8, 8, generator=g))
    assert linear_cka(x, 3 * x @ rot + 1) == pytest.approx(1.0, abs=1e-9)
    assert linear_cka(x, torch.randn(300, 8, generator=g)) < 0.1


# ----------------------------------------------------------------------------- ground truth


@pytest.mark.parametrize("variant_id", SHIPPED)
def test_the_planted_cue_is_what_the_variant_has_and_the_base_lacks(
        variant_id, diff_data, base_capture, variant_diffs):
    """Among the rows of the 10% most novel cells of the diff atlas (variant against base), the
    planted cue is at least 2x as common as in the whole layer, and more enriched than any decoy
    of its family. The layout is the first two principal components instead of a UMAP; with the
    real 2-D UMAP the enrichment is higher (see the report of issue #7)."""
    d = _diff(variant_id, diff_data, base_capture, variant_diffs)
    answer = audit.reveal(variant_id)
    start = time.perf_counter()
    atlas = d.atlas(LAYER, "b", grid_size=20, xy=_pca_xy(d.cache_b))
    ranked = atlas.ranked_cells()
    rows = atlas.rows_of(ranked[: max(1, int(np.ceil(0.1 * len(ranked))))])
    novel_rows = np.argsort(-atlas.novelty, kind="stable")[: len(atlas.novelty) // 10]

    def enrichment(name):
        """(share in the top cells' rows, share in the top rows) over the share in all rows"""
        hit = aw.overlaps_context(d.cache_b, LAYER, None, diff_data.annotations, name,
                                  min_overlap=0.5)
        overall = max(float(hit.mean()), 1e-9)
        return float(hit[rows].mean()) / overall, float(hit[novel_rows].mean()) / overall

    cue = _cue_name(answer)
    in_cells, in_rows = enrichment(cue)
    rivals = {r: enrichment(r) for r in _rivals(answer)}
    decoys = {r: x for r, (x, _) in rivals.items()}
    decoy_rows = {r: x for r, (_, x) in rivals.items()}
    print(f"{variant_id} ({answer['kind']}, {cue!r}): top-10% cells {in_cells:.2f}x "
          f"({len(rows)} rows), decoys " + ", ".join(f"{r} {x:.2f}x" for r, x in decoys.items())
          + f"; top-10% rows {in_rows:.2f}x, decoys max {max(decoy_rows.values()):.2f}x "
          f"({time.perf_counter() - start:.1f} s)")
    assert in_cells >= 2.0
    assert in_cells > max(decoys.values())
    assert in_rows >= 2.0 and in_rows > max(decoy_rows.values())


@pytest.mark.parametrize("variant_id", SHIPPED)
def test_class_shift_ranks_the_affected_class_first(variant_id, diff_data, base_capture,
                                                    variant_diffs):
    """Where the variant's representation is new, the planted flaw's class gains evidence that
    no other class gains: it tops ``class_shift`` and is the only class with a positive change."""
    d = _diff(variant_id, diff_data, base_capture, variant_diffs)
    answer = audit.reveal(variant_id)
    start = time.perf_counter()
    table = d.class_shift(LAYER)
    print(f"\n{table}\n({time.perf_counter() - start:.1f} s)")
    assert table.column("class")[0] == answer["target"]
    changes = table.column("novel_change")
    assert changes[0] > 0 and all(c < 0 for c in changes[1:])
    assert changes == sorted(changes, reverse=True)
    # the per-channel attributions are kept in both caches under the class names
    assert set(kitchen.CLASSES) <= set(d.cache_b[LAYER].attributions)
    assert set(kitchen.CLASSES) <= set(d.cache_a[LAYER].attributions)


def test_class_attributions_match_aw_attribute(diff_data, base_capture, variant_diffs):
    """The one-pass attribution of every class equals ``aw.attribute`` for one of them."""
    d = _diff(SHIPPED[0], diff_data, base_capture, variant_diffs)
    totals = d.class_attributions(LAYER, "b")
    sub = (diff_data.images[:40], diff_data.labels[:40])
    cache = aw.capture(d.model_b, sub, LAYER, per_image=16, progress=False)
    ref = aw.attribute(d.model_b, sub, LAYER, "wok", cache=cache, store=False, progress=False).total
    n = cache[LAYER].n_rows  # rows are sorted by sample: the first 40 samples' rows come first
    np.testing.assert_allclose(totals[:n, kitchen.CLASSES.index("wok")], ref.numpy(),
                               rtol=1e-4, atol=1e-5)


def test_a_model_against_itself():
    """Control: a copy of a model explains it fully: CKA 1, R^2 ~1, novelty ~0, nothing moved."""
    base = kitchen.model()
    data = kitchen.dataset(60, seed=3)
    d = diff_models(base, copy.deepcopy(base), data, names=("base", "copy"), per_image=8)
    assert d.layers == ["block1", "block2", "block3", "block4"]  # every conv block, no head
    table = d.summary()
    print(f"\n{table}")
    for row in table:
        assert row["cka"] > 0.999
        assert row["r2_b_from_a"] > 0.99 and row["r2_a_from_b"] > 0.99
        assert row["novelty_b"] < 0.01 and row["novelty_a"] < 0.01
    for direction in "ab":
        nov = d.novelty("block4", direction)
        assert nov.dtype == np.float32 and nov.shape == (d.cache_b["block4"].n_rows,)
        assert float(nov.max()) < 0.05
    shift = d.class_shift("block4")
    assert all(abs(r["novel_change"]) < 1e-6 and r["moved"] < 1e-6 for r in shift)


def test_the_variant_against_the_base_reads_as_less_alike_than_a_copy(
        diff_data, base_capture, variant_diffs):
    d = _diff(SHIPPED[0], diff_data, base_capture, variant_diffs)
    (row,) = d.summary().rows
    assert 0.5 < row["cka"] < 0.99 and 0.5 < row["r2_b_from_a"] < 0.99
    assert row["novelty_b"] > 0.02
    acts_a, acts_b = d.cache_a[LAYER].acts, d.cache_b[LAYER].acts
    assert row["cka"] == pytest.approx(linear_cka(acts_a, acts_b))
    # the reverse direction lays out a's layer, scored against b
    atlas = d.atlas(LAYER, "a", grid_size=8, xy=_pca_xy(d.cache_a))
    assert isinstance(atlas, DiffAtlas) and atlas.names == (SHIPPED[0], "base")
    np.testing.assert_array_equal(atlas.novelty, d.novelty(LAYER, "a"))
    assert d.cache("a") is d.cache_a and d.cache("b") is d.cache_b


# ----------------------------------------------------------------------------- tables


def test_tables_show_hostile_names_as_text():
    evil = ["<img src=x onerror=alert(1)>", "a&b"]
    net = _Tiny(n_out=2)
    data = (torch.rand(12, 3, 16, 16), torch.tensor([0, 1] * 6))
    d = diff_models(net, copy.deepcopy(net), data, "conv", names=("<b>old</b>", "new & shiny"),
                    classes=evil, per_image=4)
    for table in (d.summary(), d.class_shift()):
        assert isinstance(table, DiffTable)
        page = table._repr_html_()
        assert "<img" not in page and "<b>" not in page
        frame = table.to_pandas()
        assert list(frame.columns) == table.columns and len(frame) == len(table)
    page = d.class_shift()._repr_html_()
    assert "&lt;img src=x onerror=alert(1)&gt;" in page and "a&amp;b" in page
    page = d.summary()._repr_html_()
    assert "&lt;b&gt;old&lt;/b&gt;" in page and "new &amp; shiny" in page
    assert "conv" in repr(d.summary()) and "<b>old</b>" in repr(d)
    with pytest.raises(ValueError, match=r"No column 'nope'; the columns are \['layer'"):
        d.summary().column("nope")
    with pytest.raises(ValueError, match=r"by must be one of \['novel_change'"):
        d.class_shift(by="class")


# ----------------------------------------------------------------------------- bad input


class _Tiny(nn.Module):
    """conv (8 channels, same grid) -> pool -> linear; ``flat`` models need a fixed input size."""

    def __init__(self, n_out: int = 3, flat: int | None = None, stride: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1, stride=stride)
        self.relu = nn.ReLU()
        self.pool = nn.Flatten() if flat else nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(8 * flat * flat if flat else 8, n_out)
        self.flat = flat

    def forward(self, x):
        h = self.relu(self.conv(x))
        return self.head(self.pool(h).flatten(1))


def test_bad_input():
    torch.manual_seed(0)
    a, b = _Tiny(), _Tiny()
    data = torch.rand(8, 3, 16, 16)
    with pytest.raises(ValueError, match=r"Layer\(s\) \['block4'\] do not exist in model a "
                                         r"\('a'\)\. Layers both models have: \['conv', 'relu'"):
        diff_models(a, b, data, "block4")
    other = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
    with pytest.raises(ValueError, match=r"\['conv'\] do not exist in model b \('new'\)\. Layers "
                                         r"both models have: \[\]"):
        diff_models(a, other, data, ["conv"], names=("old", "new"))
    # a model built for 8 px inputs cannot take 16 px images
    with pytest.raises(ValueError, match=r"Model b \('b'\) cannot run on the data's input size "
                                         r"\(3, 16, 16\)"):
        diff_models(_Tiny(flat=16), _Tiny(flat=8), data, "conv")
    with pytest.raises(ValueError, match=r"Layer 'conv' has a \(16, 16\) grid in model a and "
                                         r"\(8, 8\) in model b"):
        diff_models(a, _Tiny(stride=2), data, "conv")
    with pytest.raises(TypeError, match="names must be a pair"):
        diff_models(a, b, data, "conv", names="ab")
    with pytest.raises(ValueError, match="names must differ"):
        diff_models(a, b, data, "conv", names=("m", "m"))
    with pytest.raises(TypeError, match="one-pass iterator"):
        diff_models(a, b, iter([data]), "conv")
    with pytest.raises(TypeError, match="model_b must be a torch.nn.Module"):
        diff_models(a, "b", data, "conv")
    with pytest.raises(ValueError, match="folds must be an int >= 2"):
        diff_models(a, b, data, "conv", folds=1)
    with pytest.raises(TypeError, match="predicate"):
        diff_models(a, b, data, lambda n, m: True)

    d = diff_models(a, b, data, ["conv", "relu"], per_image=4)
    with pytest.raises(ValueError, match=r'direction must be "a" or "b"'):
        d.novelty("conv", "c")
    with pytest.raises(ValueError, match=r"Layer 'head' is not in this diff; it has \['conv', "
                                         r"'relu'\]"):
        d.novelty("head")
    with pytest.raises(ValueError, match=r"pass layer=\.\.\. to say which"):
        d.novelty()
    with pytest.raises(ValueError, match="share must be a number in"):
        d.class_shift("conv", share=0)
    # captures at other positions do not line up row for row
    cache_a = aw.capture(a, data, "conv", per_image=4, seed=0, progress=False)
    cache_b = aw.capture(b, data, "conv", per_image=4, seed=1, progress=False)
    with pytest.raises(ValueError, match="not the same samples and positions"):
        ModelDiff.from_caches(a, b, data, cache_a, cache_b)
    with pytest.raises(ValueError, match=r"\['relu'\] are not in cache_a"):
        ModelDiff.from_caches(a, b, data, cache_a, cache_b, layers=["relu"])
    # a layer of another model's outputs: class_shift needs the same classes
    three, two = _Tiny(n_out=3), _Tiny(n_out=2)
    d = diff_models(three, two, data, "conv", per_image=4)
    with pytest.raises(ValueError, match="The models have 3 and 2 outputs"):
        d.class_shift()
