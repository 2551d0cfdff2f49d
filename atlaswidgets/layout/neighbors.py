"""Exact k nearest neighbours with torch, for UMAP's neighbour graph.

umap-learn finds neighbours with pynndescent, whose numba code takes about 50 s to compile in every
fresh Python process on a 2-core machine (measured on 8000 rows: the first fit took 74 s, a second
fit in the same process 12 s). For the row counts of an atlas, an exact search is a few chunked
matrix products, so it costs less than that compile and gives the true neighbours; on CUDA it is
fast for far larger caches. ``umap_layout`` hands the result to umap-learn as ``precomputed_knn``.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from ..cache.checks import one_of

__all__ = ["EXACT_METRICS", "exact_neighbors"]

EXACT_METRICS = ("cosine", "euclidean")

# elements of one chunk of the distance matrix (128 MB of float32): small enough for a 2 GB Binder
_CHUNK_ELEMENTS = 2**25


def exact_neighbors(x, k: int, metric: str = "cosine", device=None,
                    on_rows: Callable[[int], object] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest rows of every row of ``x`` (itself included, as umap-learn counts it).

    Parameters
    ----------
    x : float array or tensor, shape (n, d), finite, n >= k
    k : int, neighbours per row
    metric : "cosine" (1 - cosine similarity; two all-zero rows are at distance 0, an all-zero row
        is at distance 1 from any other, as in pynndescent) or "euclidean"
    device : torch device to compute on; None: the tensor's own device (CPU for arrays)
    on_rows : called with the number of rows of each chunk once it is done (a progress bar's
        ``update``), or None

    Returns
    -------
    indices : int32 array, shape (n, k), nearest first
    distances : float32 array, shape (n, k), non-decreasing along each row
    """
    one_of(metric, "metric", EXACT_METRICS)
    t = torch.as_tensor(x, dtype=torch.float32)
    if device is not None:
        t = t.to(device)
    n = t.shape[0]
    if not 1 <= k <= n:
        raise ValueError(f"k must be between 1 and the number of rows ({n}), got {k}.")

    if metric == "cosine":
        norm = t.norm(dim=1, keepdim=True)
        zero = norm == 0
        # an extra coordinate that is 1 only for all-zero rows: their dot product is then 1 with
        # each other and 0 with everyone else, which is pynndescent's convention
        u = torch.cat([t / norm.clamp_min(1e-30), zero.float()], dim=1)
    else:
        sq = (t * t).sum(1)

    step = max(1, _CHUNK_ELEMENTS // n)
    indices, distances = [], []
    for start in range(0, n, step):
        block = slice(start, start + step)
        if metric == "cosine":
            sim, idx = (u[block] @ u.T).topk(k, dim=1)
            dist = (1.0 - sim).clamp_min(0.0)
        else:
            d2 = sq[block, None] + sq[None, :] - 2.0 * (t[block] @ t.T)
            idx = (-d2).topk(k, dim=1).indices
            # the expansion above loses precision for near rows (a row's distance to itself came
            # out ~1e-3), so the k winners' distances are recomputed directly and re-sorted
            dist = (t[block, None, :] - t[idx]).norm(dim=2)
            dist, order = dist.sort(dim=1)
            idx = idx.gather(1, order)
        indices.append(idx.to(torch.int32).cpu())
        distances.append(dist.cpu())
        if on_rows is not None:
            on_rows(len(idx))
    return torch.cat(indices).numpy(), torch.cat(distances).numpy()
