"""attribute() on token layers: next-token targets, positions, padding, stores, and the errors
when a target does not fit the model (issue #15)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import atlaswidgets as aw
from atlaswidgets.cache.capture import capture
from atlaswidgets.cache.store import load_cache

from .cache.conftest import TinyCNN, TinyTextLM, text_batch


class CausalLM(nn.Module):
    """Token ids -> next-token logits (N, T, 12) through a causal mixing layer; ``mix`` is
    (N, T, 8), ``head`` the logits. Padding (mask 0) is never read by a real token."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(4)
        self.embed = nn.Embedding(12, 8)
        self.mix = nn.Linear(8, 8)
        self.head = nn.Linear(8, 12)
        self.vocab = [f"t{i}" for i in range(12)]

    def forward(self, input_ids, attention_mask=None):
        h = self.embed(input_ids)
        m = torch.ones_like(input_ids) if attention_mask is None else attention_mask
        h = h * m[..., None]
        causal = h.cumsum(1) / m.cumsum(1).clamp(min=1)[..., None]  # mean of tokens so far
        return self.head(torch.tanh(self.mix(causal)))


def ids_mask(n=10, length=7, side="right", seed=1):
    ids, mask = text_batch(n, seed=seed, length=length, pad_side=side)
    return ids % 12, mask


def repad(ids, mask, width):
    """The same texts right-padded to ``width`` tokens."""
    out_ids = torch.zeros((len(ids), width), dtype=ids.dtype)
    out_mask = torch.zeros((len(ids), width), dtype=mask.dtype)
    for i in range(len(ids)):
        toks = ids[i][mask[i].bool()]
        out_ids[i, :len(toks)], out_mask[i, :len(toks)] = toks, 1
    return out_ids, out_mask


def by_hand(model, ids, mask, target, weights):
    """act x grad of ``mix``'s output toward sum(weights * score), at the input's columns."""
    kept = {}
    h = model.mix.register_forward_hook(lambda m, i, o: kept.update(out=o))
    try:
        logits = model(ids, mask)
    finally:
        h.remove()
    score = (target.score(logits) * weights).sum()
    (g,) = torch.autograd.grad(score, kept["out"])
    return (kept["out"] * g).detach()


@pytest.mark.parametrize("side", ["right", "left"])
def test_token_rows_get_act_times_grad_of_every_valid_prediction(side):
    lm = CausalLM().eval()
    ids, mask = ids_mask(side=side)
    cols = {"input_ids": ids, "attention_mask": mask}
    cache = capture(lm, cols, "mix", sample="all", progress=False)
    attr = aw.attribute(lm, cols, "mix", ("token:t3", "token:t5"), cache=cache, store=False,
                        progress=False)
    assert attr.key == "token:t3-token:t5" and attr.target == aw.Target("token_pair", (3, 5))
    want = by_hand(lm, ids, mask, attr.target, mask.float())
    la = cache["mix"]
    valid = mask.bool()
    cols_of = [valid[i].nonzero().squeeze(1) for i in range(len(ids))]
    col = torch.stack([cols_of[s][t] for s, t in zip(la.sample_id.tolist(), la.yx[:, 1].tolist())])
    assert torch.allclose(attr.per_channel, want[la.sample_id, col], atol=1e-5)
    # the same rows, however the batches are padded: padding never counts
    right = repad(ids, mask, 9)
    again = aw.attribute(lm, {"input_ids": right[0], "attention_mask": right[1]}, "mix",
                         "token:t3-token:t5", cache=cache, store=False, progress=False,
                         batch_size=3)
    assert torch.allclose(again.per_channel, attr.per_channel, atol=1e-5)


def test_positions_last_and_mask_and_every_position_without_cache():
    lm = CausalLM().eval()
    ids, mask = ids_mask()
    cols = {"input_ids": ids, "attention_mask": mask}
    t = aw.Target("token", (3,))
    last = torch.zeros_like(mask, dtype=torch.float)
    last[torch.arange(len(ids)), mask.sum(1) - 1] = 1
    full = aw.attribute(lm, cols, "mix", "token:t3", positions="last", progress=False)
    n, d, w = full.per_channel.shape
    assert (n, d, w) == (len(ids), 8, int(mask.sum(1).max()))
    want = by_hand(lm, ids, mask, t, last)  # right padding: columns are token indices
    got = full.per_channel.transpose(1, 2)
    assert torch.allclose(got * mask[:, :w, None], want[:, :w] * mask[:, :w, None], atol=1e-5)
    assert float(got[~mask[:, :w].bool()].abs().max()) == 0.0  # nothing past a sample's tokens
    # a mask over the token indices picks those predictions; causal: later rows get nothing
    pick = torch.zeros_like(mask, dtype=torch.bool)
    pick[:, 2] = True
    part = aw.attribute(lm, cols, "mix", "token:t3", positions=pick, progress=False)
    assert float(part.per_channel[:, :, 3:].abs().max()) == 0.0
    assert float(part.per_channel[:, :, :3].abs().max()) > 0.0
    with pytest.raises(ValueError, match="positions has 3 rows"):
        aw.attribute(lm, cols, "mix", "token:t3", positions=pick[:3], progress=False)
    with pytest.raises(ValueError, match='positions must be "all", "last"'):
        aw.attribute(lm, cols, "mix", "token:t3", positions="first", progress=False)


def test_store_round_trip_and_lookup_of_token_attributions(tmp_path):
    lm = CausalLM().eval()
    ids, mask = ids_mask()
    cols = {"input_ids": ids, "attention_mask": mask}
    cache = capture(lm, cols, "mix", progress=False)
    attrs = aw.attribute(lm, cols, "mix", ["token:t1", ("token:t1", "token:t2")], cache=cache,
                         store=False, progress=False)
    assert cache.add_attribution(attrs) == ["token:t1", "token:t1-token:t2"]
    cache.save(tmp_path / "s")
    back = load_cache(tmp_path / "s")
    for key in ("token:t1", "token:t1-token:t2"):
        assert torch.equal(back.attribution("mix", key), cache.attribution("mix", key))
    assert back["mix"].attribution_targets["token:t1-token:t2"] == aw.Target("token_pair", (1, 2))
    assert torch.equal(back.attribution("mix", aw.Target("token", (1,))), attrs[0].per_channel)
    with pytest.raises(KeyError, match="token:t2"):
        back.attribution("mix", "token:t2")


def test_a_target_of_the_wrong_family_is_refused_before_any_work():
    lm = CausalLM().eval()
    ids, mask = ids_mask()
    cols = {"input_ids": ids, "attention_mask": mask}
    cache = capture(lm, cols, "mix", progress=False)
    with pytest.raises(ValueError, match=r"per token \(N, T, V\).*'token:wok'"):
        aw.attribute(lm, cols, "mix", 3, cache=cache, store=False, progress=False)
    with pytest.raises(ValueError, match="class target does not fit"):  # found at the model
        aw.attribute(lm, cols, "mix", 3, progress=False, classes=None)
    with pytest.raises(ValueError, match="mix class targets and next-token"):
        aw.attribute(lm, cols, "mix", ["token:t1", 2], progress=False)
    with pytest.raises(ValueError, match="Unknown token 'wok'"):
        aw.attribute(lm, cols, "mix", "token:wok", cache=cache, store=False, progress=False)
    # a token target on a classifier: its cache says so before any work, its model otherwise
    cnn = TinyCNN(0).eval()
    images, labels = torch.rand(8, 3, 16, 16), torch.randint(0, 4, (8,))
    img_cache = capture(cnn, (images, labels), "conv2", progress=False)
    with pytest.raises(ValueError, match="one row of .* per sample, so use a class target"):
        aw.attribute(cnn, (images, labels), "conv2", "token:#1", cache=img_cache, store=False,
                     progress=False)
    with pytest.raises(ValueError, match="need token inputs"):
        aw.attribute(cnn, (images, labels), "conv2", "token:#1", progress=False)
    enc = TinyTextLM(0).eval()  # dict output with per-token logits; a bidirectional block
    tids, tmask = text_batch(6)
    with pytest.raises(ValueError, match="positions=\"last\" is for next-token targets"):
        aw.attribute(enc, {"input_ids": tids, "attention_mask": tmask}, "block", 1,
                     positions="last", progress=False)
    out = aw.attribute(enc, {"input_ids": tids, "attention_mask": tmask}, "block", "token:tok1",
                       progress=False)
    assert out.per_channel.shape == (6, 16, int(tmask.sum(1).max()))
