"""2-D layout of activation vectors with UMAP (umap-learn), seeded.

umap-learn pulls in numba, whose import and first JIT compile take seconds, so it is imported inside
the function rather than with the package.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch

__all__ = ["umap_layout"]


def umap_layout(
    acts,
    n_neighbors: int = 15,
    min_dist: float = 0.1,
    metric: str = "cosine",
    seed: int | None = 0,
    n_components: int = 2,
    **umap_kwargs: Any,
) -> np.ndarray:
    """Place activation vectors in 2-D (or ``n_components``-D) so that alike vectors sit close together.

    Parameters
    ----------
    acts : array or tensor, shape (n_rows, n_channels), finite; needs n_rows > n_neighbors
    n_neighbors, min_dist, metric : as in ``umap.UMAP``; cosine suits activations, whose direction
        matters more than their norm
    seed : int, the same seed gives the same layout (umap-learn then runs single-threaded);
        None lets umap-learn use all cores, at the cost of run-to-run differences
    n_components : int >= 1, dimensions of the embedding; 1 gives the comparison atlas its y axis
    **umap_kwargs : passed on to ``umap.UMAP`` (e.g. ``n_epochs``, ``init``)

    Returns
    -------
    float32 array, shape (n_rows, n_components)
    """
    x = _validate(acts, n_neighbors)
    if isinstance(n_components, bool) or not isinstance(n_components, (int, np.integer)) or n_components < 1:
        raise ValueError(f"n_components must be an int >= 1 (2 for an atlas), got {n_components!r}.")
    try:
        import umap
    except ImportError as err:
        raise ImportError(
            "umap_layout needs umap-learn: pip install umap-learn (it is a dependency of "
            'atlaswidgets, so pip install "atlaswidgets" also brings it).'
        ) from err

    reducer = umap.UMAP(
        n_components=int(n_components),
        n_neighbors=n_neighbors,
        min_dist=min_dist,
        metric=metric,
        random_state=seed,
        **umap_kwargs,
    )
    with warnings.catch_warnings():
        # a seeded run is single-threaded on purpose; umap-learn warns about exactly that
        warnings.filterwarnings("ignore", message=".*n_jobs value.*overridden.*")
        xy = reducer.fit_transform(x)
    xy = np.asarray(xy, dtype=np.float32)
    if not np.isfinite(xy).all():
        raise ValueError(
            "UMAP returned non-finite coordinates; the activations may have many identical or "
            "all-zero rows. Try metric='euclidean' or drop the constant rows."
        )
    return xy


def _validate(acts, n_neighbors: int) -> np.ndarray:
    if isinstance(acts, torch.Tensor):
        x = acts.detach().float().cpu().numpy()
    else:
        try:
            x = np.asarray(acts, dtype=np.float32)
        except (TypeError, ValueError) as err:
            raise TypeError(
                f"acts must be a numeric array or tensor of shape (n_rows, n_channels), "
                f"got {type(acts).__name__}."
            ) from err
    if x.ndim != 2:
        raise ValueError(f"acts must have shape (n_rows, n_channels), got {x.shape}.")
    if isinstance(n_neighbors, bool) or not isinstance(n_neighbors, (int, np.integer)) or n_neighbors < 2:
        raise ValueError(f"n_neighbors must be an int >= 2, got {n_neighbors!r}.")
    if x.shape[0] < n_neighbors + 1:
        raise ValueError(
            f"UMAP with n_neighbors={n_neighbors} needs at least {n_neighbors + 1} rows, got "
            f"{x.shape[0]}; capture more rows or pass a smaller n_neighbors."
        )
    if not np.isfinite(x).all():
        raise ValueError("acts contains NaN or infinite values; check the captured activations.")
    return np.ascontiguousarray(x, dtype=np.float32)
