"""Small synthetic caches for layout, render and widget tests (no model, no capture)."""

from __future__ import annotations

import numpy as np
import torch

from atlaswidgets.cache.cache import ActivationCache, LayerActs

CORNERS = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]])


def clustered_cache(
    n_clusters: int = 4,
    samples_per_cluster: int = 15,
    per_image: int = 4,
    channels: int = 8,
    image: int = 32,
    hw: tuple[int, int] = (4, 4),
    rf: tuple[int, int] = (12, 12),
    seed: int = 0,
    classes: list[str] | None = None,
):
    """A cache whose rows fall in ``n_clusters`` clusters, with a matching 2-D layout.

    Sample s has label s // samples_per_cluster; every row of a sample points along its cluster's
    own channel (plus small noise), and its layout point sits near its cluster's corner.
    Returns (cache, xy float32 (n_rows, 2), cluster of each row int64 (n_rows,)).
    """
    if n_clusters > len(CORNERS):
        raise ValueError("at most 4 clusters")
    rng = np.random.default_rng(seed)
    n_samples = n_clusters * samples_per_cluster
    sample_id = np.repeat(np.arange(n_samples), per_image)
    cluster = sample_id // samples_per_cluster
    n_rows = len(sample_id)
    acts = rng.uniform(0, 0.05, size=(n_rows, channels)).astype(np.float32)
    acts[np.arange(n_rows), cluster] += rng.uniform(1.0, 2.0, size=n_rows).astype(np.float32)
    yx = np.stack([rng.integers(0, hw[0], n_rows), rng.integers(0, hw[1], n_rows)], axis=1)
    xy = (CORNERS[cluster] + rng.normal(0, 1.0, size=(n_rows, 2))).astype(np.float32)
    images = torch.as_tensor(rng.integers(0, 256, size=(n_samples, 3, image, image), dtype=np.uint8))
    la = LayerActs(
        acts=torch.as_tensor(acts),
        sample_id=torch.as_tensor(sample_id, dtype=torch.long),
        yx=torch.as_tensor(yx, dtype=torch.long),
        hw=hw,
        rf=rf,
    )
    labels = torch.as_tensor(np.arange(n_samples) // samples_per_cluster, dtype=torch.long)
    cache = ActivationCache(
        {"block": la},
        labels=labels,
        logits=torch.zeros(n_samples, n_clusters),
        images=images,
        input_hw=(image, image),
        classes=classes if classes is not None else [f"class{i}" for i in range(n_clusters)],
    )
    return cache, xy, cluster.astype(np.int64)
