"""2-D layout of activation vectors with UMAP (umap-learn), seeded.

umap-learn pulls in numba, whose import and first JIT compile take seconds, so it is imported inside
the function rather than with the package. The neighbour graph is computed exactly with torch for
the sizes an atlas has (see ``neighbors.py``): pynndescent's compile alone cost more than that.
"""

from __future__ import annotations

import importlib.util
import warnings
from typing import Any

import numpy as np
import torch

from ..cache.checks import int_at_least, is_number, one_of, random_seed
from ..cache.progress import checked_progress, progress_bar, tqdm_options
from .neighbors import EXACT_METRICS, exact_neighbors

__all__ = ["umap_layout"]

# "auto" searches neighbours exactly up to this many rows on CPU (about 13 s for 50k rows of 64
# channels on 2 cores; the time grows with the square); beyond it umap-learn's pynndescent is faster
EXACT_MAX_ROWS_CPU = 50_000
NEIGHBORS = ("auto", "exact", "nndescent")


def _check_seed_and_min_dist(seed, min_dist, spread) -> None:
    """Here rather than deep inside umap-learn/scikit-learn, whose messages name settings
    (``spread``) that the atlas functions do not take."""
    random_seed(seed, high=2**32, optional=True)
    if not is_number(min_dist):
        raise TypeError(f"min_dist must be a number, got {type(min_dist).__name__}.")
    if not 0 <= min_dist <= spread:
        raise ValueError(f"min_dist must be in [0, {spread}] (umap-learn's spread), got {min_dist!r}; "
                         "0.1 packs alike rows tightly, 0.5 spreads them over more cells.")


def umap_layout(
    acts,
    n_neighbors: int = 15,
    min_dist: float = 0.1,
    metric: str = "cosine",
    seed: int | None = 0,
    n_components: int = 2,
    neighbors: str = "auto",
    progress: bool = True,
    **umap_kwargs: Any,
) -> np.ndarray:
    """Place activation vectors in 2-D (or ``n_components``-D) so that alike vectors sit close together.

    Parameters
    ----------
    acts : array or tensor, shape (n_rows, n_channels), finite; needs n_rows > n_neighbors (with
        n_rows <= n_components + 1 the layout starts from random positions, not spectral)
    n_neighbors, min_dist, metric : as in ``umap.UMAP``; cosine suits activations, whose direction
        matters more than their norm
    seed : int, the same seed gives the same layout (umap-learn then runs single-threaded);
        None lets umap-learn use all cores, at the cost of run-to-run differences
    n_components : int >= 1, dimensions of the embedding; 1 gives the comparison atlas its y axis
    neighbors : how the k-nearest-neighbour graph is found. "exact": chunked matrix products with
        torch, on the tensor's device (cosine and euclidean only); "nndescent": umap-learn's own
        approximate search; "auto": exact for cosine/euclidean on CUDA tensors or up to
        50,000 rows, else nndescent
    progress : True shows the layout's phases as bars (``cache/progress.py``, as ``aw.capture``
        does): "UMAP neighbours" over the rows (exact search only), "UMAP graph" (umap-learn's
        fuzzy graph, and its neighbour search on the nndescent path; the first layout of a
        process also imports umap-learn and compiles its numba code here) and "UMAP epochs" (umap-learn's own
        bar over its optimisation epochs, drawn with the same settings). False hides them all
    **umap_kwargs : passed on to ``umap.UMAP`` (e.g. ``n_epochs``, ``init``)

    Returns
    -------
    float32 array, shape (n_rows, n_components)
    """
    x = _validate(acts, n_neighbors)
    int_at_least(n_components, "n_components", 1, "2 for an atlas")
    _check_seed_and_min_dist(seed, min_dist, umap_kwargs.get("spread", 1.0))
    one_of(neighbors, "neighbors", NEIGHBORS)
    checked_progress(progress)
    if neighbors == "exact" and metric not in EXACT_METRICS:
        raise ValueError(
            f'neighbors="exact" supports the metrics {EXACT_METRICS}, got {metric!r}; use '
            'neighbors="nndescent" for other metrics.'
        )
    if neighbors == "exact" and umap_kwargs.get("unique"):
        raise ValueError('umap-learn cannot use precomputed neighbours with unique=True; pass '
                         'neighbors="nndescent" (or "auto") with unique=True.')
    if len(x) <= n_components + 1:
        # umap-learn's default spectral start takes n_components + 1 eigenvectors of the
        # n_rows x n_rows graph Laplacian, which scipy cannot give for so few rows (a TypeError
        # from deep inside arpack). A layout of a handful of rows is still well defined and the
        # rows > n_neighbors rule above already admits it, so start from random positions
        # instead of refusing; only an explicit spectral init is refused, as it cannot work.
        init = umap_kwargs.get("init", "spectral")
        if isinstance(init, str) and init in ("spectral", "tswspectral"):
            if "init" in umap_kwargs:
                raise ValueError(
                    f"init={init!r} needs more than n_components + 1 = {n_components + 1} rows, "
                    f"got {len(x)}; pass init='random' (or more rows)."
                )
            umap_kwargs["init"] = "random"
    on_cuda = isinstance(acts, torch.Tensor) and acts.is_cuda
    # umap-learn refuses precomputed neighbours together with unique=True, so "auto" leaves them out
    exact = "precomputed_knn" not in umap_kwargs and not umap_kwargs.get("unique") and (
        neighbors == "exact"
        or (neighbors == "auto" and metric in EXACT_METRICS and (on_cuda or len(x) <= EXACT_MAX_ROWS_CPU))
    )
    if importlib.util.find_spec("umap") is None:  # before any work; imported below, in a bar
        raise ImportError(
            "umap_layout needs umap-learn: pip install umap-learn (it is a dependency of "
            'atlaswidgets, so pip install "atlaswidgets" also brings it).'
        )
    if exact:
        with progress_bar("UMAP neighbours", len(x), "row", progress) as bar:
            idx, dist = exact_neighbors(acts if on_cuda else x, n_neighbors, metric, on_rows=bar.update)
        umap_kwargs["precomputed_knn"] = (idx, dist, None)
    if "tqdm_kwds" not in umap_kwargs:
        # umap-learn draws its epochs bar with tqdm.auto too; these settings make it one of ours
        # (and keep it off with progress=False, whatever umap-learn's verbose says)
        umap_kwargs["tqdm_kwds"] = tqdm_options("UMAP epochs", "epoch", progress)

    with progress_bar("UMAP graph", 1, "step", progress) as graph_bar:
        import umap  # numba's import takes seconds in a fresh process: inside the bar

        reducer = _phased(umap.UMAP, graph_bar)(
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
            # without pynndescent's index umap-learn cannot .transform new data; we never ask it to
            warnings.filterwarnings("ignore", message=".*knn_search_index.*")
            xy = reducer.fit_transform(x)
    xy = np.asarray(xy, dtype=np.float32)
    if not np.isfinite(xy).all():
        raise ValueError(
            "UMAP returned non-finite coordinates; the activations may have many identical or "
            "all-zero rows. Try metric='euclidean' or drop the constant rows."
        )
    return xy


def _phased(umap_class, graph_bar):
    """umap-learn's UMAP, marking the end of its graph phase on ``graph_bar``.

    ``UMAP.fit`` builds the fuzzy graph, then hands it to ``_fit_embed_data``, the hook umap-learn
    keeps for subclasses (its ParametricUMAP overrides it): entering it is where the graph phase
    ends and the embedding (spectral start, then the epochs umap-learn's own bar counts) begins.
    """

    class PhasedUMAP(umap_class):
        def _fit_embed_data(self, *args, **kwargs):
            # closed here, not when the fit returns, so that its time is the graph's alone
            graph_bar.update(graph_bar.total - graph_bar.n)
            graph_bar.close()
            return super()._fit_embed_data(*args, **kwargs)

    return PhasedUMAP


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
    int_at_least(n_neighbors, "n_neighbors", 2)
    if x.shape[0] < n_neighbors + 1:
        raise ValueError(
            f"UMAP with n_neighbors={n_neighbors} needs at least {n_neighbors + 1} rows, got "
            f"{x.shape[0]}; capture more rows or pass a smaller n_neighbors."
        )
    if not np.isfinite(x).all():
        raise ValueError("acts contains NaN or infinite values; check the captured activations.")
    return np.ascontiguousarray(x, dtype=np.float32)
