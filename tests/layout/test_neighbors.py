"""Exact neighbours: the same sets and distances as a brute-force search written out in numpy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from atlaswidgets.layout import neighbors
from atlaswidgets.layout.neighbors import exact_neighbors


def _brute(x, k, metric):
    if metric == "cosine":
        n = np.linalg.norm(x, axis=1, keepdims=True)
        d = 1 - (x / n) @ (x / n).T
    else:
        d = np.sqrt(((x[:, None] - x[None]) ** 2).sum(-1))
    order = np.argsort(d, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(d, order, 1)


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_matches_brute_force_across_chunks(metric, monkeypatch):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(90, 6)).astype(np.float32)
    monkeypatch.setattr(neighbors, "_CHUNK_ELEMENTS", 90 * 7)  # 7 rows a chunk: many chunks
    idx, dist = exact_neighbors(x, 5, metric)
    want_idx, want_dist = _brute(x.astype(np.float64), 5, metric)
    assert idx.shape == dist.shape == (90, 5) and idx.dtype == np.int32 and dist.dtype == np.float32
    assert (idx[:, 0] == np.arange(90)).all()  # each row is its own nearest, as umap-learn expects
    np.testing.assert_array_equal(np.sort(idx, 1), np.sort(want_idx, 1))
    np.testing.assert_allclose(dist, want_dist, atol=1e-3)
    assert (np.diff(dist, axis=1) >= 0).all()


def test_all_zero_rows_follow_pynndescent():
    x = torch.tensor([[0.0, 0.0], [0.0, 0.0], [1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    idx, dist = exact_neighbors(x, 2, "cosine")
    assert sorted(idx[0]) == [0, 1] and np.allclose(dist[0], 0)  # two zero rows: distance 0
    assert 0 not in idx[2] and 1 not in idx[2]  # a zero row is far from every other row
    assert np.isfinite(dist).all()


def test_bad_arguments():
    x = np.ones((4, 2), np.float32)
    with pytest.raises(ValueError, match="metric must be one of"):
        exact_neighbors(x, 2, "manhattan")
    with pytest.raises(ValueError, match="k must be between 1 and the number of rows"):
        exact_neighbors(x, 5)
