"""The class activation atlas of Activation Atlases (Carter et al. 2019): one class's positions.

A class atlas shows only the positions of a layer that argue for one class: those whose attribution
(activation x gradient, summed over channels) toward that class is the largest among the classes
compared (its "top-1 attributed class"), plus the ``top_n`` positions attributed most to it whatever
the others say, so a class that rarely wins still gets its strongest evidence drawn. Those rows get
their own UMAP layout and grid. The other rows stay in the layer but belong to no cell, so cells
hold the layer's own row indices and every query (``rows_of``, ``examples``, crops, the widgets)
works as on a full atlas of the same cache.

The top-1 class is taken among the classes whose attributions the cache holds for the layer:
attribute every class for the article's definition (``cache.add_attribution(aw.attribute(model,
data, layer, list(range(n_classes)), cache=cache, store=False))``, one pass), or a few rival classes for a cheaper, narrower one; ``compared``
records which classes took part.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..cache.cache import ActivationCache
from ..cache.checks import non_negative_int
from ..cache.progress import checked_progress
from ..cache.targets import n_outputs_of, resolve, stored_targets
from .atlas import Atlas, _checked_layer, _grid_parts
from .umap import umap_layout

__all__ = ["ClassAtlas", "class_atlas"]


@dataclass(repr=False, kw_only=True)
class ClassAtlas(Atlas):
    """The atlas of the positions that argue for one class.

    Beside the ``Atlas`` fields (``xy`` is NaN for rows outside the class atlas):

    Attributes
    ----------
    cls : str, the class's name (or "class:3" without names)
    compared : list[str], the classes whose attributions were compared for the top-1 test
    kept : bool array, shape (n_rows,), the rows in the class atlas
    top1 : bool array, shape (n_rows,), the rows whose top-1 attributed class is ``cls``
    attribution : float32 array, shape (n_rows,), every row's attribution toward ``cls``,
        summed over channels
    mean_attr : float32 array, shape (m,), mean attribution toward ``cls`` of each cell's members
    """

    cls: str
    compared: list[str]
    kept: np.ndarray
    top1: np.ndarray
    attribution: np.ndarray
    mean_attr: np.ndarray

    def __repr__(self) -> str:
        n = self.cells.n
        return (
            f"ClassAtlas({self.cls!r}, layer={self.layer!r}, rows={int(self.kept.sum())} of "
            f"{len(self.kept)} (top-1 among {len(self.compared)} classes: {int(self.top1.sum())}), "
            f"cells={len(self.cells.ids)} visible of {n}x{n})"
        )


def class_atlas(
    cache: ActivationCache,
    cls,
    layer: str | None = None,
    top_n: int = 100,
    grid_size: int = 12,
    min_count: int = 3,
    seed: int = 0,
    n_neighbors: int = 15,
    min_dist: float = 0.5,
    icon_size: int = 48,
    progress: bool = True,
) -> ClassAtlas:
    """Lay out and grid the positions of ``layer`` that argue most for class ``cls``.

    Parameters
    ----------
    cache : ActivationCache with images, and attributions toward ``cls`` and at least one other
        class on ``layer`` (single-class targets, from ``cache.add_attribution(aw.attribute(model,
        data, layer, [c1, c2, ...], cache=cache, store=False))``)
    cls : the class, by name or id; or on a language model's cache a next token ("token:wok"),
        compared with the other next-token targets stored for the layer
    layer : layer name, or None when the cache holds one layer
    top_n : int >= 0, rows with the largest attribution toward ``cls`` that are kept even when
        another class wins them
    grid_size, min_count, seed, n_neighbors, min_dist, icon_size : as in ``build_atlas``; the
        grid is coarser by default because a class keeps a fraction of the rows
    progress : True shows the UMAP's phases as bars (see ``umap_layout``); False hides them

    Returns
    -------
    ClassAtlas
    """
    name, la, acts = _checked_layer(cache, layer, grid_size)
    non_negative_int(top_n, "top_n")
    checked_progress(progress)
    n_outputs = n_outputs_of(cache.logits)
    # unknown names get close suggestions
    target = resolve(cls, cache.classes, n_outputs, cache.vocab)
    if target.is_pair:
        raise ValueError(f"A class atlas shows one class (or one next token); got the pair {cls!r}. "
                         "Use compare_atlas for two.")
    cls_key = target.key(cache.classes, cache.vocab)
    per_class = _class_attributions(cache, name, n_outputs, target.per_token)
    if cls_key not in per_class:
        raise ValueError(
            f"Layer {name!r} has no attribution toward {cls_key!r} (it has "
            f"{list(la.attributions) or 'none yet'}). Compute it with cache.add_attribution("
            f"aw.attribute(model, data, {name!r}, {cls_key!r}, cache=cache, store=False))."
        )
    if len(per_class) < 2:
        raise ValueError(
            f"A class atlas compares {cls_key!r} with other classes, but layer {name!r} has "
            "attributions toward only one class. Attribute the others too, e.g. "
            f"cache.add_attribution(aw.attribute(model, data, {name!r}, list(range(n_classes)), "
            "cache=cache, store=False))."
        )
    keys = list(per_class)
    table = np.stack([per_class[k] for k in keys], axis=1)  # (n_rows, n_compared)
    mine = table[:, keys.index(cls_key)]
    top1 = table.argmax(1) == keys.index(cls_key)
    kept = top1.copy()
    if top_n:
        kept[np.argsort(-mine, kind="stable")[: int(top_n)]] = True
    n_kept = int(kept.sum())
    if n_kept <= n_neighbors:
        raise ValueError(
            f"Only {n_kept} rows of layer {name!r} argue for {cls_key!r}, too few for a UMAP with "
            f"n_neighbors={n_neighbors}; raise top_n, lower n_neighbors, or capture more data."
        )

    xy = np.full((la.n_rows, 2), np.nan, dtype=np.float32)
    rows = np.flatnonzero(kept)
    xy[rows] = umap_layout(acts[torch.as_tensor(rows, device=acts.device)],
                           n_neighbors=n_neighbors, min_dist=min_dist, seed=seed, progress=progress)
    parts = _grid_parts(cache, name, acts, xy, grid_size, min_count, icon_size, keep=kept)
    cells = parts["cells"]
    # rows of hidden cells have row_cell -1; shifting by one keeps them out of the sums
    sums = np.bincount(cells.row_cell[kept] + 1, weights=mine[kept],
                       minlength=len(cells.ids) + 1)[1:]
    return ClassAtlas(
        **parts, cls=cls_key, compared=keys, kept=kept, top1=top1,
        attribution=mine.astype(np.float32), mean_attr=(sums / cells.count).astype(np.float32),
    )


def _class_attributions(cache: ActivationCache, layer: str, n_outputs: int | None,
                        per_token: bool = False) -> dict:
    """Per-row total attribution toward each single class (or, ``per_token``, each next token)
    stored for ``layer``, in id order, keyed by its spelling (``Target.key``)."""
    la = cache[layer]
    single = "token" if per_token else "class"
    held = {t: k for k, t in stored_targets(la, cache.classes, n_outputs, cache.vocab).items()
            if t.kind == single}
    out = {}
    for target in sorted(held, key=lambda t: t.ids):
        key = target.key(cache.classes, cache.vocab)
        total = la.attributions[held[target]].float().sum(1).cpu().numpy().astype(np.float32)
        if not np.isfinite(total).all():
            raise ValueError(f"The attribution toward {key!r} has NaN or infinite values.")
        out[key] = total
    return out
