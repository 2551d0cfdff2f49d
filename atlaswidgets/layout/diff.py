"""A diff atlas: model b's layer laid out as an atlas, each cell scored by what model a lacks.

``atlaswidgets.experiments.diff`` measures, for every row of model b's layer, the share of its
activation that model a's same layer cannot explain (its "novelty", in [0, 1]); this module
turns those per-row scores into an atlas whose cells carry their members' mean novelty, so the
regions of b's representation with no counterpart in a are the cells at the top of the scale.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..cache.cache import ActivationCache
from .atlas import Atlas, _checked_layer, _grid_parts, _layout, icon_size_of
from .compare import _cell_mean

__all__ = ["DiffAtlas", "diff_atlas"]


@dataclass(repr=False, kw_only=True)
class DiffAtlas(Atlas):
    """An atlas of model b's layer whose cells are scored by novelty against model a.

    It is an ``Atlas`` (``rows_of``, ``examples``, ``example_images``, ``top_class_names`` work as
    there) of the cache captured from model b, with m visible cells and:

    Attributes
    ----------
    names : (str, str), the names of model a (the reference) and model b (the one laid out)
    novelty : float32 array, shape (n_rows,), per row of b's layer the share of its centred
        activation that a's layer leaves unexplained, in [0, 1]
    mean_novelty : float32 array, shape (m,), the mean novelty of each visible cell's members
    scale : float > 0, the novelty drawn at the top of the colour scale (the largest cell mean,
        so the most novel cell is always at the top)
    """

    names: tuple[str, str]
    novelty: np.ndarray
    mean_novelty: np.ndarray
    scale: float

    def __repr__(self) -> str:
        a, b = self.names
        return (f"DiffAtlas({b!r} against {a!r}, layer={self.layer!r}, cells={len(self.cells.ids)}, "
                f"max cell novelty={float(self.mean_novelty.max()):.3f})")

    def ranked_cells(self) -> np.ndarray:
        """Visible cell ids, most novel first."""
        return self.cells.ids[np.argsort(-self.mean_novelty, kind="stable")]

    def regrid(self, cache: ActivationCache, grid_size: int) -> "DiffAtlas":
        """The same layout and novelty binned into ``grid_size`` cells per side (no UMAP run)."""
        return diff_atlas(cache, self.novelty, self.names, self.layer, grid_size=grid_size,
                          min_count=self.min_count, icon_size=icon_size_of(self.icons), xy=self.xy)


def diff_atlas(
    cache: ActivationCache,
    novelty,
    names=("a", "b"),
    layer: str | None = None,
    grid_size: int = 20,
    min_count: int = 3,
    seed: int = 0,
    n_neighbors: int = 15,
    min_dist: float = 0.5,
    icon_size: int = 48,
    xy=None,
) -> DiffAtlas:
    """Lay out model b's layer (``cache``) with UMAP and score each cell by mean ``novelty``.

    cache : ActivationCache captured from model b, with images for the icons
    novelty : array-like, shape (n_rows,), one finite value in [0, 1] per row of the layer
    names : (name of a, name of b), shown in the legend as text
    The other arguments are ``build_atlas``'s.
    """
    name, la, acts = _checked_layer(cache, layer, grid_size)
    nov = np.asarray(novelty.detach().cpu() if hasattr(novelty, "detach") else novelty)
    if nov.shape != (la.n_rows,):
        raise ValueError(
            f"novelty must have shape ({la.n_rows},), one value per row of layer {name!r}; "
            f"got {nov.shape}."
        )
    nov = nov.astype(np.float32)
    if not np.isfinite(nov).all() or nov.min() < 0 or nov.max() > 1:
        raise ValueError("novelty must hold finite values in [0, 1].")
    if not (isinstance(names, (tuple, list)) and len(names) == 2):
        raise TypeError(f"names must be a pair (name of a, name of b), got {names!r}.")
    xy = _layout(name, la, acts, xy, seed, n_neighbors, min_dist)
    parts = _grid_parts(cache, name, acts, xy, grid_size, min_count, icon_size)
    mean = _cell_mean(nov, parts["cells"])
    return DiffAtlas(**parts, names=(str(names[0]), str(names[1])), novelty=nov,
                     mean_novelty=mean, scale=float(max(mean.max(), 1e-6)))
