"""Attribution (activation x gradient): finite differences, targets, cache rows, the store."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from torch import nn

import atlaswidgets as aw
from atlaswidgets.attribution import Attribution, target_key
from atlaswidgets.cache.store import SCHEMA_VERSION
from tests.cache.conftest import TinyCNN, layer_output

CLASSES = ["pan", "wok", "pot", "tray"]


@pytest.fixture(scope="module")
def model() -> TinyCNN:
    return TinyCNN(0).eval()


@pytest.fixture(scope="module")
def model64() -> TinyCNN:
    return copy.deepcopy(TinyCNN(0)).double().eval()


@pytest.fixture(scope="module")
def data():
    gen = torch.Generator().manual_seed(3)
    return torch.rand(24, 3, 16, 16, generator=gen), torch.randint(0, 4, (24,), generator=gen)


def _logit_with_bump(model, x, layer, where, eps):
    """Logits when the layer's output at (sample, channel, y, x) is raised by eps."""
    s, c, y, xx = where

    def bump(module, inputs, out):
        out = out.clone()
        out[s, c, y, xx] += eps
        return out

    handle = dict(model.named_modules())[layer].register_forward_hook(bump)
    try:
        with torch.no_grad():
            return model(x)
    finally:
        handle.remove()


@pytest.mark.parametrize("layer,target", [("conv2", 1), ("conv2", (1, 0)), ("conv1", (2, 3))])
def test_matches_finite_differences(model64, data, layer, target):
    x = data[0][:4].double()
    # conv2 is followed by ReLU(inplace=True): the gradient must be that of the conv's own output
    attr = aw.attribute(model64, x, layer, target, progress=False)
    act = layer_output(model64, layer, x)
    _, c_n, h_n, w_n = act.shape
    assert attr.per_channel.shape == act.shape and attr.per_channel.dtype == torch.float64
    eps = 1e-6
    gen = np.random.default_rng(0)
    checked = 0
    while checked < 6:
        where = (int(gen.integers(4)), int(gen.integers(c_n)), int(gen.integers(h_n)), int(gen.integers(w_n)))
        a = float(act[where])
        if abs(a) < 1e-3:  # too close to the ReLU kink for a central difference
            continue
        up = _logit_with_bump(model64, x, layer, where, eps)
        down = _logit_with_bump(model64, x, layer, where, -eps)
        a_id, b_id = target if isinstance(target, tuple) else (target, None)
        score = (lambda z: z[:, a_id]) if b_id is None else (lambda z: z[:, a_id] - z[:, b_id])
        fd = float((score(up) - score(down))[where[0]]) / (2 * eps)
        got = float(attr.per_channel[where])
        assert got == pytest.approx(a * fd, rel=1e-5, abs=1e-9)
        checked += 1
    assert torch.allclose(attr.total, attr.per_channel.sum(1))


def test_pair_name_id_and_model_state(model, data):
    m = TinyCNN(0).train()
    m.fc.weight.requires_grad_(False)
    p = aw.attribute(m, data, "conv1", (1, 2), classes=CLASSES, progress=False)
    a = aw.attribute(m, data, "conv1", "wok", classes=CLASSES, progress=False)
    b = aw.attribute(m, data, "conv1", 2, progress=False)
    assert isinstance(p, Attribution) and p.key == "wok-pot" and a.key == "wok" and b.key == "class:2"
    assert torch.allclose(p.per_channel, a.per_channel - b.per_channel, atol=1e-6)
    named = aw.attribute(m, data, "conv1", ("wok", "pot"), classes=CLASSES, progress=False)
    assert torch.equal(named.per_channel, p.per_channel)
    # the model's modes and flags are as before, and no .grad was left on it
    assert m.training and all(mod.training for mod in m.modules())
    assert not m.fc.weight.requires_grad and m.conv1.weight.requires_grad
    assert all(q.grad is None for q in m.parameters())
    assert all(not mod._forward_hooks for mod in m.modules())


def _cache(model, data, sample="random", layers=("conv1", "conv2")):
    return aw.capture(model, data, list(layers), sample=sample, per_image=5, seed=2,
                      classes=CLASSES, progress=False, keep_images=False)


def _rows(model, data, layer, target, cache, **kw):
    """The two-step form: compute the cache's rows, then store them; returns the stored tensor."""
    attr = aw.attribute(model, data, layer, target, cache=cache, store=False, progress=False, **kw)
    assert isinstance(attr, Attribution) and attr.layer == layer
    cache.add_attribution(attr)
    return attr.per_channel


def test_cache_rows_random_policy(model, data):
    cache = _cache(model, data)
    attr = aw.attribute(model, data, "conv2", ("wok", "pan"), cache=cache, batch_size=7,
                        store=False, progress=False)
    la = cache["conv2"]
    assert la.attributions == {}  # computing does not store
    assert torch.equal(attr.sample_id, la.sample_id) and torch.equal(attr.yx, la.yx)
    assert attr.key == "wok-pan" and attr.target == aw.Target("pair", (1, 0))
    assert cache.add_attribution(attr) == "wok-pan"
    stored = attr.per_channel
    assert stored.shape == (la.n_rows, 16) and stored.dtype == torch.float32
    assert torch.equal(cache.attribution("conv2", ("wok", "pan")), stored)
    assert torch.equal(cache.attribution("conv2", "wok-pan"), stored)
    assert torch.equal(cache.attribution("conv2", (1, 0)), stored)
    full = aw.attribute(model, data, "conv2", (1, 0), progress=False).per_channel
    s, y, x = la.sample_id, la.yx[:, 0], la.yx[:, 1]
    assert torch.allclose(stored, full[s, :, y, x], atol=1e-6)
    totals = stored.sum(1)
    assert totals.shape == (la.n_rows,) and torch.allclose(totals, full.sum(1)[s, y, x], atol=1e-5)
    with pytest.raises(KeyError, match="wok-pan"):
        cache.attribution("conv2", "pot")
    with pytest.raises(KeyError, match="none yet"):
        cache.attribution("conv1", "pot")


def test_cache_from_iterable_and_shuffled_rows(model, data):
    """A generator of (images, labels) batches gives the same rows; row order need not be sorted."""
    cache = _cache(model, data)
    want = _rows(model, data, "conv2", "pot", cache)
    gen = ((data[0][i : i + 5], data[1][i : i + 5]) for i in range(0, 24, 5))
    got = _rows(model, gen, "conv2", "pot", cache)
    assert torch.allclose(got, want, atol=1e-6)
    la = cache["conv2"]
    perm = torch.randperm(la.n_rows)
    la.acts, la.sample_id, la.yx = la.acts[perm], la.sample_id[perm], la.yx[perm]
    shuffled = _rows(model, data, "conv2", "pot", cache)
    assert torch.allclose(shuffled, want[perm], atol=1e-6)
    assert torch.equal(cache.to("cpu")["conv2"].attributions["pot"], shuffled)
    short = ((data[0][i : i + 5], data[1][i : i + 5]) for i in range(0, 20, 5))
    with pytest.raises(ValueError, match="20 samples but the cache holds 24"):
        aw.attribute(model, short, "conv2", "pot", cache=cache, store=False, progress=False)


def test_cache_mean_policy(model, data):
    cache = _cache(model, data, sample="mean")
    stored = _rows(model, data, "conv1", "pot", cache)
    full = aw.attribute(model, data, "conv1", "pot", classes=CLASSES, progress=False).per_channel
    assert stored.shape == (24, 8)
    assert torch.allclose(stored, full.sum((2, 3)), atol=1e-5)
    # a layer without a grid fits "mean" rows: at the logits, act x grad is the logit itself
    flat = _cache(model, data, sample="mean", layers=("fc",))
    at_fc = _rows(model, data, "fc", "wok", flat)
    assert torch.allclose(at_fc[:, 1], flat.logits[:, 1]) and not at_fc[:, [0, 2, 3]].any()


def test_store_round_trip(model, data, tmp_path):
    cache = _cache(model, data)
    _rows(model, data, "conv2", ("wok", "pan"), cache)
    _rows(model, data, "conv1", 3, cache)
    cache.save(tmp_path / "s", shard_samples=10)
    manifest = json.loads((tmp_path / "s" / "manifest.json").read_text())
    assert manifest["layers"]["conv2"]["attributions"] == ["wok-pan"]
    assert manifest["layers"]["conv2"]["attribution_targets"] == {"wok-pan": {"kind": "pair", "ids": [1, 0]}}
    back = aw.ActivationCache.load(tmp_path / "s", device="cpu")
    for layer, key in (("conv2", "wok-pan"), ("conv1", "tray")):
        assert list(back[layer].attributions) == [key]
        assert torch.equal(back[layer].attributions[key], cache[layer].attributions[key])
        assert back[layer].attribution_targets == cache[layer].attribution_targets


def test_old_store_without_attributions_loads(model, data, tmp_path):
    cache = _cache(model, data)
    cache.save(tmp_path / "old")
    manifest = json.loads((tmp_path / "old" / "manifest.json").read_text())
    assert "attributions" not in manifest["layers"]["conv1"] and manifest["schema_version"] == SCHEMA_VERSION
    back = aw.ActivationCache.load(tmp_path / "old", device="cpu")
    assert back["conv1"].attributions == {}
    with pytest.raises(KeyError, match="none yet"):
        back.attribution("conv1", "wok")


class _Flat(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(self.conv(x).mean((2, 3)))


def test_bad_inputs(model, data):
    images = data[0][:4]
    with pytest.raises(ValueError, match=r"Unknown class name 'wook'.*Did you mean \['wok'\]"):
        aw.attribute(model, images, "conv1", "wook", classes=CLASSES, progress=False)
    with pytest.raises(ValueError, match="no class names"):
        aw.attribute(model, images, "conv1", "wok", progress=False)
    with pytest.raises(ValueError, match="out of range"):
        aw.attribute(model, images, "conv1", 4, progress=False)
    with pytest.raises(ValueError, match="out of range"):
        aw.attribute(model, images, "conv1", 9, classes=CLASSES, progress=False)
    with pytest.raises(ValueError, match="two different classes"):
        aw.attribute(model, images, "conv1", ("wok", 1), classes=CLASSES, progress=False)
    with pytest.raises(TypeError, match="int id or a str name"):
        aw.attribute(model, images, "conv1", 1.5, progress=False)
    with pytest.raises(ValueError, match="needs \\(N, C, H, W\\)"):
        aw.attribute(model, images, "fc", 1, progress=False)
    with pytest.raises(ValueError, match="Unknown layer"):
        aw.attribute(model, images, "conv9", 1, progress=False)
    cache = _cache(model, data, layers=("conv1",))
    with pytest.raises(ValueError, match="not in the cache"):
        aw.attribute(model, data, "conv2", 1, cache=cache, store=False, progress=False)
    with pytest.raises(ValueError, match="4 samples but the cache holds 24"):
        aw.attribute(model, images, "conv1", 1, cache=cache, store=False, progress=False)
    other = torch.rand_like(data[0])
    with pytest.raises(ValueError, match="do not match the cache"):
        aw.attribute(model, other, "conv1", 1, cache=cache, store=False, progress=False)
    with pytest.raises(ValueError, match="empty list"):
        aw.attribute(model, images, "conv1", [], progress=False)
    with pytest.raises(ValueError, match="store=True needs cache="):
        aw.attribute(model, images, "conv1", 1, store=True, progress=False)
    with pytest.raises(TypeError, match="store must be"):
        aw.attribute(model, images, "conv1", 1, store="yes", progress=False)
    broken = _Flat()
    with torch.no_grad():
        broken.fc.weight.fill_(float("nan"))
    with pytest.raises(ValueError, match="NaN"):
        aw.attribute(broken, images, "conv", 0, progress=False)
    assert all(not mod._forward_hooks for mod in model.modules())


def test_non_finite_images_are_refused_not_attributed_as_nan(model, data):
    # issue #17, item 8: a NaN image gave NaN attributions silently (capture refuses it)
    images = data[0][:6].clone()
    images[4, 1, 2, 3] = float("nan")
    with pytest.raises(ValueError, match="Image 4 of data has NaN or infinite pixels"):
        aw.attribute(model, images, "conv1", 1, progress=False)
    images[4, 1, 2, 3] = float("inf")
    with pytest.raises(ValueError, match="Image 4 of data"):
        aw.attribute(model, [images[:3], images[3:]], "conv1", 1, batch_size=3, progress=False)
    assert all(not mod._forward_hooks for mod in model.modules())


def test_target_key():
    assert target_key(("wok", "pan"), CLASSES) == "wok-pan"
    assert target_key((1, 0)) == "class:1-class:0"


def test_kitchen_noodles_push_toward_wok():
    """On the kitchen model, positions that see noodles carry more wok-over-pan attribution."""
    from atlaswidgets.zoo import kitchen

    net = kitchen.model()
    d = kitchen.dataset(200, seed=5)
    cache = aw.capture(net, d, "block4", sample="random", per_image=8, classes=kitchen.CLASSES,
                       progress=False, keep_images=False)
    attr = aw.attribute(net, d, "block4", ("wok", "frying pan"), cache=cache, store=False,
                        progress=False)
    totals = attr.total.cpu().numpy()
    noodles = aw.overlaps_context(cache, "block4", None, d.annotations, "noodles")
    assert noodles.any() and (~noodles).any()
    on, off = float(totals[noodles].mean()), float(totals[~noodles].mean())
    print(f"kitchen block4 wok-frying pan: noodles rows {noodles.sum()} mean {on:.4f}; "
          f"other rows {(~noodles).sum()} mean {off:.4f}")
    assert on > off


def test_several_targets_in_one_pass_match_single_runs(model, data):
    targets = [1, ("wok", "pan"), "tray"]
    many = aw.attribute(model, data, "conv2", targets, classes=CLASSES, batch_size=10, progress=False)
    assert isinstance(many, list) and [a.key for a in many] == ["wok", "wok-pan", "tray"]
    for t, got in zip(targets, many):
        one = aw.attribute(model, data, "conv2", t, classes=CLASSES, progress=False)
        assert got.target == one.target and got.key == one.key
        assert torch.allclose(got.per_channel, one.per_channel, atol=1e-6)
    # and on a cache's rows, with conv1's plain output (no in-place op after it)
    cache = _cache(model, data)
    rows = aw.attribute(model, data, "conv1", targets, cache=cache, store=False, progress=False)
    for t, got in zip(targets, rows):
        one = aw.attribute(model, data, "conv1", t, cache=cache, store=False, progress=False)
        assert torch.allclose(got.per_channel, one.per_channel, atol=1e-6)
    assert cache.add_attribution(rows) == ["wok", "wok-pan", "tray"]
    assert torch.equal(cache.attribution("conv1", 3), rows[2].per_channel)
    # a one-element list still gives a list: the result's type follows the target argument
    assert isinstance(aw.attribute(model, data, "conv1", [0], progress=False), list)


def test_one_step_form_still_stores_with_a_warning(model, data):
    cache = _cache(model, data)
    with pytest.warns(FutureWarning, match=r"cache.add_attribution\(attr\)"):
        attr = aw.attribute(model, data, "conv2", ("wok", "pan"), cache=cache, progress=False)
    assert isinstance(attr, Attribution)
    assert torch.equal(cache.attribution("conv2", ("wok", "pan")), attr.per_channel)
    assert cache["conv2"].attribution_targets == {"wok-pan": aw.Target("pair", (1, 0))}


def test_add_attribution_refuses_other_rows(model, data):
    cache = _cache(model, data)
    other = _cache(model, data, sample="mean")
    attr = aw.attribute(model, data, "conv2", "wok", cache=other, store=False, progress=False)
    with pytest.raises(ValueError, match="other rows of layer 'conv2'"):
        cache.add_attribution(attr)
    with pytest.raises(ValueError, match="every position"):
        cache.add_attribution(aw.attribute(model, data, "conv2", "wok", classes=CLASSES, progress=False))
    with pytest.raises(TypeError, match="takes an Attribution"):
        cache.add_attribution(torch.zeros(3))
    assert cache["conv2"].attributions == {}


def test_unnamed_classes_keys_resolve_again(model, data):
    cache = aw.capture(model, data, ["conv1"], sample="random", per_image=5, seed=2, progress=False)
    assert cache.classes is None
    keys = cache.add_attribution(aw.attribute(model, data, "conv1", [(1, 0), 2], cache=cache,
                                              store=False, progress=False))
    assert keys == ["class:1-class:0", "class:2"]
    for key in keys:  # a key the kit wrote looks up again, as written or as its ids
        assert torch.equal(cache.attribution("conv1", key), cache["conv1"].attributions[key])
    assert torch.equal(cache.attribution("conv1", (1, 0)), cache.attribution("conv1", "class:1-class:0"))
    assert cache.label_names([0])[0] == f"class:{int(cache.labels[0])}"
