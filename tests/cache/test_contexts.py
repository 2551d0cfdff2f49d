"""Token contexts of a text cache: windows, marks, strings as given, per-token values."""

import numpy as np
import pytest
import torch

import atlaswidgets as aw
from atlaswidgets.cache.contexts import is_text, row_values, token_contexts, token_strings
from atlaswidgets.zoo import text


@pytest.fixture(scope="module")
def caches():
    torch.manual_seed(0)
    model, data = text.model(), text.corpus(12, seed=5)
    kw = dict(layers="blocks.0.mlp.act", progress=False, batch_size=6)
    return (data, aw.capture(model, data.columns, sample="all", **kw),
            aw.capture(model, data.columns, sample="random", per_image=3, **kw))


def test_windows_mark_the_row_token_and_stop_at_the_sample_end(caches):
    data, full, _ = caches
    la = full.layer()
    rows = np.array([0, 5, la.n_rows - 1])
    sid, t = la.sample_id[rows].numpy(), la.yx[rows, 1].numpy()
    got = token_contexts(full, sid, t, before=3, after=2)
    for ctx, s, ti in zip(got, sid, t):
        valid = data.input_ids[s][data.attention_mask[s].bool()].tolist()
        assert ctx.ids.tolist() == valid[max(0, ti - 3): ti + 3]
        assert ctx.token == text.VOCAB[valid[ti]]
        assert ctx.start + ctx.index == ti
    assert "[[" in got[0].text()


def test_values_of_an_all_cache_are_complete_and_a_random_cache_knows_its_rows(caches):
    data, full, sampled = caches
    lengths = data.attention_mask.sum(1).numpy()
    v = row_values(full, None, [2, 0, 2], unit=7)
    assert v.shape == (3, full.tokens.shape[1])
    assert np.isfinite(v[0, : lengths[2]]).all() and np.isnan(v[0, lengths[2]:]).all()
    assert np.array_equal(v[0], v[2], equal_nan=True)
    la = sampled.layer()
    w = row_values(sampled, None, [1], unit=7)
    assert np.isfinite(w).sum() == int((la.sample_id == 1).sum())
    rows = (la.sample_id == 1).nonzero().squeeze(1)
    assert np.allclose(w[0, la.yx[rows, 1].numpy()], la.acts[rows, 7].numpy())
    # the sampled values agree with the full capture's at the same tokens
    assert np.allclose(w[0][np.isfinite(w[0])], row_values(full, None, [1], unit=7)[0][np.isfinite(w[0])], atol=1e-5)


def test_hostile_tokens_come_back_as_the_plain_strings_they_are(caches):
    _, full, _ = caches
    bad = text.VOCAB.index("<img src=x onerror=alert(1)>")
    assert token_strings(full, [bad, 10**6]) == ["<img src=x onerror=alert(1)>", "[1000000]"]


def test_bad_requests_are_refused(caches):
    _, full, _ = caches
    with pytest.raises(ValueError, match="outside sample"):
        token_contexts(full, [0], [10**4])
    with pytest.raises(ValueError, match="same length"):
        token_contexts(full, [0, 1], [0])
    with pytest.raises(ValueError, match="exactly one"):
        row_values(full, None, [0])
    image_cache = aw.ActivationCache(layers={}, labels=torch.zeros(1, dtype=torch.long), logits=torch.zeros(1, 2))
    assert not is_text(image_cache)
    with pytest.raises(ValueError, match="captured from images"):
        token_contexts(image_cache, [0], [0])
