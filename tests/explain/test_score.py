"""Explanation scoring: an oracle scores 1, noodles units are found on the kitchen model, bad input."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

from atlaswidgets.cache.capture import capture
from atlaswidgets.explain import explain_unit, find_units, rf_overlap, score_explanation

from ..cache.conftest import TinyCNN, layer_output


@pytest.fixture(scope="module")
def tiny():
    gen = torch.Generator().manual_seed(1)
    images = torch.rand(40, 3, 16, 16, generator=gen)
    model = TinyCNN(0).eval()
    cache = capture(model, images, ["conv2"], progress=False, stats={"k": 8, "bins": 16, "reservoir": 4})
    return cache, layer_output(model, "conv2", images)


def test_the_true_activations_score_one_and_a_constant_scores_zero(tiny):
    cache, truth = tiny
    oracle = score_explanation(cache, 3, lambda i, img, ann: truth[i, 3], n=5)
    assert oracle.top_and_random == pytest.approx(1.0) and oracle.top_only == pytest.approx(1.0)
    assert oracle.n_examples == len(oracle.actual) == len(oracle.groups) > 8
    assert np.allclose(oracle.actual, oracle.predicted, atol=1e-6)
    assert score_explanation(cache, 3, lambda i, img, ann: 1.0, n=5).top_and_random == 0.0
    # a direction, scored on the cached rows: its own value per position is an oracle too
    d = torch.randn(16)
    by_rows = score_explanation(cache, d, lambda i, img, ann: torch.einsum("chw,c->hw", truth[i], d), n=5)
    assert by_rows.top_and_random == pytest.approx(1.0)


def test_bad_simulations_and_arguments_are_refused(tiny):
    cache, _ = tiny
    with pytest.raises(ValueError, match=r"returned shape \(3,\).*\(8, 8\)"):
        score_explanation(cache, 0, lambda i, img, ann: np.zeros(3))
    with pytest.raises(ValueError, match="NaN or infinite"):
        score_explanation(cache, 0, lambda i, img, ann: float("nan"))
    with pytest.raises(TypeError, match="must return a number"):
        score_explanation(cache, 0, lambda i, img, ann: "high")
    with pytest.raises(TypeError, match="simulate must be a function"):
        score_explanation(cache, 0, "noodles")
    with pytest.raises(ValueError, match="was not captured"):
        score_explanation(cache, 0, lambda i, img, ann: 0.0, layer="conv1")
    with pytest.raises(ValueError, match="channel 16 is out of range"):
        score_explanation(cache, 16, lambda i, img, ann: 0.0)
    with pytest.raises(ValueError, match="annotations has 2 entries but the cache holds 40"):
        score_explanation(cache, 0, lambda i, img, ann: 0.0, annotations=[[], []])
    with pytest.raises(ValueError, match="needs annotations="):
        find_units(cache, lambda ann: True)
    with pytest.raises(ValueError, match="channel 99 is out of range"):
        find_units(cache, lambda ann: True, annotations=[[]] * 40, channels=[99])
    with pytest.raises(ValueError, match="non-empty explanation"):
        explain_unit(cache, 0, lambda records: "", lambda text, record: 0.0, annotations=[[]] * 40)


# ----------------------------------------------------------------------------- the kitchen world


@pytest.fixture(scope="module")
def kitchen_cache(kitchen_block4):
    return kitchen_block4


def has_noodles(ann) -> bool:
    return any(a["name"] == "noodles" for a in ann)


def test_find_units_finds_a_noodles_channel_on_the_kitchen_model(kitchen_cache):
    cache, annotations = kitchen_cache
    ranked = find_units(cache, has_noodles, annotations=annotations, top=None)
    assert len(ranked) == 128
    scores = [r.top_and_random for r in ranked]
    assert scores == sorted(scores, reverse=True)
    best = ranked[0]
    assert best.top_and_random >= 0.5, best
    # a control object planted at the same rate in every class explains no unit as well
    chopsticks = find_units(cache, lambda ann: any(a["name"] == "chopsticks" for a in ann),
                            annotations=annotations, top=1)[0]
    assert chopsticks.top_and_random < best.top_and_random - 0.2
    # the same unit, with the per-position explanation "this position sees noodles"
    by_position = score_explanation(cache, best.unit, lambda i, img, ann: rf_overlap(cache, "noodles")(ann),
                                    annotations=annotations)
    assert by_position.top_and_random >= 0.5


def test_a_pluggable_explainer_names_noodles_and_scores(kitchen_cache):
    cache, annotations = kitchen_cache
    best = find_units(cache, has_noodles, annotations=annotations, top=1)[0]

    def fake_llm_explainer(records):  # stands in for an LLM call: the most common object at the top
        assert all({"sample_id", "label", "objects", "activation"} <= set(r) for r in records)
        return Counter(o for r in records for o in r["objects"]).most_common(1)[0][0]

    def fake_llm_simulator(explanation, record):
        assert "activation" not in record  # the simulator must not see the answer
        return 1.0 if explanation in record["objects"] else 0.0

    result = explain_unit(cache, best.unit, fake_llm_explainer, fake_llm_simulator, annotations=annotations)
    assert result.explanation == "noodles"
    assert result.top_and_random == pytest.approx(best.top_and_random)
