"""Patch attacks: exact flips on a tiny model, the table's views, bad input, and the kitchen truth."""

from __future__ import annotations

import html
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import atlaswidgets as aw
from atlaswidgets.experiments.cells import cell_ranking, patch_from_cell
from atlaswidgets.experiments.patch import CORNERS, NOISE, PatchTable, patch_attack
from tests.experiments.conftest import TINY_CLASSES
from tests.layout._synthetic import clustered_cache

SIZES = (2, 3)  # corner patches up to 3 px never reach the veto pixel (4, 4) of an 8x8 image


def _attack(model, images, patches, target="dog", **kw):
    kw.setdefault("classes", TINY_CLASSES)
    kw.setdefault("sizes", SIZES)
    return patch_attack(model, images, patches, target, **kw)


def _p_dog(logit_dog: float) -> float:
    return float(torch.tensor([0.0, logit_dog, -10.0]).softmax(0)[1])


def _manual(model, images, patch, corner, size):
    """Target probability after pasting by hand: resized as documented, sliced in place."""
    if patch.shape[-1] != size:
        patch = F.interpolate(patch[None], size=(size, size), mode="bilinear",
                              align_corners=False, antialias=True)[0]
    out = images.clone()
    h, w = images.shape[-2:]
    y = 0 if corner.startswith("top") else h - size
    x = 0 if corner.endswith("left") else w - size
    out[:, :, y:y + size, x:x + size] = patch
    with torch.no_grad():
        return model(out).softmax(1)


# ----------------------------------------------------------------------------- exact flips


def test_bright_patch_flips_exactly_the_images_without_veto(tiny):
    model, images, veto = tiny
    table = _attack(model, images, {"bright": torch.ones(3, 5, 5)}, source="cat")
    row = table.row("bright")
    assert table.names == ["bright", NOISE]
    assert row["n_images"] == 10 and table.image_index.tolist() == list(range(10))
    assert row["dynamic_flips"] == 6 and row["dynamic_rate"] == pytest.approx(0.6)
    np.testing.assert_array_equal(table.flipped("bright"), np.flatnonzero(~veto.numpy()))
    # only the top-left corner reaches the block, at both sizes; the first of the ties is static
    rates = table.placement_rates("bright")
    assert rates == {(c, s): (0.6 if c == "top left" else 0.0) for s in SIZES for c in CORNERS}
    assert (row["static_corner"], row["static_size"], row["static_pinned"]) == ("top left", 2, False)
    assert row["static_flips"] == 6
    assert table.best_placement("bright") == [None if v else ("top left", 2) for v in veto.tolist()]
    # probability gains: dog logit -10 -> +10 without veto, -50 -> -30 with it
    flip_gain = _p_dog(10.0) - _p_dog(-10.0)
    veto_gain = _p_dog(-30.0) - _p_dog(-50.0)
    assert row["dynamic_dprob"] == pytest.approx((6 * flip_gain + 4 * veto_gain) / 10, rel=1e-5)
    assert row["static_dprob"] == pytest.approx(row["dynamic_dprob"], rel=1e-6)
    assert (table.gain["bright"][:, [1, 2, 3, 5, 6, 7]] == 0).all()


def test_static_can_be_pinned_to_one_placement(tiny):
    model, images, _ = tiny
    table = _attack(model, images, {"bright": torch.ones(3, 4, 4)}, source="cat",
                    static=("top right", 3))
    row = table.row("bright")
    assert (row["static_corner"], row["static_size"], row["static_pinned"]) == ("top right", 3, True)
    assert row["static_flips"] == 0 and row["static_dprob"] == 0.0
    assert row["dynamic_flips"] == 6  # dynamic still tries every placement
    assert table.row(NOISE)["static_corner"] == "top right"  # pinned for the control too
    assert "top right, 3 px (pinned)" in repr(table)


def test_flips_and_gains_match_pasting_by_hand(tiny):
    model, images, _ = tiny
    gen = torch.Generator().manual_seed(3)
    images = images.clone()
    images[:, 0] = torch.rand(10, 8, 8, generator=gen) * 0.6  # some start near the boundary
    patch = torch.rand(3, 7, 7, generator=gen)
    table = _attack(model, images, {"p": patch}, source=None)
    with torch.no_grad():
        before = model(images).softmax(1)
    keep = table.image_index
    np.testing.assert_array_equal(keep, np.flatnonzero(before.argmax(1).numpy() != 1))
    for j, (corner, size) in enumerate(table.placements):
        after = _manual(model, images, patch, corner, size)[keep]
        np.testing.assert_array_equal(table.hits["p"][:, j].numpy(), (after.argmax(1) == 1).numpy())
        np.testing.assert_allclose(table.gain["p"][:, j].numpy(),
                                   (after[:, 1] - before[keep, 1]).numpy(), atol=1e-6)


def test_noise_control_is_seeded_uniform_noise_of_each_size(tiny):
    model, images, veto = tiny
    a = _attack(model, images, torch.ones(3, 3, 3), source="cat", noise_seed=5)
    b = _attack(model, images, torch.ones(3, 3, 3), source="cat", noise_seed=5)
    gen = torch.Generator().manual_seed(5)
    noise = {s: torch.rand(3, s, s, generator=gen) for s in SIZES}
    assert a.names[-1] == NOISE
    torch.testing.assert_close(a.patches[NOISE], noise[3])
    assert torch.equal(a.hits[NOISE], b.hits[NOISE]) and a.rows == b.rows
    for j, (corner, size) in enumerate(a.placements):
        bright = bool(noise[size][0, :2, :2].mean() > 0.5)
        expect = (~veto) & bright if corner == "top left" else torch.zeros(10, dtype=torch.bool)
        np.testing.assert_array_equal(a.hits[NOISE][:, j].numpy(), expect.numpy())


def test_one_forward_per_batch_and_placement_without_grad(tiny):
    model, images, _ = tiny
    model.train()
    seen = []
    model.register_forward_hook(lambda m, i, o: seen.append((torch.is_grad_enabled(), m.training)))
    table = _attack(model, images, {"a": torch.ones(3, 3, 3)}, source="cat", batch_size=4)
    # 3 batches of the clean images, then 3 batches x 8 placements x 2 rows (patch and noise)
    assert model.calls == 3 + 3 * 8 * 2
    assert not any(g for g, _ in seen) and not any(t for _, t in seen)
    assert model.training  # the caller's mode is restored
    assert len(table.placements) == 8


def test_which_images_count(tiny):
    model, images, _ = tiny
    images = images.clone()
    images[[1, 2], 0, :2, :2] = 1.0  # the model already calls these two "dog"
    assert _attack(model, images, torch.ones(3, 2, 2), source="cat").image_index.tolist() == \
        [0, 3, 4, 5, 6, 7, 8, 9]
    assert _attack(model, images, torch.ones(3, 2, 2)).image_index.tolist() == [0, 3, 4, 5, 6, 7, 8, 9]
    # with labels and no source: correctly classified, and not labelled target
    labels = torch.tensor([0, 1, 0, 0, 2, 0, 0, 0, 0, 0])
    table = _attack(model, images, torch.ones(3, 2, 2), labels=labels)
    assert table.image_index.tolist() == [0, 3, 5, 6, 7, 8, 9]  # 1: target, 2: wrong, 4: wrong
    assert table.source is None and "any class -> dog" in repr(table)
    # model.classes is used when classes= is not given
    model.classes = TINY_CLASSES
    assert patch_attack(model, images, torch.ones(3, 2, 2), "dog", source="cat",
                        sizes=SIZES).target == "dog"


def test_patch_forms(tiny):
    model, images, _ = tiny
    one = _attack(model, images, torch.ones(3, 3, 3), source="cat")
    assert one.names == ["patch", NOISE]
    stack = _attack(model, images, torch.stack([torch.ones(3, 3, 3), torch.zeros(3, 3, 3)]),
                    source="cat")
    assert stack.names == ["patch 0", "patch 1", NOISE]
    assert [r["dynamic_flips"] for r in stack.rows[:2]] == [6, 0]
    listed = _attack(model, images, [np.ones((3, 3, 3), np.float32)], source="cat")
    assert listed.names == ["patch 0", NOISE]
    as_uint8 = _attack(model, images, {"u": torch.full((3, 3, 3), 255, dtype=torch.uint8)},
                       source="cat")
    assert as_uint8.rows[0]["dynamic_flips"] == 6
    torch.testing.assert_close(as_uint8.patches["u"], torch.ones(3, 3, 3))


def test_default_sizes_are_a_quarter_to_three_eighths_of_the_side(tiny):
    model, _, _ = tiny
    images = torch.zeros(2, 3, 64, 64)
    table = patch_attack(model, images, torch.ones(3, 8, 8), "dog", classes=TINY_CLASSES,
                         corners="top left")
    assert table.placements == [("top left", 16), ("top left", 20), ("top left", 24)]


# ----------------------------------------------------------------------------- views


def test_repr_html_pandas_and_figure(tiny, monkeypatch):
    model, images, _ = tiny
    hostile = '<img src=x onerror="alert(1)">&'
    table = _attack(model, images, {hostile: torch.ones(3, 3, 3), "plain": torch.zeros(3, 3, 3)},
                    source="cat")
    text = repr(table)
    lines = text.splitlines()
    assert lines[0].startswith("Patch attack cat -> dog: 10 images, 4 corner(s) x sizes [2, 3] px")
    assert len({len(line) for line in lines[1:]}) == 1  # aligned columns
    assert "6 (60.0%)" in text and NOISE in text
    page = table._repr_html_()
    assert hostile not in page and html.escape(hostile) in page and "<script" not in page
    assert page.count("<tr>") == 4  # header, two patches, the control

    monkeypatch.setitem(sys.modules, "pandas", None)  # as if pandas were not installed
    with pytest.raises(ImportError, match="pip install pandas"):
        table.to_pandas()
    monkeypatch.undo()

    fig = table.figure()
    assert [t.name for t in fig.data] == ["dynamic", "static"]
    # plotly reads <b>, <a href>, <br> in labels: the name is shown as the text it is
    assert list(fig.data[0].x) == [html.escape(hostile, quote=False), "plain", NOISE]
    assert list(fig.data[0].y) == pytest.approx([60.0, 0.0, 100 * table.rows[2]["dynamic_rate"]])
    # references are rates in [0, 1], the unit of the table's dynamic_rate; drawn in percent
    ref = {"noodles (article)": (0.449, 0.256), "random noise (article)": {"dynamic": 0.183,
                                                                           "static": 0.046}}
    fig = table.figure(reference_rates=ref)
    assert [t.name for t in fig.data] == ["dynamic", "static", "dynamic (reference)",
                                          "static (reference)"]
    assert list(fig.data[2].y) == pytest.approx([44.9, 18.3])
    assert list(fig.data[3].y) == pytest.approx([25.6, 4.6])
    assert fig.data[2].offsetgroup == fig.data[0].offsetgroup  # drawn in the dynamic slot
    # percentages passed as rates are refused, with the rates to pass instead
    with pytest.raises(ValueError, match=r"looks like percentages.*pass \(0\.449, 0\.256\)"):
        table.figure(reference_rates={"noodles (article)": (44.9, 25.6)})
    with pytest.raises(ValueError, match=r"two rates \(dynamic, static\)"):
        table.figure(reference_rates={"x": (0.449, -1)})
    with pytest.raises(TypeError, match="reference_rates must be a dict"):
        table.figure(reference_rates=[0.449, 0.256])
    # the old percent keyword still works, with a warning, and refuses rates (the notebook's bug:
    # (0.449, 0.256) drawn as 0.4% and 0.3%)
    with pytest.warns(FutureWarning, match="reference_rates"):
        fig = table.figure(reference={"noodles (article)": (44.9, 25.6)})
    assert list(fig.data[2].y) == pytest.approx([44.9]) and list(fig.data[3].y) == pytest.approx([25.6])
    with pytest.raises(ValueError, match=r"look like rates\. Pass them as reference_rates="):
        table.figure(reference={"noodles (article)": (0.449, 0.256)})
    with pytest.raises(TypeError, match="not both"):
        table.figure({"a": (0.1, 0.1)}, reference={"b": (10, 10)})
    with pytest.raises(ValueError, match=r"No patch called 'plian'.*Did you mean \['plain'\]"):
        table.flipped("plian")


def test_to_pandas_when_installed(tiny):
    pd = pytest.importorskip("pandas")
    model, images, _ = tiny
    df = _attack(model, images, torch.ones(3, 3, 3), source="cat").to_pandas()
    assert isinstance(df, pd.DataFrame) and list(df["patch"]) == ["patch", NOISE]


# ----------------------------------------------------------------------------- bad input


def test_bad_input(tiny):
    model, images, _ = tiny
    ok = torch.ones(3, 3, 3)
    cases = [
        (ValueError, "bigger than the images", dict(sizes=(9,))),
        (ValueError, ">= 1 pixel", dict(sizes=(0, 2))),
        (TypeError, "sizes must be ints", dict(sizes=(2.5,))),
        (ValueError, "Unknown corner 'top lefty'. Did you mean 'top left'", dict(corners=("top lefty",))),
        (ValueError, "corners is empty", dict(corners=())),
        (ValueError, "same class", dict(source="dog")),
        (ValueError, r"Unknown class name 'dgo'. Did you mean \['dog'\]", dict(target="dgo")),
        (ValueError, r"Unknown class name 'kat'", dict(source="kat")),
        (ValueError, "out of range; the model has 3 outputs", dict(target=5)),
        (ValueError, "static must be one of the tried placements", dict(static=("top left", 7))),
        (ValueError, "batch_size must be an int >= 1", dict(batch_size=0)),
        (ValueError, "noise_seed must be an int >= 0", dict(noise_seed=-1)),
        (TypeError, "progress must be True or False, got 'no'", dict(progress="no")),
        (ValueError, r"labels must be integer class ids, shape \(10,\)", dict(labels=[0, 0])),
        (ValueError, r"2 of 10 images are not labelled 'cat'.*images\[labels == 0\]",
         dict(source="cat", labels=torch.tensor([0] * 8 + [1, 2]))),
    ]
    for err, match, kw in cases:
        target = kw.pop("target", "dog")
        with pytest.raises(err, match=match):
            _attack(model, images, ok, target=target, **kw)

    image_cases = [
        (TypeError, "images must be a float tensor", images.numpy()),
        (TypeError, r"for uint8 pictures use images.float\(\) / 255", images.to(torch.uint8)),
        (ValueError, r"shape \(n, C, H, W\)", images[0]),
        (ValueError, "images is empty", images[:0]),
        (ValueError, "images contain NaN", images.clone().index_fill_(0, torch.tensor([2]), float("nan"))),
    ]
    for err, match, bad in image_cases:
        with pytest.raises(err, match=match):
            _attack(model, bad, ok)

    patch_cases = [
        (ValueError, r"must have shape \(3, s, s\), square", torch.ones(3, 3, 4)),
        (ValueError, r"must have shape \(3, s, s\)", torch.ones(1, 3, 3)),
        (ValueError, r"patches must have shape", torch.ones(1, 1, 3, 3, 3)),
        (TypeError, "must be float .* or uint8", torch.ones(3, 3, 3, dtype=torch.int32)),
        (ValueError, "NaN or infinite", torch.full((3, 3, 3), float("inf"))),
        (ValueError, "patches is empty", []),
        (ValueError, "name of the control row", {NOISE: ok}),
        (TypeError, "patch names must be non-empty str", {3: ok}),
        (TypeError, "patches must be a tensor", "noodles"),
    ]
    for err, match, bad in patch_cases:
        with pytest.raises(err, match=match):
            _attack(model, images, bad)

    dark = images.clone()
    dark[:, 0, :2, :2] = 1.0  # every image already "dog"
    dark[:, 2] = 0.0  # no veto
    with pytest.raises(ValueError, match="No image left to attack.*predicts 'cat' for none"):
        _attack(model, dark, ok, source="cat")
    with pytest.raises(ValueError, match="No image left to attack.*already predicts 'dog'"):
        _attack(model, dark, ok)


# ----------------------------------------------------------------------------- patch_from_cell


@pytest.fixture()
def synthetic_comparison():
    cache, xy, _ = clustered_cache()
    la = cache["block"]
    diff = np.random.default_rng(0).normal(0, 1, la.n_rows)
    # one channel carries the whole per-row difference, so its channel sum is exact
    attr = torch.zeros(la.n_rows, la.n_channels)
    attr[:, 0] = torch.as_tensor(diff, dtype=torch.float32)
    la.attributions["class1-class0"] = attr
    comp = aw.compare_atlas(cache, "class1", "class0", y=xy[:, 1], grid_size=3, min_count=2)
    return cache, xy, comp


def test_patch_from_cell_ranks_members_by_attribution_difference(synthetic_comparison):
    from atlaswidgets.cache.crops import crop_rows

    cache, _, comp = synthetic_comparison
    la = cache["block"]
    k = int(np.argmax(comp.mean_diff))
    cell = int(comp.cells.ids[k])
    rows = comp.rows_of([cell])
    by_diff = rows[np.argsort(-comp.diff[rows], kind="stable")]
    ranked = cell_ranking(comp, cell)
    assert ranked[0] == by_diff[0] and len(np.unique(la.sample_id.numpy()[ranked])) == len(ranked)
    patch = patch_from_cell(comp, cache)  # cell=None: the most class1-attributed cell
    # the centre half of the receptive field (12 px of a 32 px image)
    assert patch.shape == (3, 6, 6) and patch.dtype == torch.float32
    torch.testing.assert_close(
        patch, crop_rows(cache, "block", [by_diff[0]], size=6, fraction=0.5)[0].float() / 255)
    whole = patch_from_cell(comp, cache, crop=1.0)
    torch.testing.assert_close(whole, crop_rows(cache, "block", [by_diff[0]], size=12)[0].float() / 255)
    # rank 1: the best row of the next distinct sample
    sid = la.sample_id.numpy()
    second = next(r for r in by_diff if sid[r] != sid[by_diff[0]])
    torch.testing.assert_close(patch_from_cell(comp, cache, cell, rank=1, size=20),
                               crop_rows(cache, "block", [second], size=20, fraction=0.5)[0].float() / 255)
    assert 0.0 <= float(patch.min()) and float(patch.max()) <= 1.0


def test_patch_from_cell_on_a_plain_atlas_uses_its_top_example(synthetic_comparison):
    from atlaswidgets.cache.crops import crop_rows

    cache, xy, _ = synthetic_comparison
    atlas = aw.build_atlas(cache, "block", grid_size=4, xy=xy)
    cell = int(atlas.cells.ids[0])
    top = atlas.examples([cell], k=1).rows[0]
    torch.testing.assert_close(patch_from_cell(atlas, cache, cell, size=8, crop=1.0),
                               crop_rows(cache, "block", [top], size=8)[0].float() / 255)
    with pytest.raises(ValueError, match="for a plain Atlas pass a cell id"):
        patch_from_cell(atlas, cache)


def test_patch_from_cell_bad_input(synthetic_comparison):
    cache, _, comp = synthetic_comparison
    hidden = sorted(set(range(9)) - set(comp.cells.ids.tolist()))
    bad_cell = hidden[0] if hidden else 99
    with pytest.raises(ValueError, match=f"Cell {bad_cell} is not a visible cell"):
        patch_from_cell(comp, cache, bad_cell)
    with pytest.raises(ValueError, match="Cell 99 is not a visible cell"):
        patch_from_cell(comp, cache, 99)
    with pytest.raises(TypeError, match="cell must be an int cell id"):
        patch_from_cell(comp, cache, "3")
    with pytest.raises(ValueError, match="rank must be < "):
        patch_from_cell(comp, cache, rank=10_000)
    with pytest.raises(ValueError, match="rank must be an int >= 0"):
        patch_from_cell(comp, cache, rank=-1)
    with pytest.raises(ValueError, match="size must be an int >= 1"):
        patch_from_cell(comp, cache, size=0)
    for bad in (0, 1.5, True, "half"):
        with pytest.raises(ValueError, match=r"crop must be a number in \(0, 1\]"):
            patch_from_cell(comp, cache, crop=bad)
    with pytest.raises(TypeError, match="atlas must be an Atlas"):
        patch_from_cell("atlas", cache)
    with pytest.raises(TypeError, match="cache must be an ActivationCache"):
        patch_from_cell(comp, None)
    other, _, _ = clustered_cache(seed=1)  # same shapes, other activations
    with pytest.raises(ValueError, match="differ from the atlas's; pass the cache the atlas"):
        patch_from_cell(comp, other)
    smaller, _, _ = clustered_cache(samples_per_cluster=5)
    with pytest.raises(ValueError, match="the cache has 80; pass the cache the atlas"):
        patch_from_cell(comp, smaller)
    cache.images = None
    with pytest.raises(ValueError, match="keep_images=True"):
        patch_from_cell(comp, cache)


def test_public_names():
    assert aw.patch_attack is patch_attack and aw.patch_from_cell is patch_from_cell
    assert aw.PatchTable is PatchTable


# ----------------------------------------------------------------------------- kitchen ground truth


def test_kitchen_noodles_patch_flips_frying_pans_to_wok(kitchen_attack, kitchen_net, kitchen_pans):
    table, took = kitchen_attack
    noodles, noise = table.row("noodles"), table.row(NOISE)
    print(f"noodles: dynamic {noodles['dynamic_rate']:.3f}, static {noodles['static_rate']:.3f}; "
          f"noise: dynamic {noise['dynamic_rate']:.3f}, static {noise['static_rate']:.3f} "
          f"on {noodles['n_images']} frying pans")
    assert noodles["n_images"] >= 150  # correctly classified pans of 1,500 images
    assert noodles["dynamic_rate"] >= 0.30
    assert noise["dynamic_rate"] < noodles["dynamic_rate"] / 3
    assert noodles["static_rate"] <= noodles["dynamic_rate"]
    assert noodles["dynamic_dprob"] > noise["dynamic_dprob"] > 0
    flipped = table.flipped("noodles")
    with torch.no_grad():
        assert (kitchen_net(kitchen_pans[flipped]).argmax(1) != 1).all()  # pans before: not wok
    forwards = len(kitchen_pans) + len(table.image_index) * len(table.placements) * len(table.rows)
    print(f"attack {forwards / took:.0f} images/s")  # speed is measured in bench/, not asserted


def test_patch_from_the_noodles_cell_flips_frying_pans(kitchen_attack, noodles_cell):
    table, _ = kitchen_attack
    cell, share = noodles_cell
    from_cell, noise = table.row("noodles cell"), table.row(NOISE)
    print(f"noodles cell {cell} (noodles share {share:.2f}): dynamic {from_cell['dynamic_rate']:.3f} "
          f"vs noise {noise['dynamic_rate']:.3f}")
    assert share >= 0.5  # the cell the ground truth points at does see noodles
    assert table.patches["noodles cell"].shape[-1] == 23  # half of block4's 46 px receptive field
    assert from_cell["dynamic_flips"] >= 2 * noise["dynamic_flips"]
