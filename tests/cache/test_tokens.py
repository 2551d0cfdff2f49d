"""Token facts of a text layer's units: top tokens by mean activation, the units that read a token,
and the tokens a neuron writes through the unembedding."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import atlaswidgets as aw
from atlaswidgets.cache.tokens import (model_writes, row_tokens, token_mean_table, token_writes,
                                       top_tokens, units_for_token)
from atlaswidgets.zoo import text

LAYER = "blocks.1.mlp.act"


@pytest.fixture(scope="module")
def world():
    model = text.model()
    data = text.corpus(120, seed=2)
    cache = aw.capture(model, data.columns, LAYER, progress=False)
    return model, cache


def _by_hand(cache, scores, min_count):
    """Mean per token id over the rows, with a plain loop."""
    tok = row_tokens(cache, LAYER).numpy()
    means = {}
    for t in np.unique(tok):
        sel = tok == t
        if sel.sum() >= min_count:
            means[int(t)] = (float(scores[sel].mean()), int(sel.sum()))
    return sorted(means.items(), key=lambda kv: (-kv[1][0], kv[0]))


def test_row_tokens_are_the_rows_tokens(world):
    _, cache = world
    la = cache[LAYER]
    tok = row_tokens(cache, LAYER)
    for r in (0, 7, len(tok) - 1):
        assert tok[r] == cache.tokens[la.sample_id[r], la.yx[r, 1]]
    assert (tok >= 0).all()


def test_top_tokens_are_means_per_token_with_counts(world):
    _, cache = world
    la = cache[LAYER]
    for unit, scores in ((17, la.acts[:, 17].double().numpy()),
                         (np.linspace(-1, 1, la.n_channels), la.acts.double().numpy() @ np.linspace(-1, 1, la.n_channels))):
        got = top_tokens(cache, unit, LAYER, k=6, min_count=3)
        want = _by_hand(cache, scores, 3)[:6]
        assert got.ids.tolist() == [t for t, _ in want]
        np.testing.assert_allclose(got.means, [m for _, (m, _) in want], rtol=1e-6)
        assert got.counts.tolist() == [c for _, (_, c) in want]
        assert got.tokens == [cache.vocab[t] for t, _ in want]
        assert (got.counts >= 3).all()
    # a one-off can top the list only when min_count lets it
    loose = top_tokens(cache, 17, LAYER, k=3, min_count=1)
    assert loose.ids.tolist() == [t for t, _ in _by_hand(cache, la.acts[:, 17].double().numpy(), 1)[:3]]


def test_token_mean_table_matches_top_tokens(world):
    _, cache = world
    means, counts = token_mean_table(cache, LAYER)
    assert means.shape == (len(cache.vocab), cache[LAYER].n_channels)
    assert counts.sum() == len(cache[LAYER].acts)
    assert torch.isnan(means[counts == 0]).all()
    got = top_tokens(cache, 40, LAYER, k=1, min_count=2)
    col = means[:, 40].clone()
    col[counts < 2] = -float("inf")
    assert int(torch.argmax(col)) == got.ids[0]


def test_units_for_token_finds_channels_whose_top_tokens_include_it(world):
    _, cache = world
    found = units_for_token(cache, "salt", LAYER, k=5, min_count=3, n=8)
    assert found and len(found) <= 8
    salt = cache.vocab.index("salt")
    for r in found:
        top = top_tokens(cache, r["channel"], LAYER, k=5, min_count=3)
        assert salt in top.ids.tolist()
        assert top.ids.tolist().index(salt) + 1 == r["rank"]
    assert [r["rank"] for r in found] == sorted(r["rank"] for r in found)
    assert units_for_token(cache, "SALT", LAYER, k=5, n=8) == found  # case-insensitive when unique
    assert units_for_token(cache, salt, LAYER, k=5, n=8) == found
    with pytest.raises(ValueError, match="No token 'saltt'"):
        units_for_token(cache, "saltt", LAYER)
    with pytest.raises(TypeError, match="token must be a str"):
        units_for_token(cache, 1.5, LAYER)


def test_token_writes_is_the_unembedding_of_the_output_weights(world):
    model, cache = world
    w = model.neuron_output_weights(1)
    u = model.unembed
    got = token_writes(w[9], u, cache.vocab, k=5)
    effect = (u.double() @ w[9].double()).numpy()
    order = np.argsort(-effect)[:5]
    assert [e["id"] for e in got.promotes] == order.tolist()
    assert [e["token"] for e in got.promotes] == [cache.vocab[i] for i in order]
    np.testing.assert_allclose([e["value"] for e in got.promotes], effect[order], rtol=1e-9)
    assert [e["id"] for e in got.suppresses] == np.argsort(effect)[:5].tolist()
    assert all(e["value"] < 0 for e in got.suppresses)
    # the hostile token stays the literal string
    got = token_writes(u[cache.vocab.index(text.HOSTILE)].numpy(), u.numpy(), cache.vocab, k=1)
    assert got.promotes[0]["token"] == text.HOSTILE
    with pytest.raises(ValueError, match=r"w_out must be \(d_model,\)"):
        token_writes(np.zeros(5), u)
    with pytest.raises(ValueError, match="vocab has 2 tokens"):
        token_writes(np.zeros(u.shape[1]), u, ["a", "b"])


def test_model_writes_reads_tinylm_or_says_why_not(world):
    model, cache = world
    w, u = model_writes(model, LAYER, 384)
    assert torch.equal(w, model.neuron_output_weights(1)) and torch.equal(u, model.unembed)
    assert "no model given" in model_writes(None, LAYER, 384)
    assert "offers neither" in model_writes(torch.nn.Linear(2, 2), LAYER, 384)
    assert "is not the MLP neurons" in model_writes(model, "blocks.1.attn", 96)


def test_image_and_mean_caches_are_refused(world):
    model, _ = world
    mean = aw.capture(model, text.corpus(10, seed=2).columns, LAYER, sample="mean", progress=False)
    with pytest.raises(ValueError, match="sample='mean'"):
        top_tokens(mean, 0, LAYER)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU())
    images = aw.capture(net, torch.rand(4, 3, 8, 8), "1", sample="all", progress=False)
    with pytest.raises(ValueError, match="captured from images"):
        top_tokens(images, 0, "1")
    with pytest.raises(TypeError, match="ActivationCache"):
        row_tokens("cache", LAYER)
    with pytest.raises(ValueError, match="k must be an int >= 1"):
        top_tokens(mean, 0, LAYER, k=0)


def test_model_writes_reads_minilm_mlp_neurons_through_the_word_embeddings(minilm):
    """A Hugging Face BERT (the shipped MiniLM): the GELU neurons of block 2 write through
    encoder.layer.2.output.dense, read by the word embedding matrix (a BertModel has no LM head)."""
    model, tokenizer = minilm
    pair = model_writes(model, "encoder.layer.2.intermediate", 1536)
    assert not isinstance(pair, str), pair
    w, u = pair
    dense = model.encoder.layer[2].output.dense
    assert torch.equal(w, dense.weight.T) and w.shape == (1536, 384)
    assert torch.equal(u, model.embeddings.word_embeddings.weight) and u.shape == (tokenizer.vocab_size, 384)
    assert "word embedding" in pair.readout
    # the activation function's own name finds the same block's projection
    w2, _ = model_writes(model, "encoder.layer.2.intermediate.intermediate_act_fn", 1536)
    assert torch.equal(w2, w)
    # the written tokens of neuron 7 are the word embeddings' dot products with its output weights
    vocab = tokenizer.convert_ids_to_tokens(list(range(tokenizer.vocab_size)))
    got = token_writes(w[7], u, vocab, k=3)
    effect = u.double() @ w[7].double()
    assert [e["id"] for e in got.promotes] == torch.argsort(effect, descending=True)[:3].tolist()
    assert got.promotes[0]["token"] == vocab[got.promotes[0]["id"]]
    assert got.promotes[0]["value"] == pytest.approx(float(effect.max()))
    # layers that are not MLP neurons say why, instead of guessing a projection
    assert "is not an MLP's neurons" in model_writes(model, "encoder.layer.2", 384)
    assert "is not an MLP's neurons" in model_writes(model, "encoder.layer.2.attention.self.query", 384)
    assert "no module" in model_writes(model, "encoder.layer.9.intermediate", 1536)
