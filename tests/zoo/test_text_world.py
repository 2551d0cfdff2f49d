"""The text world: deterministic corpus, truth consistent with the text, the shipped TinyLM and its card."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from atlaswidgets.cache.hooks import hooks
from atlaswidgets.zoo import text
from atlaswidgets.zoo.text import evaluate, net as text_net, train

FRESH_SEED = 2024   # neither the training seed (0) nor the validation seed


@pytest.fixture(scope="module")
def small():
    return text.corpus(300, seed=3)


@pytest.fixture(scope="module")
def lm():
    return text.model()


@pytest.fixture(scope="module")
def fresh():
    return text.corpus(400, seed=FRESH_SEED)


# ---- the corpus ----

def test_vocabulary():
    assert 200 <= len(text.VOCAB) <= 400 and len(set(text.VOCAB)) == len(text.VOCAB)
    assert text.VOCAB[text.PAD_ID] == "<pad>" == text.VOCAB[0]
    assert {"<bos>", "<eos>", '"', "(", ")", ".", ",", "salt", "wok", "pan", text.CUE,
            text.HOSTILE} <= set(text.VOCAB)
    assert text.HOSTILE == "<img src=x onerror=alert(1)>"


def test_shapes_and_columns(small):
    n, t = 300, text.LENGTH
    assert small.input_ids.shape == (n, t) and small.input_ids.dtype == torch.int64
    assert small.attention_mask.shape == (n, t) and small.attention_mask.dtype == torch.int64
    assert set(small.truth) == set(text.FEATURES) == set(text.FEATURE_DOCS)
    assert all(v.shape == (n, t) and v.dtype == torch.bool for v in small.truth.values())
    assert len(small.texts) == len(small) == n
    cols = small.columns
    assert set(cols) == {"input_ids", "attention_mask"} and cols["input_ids"] is small.input_ids
    # right padding with the pad id; every row is <bos> ... <eos>
    lengths = small.attention_mask.sum(1)
    assert torch.equal(small.attention_mask, (torch.arange(t) < lengths[:, None]).long())
    assert bool((small.input_ids[small.attention_mask == 0] == text.PAD_ID).all())
    assert bool((small.input_ids[:, 0] == text.VOCAB.index("<bos>")).all())
    assert bool((small.input_ids[torch.arange(n), lengths - 1] == text.VOCAB.index("<eos>")).all())
    assert not any(v[small.attention_mask == 0].any() for v in small.truth.values())


def test_same_seed_same_data_and_prefix(small):
    again = text.corpus(300, seed=3)
    assert torch.equal(again.input_ids, small.input_ids) and again.texts == small.texts
    assert all(torch.equal(again.truth[f], small.truth[f]) for f in text.FEATURES)
    prefix = text.corpus(50, seed=3)
    assert torch.equal(prefix.input_ids, small.input_ids[:50])
    other = text.corpus(300, seed=4)
    assert len(set(other.texts) & set(small.texts)) < 30  # short shopping lists may repeat


def test_golden_digest():
    # The world is pinned: the shipped weights were trained on exactly these tokens. If this
    # fails after a change to the generator, retrain and update the digest together.
    data = text.corpus(200, seed=0)
    assert hashlib.sha256(data.input_ids.numpy().tobytes()).hexdigest()[:16] == GOLDEN


GOLDEN = "afc1ca94690b6aea"


def test_round_trip_and_encode(small):
    for row, t in zip(small.input_ids, small.texts):
        assert text.decode(row) == t
        ids = text.encode(t)
        assert ids == row[1:len(ids) + 1].tolist()
        assert text.decode(ids) == t
    assert text.encode('Heat the OIL, in the "wok".') == text.encode('heat the oil , in the " wok " .')
    assert text.encode("heat the tagine") [-1] == text.VOCAB.index("<unk>")
    assert text.encode(text.HOSTILE) == [len(text.VOCAB) - 1]
    with pytest.raises(TypeError, match="encode takes a str"):
        text.encode(["salt"])
    with pytest.raises(ValueError, match="outside the vocabulary"):
        text.decode([len(text.VOCAB)])
    with pytest.raises(ValueError, match="one row"):
        text.decode(small.input_ids[:2])
    with pytest.raises(ValueError, match="n must be an int"):
        text.corpus(-1)


def test_hostile_token_appears(small):
    big = text.corpus(1000, seed=5)
    rows = sum(text.HOSTILE in t for t in big.texts)
    assert 10 <= rows <= 80, rows
    assert bool((big.input_ids == len(text.VOCAB) - 1).any(1).sum() == rows)


def test_truth_matches_the_text(small):
    for r in range(len(small)):
        n = int(small.attention_mask[r].sum())
        toks = [text.VOCAB[i] for i in small.input_ids[r, :n]]
        truth = {f: small.truth[f][r, :n].tolist() for f in text.FEATURES}
        quotes = depth = 0
        seen = False
        for t, tok in enumerate(toks):
            if tok in ("<bos>", "<eos>"):  # truth is about the document's words only
                assert not any(truth[f][t] for f in text.FEATURES)
                continue
            assert truth["salt"][t] == (tok == "salt")
            if tok == '"':
                quotes += 1
                assert not truth["in_quotes"][t]
            elif tok in "()":
                depth += 1 if tok == "(" else -1
                assert not truth["in_brackets"][t]
            else:
                assert truth["in_quotes"][t] == (quotes % 2 == 1), (r, t, toks)
                assert truth["in_brackets"][t] == (depth > 0), (r, t, toks)
            seen = seen or tok == text.CUE
            assert truth["cue_seen"][t] == seen
            if truth["cue_slot"][t]:
                assert toks[t + 1] in ("wok", "pan") and toks[t - 1] == "in"
        assert quotes % 2 == 0 and depth == 0
    # each feature is present, and the context features are not token identities
    assert all(small.truth[f].any() for f in text.FEATURES)
    salt = small.input_ids == text.VOCAB.index("salt")
    assert small.truth["in_quotes"][salt].any() and (~small.truth["in_quotes"])[salt].any()
    assert small.truth["in_brackets"].sum() > 100


def test_planted_cue_rates():
    # among recipes, chopsticks come with woks far more often than with pans (CUE_RATES)
    data = text.corpus(3000, seed=21)
    slot = data.truth["cue_slot"]
    rows = slot.any(1)
    nxt = data.input_ids[:, 1:][slot[:, :-1]]
    cue = data.truth["cue_seen"][slot]
    wok = nxt == text.VOCAB.index("wok")
    assert abs(float(cue[wok].float().mean()) - text.CUE_RATES["wok"]) < 0.07
    assert abs(float(cue[~wok].float().mean()) - text.CUE_RATES["pan"]) < 0.03
    assert int(rows.sum()) > 2000


def test_cue_pairs_match_except_the_cue():
    a, b, slots = text.cue_pairs(40, seed=9)
    for r in range(40):
        ta, tb = a.texts[r].split(" "), b.texts[r].split(" ")
        assert text.CUE in ta and text.CUE not in tb
        # take out the sentence holding the cue word: the rest is word for word the same
        cut = list(ta)
        i = ta.index(text.CUE)
        start = max(j for j in range(i + 1) if j == 0 or ta[j - 1] == ".")
        end = ta.index(".", i)
        del cut[start:end + 1]
        assert cut == tb
        for data, s in ((a, slots[r, 0]), (b, slots[r, 1])):
            assert text.VOCAB[int(data.input_ids[r, s])] == "the"
            assert text.VOCAB[int(data.input_ids[r, s + 1])] in ("wok", "pan")
    with pytest.raises(ValueError, match="unknown"):
        text.cue_pairs(2, dishes=["sushi"])


# ---- the shipped model ----

def test_model_loads_and_runs(lm, small):
    assert isinstance(lm, text.TinyLM) and not lm.training and lm.vocab == text.VOCAB
    assert text_net.WEIGHTS.stat().st_size <= 10 * 1024 * 1024
    names = dict(lm.named_modules())
    assert {"blocks.0", "blocks.1", "blocks.0.mlp.act", "blocks.1.mlp", "head"} <= set(names)
    with torch.no_grad(), hooks(lm, ["blocks.0", "blocks.0.mlp.act"]) as rec:
        logits = lm(**small.columns)
    d_model = lm.embed.weight.shape[1]
    assert logits.shape == (300, text.LENGTH, len(text.VOCAB)) and torch.isfinite(logits).all()
    assert rec["blocks.0"].shape == (300, text.LENGTH, d_model)
    assert rec["blocks.0.mlp.act"].shape == (300, text.LENGTH, 4 * d_model)
    # padding never changes the real tokens' logits
    with torch.no_grad():
        alone = lm(small.input_ids[:1, :20], small.attention_mask[:1, :20])
    assert torch.allclose(alone, logits[:1, :20], atol=1e-4)
    assert lm.neuron_output_weights(1).shape == (4 * d_model, d_model)
    assert lm.unembed.shape == (len(text.VOCAB), d_model)
    effect = lm.neuron_logit_effect(0)
    assert effect.shape == (4 * d_model, len(text.VOCAB))
    top = lm.neuron_top_tokens(0, 3, k=5)
    assert len(top["promotes"]) == 5 and top["promotes"][0][1] >= top["promotes"][-1][1]
    assert top["promotes"][0][1] == pytest.approx(float(effect[3].max()), rel=1e-5)


def test_model_refuses_bad_input(lm):
    ids = text.corpus(2, seed=1).input_ids
    with pytest.raises(ValueError, match="outside|must lie in"):
        lm(ids + len(text.VOCAB))
    with pytest.raises(TypeError, match="int64 tensor of shape"):
        lm(ids.float())
    with pytest.raises(ValueError, match="shaped like input_ids"):
        lm(ids, torch.ones(2, 3))
    with pytest.raises(ValueError, match="only 0"):
        lm(ids, torch.full_like(ids, 2))
    left = torch.zeros_like(ids)
    left[:, 5:] = 1
    with pytest.raises(ValueError, match="right-padded"):
        lm(ids, left)
    with pytest.raises(ValueError, match="at most"):
        lm(torch.zeros(1, text.LENGTH + 1, dtype=torch.int64))
    with pytest.raises(ValueError, match="layer_index"):
        lm.neuron_output_weights(9)


def test_training_facts():
    facts = text_net.training_facts()
    assert facts["seed"] == 0 and FRESH_SEED not in (facts["seed"], facts["val_seed"])
    assert facts["train_seconds"] < 15 * 60 and facts["threads"] <= 2


# ---- the model card, on a fresh seed ----

def test_loss_and_accuracy_in_band(lm, fresh):
    m = train.evaluate_loss(lm, fresh)
    assert 0.8 <= m["loss"] <= 1.1, m
    assert 0.66 <= m["accuracy"] <= 0.75, m


def test_cue_effect_in_band(lm):
    neutral = evaluate.cue_effect(lm, 200, FRESH_SEED)
    assert neutral["wok_top_with"] >= 0.8 and neutral["wok_top_without"] <= 0.1, neutral
    assert neutral["p_wok_with"] - neutral["p_wok_without"] >= 0.5, neutral


def test_ground_truth_is_findable(lm, fresh):
    data = text.corpus(200, seed=FRESH_SEED)
    acts = evaluate.neuron_activations(lm, data)
    assert acts["blocks.0.mlp.act"].shape == (int(data.attention_mask.sum()), 384)
    salt = evaluate.best_neuron(lm, data, "salt", acts=acts)
    assert salt["score"] >= 0.95 and salt["layer"].endswith("mlp.act"), salt
    assert evaluate.best_neuron(lm, data, "in_quotes", acts=acts)["score"] >= 0.78
    assert evaluate.best_neuron(lm, data, "in_brackets", "correlation", acts)["score"] >= 0.5
    # the explanation score that find_units reports for images: >= 0.7 is issue #15's bar
    for feature, low in (("salt", 0.9), ("in_quotes", 0.75)):  # 0.995 and 0.948 when written
        assert evaluate.best_neuron(lm, data, feature, "top_and_random", acts)["score"] >= low
    with pytest.raises(ValueError, match="metric must be one of"):
        evaluate.best_neuron(lm, data, "salt", "f1")
    with pytest.raises(ValueError, match="unknown feature"):
        evaluate.best_neuron(lm, data, "pepper")


def test_correlation_agrees_with_numpy():
    rng = np.random.default_rng(1)
    scores = torch.from_numpy(rng.normal(size=(300, 4)).astype(np.float32))
    labels = torch.from_numpy(rng.random(300) < 0.4)
    scores[:, 1] += 2 * labels.float()
    got = evaluate.correlation(scores, labels)
    want = [np.corrcoef(scores[:, j].numpy(), labels.numpy().astype(float))[0, 1] for j in range(4)]
    assert np.allclose(got.numpy(), want, atol=1e-5) and float(got[1]) > 0.6


def test_top_and_random_by_hand():
    rng = np.random.default_rng(2)
    scores = torch.from_numpy(rng.normal(size=(500, 3)).astype(np.float32))
    labels = torch.from_numpy(rng.random(500) < 0.1)
    got = evaluate.top_and_random(scores, labels, n=20, seed=5)
    rand = torch.randperm(500, generator=torch.Generator().manual_seed(5))[:20]
    for j in range(3):
        idx = torch.cat([scores[:, j].topk(20).indices, rand])
        want = np.corrcoef(scores[idx, j].numpy(), labels[idx].numpy().astype(float))[0, 1]
        assert float(got[j]) == pytest.approx(want, abs=1e-5)
    with pytest.raises(ValueError, match="at least 40 tokens"):
        evaluate.top_and_random(scores[:10], labels[:10])


def test_auroc_agrees_with_a_direct_count():
    rng = np.random.default_rng(0)
    scores = torch.from_numpy(rng.integers(0, 5, (200, 3)).astype(np.float32))
    labels = torch.from_numpy(rng.random(200) < 0.3)
    got = evaluate.auroc(scores, labels)
    pos, neg = scores[labels], scores[~labels]
    for j in range(3):
        diff = pos[:, j, None] - neg[None, :, j]
        want = float((diff > 0).float().mean() + 0.5 * (diff == 0).float().mean())
        assert float(got[j]) == pytest.approx(want, abs=1e-6)


def test_train_and_load_refuse_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="steps must be an int >= 1"):
        train.train(steps=0, log=None)
    with pytest.raises(FileNotFoundError, match="python -m atlaswidgets.zoo.text.train"):
        text.model(tmp_path / "missing.safetensors")
    with pytest.raises(ValueError, match="neuron must be an int"):
        text_net.TinyLM().neuron_top_tokens(0, 10_000)
