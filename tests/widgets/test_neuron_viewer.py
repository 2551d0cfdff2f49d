"""NeuronViewer: its traits carry exactly the unit's samples, related units and distribution."""

from __future__ import annotations

import dataclasses
import io

import numpy as np
import pytest
import torch
from PIL import Image

import atlaswidgets as aw
from atlaswidgets.cache.units import unit_samples
from atlaswidgets.widgets.neuron import NeuronViewer
from atlaswidgets.zoo import kitchen

from .conftest import XSS

NOODLES = 84  # block4's best "noodles" channel on this data by find_units (checked in test_noodles_channel)


@pytest.fixture(scope="module")
def world():
    """A 200-image kitchen cache of block3 and block4 with statistics; one class name is hostile."""
    model = kitchen.model()
    data = kitchen.dataset(200, seed=1)
    classes = list(kitchen.CLASSES)
    classes[classes.index("baking tray")] = XSS
    cache = aw.capture(model, data, ["block3", "block4"], stats=True, classes=classes, progress=False)
    for target in ("wok", XSS, "frying pan"):
        cache.add_attribution(aw.attribute(model, data, "block4", target, cache=cache,
                                           store=False, progress=False))
    return model, cache


def _ask(viewer, request: dict) -> None:
    """What ipywidgets does with the page's request: set the `request` trait (with a fresh id)."""
    viewer.set_state({"request": {**request, "id": viewer.answered + 1}})


def _flat(samples):
    ex = samples.all()
    return ex.sample_id, ex.values, ex.yx


def test_groups_are_unit_samples_exactly(world):
    _, cache = world
    v = NeuronViewer(cache, "block4", NOODLES, n=5, seed=3, thumb_size=40)
    want = unit_samples(cache, NOODLES, "block4", n=5, seed=3)
    assert [g["name"] for g in v.groups] == list(want.groups)
    assert [g["count"] for g in v.groups] == [len(e) for e in want.groups.values()]
    assert v.groups[0]["title"] == "Top activations" and v.groups[-1]["title"] == "Random sample"
    got = v.activation_arrays()
    sid, values, yx = _flat(want)
    assert v.n_examples == len(sid) == sum(g["count"] for g in v.groups)
    np.testing.assert_array_equal(got["sample_ids"], sid)
    np.testing.assert_array_equal(got["yx"], yx)
    np.testing.assert_allclose(got["values"], values)
    assert v.labels == cache.label_names(sid)
    sheet = Image.open(io.BytesIO(v.sprite))
    assert sheet.size == (v.sprite_cols * 40, -(-v.n_examples // v.sprite_cols) * 40)
    # no model: each example's strongest position is outlined, and the note says why
    assert v.marking == "box" and v.maps.size == 0 and "no model" in v.note
    boxes = got["boxes"]
    assert boxes.shape == (v.n_examples, 4) and boxes.min() >= 0 and boxes.max() <= 40
    assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
    assert v.unit == {"kind": "channel", "layer": "block4", "channel": NOODLES}
    assert v.samples.groups.keys() == want.groups.keys()


def test_activation_maps_peak_at_the_streamed_value(world):
    model, cache = world
    v = NeuronViewer(cache, "block4", NOODLES, model=model, n=4, icons=False)
    got = v.activation_arrays()
    assert v.marking == "heatmap" and v.map_hw == [8, 8] and v.boxes.size == 0
    assert got["maps"].shape == (v.n_examples, 8, 8)
    # the statistics keep each sample's maximum over every position: the map's peak, where it says
    peaks = got["maps"].reshape(v.n_examples, -1).max(1)
    np.testing.assert_allclose(peaks, got["values"], rtol=1e-4, atol=1e-4)
    at = got["maps"][np.arange(v.n_examples), got["yx"][:, 0], got["yx"][:, 1]]
    np.testing.assert_allclose(at, got["values"], rtol=1e-4, atol=1e-4)
    assert v.map_max >= peaks.max()


def test_next_previous_and_channel_trait(world):
    _, cache = world
    v = NeuronViewer(cache, "block4", NOODLES, n=2)
    version = v.version
    v.next()
    assert v.channel == 85 and v.unit["channel"] == 85 and v.version == version + 1
    np.testing.assert_array_equal(v.activation_arrays()["sample_ids"], _flat(unit_samples(cache, 85, "block4", n=2))[0])
    v.previous()
    v.previous()
    assert v.unit["channel"] == 83
    v.channel = 0
    v.previous()
    assert v.channel == 0 and v.unit["channel"] == 0
    v.channel = 127
    v.next()
    assert v.channel == 127
    with pytest.raises(ValueError, match=r"channels 0\.\.127"):
        v.channel = 128
    # the same value in a message (ipywidgets' set_state) is rolled back, not half applied
    with pytest.raises(ValueError, match=r"channels 0\.\.127"):
        v.set_state({"channel": 128})
    assert v.channel == 127 and v.unit["channel"] == 127


def test_page_requests_and_their_errors(world):
    _, cache = world
    v = NeuronViewer(cache, "block4", NOODLES, n=2)
    _ask(v, {"kind": "channel", "channel": 85})
    assert v.unit["channel"] == 85 and v.error == ""
    _ask(v, {"kind": "channel", "channel": 500})
    assert "out of range" in v.error and v.unit["channel"] == 85
    _ask(v, {"kind": "search", "query": "12"})
    assert v.unit["channel"] == 12 and v.error == ""
    _ask(v, {"kind": "layer", "layer": "nope"})
    assert "was not captured" in v.error
    _ask(v, {"kind": "layer", "layer": "block3"})
    assert v.layer == "block3" and v.unit == {"kind": "channel", "layer": "block3", "channel": 12}


def test_requests_are_traits_answered_by_id_and_bad_ones_are_rolled_back(world, monkeypatch):
    _, cache = world
    v = NeuronViewer(cache, "block4", NOODLES, n=2)
    _ask(v, {"kind": "channel", "channel": 500})
    assert "out of range" in v.error and v.answered == 1
    # the same request again is a new one (its id), answered again, even with the same error
    _ask(v, {"kind": "channel", "channel": 500})
    assert v.answered == 2 and "out of range" in v.error
    version = v.version
    _ask(v, {"kind": "channel", "channel": NOODLES})  # the unit shown: drawn again all the same
    assert v.answered == 3 and v.error == "" and v.version == version + 1
    # a request that is no request is refused as a whole, and the page told what holds
    sent: list[dict] = []
    monkeypatch.setattr(v, "_send", lambda msg, buffers=None: sent.append(msg))
    kept = dict(v.request)
    with pytest.raises(ValueError, match="request kind must be 'channel', 'layer', 'search' or 'step'"):
        v.set_state({"request": {"kind": "delete", "id": 4}})
    with pytest.raises(TypeError, match="request id must be an int"):
        v.set_state({"request": {"kind": "channel", "channel": 3, "id": "4"}})
    assert v.request == kept and v.answered == 3 and v.unit["channel"] == NOODLES
    assert [m["state"] for m in sent if m["method"] == "update"] == [{"request": kept}] * 2


def test_layers_and_switching(world):
    _, cache = world
    v = NeuronViewer(cache, n=2)
    assert v.layers == ["block3", "block4"] and v.layer == "block3" and v.channel == 0
    n3 = cache["block3"].n_channels
    v.show_channel(n3 - 1)
    v.layer = "block4"  # a channel number the new layer has is kept
    assert v.unit == {"kind": "channel", "layer": "block4", "channel": n3 - 1}
    assert v.n_channels == cache["block4"].n_channels


def test_search_by_number_and_by_class(world):
    _, cache = world
    v = NeuronViewer(cache, "block4", 0, n=2)
    assert v.search("channel 42") == [] and v.channel == 42
    assert v.search("#7") == [] and v.channel == 7
    ranked = v.search("wok")
    means = cache["block4"].attributions["wok"].mean(0)
    want = torch.argsort(means, descending=True)[: len(ranked)].tolist()
    assert [r["channel"] for r in ranked] == want
    assert v.channel == want[0] and v.search_results == ranked and "wok" in v.search_title
    assert [r["channel"] for r in v.search("WOK")] == want  # case does not matter
    with pytest.raises(ValueError, match=r"Nothing matches 'spoon'\. The search box takes a channel "
                       r"number \(0\.\.127\); a class name \(frying pan, wok, .*annotations=data\.annotations"):
        v.search("spoon")
    with pytest.raises(ValueError, match="out of range"):
        v.search("300")
    with pytest.raises(ValueError, match="channel number or a class name"):
        v.search("  ")
    bare = NeuronViewer(cache, "block3", 0, n=2)
    with pytest.raises(ValueError, match="Nothing matches 'wok'.*once the cache holds single-class "
                       "attributions.*aw.attribute"):
        bare.search("wok")
    assert "no single-class attributions" in bare.related_note and bare.classes_up == []


def test_search_by_concept_word_in_the_annotations(world):
    _, cache = world
    data = kitchen.dataset(200, seed=1)  # the cache's data: its annotations
    v = NeuronViewer(cache, "block4", 0, n=2, annotations=data.annotations)
    ranked = v.search("Noodle")  # any case, and the plural's "s" may be left out
    assert "noodles" in v.search_title and v.channel == ranked[0]["channel"]
    # the score: correlation over samples of each channel's per-sample maximum (its cached rows)
    # with "the image holds noodles"
    la = cache["block4"]
    acts, sid = la.acts.double().numpy(), la.sample_id.numpy()
    best = np.full((cache.n_samples, acts.shape[1]), -np.inf)
    np.maximum.at(best, sid, acts)
    has = np.array([any(a["name"] == "noodles" for a in ann) for ann in data.annotations], float)
    seen = np.isfinite(best[:, 0])
    corr = np.array([np.corrcoef(best[seen, c], has[seen])[0, 1] if best[seen, c].std() > 0 else 0
                     for c in range(acts.shape[1])])
    want = np.argsort(-corr, kind="stable")[: len(ranked)]
    assert [r["channel"] for r in ranked] == want.tolist()
    np.testing.assert_allclose([r["score"] for r in ranked], corr[want], atol=1e-6)
    assert NOODLES in [r["channel"] for r in ranked[:3]]  # find_units' noodles channel ranks high
    with pytest.raises(ValueError, match=r"Nothing matches 'spatula'.*an annotated object \(.*noodles"):
        v.search("spatula")
    with pytest.raises(ValueError, match="annotations has 3 entries but the cache holds 200"):
        NeuronViewer(cache, "block4", annotations=data.annotations[:3])
    with pytest.raises(TypeError, match="annotations must be a list"):
        NeuronViewer(cache, "block4", annotations="noodles")


def test_arrows_step_within_the_kind_shown(world):
    _, cache = world
    v = NeuronViewer(cache, "block4", 5, n=2)
    _ask(v, {"kind": "step", "delta": 1})
    assert v.unit == {"kind": "channel", "layer": "block4", "channel": 6} and v.error == ""
    # a direction without neighbours: the arrows are refused, not turned into channel 7
    v.show_direction(np.ones(cache["block4"].n_channels, np.float32), label="all ones", short="ones")
    assert v.unit["short"] == "ones" and v.unit["steps"] is False
    _ask(v, {"kind": "step", "delta": 1})
    assert "'ones' has no next or previous one" in v.error and v.unit["kind"] == "direction"
    # a direction with neighbours: the arrows call its step
    asked = []
    v.show_direction(np.ones(cache["block4"].n_channels, np.float32), label="cell 3 mean",
                     short="cell 3", step=asked.append)
    assert v.unit["steps"] is True
    _ask(v, {"kind": "step", "delta": -1})
    assert asked == [-1] and v.error == ""
    _ask(v, {"kind": "step", "delta": 2})
    assert "delta must be -1 or 1" in v.error
    with pytest.raises(TypeError, match="step must be a callable"):
        v.show_direction(np.ones(cache["block4"].n_channels, np.float32), step=3)


def test_related_channels_are_the_most_correlated(world):
    _, cache = world
    v = NeuronViewer(cache, "block4", NOODLES, n=2, n_related=5)
    acts = cache["block4"].acts.double().numpy()
    corr = np.nan_to_num(np.corrcoef(acts.T)[NOODLES])
    corr[NOODLES] = -np.inf
    want = np.argsort(-corr, kind="stable")[:5]
    assert [r["channel"] for r in v.related_channels] == want.tolist()
    np.testing.assert_allclose([r["corr"] for r in v.related_channels], corr[want], atol=1e-4)
    # clicking one shows it
    _ask(v, {"kind": "channel", "channel": v.related_channels[0]["channel"]})
    assert v.unit["channel"] == int(want[0])
    # a direction's correlations (computed from the layer's moments) match a pass over the rows
    d = np.random.default_rng(0).standard_normal(acts.shape[1])
    v.show_direction(d.astype(np.float32), label="random direction")
    score = acts @ d
    corr_d = np.array([np.corrcoef(score, acts[:, c])[0, 1] if acts[:, c].std() > 0 else 0.0
                       for c in range(acts.shape[1])])
    want_d = np.argsort(-corr_d, kind="stable")[:5]
    assert [r["channel"] for r in v.related_channels] == want_d.tolist()
    np.testing.assert_allclose([r["corr"] for r in v.related_channels], corr_d[want_d], atol=1e-4)


def test_classes_pushed_and_hostile_names_stay_text(world):
    _, cache = world
    v = NeuronViewer(cache, "block4", NOODLES, n=4)
    la = cache["block4"]
    means = {k: float(la.attributions[k][:, NOODLES].mean()) for k in ("wok", XSS, "frying pan")}
    up = sorted((k for k in means if means[k] > 0), key=lambda k: -means[k])
    down = sorted((k for k in means if means[k] < 0), key=lambda k: means[k])
    assert [c["name"] for c in v.classes_up] == up and [c["name"] for c in v.classes_down] == down
    np.testing.assert_allclose([c["value"] for c in v.classes_up], [means[k] for k in up], rtol=1e-5)
    assert "wok" in up  # the noodles channel argues for wok
    # and how much, against the other channels: a share of the channel that pushes wok most, a rank
    wok_means = la.attributions["wok"].float().mean(0)
    wok = next(c for c in v.classes_up if c["name"] == "wok")
    assert wok["share"] == pytest.approx(means["wok"] / float(wok_means.abs().max()), rel=1e-4)
    assert wok["rank"] == int((wok_means > wok_means[NOODLES]).sum()) + 1 and wok["of"] == la.n_channels
    assert "% of the strongest channel" in v.related_note
    names = [c["name"] for c in v.classes_up + v.classes_down]
    assert XSS in names  # the raw string: the page sets it as text
    # examples of the hostile class carry its name verbatim too
    xss_samples = [int(s) for s in np.flatnonzero(cache.labels.numpy() == kitchen.CLASSES.index("baking tray"))]
    v.show_direction(la.acts[np.isin(la.sample_id.numpy(), xss_samples)].mean(0), label=XSS)
    assert v.unit["label"] == XSS and XSS in v.labels


def test_show_direction(world):
    _, cache = world
    la = cache["block4"]
    d = la.acts[:40].mean(0)
    v = NeuronViewer(cache, "block4", NOODLES, n=3)
    v.show_direction(d, label="cell 42 mean")
    assert v.unit["kind"] == "direction" and v.unit["label"] == "cell 42 mean"
    assert v.unit["norm"] == pytest.approx(float(d.norm()), rel=1e-5)
    want = unit_samples(cache, d.numpy(), "block4", n=3)
    np.testing.assert_array_equal(v.activation_arrays()["sample_ids"], _flat(want)[0])
    assert [g["count"] for g in v.groups] == [len(e) for e in want.groups.values()]
    counts = v.activation_arrays()["hist_counts"]
    assert counts.sum() == len(np.unique(la.sample_id.numpy())) and "cached positions" in v.hist_note
    assert v.related_channels and v.classes_up == [] and "per channel" in v.related_note
    v.next()  # back to channels
    assert v.unit == {"kind": "channel", "layer": "block4", "channel": NOODLES + 1}
    with pytest.raises(ValueError, match=r"shape \(128,\)"):
        v.show_direction(np.ones(5))
    with pytest.raises(ValueError, match="NaN"):
        v.show_direction(np.full(128, np.nan))
    with pytest.raises(ValueError, match="all zeros"):
        v.show_direction(np.zeros(128))
    with pytest.raises(TypeError, match="label"):
        v.show_direction(np.ones(128), label=3)
    assert v.unit["channel"] == NOODLES + 1  # failed calls change nothing


def test_histogram_is_the_streamed_one(world):
    _, cache = world
    v = NeuronViewer(cache, "block4", NOODLES, n=2)
    stats = cache.stats["block4"]
    edges, counts = stats.histogram(NOODLES, of="maxima")
    got = v.activation_arrays()
    np.testing.assert_allclose(got["hist_edges"], edges, rtol=1e-6)
    np.testing.assert_array_equal(got["hist_counts"], counts)
    assert v.hist_quantiles == [0.5, 0.9, 0.99, 0.999]
    np.testing.assert_allclose(got["hist_marks"], [stats.quantile(NOODLES, q) for q in v.hist_quantiles], rtol=1e-6)
    fig = v.histogram_figure()
    assert fig.data[0].y.tolist() == counts.tolist() and len(fig.layout.shapes) == 4


def test_icon_renders_in_the_background_once_per_channel(world, monkeypatch):
    import threading

    from atlaswidgets.widgets import neuron_icon

    model, cache = world
    gate, real = threading.Event(), neuron_icon.icon_png

    def held(*args):  # a slow render: it waits for the gate, checking its cancel meanwhile
        for _ in range(3000):  # 30 s: a viewer that waited for its icon would hang here
            if gate.wait(0.01):
                return real(*args)
            args[-1](0)
        raise AssertionError("the icon's render was never let through")

    monkeypatch.setattr(neuron_icon, "icon_png", held)
    with neuron_icon.RENDER_LOCK:  # an atlas render holds it: the maps must not wait for that
        v = NeuronViewer(cache, "block4", NOODLES, model=model, n=2, icon_steps=2)
        assert v.sprite and v.icon == b"" and v.icon_note == neuron_icon.RENDERING_NOTE
        assert v.icon_unit == f"block4:channel:{NOODLES}" and not v.wait_icon(timeout=0.05)
    v.next()  # the maps stop the render in progress (they need the model), so no backlog
    v.previous()
    gate.set()
    assert v.wait_icon(timeout=60) and list(v._icon_memo) == [("block4", "channel", NOODLES)]
    img = Image.open(io.BytesIO(v.icon))
    assert img.size == cache.input_hw and v.icon_note == "feature visualisation"
    first = v.icon
    v.next()
    assert v.icon_unit == f"block4:channel:{NOODLES + 1}" and v.wait_icon(timeout=60)
    assert v.icon != first and len(v._icon_memo) == 2
    v.previous()
    assert v.icon == first and v._icon_job is None  # the first icon came from memory, at once
    off = NeuronViewer(cache, "block4", NOODLES, model=model, n=2, icons=False)
    assert off.icon == b"" and "icons=False" in off.icon_note and off.wait_icon(0)
    assert "no model" in NeuronViewer(cache, "block4", NOODLES, n=2).icon_note


def test_bad_input(world):
    model, cache = world
    with pytest.raises(ValueError, match="stats=True"):
        NeuronViewer(dataclasses.replace(cache, stats={}))
    only4 = dataclasses.replace(cache, stats={"block4": cache.stats["block4"]})
    with pytest.raises(ValueError, match="'block3' has no per-channel statistics.*stats=True"):
        NeuronViewer(only4, "block3")
    with pytest.raises(ValueError, match="was not captured"):
        NeuronViewer(cache, "block9")
    with pytest.raises(ValueError, match="out of range"):
        NeuronViewer(cache, "block4", 128)
    with pytest.raises(ValueError, match="keep_images=True"):
        NeuronViewer(dataclasses.replace(cache, images=None))
    with pytest.raises(TypeError, match="ActivationCache"):
        NeuronViewer(model)
    with pytest.raises(TypeError, match="torch.nn.Module"):
        NeuronViewer(cache, model="kitchen")
    with pytest.raises(ValueError, match="n must be"):
        NeuronViewer(cache, n=0)
    v = NeuronViewer(only4, n=2)
    assert v.layers == ["block4"]
    with pytest.raises(ValueError, match="no per-channel statistics"):
        v.layer = "block3"
    with pytest.raises(ValueError, match="thumb_size"):
        v.thumb_size = 4


def test_noodles_channel(world):
    _, cache = world
    data = kitchen.dataset(200, seed=1)
    best = aw.find_units(cache, lambda ann: any(a["name"] == "noodles" for a in ann), "block4",
                         annotations=data.annotations, top=1)[0]
    assert best.unit == NOODLES and best.top_and_random >= 0.5
