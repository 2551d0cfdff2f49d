"""capture() on text: token-id and dict inputs, token positions with padding, per-token logits,
the store and resume, statistics over valid tokens, and the errors of bad text input."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from atlaswidgets.cache.capture import capture
from atlaswidgets.cache.store import load_cache

from .conftest import VOCAB, TinyTextLM, assert_caches_equal, text_batch


def cap(model, data, layers="block", **kw):
    kw.setdefault("progress", False)
    return capture(model, data, layers, **kw)


@pytest.fixture(scope="module")
def lm():
    return TinyTextLM(0).eval()


@pytest.fixture(scope="module")
def text():
    return text_batch(12)


def block_output(model, ids, mask):
    """The block's output (N, T, 16) computed by hand."""
    kept = {}
    handle = model.block.register_forward_hook(lambda m, i, o: kept.update(out=o.detach().clone()))
    try:
        with torch.no_grad():
            model(ids, attention_mask=mask)
    finally:
        handle.remove()
    return kept["out"]


def repad(ids, mask, side, width):
    """The same texts padded on ``side`` to ``width`` tokens."""
    out_ids = torch.zeros((len(ids), width), dtype=ids.dtype)
    out_mask = torch.zeros((len(ids), width), dtype=mask.dtype)
    for i in range(len(ids)):
        toks = ids[i][mask[i].bool()]
        at = slice(0, len(toks)) if side == "right" else slice(width - len(toks), width)
        out_ids[i, at], out_mask[i, at] = toks, 1
    return out_ids, out_mask


# ----------------------------------------------------------------------------- inputs and rows


def test_dict_batches_are_keyword_arguments_and_padding_never_becomes_a_row(lm, text):
    ids, mask = text
    labels = torch.arange(12) % 3
    # "labels" is dropped before model(**batch): TinyTextLM.forward takes no labels
    cache = cap(lm, {"input_ids": ids, "attention_mask": mask, "labels": labels}, sample="all", batch_size=5)
    la = cache["block"]
    assert la.kind == "tokens" and la.n_rows == int(mask.sum())
    assert torch.equal(cache.labels, labels)
    want = block_output(lm, ids, mask)
    bi, ti = mask.bool().nonzero(as_tuple=True)  # right padding: a token's index is its column
    assert torch.equal(la.sample_id, bi) and torch.equal(la.yx[:, 1], ti) and bool((la.yx[:, 0] == 0).all())
    assert torch.allclose(la.acts, want[bi, ti], atol=1e-5)
    # the token ids kept for display, -1 at padding; the vocabulary comes from model.vocab
    longest = int(mask.sum(1).max())
    assert cache.tokens.shape == (12, longest) and cache.tokens.dtype == torch.int64
    assert torch.equal(cache.tokens[cache.tokens >= 0], ids[mask.bool()])
    assert bool((cache.tokens[:, :][torch.arange(longest)[None, :] >= mask.sum(1)[:, None]] == -1).all())
    assert cache.vocab == VOCAB and la.hw == (1, longest) and la.rf == (1, 1)
    # next-token logits are per token: not flattened into N x (T * V) "classes"
    assert cache.logits.shape == (12, 0) and cache.meta["output"] == "per_token"
    assert "logits per token (not kept)" in repr(cache) and "tokens=" in repr(la)


def test_token_id_tensors_and_pairs_are_text(lm, text):
    ids, mask = text
    full = cap(lm, ids, sample="all")  # no mask: every token is a row
    assert full["block"].n_rows == ids.numel() and full.tokens.shape == ids.shape
    pair = cap(lm, (ids, torch.zeros(12, dtype=torch.long)), sample="mean")
    assert pair["block"].n_rows == 12 and bool((pair.labels == 0).all())


def test_mean_is_over_valid_tokens(lm, text):
    ids, mask = text
    cache = cap(lm, {"input_ids": ids, "attention_mask": mask}, sample="mean")
    want = block_output(lm, ids, mask)
    m = mask[..., None].float()
    assert torch.allclose(cache["block"].acts, (want * m).sum(1) / m.sum(1), atol=1e-5)
    assert bool((cache["block"].yx == -1).all()) and torch.equal(cache["block"].sample_id, torch.arange(12))


def test_random_tokens_do_not_depend_on_batching_padding_side_or_width(lm, text):
    ids, mask = text
    per = 4
    ref = cap(lm, {"input_ids": ids, "attention_mask": mask}, per_image=per, seed=3)
    la = ref["block"]
    counts = torch.bincount(la.sample_id, minlength=12)
    assert torch.equal(counts, mask.sum(1).clamp(max=per))  # min(per_image, valid tokens) each
    # every row is a valid token, and its activation is that token's
    want = block_output(lm, ids, mask)
    assert bool((la.yx[:, 1] < mask.sum(1)[la.sample_id]).all())
    assert torch.allclose(la.acts, want[la.sample_id, la.yx[:, 1]], atol=1e-5)
    # dynamic padding: each batch padded to its own longest text, on the left, in batches of 5
    batches = []
    for a in range(0, 12, 5):
        b_ids, b_mask = ids[a : a + 5], mask[a : a + 5]
        batches.append({"input_ids": b_ids, "attention_mask": b_mask})
        width = int(b_mask.sum(1).max())
        batches[-1] = dict(zip(("input_ids", "attention_mask"), repad(b_ids, b_mask, "left", width)))
    other = cap(lm, batches, per_image=per, seed=3)
    assert torch.equal(other["block"].sample_id, la.sample_id) and torch.equal(other["block"].yx, la.yx)
    assert torch.equal(other.tokens, ref.tokens)
    assert torch.allclose(other["block"].acts, la.acts, atol=1e-5)
    assert torch.equal(other.sample_digest, ref.sample_digest)  # padding is not part of a sample
    assert not torch.equal(cap(lm, {"input_ids": ids, "attention_mask": mask}, per_image=per, seed=4)["block"].yx, la.yx)


def test_a_forward_function_takes_any_batch(lm, text):
    ids, mask = text
    texts = [" ".join(VOCAB[int(t)] for t in ids[i][mask[i].bool()]) for i in range(12)]

    def tokenize(batch):  # a toy tokenizer of lists of strings
        rows = [[VOCAB.index(w) for w in s.split()] for s in batch]
        width = max(map(len, rows))
        x = torch.tensor([r + [0] * (width - len(r)) for r in rows])
        m = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
        return {"input_ids": x, "attention_mask": m}

    # raw strings carry no attention mask: capture cannot tell their tokens from padding
    with pytest.raises(ValueError, match=r"Layer 'block' outputs tokens \(N, T, D\), but the batches carry no "
                                         r"input_ids and attention_mask"):
        cap(lm, [texts[:5], texts[5:]], sample="mean", forward=lambda b: lm(**tokenize(b)))
    # tokenized dict batches keep their tokens, and forward= receives them as they are
    seen = []

    def forward(batch):
        seen.append(sorted(batch))
        return lm(batch["input_ids"], batch["attention_mask"])

    batches = [{**tokenize(texts[:5]), "labels": torch.zeros(5, dtype=torch.long)}, tokenize(texts[5:])]
    cache = cap(lm, batches, sample="all", forward=forward)
    assert seen[0] == ["attention_mask", "input_ids"]  # the labels were taken out
    assert cache["block"].n_rows == int(mask.sum()) and torch.equal(cache.tokens[cache.tokens >= 0], ids[mask.bool()])
    # per-token labels (a language-modelling collator's targets) are not classes of the sample
    lm_labels = cap(lm, {"input_ids": ids, "attention_mask": mask, "labels": ids.clone()}, sample="mean")
    assert bool((lm_labels.labels == -1).all())
    # a failing forward= is named
    with pytest.raises(ValueError, match=r"forward= failed on the first batch, a dict .* with KeyError"):
        cap(lm, [tokenize(texts)], forward=lambda b: lm(b["ids"]))


def test_a_layer_with_more_positions_than_tokens_is_refused(text):
    ids, mask = text

    class WithCls(TinyTextLM):  # prepends a token inside the model: positions are not the input's
        def forward(self, input_ids, attention_mask=None):
            x = torch.cat([torch.zeros_like(input_ids[:, :1]), input_ids], 1)
            m = None if attention_mask is None else torch.cat([torch.ones_like(attention_mask[:, :1]), attention_mask], 1)
            return super().forward(x, m)

    with pytest.raises(ValueError, match=r"Layer 'block' outputs shape \(1, 10, 16\), but the input has 9 "
                                         r"tokens per sample"):
        cap(WithCls(0).eval(), {"input_ids": ids, "attention_mask": mask})


def test_batch_encoding_model_output_and_a_tokenizer_vocab(lm, text):
    transformers = pytest.importorskip("transformers")
    from transformers.modeling_outputs import CausalLMOutput

    ids, mask = text
    enc = transformers.BatchEncoding({"input_ids": ids, "attention_mask": mask})

    class Tokenizer:  # what capture reads of a tokenizer: get_vocab(), token -> id
        def get_vocab(self):
            return {f"w{i}": i for i in reversed(range(20))}

    class HF(nn.Module):
        def __init__(self):
            super().__init__()
            self.lm = TinyTextLM(0)

        def forward(self, input_ids, attention_mask=None):
            return CausalLMOutput(logits=self.lm(input_ids, attention_mask)["logits"])

    cache = cap(HF().eval(), [enc], "lm.block", sample="all", vocab=Tokenizer())
    assert cache["lm.block"].n_rows == int(mask.sum())
    assert cache.vocab == [f"w{i}" for i in range(20)] and cache.meta["output"] == "per_token"
    with pytest.raises(ValueError, match=r"input_ids must be an integer tensor \(N, T\).*one example"):
        cap(lm, [{"input_ids": ids[0]}])


# ----------------------------------------------------------------------------- bad input


class Counting(TinyTextLM):
    def __init__(self):
        super().__init__(0)
        self.calls = 0

    def forward(self, input_ids, attention_mask=None):
        self.calls += 1
        return super().forward(input_ids, attention_mask)


def test_bad_token_input_is_refused_before_the_model_runs(text):
    ids, mask = text
    model = Counting().eval()
    bad = [
        ({"input_ids": ids + 20, "attention_mask": mask}, r"token id 3\d is not below the vocabulary size 20"),
        ({"input_ids": ids, "attention_mask": mask[:, :4]}, r"attention_mask must have the shape of "
                                                           r"input_ids \(12, 9\), got \(12, 4\)"),
        ({"input_ids": ids, "attention_mask": mask * 2}, r"attention_mask must hold 0 \(padding\) and 1"),
        ({"input_ids": ids, "attention_mask": mask * 0}, r"sample 0 of the batch has no tokens"),
        ({"input_ids": ids.float(), "attention_mask": mask}, r"input_ids must be an integer tensor \(N, T\)"),
        ({"input_ids": ids - 1, "attention_mask": mask}, r"token ids must be 0 or more"),
    ]
    for data, message in bad:
        with pytest.raises(ValueError, match=message):
            cap(model, [data])
        assert model.calls == 0
    # the vocabulary given is the bound, when shorter than the embedding
    with pytest.raises(ValueError, match=r"token id 1\d is not below the vocabulary size 10"):
        cap(model, [{"input_ids": ids.clamp(max=15), "attention_mask": mask}], vocab=VOCAB[:10])
    with pytest.raises(TypeError, match=r"vocab must be a list of token strings"):
        cap(model, ids, vocab="abc")
    assert model.calls == 0


def test_a_model_that_fails_on_the_batch_says_how_to_pass_it(text):
    ids, mask = text

    class Positional(nn.Module):  # takes the mask under another name
        def __init__(self):
            super().__init__()
            self.lm = TinyTextLM(0)

        def forward(self, input_ids, mask):
            return self.lm(input_ids, attention_mask=mask)

    model = Positional().eval()
    with pytest.raises(TypeError, match=r"The model failed on the first batch, called as model\(\*\*batch\) "
                                        r"with a dict \{'input_ids': a tensor of shape \(1, 9\).*"
                                        r"unexpected keyword argument 'attention_mask'.*pass forward=fn") as info:
        cap(model, {"input_ids": ids, "attention_mask": mask}, "lm.block")
    assert isinstance(info.value.__cause__, TypeError)  # chained from the model's own error
    assert not model.lm.block._forward_hooks  # no hook left behind
    cache = cap(model, {"input_ids": ids, "attention_mask": mask}, "lm.block",
                forward=lambda b: model(b["input_ids"], mask=b["attention_mask"]))
    assert cache["lm.block"].n_rows == int(mask.sum(1).clamp(max=8).sum())  # per_image=8 valid tokens
    # other inputs without forward= name the forms capture takes
    with pytest.raises(TypeError, match=r"Batch 0 is a list of 2 items.*pass forward=fn"):
        cap(model, [["a b", "c"]], "lm.block")


# ----------------------------------------------------------------------------- outputs


class Pair(nn.Module):
    """Returns (embedding, logits): the first item is not the logits."""

    def __init__(self):
        super().__init__()
        self.lm = TinyTextLM(0)
        self.cls = nn.Linear(16, 3)

    def forward(self, input_ids, attention_mask=None):
        self.lm(input_ids, attention_mask)  # runs lm.block, the layer captured
        emb = self.lm.embed(input_ids).mean(1)
        return emb, self.cls(emb)


def test_outputs_are_read_by_name_never_by_position(text):
    ids, mask = text
    model = Pair().eval()
    data = {"input_ids": ids, "attention_mask": mask}
    with pytest.raises(ValueError, match=r"returned a tuple of 2 items.*does not guess.*logits=1"):
        cap(model, data, "lm.block")
    cache = cap(model, data, "lm.block", logits=1, classes=["a", "b", "c"])
    with torch.no_grad():
        want = model(ids, attention_mask=mask)[1]
    assert cache.logits.shape == (12, 3) and torch.allclose(cache.logits, want, atol=1e-6)
    assert cache.meta["output"] == "per_sample"
    with pytest.raises(ValueError, match=r"classes has 2 names, but the model's logits have 3 columns"):
        cap(model, data, "lm.block", logits=1, classes=["a", "b"])
    with pytest.raises(ValueError, match=r"logits=5, but the model returned a tuple of 2 items"):
        cap(model, data, "lm.block", logits=5)
    # a dict output's key
    lm = TinyTextLM(0).eval()
    with pytest.raises(ValueError, match=r"logits='scores' does not name an item"):
        cap(lm, data, logits="scores")
    named = cap(model, data, "lm.block", forward=lambda b: dict(zip(("emb", "scores"), model(**b))),
                logits="scores")
    assert torch.allclose(named.logits, want, atol=1e-6)


# ----------------------------------------------------------------------------- store, resume, stats


def test_store_resume_and_load_keep_tokens_vocab_and_kind(lm, text, tmp_path):
    ids, mask = text
    batches = [{"input_ids": ids[a : a + 3], "attention_mask": mask[a : a + 3]} for a in range(0, 12, 3)]
    ref = cap(lm, batches, shard_samples=4, store=tmp_path / "ref", stats=True)

    def dying():
        yield from batches[:2]
        raise RuntimeError("data source died")

    with pytest.raises(RuntimeError, match="died"):
        cap(lm, dying(), shard_samples=4, store=tmp_path / "s", stats=True)
    resumed = cap(lm, batches, shard_samples=4, store=tmp_path / "s", stats=True)
    assert_caches_equal(ref, resumed)
    assert torch.equal(ref.tokens, resumed.tokens)
    loaded = load_cache(tmp_path / "s", device="cpu")
    assert_caches_equal(ref, loaded)
    assert torch.equal(loaded.tokens, ref.tokens) and loaded.vocab == VOCAB
    assert loaded["block"].kind == "tokens" and loaded["block"].hw == ref["block"].hw
    manifest = json.loads((tmp_path / "s" / "manifest.json").read_text())
    assert manifest["layers"]["block"]["kind"] == "tokens" and manifest["vocab"] == VOCAB
    for a, b in ((ref, resumed), (ref, loaded)):
        sa, sb = a.stats["block"], b.stats["block"]
        assert torch.equal(sa.top_value, sb.top_value) and torch.equal(sa.top_pos, sb.top_pos)
    # saved again from memory and loaded back
    saved = load_cache(ref.save(tmp_path / "again", shard_samples=5), device="cpu")
    assert_caches_equal(ref, saved)
    assert torch.equal(saved.tokens, ref.tokens)


def test_stats_count_valid_tokens_only(lm, text):
    ids, mask = text
    cache = cap(lm, {"input_ids": ids, "attention_mask": mask}, stats={"k": 4}, batch_size=5)
    st = cache.stats["block"]
    want = block_output(lm, ids, mask)
    valid = mask.bool()
    assert int(st.positions.counts[0].sum()) == int(valid.sum())  # padding is not counted
    masked = want.masked_fill(~valid[..., None], -torch.inf)
    best, where = masked.max(1)  # (N, D): each sample's strongest valid token
    for channel in (0, 5):
        top = st.top(channel)
        order = torch.argsort(best[:, channel], descending=True)[:4]
        assert list(top.sample_id) == order.tolist()
        assert torch.allclose(torch.as_tensor(top.values), best[order, channel], atol=1e-5)
        assert list(top.yx[:, 1]) == where[order, channel].tolist() and not top.yx[:, 0].any()
