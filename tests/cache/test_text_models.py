"""capture() on the kit's real text models: all-MiniLM-L6-v2 fed a tokenizer's BatchEncoding
batches (a DataLoader, or a list of batches padded per batch), and the shipped tiny LM fed
``text.corpus(...).columns``. Padding never becomes a row, the vocabulary comes from the tokenizer
or ``model.vocab``, ``cache.tokens`` decode back to the input words, and a ``stats=True``
capture's top examples agree with ``top_examples`` on a ``sample="all"`` cache."""

from __future__ import annotations

import numpy as np
import torch

from atlaswidgets.cache.capture import capture
from atlaswidgets.zoo import text

WORDS = ("heat the oil in a pan then add garlic and onion stir slowly until golden serve hot "
         "with fresh bread salt water rice boil cut").split()


def sentences(n: int, seed: int = 0) -> list[str]:
    """n sentences of 2 to 14 words, so batches pad to different lengths."""
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(2, 15)))) for _ in range(n)]


def check_rows_are_valid_tokens(cache, layer: str, counts: list[int], per_sample: int | None) -> None:
    """Every row of ``layer`` is a real token (a column of cache.tokens that holds an id), and each
    sample has every valid token (per_sample None) or min(per_sample, valid) of them."""
    la = cache.layers[layer]
    sid, t = la.sample_id.cpu(), la.yx[:, 1].cpu()
    assert not la.yx[:, 0].any()
    assert bool((cache.tokens[sid, t] >= 0).all())  # never a padding position
    got = torch.bincount(sid, minlength=len(counts)).tolist()
    assert got == [c if per_sample is None else min(per_sample, c) for c in counts]
    # rows of one sample are distinct tokens
    assert len(set(zip(sid.tolist(), t.tolist()))) == len(sid)


def check_stats_match_all(stats_cache, all_cache, layer: str, channels, k: int) -> None:
    st = stats_cache.stats[layer]
    n_channels = all_cache.layers[layer].n_channels
    for c in channels:
        direction = torch.zeros(n_channels)
        direction[c] = 1
        want = all_cache.top_examples(direction, k=k, layer=layer, per_sample=True)
        got = st.top(c, k)
        assert list(got.sample_id) == list(want.sample_id)
        np.testing.assert_array_equal(got.values, want.values)
        np.testing.assert_array_equal(got.yx, want.yx)


# ----------------------------------------------------------------------------- MiniLM


LAYER = "encoder.layer.1.intermediate"


def test_minilm_dataloader_of_batch_encodings(minilm):
    model, tokenizer = minilm
    texts = sentences(30, seed=1)
    loader = torch.utils.data.DataLoader(
        texts, batch_size=8, collate_fn=lambda b: tokenizer(b, return_tensors="pt", padding=True))
    widths = {int(b["input_ids"].shape[1]) for b in loader}
    assert len(widths) > 1  # batches are padded to different lengths
    cache = capture(model, loader, LAYER, sample="random", per_image=5, vocab=tokenizer,
                    logits="pooler_output", progress=False)
    counts = [len(tokenizer(s)["input_ids"]) for s in texts]  # with [CLS] and [SEP]
    assert cache.n_samples == len(texts) and cache.layers[LAYER].n_channels == 1536
    check_rows_are_valid_tokens(cache, LAYER, counts, per_sample=5)
    assert tuple(cache.logits.shape) == (len(texts), 384)  # the pooled vector, per sentence
    # the vocabulary is the tokenizer's, and each sample's tokens decode back to its words
    assert len(cache.vocab) == tokenizer.vocab_size and cache.vocab[tokenizer.cls_token_id] == "[CLS]"
    for i, s in enumerate(texts):
        ids = [int(v) for v in cache.tokens[i] if v >= 0]
        assert ids == tokenizer(s)["input_ids"]
        assert [cache.vocab[v] for v in ids] == tokenizer.convert_ids_to_tokens(ids)
        assert tokenizer.decode(ids, skip_special_tokens=True) == s


def test_minilm_list_of_batches_stats_agree_with_all(minilm):
    model, tokenizer = minilm
    texts = sentences(24, seed=2)
    batches = [tokenizer(texts[i : i + 7], return_tensors="pt", padding=True) for i in range(0, len(texts), 7)]
    counts = [len(tokenizer(s)["input_ids"]) for s in texts]
    every = capture(model, batches, LAYER, sample="all", vocab=tokenizer, logits="pooler_output",
                    progress=False)
    check_rows_are_valid_tokens(every, LAYER, counts, per_sample=None)
    assert every.layers[LAYER].n_rows == sum(counts) < sum(b["input_ids"].numel() for b in batches)
    stats = capture(model, batches, LAYER, stats={"k": 6}, vocab=tokenizer, logits="pooler_output",
                    progress=False)
    assert int(stats.stats[LAYER].positions.counts[0].sum()) == sum(counts)  # no padding counted
    check_stats_match_all(stats, every, LAYER, channels=(0, 7, 1535), k=6)
    # the same sentences padded to another width give the same rows
    wide = [tokenizer(texts[i : i + 7], return_tensors="pt", padding="max_length", max_length=40)
            for i in range(0, len(texts), 7)]
    again = capture(model, wide, LAYER, sample="all", vocab=tokenizer, logits="pooler_output",
                    progress=False)
    assert torch.equal(again.layers[LAYER].sample_id, every.layers[LAYER].sample_id)
    assert torch.equal(again.layers[LAYER].yx, every.layers[LAYER].yx)
    assert torch.equal(again.tokens, every.tokens)


# ----------------------------------------------------------------------------- the tiny LM


def test_tiny_lm_corpus_columns():
    model = text.model()
    data = text.corpus(40, seed=3)
    cols = data.columns
    counts = cols["attention_mask"].sum(1).tolist()
    assert min(counts) < cols["input_ids"].shape[1]  # some padding to skip
    layer = "blocks.1.mlp.act"
    every = capture(model, cols, layer, sample="all", batch_size=16, progress=False)
    check_rows_are_valid_tokens(every, layer, counts, per_sample=None)
    assert every.vocab == model.vocab
    assert every.meta["output"] == "per_token" and every.logits.shape == (40, 0)
    for i in (0, 17, 39):
        ids = [int(v) for v in every.tokens[i] if v >= 0]
        assert ids == cols["input_ids"][i, : counts[i]].tolist()
        assert text.decode(ids) == data.texts[i]
        assert " ".join(every.vocab[v] for v in ids[1:-1]) == data.texts[i]  # without <bos>, <eos>
    sampled = capture(model, cols, layer, batch_size=16, per_image=6, progress=False)
    check_rows_are_valid_tokens(sampled, layer, counts, per_sample=6)
    stats = capture(model, cols, layer, stats={"k": 8}, batch_size=16, progress=False)
    check_stats_match_all(stats, every, layer, channels=(0, 100, 383), k=8)
