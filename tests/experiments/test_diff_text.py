"""diff_models on token inputs: two text models read the same token batches, row for row
(issue #15)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from atlaswidgets.experiments.diff import ModelDiff, diff_models
from atlaswidgets.zoo import text

LAYER = "blocks.1.mlp.act"


def test_two_text_models_on_the_same_tokens():
    base = text.model()
    other = copy.deepcopy(base)
    with torch.no_grad():  # rewire a quarter of block 1's MLP neurons: what b has that a lacks
        w = other.blocks[1].mlp.fc_in.weight
        w[:96] = torch.randn(96, w.shape[1], generator=torch.Generator().manual_seed(0)) * w.std()
    data = text.corpus(60, seed=3).columns
    d = diff_models(base, other, data, LAYER, names=("base", "rewired"), per_image=6, folds=3)
    ra, rb = d.cache_a[LAYER], d.cache_b[LAYER]
    assert ra.kind == rb.kind == "tokens"
    assert torch.equal(ra.sample_id, rb.sample_id) and torch.equal(ra.yx, rb.yx)
    # every row is a real token (padding never a row), the same (sample, token) in both models
    lengths = data["attention_mask"].sum(1)
    assert bool((ra.yx[:, 1] < lengths[ra.sample_id]).all())
    # the untouched neurons are the same numbers in both; the rewired ones are not
    assert torch.equal(ra.acts[:, 96:], rb.acts[:, 96:]) and not torch.equal(ra.acts[:, :96], rb.acts[:, :96])
    row = d.summary()[0]
    assert row["layer"] == LAYER and 0 < row["cka"] < 1 and row["novelty_b"] > 0
    nov = d.novelty(LAYER)
    assert nov.shape == (ra.n_rows,) and np.all((nov >= 0) & (nov <= 1))
    # a model against itself (its own capture twice): the same information, less novelty
    same = ModelDiff.from_caches(base, base, data, d.cache_a, d.cache_a, folds=3)
    assert same.summary()[0]["cka"] == pytest.approx(1.0, abs=1e-5)
    assert float(same.novelty(LAYER).mean()) < row["novelty_b"]
    with pytest.raises(ValueError, match="name the layers"):
        diff_models(base, other, data)
    with pytest.raises(ValueError, match="class_shift\\(\\) is for image models"):
        d.class_shift(LAYER)
