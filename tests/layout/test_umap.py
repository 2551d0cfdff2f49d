"""UMAP layout: shape, dtype, determinism, and input checks (numba JIT makes the first call slow)."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from atlaswidgets.layout.umap import umap_layout


@pytest.fixture(scope="module")
def blobs():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 8)) * 6
    cluster = np.repeat(np.arange(3), 40)
    return centres[cluster] + rng.normal(size=(120, 8)), cluster


def test_seeded_layout_is_deterministic_and_keeps_clusters(blobs, capsys):
    x, cluster = blobs
    a = umap_layout(torch.as_tensor(x, dtype=torch.float32), n_neighbors=10, seed=3)
    # its phases showed as finished bars (text on stderr outside a notebook)
    shown = capsys.readouterr().err
    for bar in ("UMAP neighbours: 100%.*120/120", "UMAP graph: 100%.*1/1", "UMAP epochs: 100%.*/"):
        assert re.search(bar, shown), (bar, shown[-500:])
    b = umap_layout(x, n_neighbors=10, seed=3, progress=False)
    assert capsys.readouterr().err == ""  # and progress=False shows none, nor changes the layout
    assert a.shape == (120, 2) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    # each point's nearest neighbour in the layout comes from its own cluster
    d = ((a[:, None, :] - a[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    assert (cluster[d.argmin(1)] == cluster).mean() > 0.95


@pytest.mark.parametrize(
    "acts, match",
    [
        (np.zeros(20), r"shape \(n_rows, n_channels\)"),
        (np.zeros((10, 4)), "needs at least 16 rows"),
        (np.full((30, 4), np.nan), "NaN"),
    ],
)
def test_bad_input(acts, match):
    with pytest.raises(ValueError, match=match):
        umap_layout(acts)


def test_bad_n_neighbors():
    with pytest.raises(ValueError, match="n_neighbors"):
        umap_layout(np.zeros((30, 4)), n_neighbors=1)
    with pytest.raises(TypeError, match="numeric array"):
        umap_layout([["a", "b"]] * 30)


def test_one_component_for_the_comparison_atlas(blobs):
    x, cluster = blobs
    y = umap_layout(x, n_neighbors=10, seed=3, n_components=1)
    assert y.shape == (120, 1) and y.dtype == np.float32
    # the clusters still separate along the single axis: each point's nearest neighbour shares it
    d = np.abs(y - y.T)
    np.fill_diagonal(d, np.inf)
    assert (cluster[d.argmin(1)] == cluster).mean() > 0.9
    with pytest.raises(ValueError, match="n_components must be an int >= 1"):
        umap_layout(x, n_components=0)


def test_exact_and_nndescent_neighbours_both_keep_clusters(blobs):
    x, cluster = blobs
    for neighbors in ("exact", "nndescent"):
        a = umap_layout(x, n_neighbors=10, seed=3, neighbors=neighbors)
        d = ((a[:, None, :] - a[None, :, :]) ** 2).sum(-1)
        np.fill_diagonal(d, np.inf)
        assert (cluster[d.argmin(1)] == cluster).mean() > 0.95, neighbors
    with pytest.raises(ValueError, match="neighbors must be one of"):
        umap_layout(x, neighbors="fast")
    with pytest.raises(ValueError, match='use neighbors="nndescent"'):
        umap_layout(x, neighbors="exact", metric="manhattan")
    with pytest.raises(ValueError, match="unique=True"):
        umap_layout(x, neighbors="exact", unique=True)


def test_tiny_inputs_start_from_random_positions():
    # 3 rows with n_neighbors=2 are allowed (rows > n_neighbors), but a spectral start needs
    # more than n_components + 1 rows: arpack used to fail with a TypeError deep inside scipy
    x = np.random.default_rng(0).random((3, 8)).astype(np.float32)
    a = umap_layout(x, n_neighbors=2, seed=1, n_epochs=20)
    assert a.shape == (3, 2) and a.dtype == np.float32 and np.isfinite(a).all()
    np.testing.assert_array_equal(a, umap_layout(x, n_neighbors=2, seed=1, n_epochs=20))
    with pytest.raises(ValueError, match=r"needs more than n_components \+ 1 = 3 rows.*init='random'"):
        umap_layout(x, n_neighbors=2, init="spectral")


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(seed="x"), ValueError, "seed must be an int in"),
    (dict(seed=-1), ValueError, "seed must be an int in"),
    (dict(seed=True), ValueError, "seed must be an int in"),
    (dict(min_dist=-1), ValueError, r"min_dist must be in \[0, 1.0\]"),
    (dict(min_dist=5), ValueError, r"min_dist must be in \[0, 1.0\]"),
    (dict(min_dist="0.1"), TypeError, "min_dist must be a number"),
    (dict(progress="no"), TypeError, "progress must be True or False"),
])
def test_bad_settings_are_refused_before_umap_runs(kwargs, error, match):
    x = np.random.default_rng(0).random((30, 8)).astype(np.float32)
    with pytest.raises(error, match=match):
        umap_layout(x, n_neighbors=5, **kwargs)
