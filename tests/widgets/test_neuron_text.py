"""NeuronViewer on a text cache (TinyLM, blocks.1.mlp.act): token contexts with heat strips, top
tokens by mean activation, what a neuron writes, token search; and exact activation maps for an
ImageNet-normalised image model (issue #15)."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from torch import nn

import atlaswidgets as aw
from atlaswidgets.cache.contexts import row_values, token_contexts
from atlaswidgets.cache.tokens import token_writes, top_tokens
from atlaswidgets.cache.units import unit_samples
from atlaswidgets.widgets.neuron import NeuronViewer
from atlaswidgets.widgets.neuron_text import AFTER, BEFORE, MIN_COUNT, N_TOKENS
from atlaswidgets.zoo import text

from ..cache.test_exact_maps import SmallNet, imagenet

LAYER = "blocks.1.mlp.act"
CHANNEL = 5


def hostile_data(n: int, seed: int) -> dict:
    """A corpus with the hostile token at every fourth position, so every context shows it."""
    cols = text.corpus(n, seed=seed).columns
    ids = cols["input_ids"].clone()
    spot = torch.zeros_like(ids, dtype=torch.bool)
    spot[:, 3::4] = True
    ids[spot & cols["attention_mask"].bool()] = text.VOCAB.index(text.HOSTILE)
    return {**cols, "input_ids": ids}


@pytest.fixture(scope="module")
def lm():
    return text.model()


@pytest.fixture(scope="module", params=[False, True], ids=["rows", "stats"])
def world(request, lm):
    cache = aw.capture(lm, hostile_data(120, seed=4), LAYER, stats=request.param, progress=False)
    return lm, cache


def test_examples_are_contexts_with_exact_heat(world):
    model, cache = world
    v = NeuronViewer(cache, channel=CHANNEL, model=model, n=3, seed=1)
    want = unit_samples(cache, CHANNEL, LAYER, n=3, seed=1)
    ex = want.all()
    assert v.mode == "text" and v.layers == [LAYER] and v.marking == "text"
    assert [g["name"] for g in v.groups] == list(want.groups)
    np.testing.assert_array_equal(v.sample_ids, ex.sample_id)
    np.testing.assert_array_equal(v.yx, ex.yx)
    assert v.sprite == b"" and v.maps.size == 0 and v.labels == [] and v.icon == b""
    ctx = token_contexts(cache, ex.sample_id, ex.yx[:, 1], BEFORE, AFTER)
    assert len(v.contexts) == v.n_examples == len(ex)
    for got, c in zip(v.contexts, ctx):
        assert got == {"tokens": c.tokens, "index": c.index, "start": c.start}
    # the heat strip is the model's value at every token of the window: at the example's own
    # token it is the cached (or streamed) value, and at every cached row the cached activation
    heat = v.heat
    assert heat.shape == (len(ex), max(len(c.tokens) for c in ctx))
    own = heat[np.arange(len(ex)), [c["index"] for c in v.contexts]]
    np.testing.assert_allclose(own, ex.values, atol=1e-5, rtol=0)
    cached = row_values(cache, LAYER, ex.sample_id, unit=CHANNEL)
    for i, c in enumerate(v.contexts):
        known = cached[i, c["start"]: c["start"] + len(c["tokens"])]
        ok = np.isfinite(known)
        if want.source == "rows":  # the example is a cached row (streamed stats see every token)
            assert ok[c["index"]]
        np.testing.assert_allclose(heat[i, : len(known)][ok], known[ok], atol=1e-5, rtol=0)
        assert np.isfinite(heat[i, : len(c["tokens"])]).all()
    assert 0 <= v.map_error < 1e-5 and "re-run" in v.note
    # the hostile token is a literal string in the contexts and in the synced JSON
    assert any(text.HOSTILE in c["tokens"] for c in v.contexts)
    assert text.HOSTILE in json.dumps(v.get_state(["contexts"]))


def test_without_a_model_the_heat_is_what_the_cache_knows(world):
    _, cache = world
    v = NeuronViewer(cache, channel=CHANNEL, n=3, seed=1)
    ex = v.samples.all()
    cached = row_values(cache, LAYER, ex.sample_id, unit=CHANNEL)
    for i, c in enumerate(v.contexts):
        want = cached[i, c["start"]: c["start"] + len(c["tokens"])]
        np.testing.assert_array_equal(v.heat[i, : len(want)], want)  # NaN where no row
    assert v.map_error == -1.0 and "pass model=" in v.note
    assert v.writes_up == [] and "no model given" in v.writes_note
    assert [t["token"] for t in v.top_tokens] == top_tokens(cache, CHANNEL, LAYER, N_TOKENS, MIN_COUNT).tokens


def test_top_tokens_and_writes_of_a_neuron(world):
    model, cache = world
    v = NeuronViewer(cache, channel=CHANNEL, model=model, n=2)
    want = top_tokens(cache, CHANNEL, LAYER, k=N_TOKENS, min_count=MIN_COUNT)
    assert [t["token"] for t in v.top_tokens] == want.tokens
    np.testing.assert_allclose([t["mean"] for t in v.top_tokens], want.means, rtol=1e-6)
    assert [t["count"] for t in v.top_tokens] == want.counts.tolist()
    assert min(t["count"] for t in v.top_tokens) >= MIN_COUNT
    writes = token_writes(model.neuron_output_weights(1)[CHANNEL], model.unembed, cache.vocab, k=N_TOKENS)
    assert [w["token"] for w in v.writes_up] == [e["token"] for e in writes.promotes]
    assert [w["token"] for w in v.writes_down] == [e["token"] for e in writes.suppresses]
    assert all(w["value"] > 0 for w in v.writes_up) and all(w["value"] < 0 for w in v.writes_down)
    assert "through the unembedding" in v.writes_note
    # a direction over the neurons writes that mix of their output weights
    d = np.zeros(384)
    d[[CHANNEL, 7]] = [1.0, -2.0]
    v.show_direction(d, "mix")
    mixed = model.neuron_output_weights(1)[CHANNEL] - 2 * model.neuron_output_weights(1)[7]
    assert [w["token"] for w in v.writes_up] == [e["token"] for e in token_writes(mixed, model.unembed, cache.vocab, k=N_TOKENS).promotes]
    assert v.map_error < 1e-5


def test_writes_passed_by_hand_keep_the_hostile_token_literal(world):
    model, cache = world
    w_u = model.unembed
    w_out = torch.zeros(384, w_u.shape[1])
    w_out[CHANNEL] = w_u[cache.vocab.index(text.HOSTILE)]  # writes the hostile token most
    v = NeuronViewer(cache, channel=CHANNEL, n=2, writes=(w_out, w_u))
    assert v.writes_up[0]["token"] == text.HOSTILE
    assert text.HOSTILE in json.dumps(v.get_state(["writes_up"]))
    with pytest.raises(ValueError, match=r"W_out \(384, d_model\)"):
        NeuronViewer(cache, n=2, writes=(w_out[:5], w_u))
    with pytest.raises(TypeError, match="writes must be a pair"):
        NeuronViewer(cache, n=2, writes=w_out)


def test_search_by_token_finds_units_that_read_it(world):
    model, cache = world
    v = NeuronViewer(cache, channel=0, n=2)
    found = v.search("salt")
    assert found and v.channel == found[0]["channel"]
    assert "salt" in [t["token"] for t in v.top_tokens]
    assert "'salt'" in v.search_title
    v.set_state({"request": {"kind": "search", "query": "no-such-token", "id": v.answered + 1}})
    assert "No token 'no-such-token'" in v.error
    v.set_state({"request": {"kind": "search", "query": "7", "id": v.answered + 1}})
    assert v.error == "" and v.channel == 7


def test_text_viewer_refuses_image_only_arguments(world):
    _, cache = world
    with pytest.raises(ValueError, match="inputs= is for image caches"):
        NeuronViewer(cache, n=2, inputs=torch.rand(len(cache.tokens), 3, 8, 8))


class KeepOnly(nn.Module):
    """The tiny LM behind a call capture cannot guess: ``model(tokens, keep=mask)`` only (so
    ``model(ids)`` and ``model(**batch)`` both fail); captured through ``forward=``."""

    def __init__(self, lm):
        super().__init__()
        self.lm = lm

    def forward(self, tokens, *, keep):
        return self.lm(tokens, keep.long())


def keep_forward(model):
    return lambda b: model(b["input_ids"], keep=b["attention_mask"].bool())


def test_text_rerun_goes_through_the_captures_forward(lm, tmp_path):
    model = KeepOnly(lm)
    layer = "lm." + LAYER
    cache = aw.capture(model, text.corpus(40, seed=5).columns, layer, sample="all",
                       forward=keep_forward(model), progress=False, store=tmp_path / "kept")
    assert cache.forward is not None and cache.meta["token_inputs"] == ["attention_mask", "input_ids"]
    v = NeuronViewer(cache, channel=CHANNEL, model=model, n=3, seed=1)
    # every token of every example's sample is a cached row: the heat equals them all
    cached = row_values(cache, layer, v.sample_ids, unit=CHANNEL)
    assert v.map_error < 1e-5 and "re-run" in v.note
    for i, c in enumerate(v.contexts):
        known = cached[i, c["start"]: c["start"] + len(c["tokens"])]
        assert np.isfinite(known).all()
        np.testing.assert_allclose(v.heat[i, : len(known)], known, atol=1e-5, rtol=0)
    # a loaded cache keeps the batches' form but not the function: passed again, the same heat
    loaded = aw.ActivationCache.load(tmp_path / "kept")
    with pytest.raises(TypeError, match="pass that same forward= here"):
        NeuronViewer(loaded, channel=CHANNEL, model=model, n=3, seed=1)
    again = NeuronViewer(loaded, channel=CHANNEL, model=model, n=3, seed=1, forward=keep_forward(model))
    np.testing.assert_array_equal(again.heat, v.heat)
    with pytest.raises(TypeError, match="forward must be a function"):
        NeuronViewer(cache, channel=CHANNEL, model=model, n=3, forward="model")


def test_text_rerun_refuses_inputs_it_cannot_rebuild(lm):
    from atlaswidgets.cache.facts import LayerOutputs

    with pytest.raises(ValueError, match="can rebuild only"):
        LayerOutputs(lm, (1, 8), None, token_inputs=["input_ids", "position_ids"])
    with pytest.raises(TypeError, match="token_inputs must be"):
        LayerOutputs(lm, (1, 8), None, token_inputs="input_ids")


# ---- exact maps for an image model with ImageNet preprocessing ----------------------------------



@pytest.fixture(scope="module")
def image_world(tmp_path_factory):
    torch.manual_seed(0)
    model = SmallNet().eval()
    x = torch.rand(40, 3, 16, 16)  # floats in [0, 1], not whole multiples of 1/255
    cache = aw.capture(model, x, "conv2", sample="all", stats=True, preprocess=imagenet, progress=False)
    return model, x, cache


def _maps_equal_cached_rows(v, cache, channel):
    la = cache["conv2"]
    sid = la.sample_id.numpy()
    for i, s in enumerate(v.sample_ids):
        rows = np.nonzero(sid == s)[0]
        y, x = la.yx[rows, 0].numpy(), la.yx[rows, 1].numpy()
        np.testing.assert_allclose(v.maps[i, y, x], la.acts[rows, channel].numpy(), atol=1e-5, rtol=0)


def test_image_maps_equal_the_cached_activations(image_world, tmp_path):
    model, x, cache = image_world
    v = NeuronViewer(cache, "conv2", 3, model=model, n=3, icons=False, inputs=x)
    _maps_equal_cached_rows(v, cache, 3)
    assert v.map_error < 1e-5 and "captured inputs" in v.note
    # a loaded cache keeps no preprocess: the viewer takes it
    cache.save(tmp_path / "store")
    loaded = aw.ActivationCache.load(tmp_path / "store")
    assert loaded.preprocess is None
    v = NeuronViewer(loaded, "conv2", 3, model=model, n=3, icons=False, inputs=x, preprocess=imagenet)
    _maps_equal_cached_rows(v, loaded, 3)
    with pytest.raises(ValueError, match="not both"):
        NeuronViewer(cache, "conv2", model=model, preprocess=imagenet, normalize=imagenet)


def test_inexact_maps_are_flagged_not_shown_silently(image_world):
    model, x, cache = image_world
    # the display images are uint8 copies of float inputs: close, not exact, and the note says so
    v = NeuronViewer(cache, "conv2", 3, model=model, n=3, icons=False)
    assert 1e-5 < v.map_error < 1e-2 * np.abs(v.values).max()
    assert "APPROXIMATE" in v.note and "display images" in v.note and "inputs=" in v.note
    # preprocessing applied twice (inputs already normalised, then cache.preprocess again) is far
    # off: flagged in the note and warned about
    with pytest.warns(UserWarning, match="differ from the captured activations"):
        v = NeuronViewer(cache, "conv2", 3, model=model, n=3, icons=False, inputs=imagenet(x))
    assert "APPROXIMATE" in v.note and v.map_error > 1e-2 * np.abs(v.values).max()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        v = NeuronViewer(cache, "conv2", 3, model=model, n=3, icons=False, inputs=x)
    assert "APPROXIMATE" not in v.note
