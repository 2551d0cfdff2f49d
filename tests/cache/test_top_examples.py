"""ActivationCache.top_examples: one matmul over a layer's rows, best first."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import atlaswidgets as aw
from atlaswidgets.cache.capture import capture


@pytest.fixture(scope="module")
def cache(model, data):
    return capture(model, data, ["conv1", "conv2"], sample="random", per_image=6, progress=False)


def test_top_rows_match_a_brute_force_ranking(cache):
    la = cache["conv2"]
    direction = torch.linspace(-1, 1, 16)
    top = cache.top_examples(direction, k=10, layer="conv2")
    scores = la.acts @ direction
    order = scores.argsort(descending=True)[:10]
    assert len(top) == 10
    assert np.array_equal(top.rows, order.numpy())
    assert np.allclose(top.values, scores[order].numpy(), atol=1e-5)
    assert np.all(np.diff(top.values) <= 0)
    assert np.array_equal(top.sample_id, la.sample_id[order].numpy())
    assert np.array_equal(top.yx, la.yx[order].numpy())
    assert top.values.dtype == np.float32


def test_per_sample_keeps_the_best_row_of_distinct_samples(cache):
    la = cache["conv2"]
    direction = np.eye(16, dtype=np.float32)[3]  # channel 3, given as a numpy array
    top = cache.top_examples(direction, k=50, layer="conv2", per_sample=True)
    assert len(top) == cache.n_samples  # k larger than the number of samples
    assert len(set(top.sample_id.tolist())) == len(top)
    best = torch.full((cache.n_samples,), -float("inf")).scatter_reduce(0, la.sample_id, la.acts[:, 3], "amax")
    assert np.allclose(np.sort(top.values)[::-1], best.sort(descending=True).values.numpy())


def test_k_is_capped_by_the_number_of_rows(model, data):
    small = capture(model, data[0][:2], "conv2", sample="mean", progress=False)
    assert len(small.top_examples(torch.ones(16), k=5)) == 2


def test_bad_directions(cache):
    with pytest.raises(ValueError, match=r"direction for layer 'conv2' must have shape \(16,\)"):
        cache.top_examples(torch.ones(8), layer="conv2")
    with pytest.raises(ValueError, match="all zeros"):
        cache.top_examples(torch.zeros(16), layer="conv2")
    with pytest.raises(ValueError, match="overflow float32.*direction.norm"):
        cache.top_examples(torch.full((16,), 1e38), layer="conv2")
    with pytest.raises(TypeError, match="must be a tensor or array of 16 numbers.*got str"):
        cache.top_examples("wok", layer="conv2")
    with pytest.raises(TypeError, match="must hold numbers"):
        cache.top_examples(["a"] * 16, layer="conv2")
    with pytest.raises(ValueError, match="NaN or infinite"):
        cache.top_examples(torch.full((16,), float("nan")), layer="conv2")
    with pytest.raises(ValueError, match="k must be a positive int"):
        cache.top_examples(torch.ones(16), k=0, layer="conv2")
    with pytest.raises(ValueError, match="pass layer=... to say which"):
        cache.top_examples(torch.ones(16))
    with pytest.raises(KeyError, match="was not captured"):
        cache.top_examples(torch.ones(16), layer="fc")


def test_a_weight_row_that_requires_grad_is_a_direction(cache):
    # a classifier's weight row is the natural direction to ask about, and it requires grad
    weight = torch.nn.Linear(16, 3).weight
    assert weight.requires_grad
    got = cache.top_examples(weight[1], k=5, layer="conv2")
    want = cache.top_examples(weight[1].detach().numpy(), k=5, layer="conv2")
    np.testing.assert_array_equal(got.rows, want.rows)
    assert len(aw.unit_samples(cache, weight[1], layer="conv2", n=2).groups["top"].sample_id) == 2
    with pytest.raises(ValueError, match="all zeros"):
        aw.unit_samples(cache, torch.zeros(16), layer="conv2")


def test_label_names_refuse_ids_out_of_range(cache):
    assert cache.label_names([0, cache.n_samples - 1]) == cache.label_names(np.array([0, cache.n_samples - 1]))
    assert cache.label_names([]) == []
    for bad in ([-1], [cache.n_samples]):  # -1 used to name the last sample's class
        with pytest.raises(ValueError, match=rf"sample ids must be in \[0, {cache.n_samples - 1}\]"):
            cache.label_names(bad)
    with pytest.raises(TypeError, match="must be integers"):
        cache.label_names([0.5])


def test_best_rows_of_a_subset_keep_one_row_per_sample(cache):
    from atlaswidgets.cache.cache import best_per_sample, best_rows

    la = cache["conv2"]
    rows = np.arange(3, la.n_rows, 2)  # every other row: a selection's members, say
    scores = (la.acts[torch.as_tensor(rows)] @ torch.linspace(1, -1, 16)).numpy()
    got = best_rows(la, scores, 7, rows=rows)
    # brute force: each sample's best of the given rows, then the best samples
    best = {}
    for r, s in zip(rows, scores):
        sid = int(la.sample_id[r])
        if sid not in best or s > best[sid][1]:
            best[sid] = (int(r), float(s))
    want = sorted(best.values(), key=lambda rs: -rs[1])[:7]
    assert got.rows.tolist() == [r for r, _ in want]
    np.testing.assert_allclose(got.values, [s for _, s in want], rtol=1e-6)
    assert len(set(got.sample_id.tolist())) == len(got) == 7
    np.testing.assert_array_equal(got.yx, la.yx.numpy()[got.rows])
    # the positions come in sample order, one per sample present; ties go to the first entry
    pos = best_per_sample(torch.tensor([2, 0, 2, 0]), torch.tensor([1.0, 5.0, 1.0, 5.0]))
    assert pos.tolist() == [1, 0]


def test_every_example_query_returns_top_examples(cache, model, data):
    direction = torch.linspace(-1, 1, 16)
    maxima = aw.unit_maxima(cache, direction, layer="conv2")
    assert isinstance(maxima, aw.TopExamples)
    la = cache["conv2"]
    np.testing.assert_array_equal(la.sample_id.numpy()[maxima.rows], maxima.sample_id)
    np.testing.assert_allclose((la.acts[torch.as_tensor(maxima.rows)] @ direction).numpy(), maxima.values,
                               rtol=1e-5, atol=1e-6)
    samples = aw.unit_samples(cache, direction, layer="conv2", n=3)
    assert all(isinstance(g, aw.TopExamples) and g.rows is not None for g in samples.groups.values())
    assert isinstance(samples.all(), aw.TopExamples) and len(samples.all().rows) == len(samples.all())
    # streamed statistics see every position, most of which are no cached row: no rows
    streamed = capture(model, data, ["conv2"], stats=True, progress=False).stats["conv2"].top(0, 3)
    assert isinstance(streamed, aw.TopExamples) and streamed.rows is None and len(streamed) == 3
