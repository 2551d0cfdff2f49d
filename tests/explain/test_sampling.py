"""MG-IS: its pieces against their definitions, and against uniform and top-only sampling on the
kitchen model (issue #19)."""

from __future__ import annotations

import numpy as np
import pytest

import atlaswidgets as aw
from atlaswidgets.explain.sampling import (inclusion_probabilities, mgis_sample, systematic_sample,
                                           weighted_corr)


def test_the_estimator_pieces():
    rng = np.random.default_rng(0)
    a, p = rng.normal(size=200), rng.normal(size=200)
    p += a
    assert weighted_corr(a, p) == pytest.approx(np.corrcoef(a, p)[0, 1])
    # integer weights are repeated inputs
    w = rng.integers(1, 4, size=200)
    assert weighted_corr(a, p, w) == pytest.approx(np.corrcoef(np.repeat(a, w), np.repeat(p, w))[0, 1])
    assert weighted_corr(a, np.ones(200)) == 0.0
    size = np.abs(a) ** 3
    pi = inclusion_probabilities(size, 30)
    assert pi.sum() == pytest.approx(30) and pi.max() == 1.0 and (pi >= 0).all()
    free = pi < 1
    assert np.allclose(pi[free] / size[free], (pi[free] / size[free])[0])  # proportional below the cap
    counts = np.zeros(200)
    for _ in range(400):
        idx = systematic_sample(pi, rng)
        assert len(idx) == 30 and len(set(idx.tolist())) == 30
        counts[idx] += 1
    assert np.abs(counts / 400 - pi).max() < 0.12  # each input drawn at its probability
    idx, weights = mgis_sample(a, 30, rng, mix=1.0)  # mix=1: uniform, equal weights
    assert len(idx) == 30 and np.allclose(weights, 200 / 30)


def test_mgis_against_uniform_and_top_only(kitchen_block4):
    cache, annotations = kitchen_block4
    table = aw.explain_layer(cache, "block4", units=list(range(0, 128, 8)), annotations=annotations,
                             store=None, progress=False)
    result = aw.compare_sampling(cache, table, aw.ConceptSimulator(), annotations, budget=50, repeats=8)
    print(result)
    assert len(result.units) == 16 and set(result.errors) == {"uniform", "top", "mgis"}
    assert result.mae["mgis"] < result.mae["top"] and result.mae["uniform"] < result.mae["top"]
    with pytest.raises(ValueError, match="mix must be"):
        aw.compare_sampling(cache, table, aw.ConceptSimulator(), annotations, mix=2.0)
    with pytest.raises(TypeError, match="simulator must have prepare"):
        aw.compare_sampling(cache, table, lambda text, record: 0.0, annotations)
