"""Explanation scores on a text cache: per-token predictions, token strings as annotations,
per-token truth arrays; the image API unchanged (tests/explain/test_score.py) (issue #15)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import atlaswidgets as aw
from atlaswidgets.explain import describe, token_strings


class TokenDetector(nn.Module):
    """Unit 0 of ``feat`` is 1 on token 3 and 0 elsewhere; unit 1 counts the earlier 5s (a
    context feature); unit 2 is noise from the embedding."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.noise = nn.Embedding(8, 1)
        self.feat = nn.Identity()
        self.vocab = [f"w{i}" for i in range(8)]

    def forward(self, input_ids, attention_mask=None):
        is3 = (input_ids == 3).float()
        seen5 = (input_ids == 5).float().cumsum(1).clamp(max=1)
        h = torch.stack([is3, seen5, self.noise(input_ids)[..., 0]], -1)
        return self.feat(h)


@pytest.fixture(scope="module")
def setup():
    gen = torch.Generator().manual_seed(5)
    ids = torch.randint(0, 8, (120, 10), generator=gen)
    lengths = torch.randint(4, 11, (120,), generator=gen)
    mask = (torch.arange(10)[None] < lengths[:, None]).long()
    ids = ids * mask
    model = TokenDetector().eval()
    cache = aw.capture(model, {"input_ids": ids, "attention_mask": mask}, "feat", sample="all",
                       progress=False)
    seen5 = ((ids == 5) & mask.bool()).long().cumsum(1).clamp(max=1).bool() & mask.bool()
    return cache, ids, mask, seen5


def test_find_units_with_token_strings_and_truth_arrays(setup):
    cache, ids, mask, seen5 = setup
    best = aw.find_units(cache, lambda toks: [t == "w3" for t in toks], top=3)
    assert best[0].unit == 0 and best[0].top_and_random > 0.99
    ctx = aw.find_units(cache, seen5, top=3)  # the per-token truth itself
    assert ctx[0].unit == 1 and ctx[0].top_and_random > 0.99
    assert ctx[-1].top_and_random < ctx[0].top_and_random
    # a simulation of (sample, token index), as score_explanation takes it
    s = aw.score_explanation(cache, 0, lambda i, image, toks: [t == "w3" for t in toks])
    assert s.top_and_random > 0.99
    s = aw.score_explanation(cache, 0, lambda i, image, toks: (ids[i][mask[i].bool()] == 3).numpy())
    assert s.top_and_random > 0.99
    assert aw.score_explanation(cache, 0, lambda i, image, toks: 0.5).top_and_random == 0.0
    with pytest.raises(ValueError, match="one number per token"):
        aw.score_explanation(cache, 0, lambda i, image, toks: [1.0, 0.0])
    with pytest.raises(ValueError, match=r"shape \(n_samples, T\) = \(120, T\)"):
        aw.find_units(cache, seen5[:5])


def test_explain_unit_and_describe_give_tokens(setup):
    cache, ids, mask, _ = setup
    toks = token_strings(cache)
    assert toks[0] == [f"w{i}" for i in ids[0][mask[0].bool()].tolist()]
    record = describe(cache, 0, None, 1.0, (0, 2))
    assert record["tokens"] == toks[0] and record["position"] == 2 and record["token"] == toks[0][2]
    seen = {}

    def explainer(records):
        seen["records"] = records
        return "the token w3"

    def simulator(text, record):
        return [float(t == "w3") for t in record["tokens"]]

    score = aw.explain_unit(cache, 0, explainer, simulator)
    assert score.explanation == "the token w3" and score.top_and_random > 0.99
    assert all(r["token"] == "w3" for r in seen["records"])
