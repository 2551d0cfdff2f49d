"""The class-comparison atlas of Activation Atlases (Carter et al. 2019): class a against class b.

x is how much a position's activation pushes the model toward a rather than b: its attribution
(activation x gradient) toward the logit difference a - b, summed over channels, divided by the 99th
percentile of its absolute value and clipped to [-1, 1]. The percentile, not the maximum, sets the
scale so that a few extreme positions do not squeeze everyone else into the middle column.
y is a 1-D UMAP embedding of the activations, scaled to [0, 1], so alike positions sit at alike
heights. The plane is binned into a grid whose columns cover x in [-1, 1] whatever the data: the
left half always leans to b and the right half to a, and the middle column boundary is x = 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..cache.cache import ActivationCache, TopExamples, best_rows
from ..cache.progress import checked_progress
from ..cache.targets import Target, n_outputs_of, resolve, stored_targets
from .atlas import Atlas, _checked_layer, _grid_parts, _no_examples, icon_text
from .umap import umap_layout

__all__ = ["ComparisonAtlas", "attribution_rows", "compare_atlas"]


@dataclass(repr=False, kw_only=True)
class ComparisonAtlas(Atlas):
    """A comparison atlas of class ``a`` against class ``b`` over one layer of a cache.

    It is an ``Atlas`` whose layout ``xy`` is the comparison plane, so ``rows_of``, ``examples``
    and ``top_class_names`` work as there. With m visible cells:

    Attributes
    ----------
    layer : str, the layer's name in the cache
    a, b : str, names of the two classes (right side: a, left side: b)
    xy : float32 array, shape (n_rows, 2), columns ``x`` and ``y`` (also as properties)
    x : float32 array, shape (n_rows,), attribution difference a - b scaled to [-1, 1]
    y : float32 array, shape (n_rows,), the 1-D embedding scaled to [0, 1]
    scale : float, the 99th percentile of |a - b| that x was divided by
    diff : float32 array, shape (n_rows,), each row's attribution difference a - b (summed over
        channels, unscaled)
    cells : Cells, columns cover x in [-1, 1], rows cover y in [0, 1]
    icons : uint8 tensor, shape (m, 3, icon_size, icon_size), crop of each cell's ``icon_row``
    icon_row : int64 array, shape (m,), the member that argues most for the cell's side: the
        largest a - b where the cell's mean difference is >= 0, the largest b - a elsewhere. It is
        the first example the cell's panel shows ranked ``by="attribution"``, so the picture and
        the evidence agree (the member nearest the mean activation, ``typical_row``, can be a wok
        without noodles in a cell whose attribution comes from its noodles)
    typical_row : int64 array, shape (m,), the member closest (cosine) to the cell's mean activation
    top_class : int64 array, shape (m,), most common label among the members' samples (-1: unknown)
    top_class_share : float32 array, shape (m,)
    mean_diff : float32 array, shape (m,), mean attribution difference a - b of each cell's members
    mean_attr_a, mean_attr_b : float32 arrays, shape (m,), mean attribution toward a and toward b
        alone, or None when the cache holds only the difference
    """

    a: str
    b: str
    scale: float
    diff: np.ndarray
    mean_diff: np.ndarray
    mean_attr_a: np.ndarray | None = None
    mean_attr_b: np.ndarray | None = None

    def __repr__(self) -> str:
        n = self.cells.n
        return (
            f"ComparisonAtlas({self.a!r} vs {self.b!r}, layer={self.layer!r}, rows={len(self.xy)}, "
            f"cells={len(self.cells.ids)} visible of {n}x{n}, {icon_text(self.icons)})"
        )

    def examples(self, cell_ids, k: int = 12, by: str = "alignment") -> TopExamples:
        """The selection's top dataset examples, best first, at most one row per sample.

        by : "alignment" ranks members by alignment with the selection's mean activation (as in
            every atlas); "attribution" ranks them by how strongly they argue for the side the
            selection leans to: the largest a - b first when the members' mean difference is
            positive (a's side), the largest b - a first otherwise
        cell_ids : int array-like, shape (s,), ids of visible cells
        Returns TopExamples; ``values`` are the alignment scores, or the unscaled differences
        toward the selection's side.
        """
        if by == "alignment":
            return super().examples(cell_ids, k, by)
        if by != "attribution":
            raise ValueError(f'by must be "alignment" or "attribution", got {by!r}.')
        rows = self._selection_rows(cell_ids, k)
        if len(rows) == 0:
            return _no_examples()
        d = self.diff[rows].astype(np.float64)
        side = 1.0 if d.mean() >= 0 else -1.0
        return best_rows(self.acts, side * d, k, rows=rows)

    @property
    def x(self) -> np.ndarray:
        """Scaled attribution difference a - b of every row, shape (n_rows,), in [-1, 1]."""
        return self.xy[:, 0]

    @property
    def y(self) -> np.ndarray:
        """1-D embedding of every row's activation, shape (n_rows,), in [0, 1]."""
        return self.xy[:, 1]


def compare_atlas(
    cache: ActivationCache,
    a,
    b,
    layer: str | None = None,
    grid_size: int = 10,
    min_count: int = 3,
    seed: int = 0,
    n_neighbors: int = 15,
    icon_size: int = 48,
    y=None,
    progress: bool = True,
) -> ComparisonAtlas:
    """Lay a layer's rows out by how much they favour class ``a`` over ``b``, and bin them.

    The attributions must be in the cache already: either the pair (a, b) or both classes alone,
    from ``cache.add_attribution(aw.attribute(model, data, layer, (a, b), cache=cache,
    store=False))``.

    Parameters
    ----------
    cache : ActivationCache with images (``keep_images=True``) for the icons, or a text cache
        (cells without icons)
    a, b : two different classes, by name, id or the kit's "class:3"; or two next-token targets
        of a language model's cache ("token:wok", "token:pan"); a is drawn on the right, b on
        the left
    layer : layer name, or None when the cache holds one layer
    grid_size : int >= 1, cells per side; columns split x in [-1, 1] evenly
    min_count : cells with fewer rows are hidden
    seed, n_neighbors : settings of the 1-D UMAP (see ``umap_layout``)
    icon_size : side of each icon in pixels
    y : array, shape (n_rows,), optional; a precomputed 1-D embedding, which skips UMAP
    progress : True shows the 1-D UMAP's phases as bars (see ``umap_layout``); False hides them

    Returns
    -------
    ComparisonAtlas
    """
    name, la, acts = _checked_layer(cache, layer, grid_size)
    checked_progress(progress)
    n_outputs = n_outputs_of(cache.logits)
    pair = resolve((a, b), cache.classes, n_outputs, cache.vocab)  # unknown names, a == b
    t_a, t_b = pair.parts()
    a_name, b_name = t_a.key(cache.classes, cache.vocab), t_b.key(cache.classes, cache.vocab)
    if la.n_rows < 2:
        raise ValueError(
            f"Layer {name!r} has {la.n_rows} row(s); a comparison atlas needs at least 2. "
            "Capture more data."
        )
    if y is None and la.n_rows <= n_neighbors:
        raise ValueError(
            f"Layer {name!r} has {la.n_rows} rows, too few for a UMAP with n_neighbors="
            f"{n_neighbors} (it needs {n_neighbors + 1}); capture more data, lower n_neighbors "
            "or pass y=..."
        )
    diff, attr_a, attr_b = _differences(cache, name, t_a, t_b)

    x, scale = _scaled(diff)
    if y is None:
        y = umap_layout(acts, n_neighbors=n_neighbors, seed=seed, n_components=1,
                        progress=progress)[:, 0]
    yn = _unit(y, la.n_rows, name)
    xy = np.stack([x, yn], axis=1).astype(np.float32)

    # x is binned over the fixed [-1, 1] so the right half always means a, the left b
    parts = _grid_parts(cache, name, acts, xy, grid_size, min_count, icon_size,
                        bounds=((-1.0, 0.0), (1.0, 1.0)),
                        icon_rows=lambda cells: attribution_rows(diff, cells))
    cells = parts["cells"]
    return ComparisonAtlas(
        **parts, a=a_name, b=b_name, scale=scale,
        diff=diff, mean_diff=_cell_mean(diff, cells),
        mean_attr_a=None if attr_a is None else _cell_mean(attr_a, cells),
        mean_attr_b=None if attr_b is None else _cell_mean(attr_b, cells),
    )


def _differences(cache: ActivationCache, layer: str, t_a: Target, t_b: Target):
    """Per-row attribution difference a - b (two classes or two next-token targets), and toward
    a and b alone when stored.

    Returns (diff, attr_a, attr_b): float32 arrays, shape (n_rows,); attr_a/attr_b may be None.
    """
    la = cache[layer]
    stored = la.attributions
    names, vocab = cache.classes, cache.vocab
    # stored keys by their structure, so a key is found however it was spelled
    held = {t: k for k, t in stored_targets(la, names, n_outputs_of(cache.logits), vocab).items()}
    t_ab, t_ba = Target.pair_of(t_a, t_b), Target.pair_of(t_b, t_a)
    key_ab, key_a, key_b = (t.key(names, vocab) for t in (t_ab, t_a, t_b))

    def total(target):
        return stored[held[target]].float().sum(1).cpu().numpy().astype(np.float32)

    attr_a = total(t_a) if t_a in held else None
    attr_b = total(t_b) if t_b in held else None
    if t_ab in held:
        diff = total(t_ab)
    elif t_ba in held:  # the same pair the other way round
        diff = -total(t_ba)
    elif attr_a is not None and attr_b is not None:
        # logits are linear in the pair, so the gradient of a - b is grad a - grad b
        diff = attr_a - attr_b
    else:
        have = list(stored) or "none yet"
        raise ValueError(
            f"The comparison of {key_a!r} against {key_b!r} needs their attribution on layer "
            f"{layer!r}, which has {have}. Compute it with cache.add_attribution(aw.attribute("
            f"model, data, {layer!r}, {(key_a, key_b)!r}, cache=cache, store=False))."
        )
    if not np.isfinite(diff).all():
        raise ValueError(f"The attribution difference {key_ab!r} has NaN or infinite values.")
    return diff, attr_a, attr_b


def attribution_rows(diff: np.ndarray, cells) -> np.ndarray:
    """Per visible cell, the member that argues most for the side the cell leans to.

    diff : float array, shape (n_rows,), each row's attribution difference a - b
    cells : Cells of the comparison plane (m visible)
    Returns int64 array, shape (m,): the member with the largest a - b in a cell whose mean
    difference is >= 0, the largest b - a elsewhere; ties go to the lowest row. The same row as
    the first of ``ComparisonAtlas.examples([cell], by="attribution")``.
    """
    d = np.asarray(diff, dtype=np.float64)
    cell_of = np.repeat(np.arange(len(cells.ids)), cells.count)
    member = d[cells.order]
    sums = np.bincount(cell_of, weights=member, minlength=len(cells.ids))
    score = np.where(sums[cell_of] >= 0, member, -member)
    # members ascend by row within a cell and lexsort is stable, so the first of each cell's
    # segment is its best member, the lowest row among equals
    rank = np.lexsort((-score, cell_of))
    return cells.order[rank[cells.offsets[:-1]]].astype(np.int64)


def _scaled(diff: np.ndarray) -> tuple[np.ndarray, float]:
    """diff / 99th percentile of |diff|, clipped to [-1, 1]; returns (x float32 (n,), scale)."""
    scale = float(np.percentile(np.abs(diff), 99))
    if scale <= 0:
        # more than 99% of rows have no difference at all: there is nothing to spread out
        scale = float(np.abs(diff).max())
    if scale <= 0:
        raise ValueError(
            "The attribution difference is 0 at every row, so the two classes cannot be told "
            "apart on this layer; pick another layer or another pair of classes."
        )
    return np.clip(diff / scale, -1.0, 1.0).astype(np.float32), scale


def _unit(y, n_rows: int, layer: str) -> np.ndarray:
    """A 1-D embedding min-max scaled to [0, 1], shape (n_rows,); a flat one is all 0."""
    v = y.detach().cpu().numpy() if isinstance(y, torch.Tensor) else np.asarray(y)
    if v.ndim == 2 and v.shape[1] == 1:
        v = v[:, 0]
    if v.shape != (n_rows,) or not np.issubdtype(v.dtype, np.number):
        raise ValueError(
            f"y must be numeric with shape ({n_rows},), one value per row of layer {layer!r}; "
            f"got {v.dtype} {v.shape}."
        )
    v = v.astype(np.float64)
    if not np.isfinite(v).all():
        raise ValueError("y contains NaN or infinite values.")
    lo, hi = v.min(), v.max()
    return ((v - lo) / (hi - lo) if hi > lo else np.zeros_like(v)).astype(np.float32)


def _cell_mean(values: np.ndarray, cells) -> np.ndarray:
    """Mean of a per-row value over each visible cell's members, shape (m,)."""
    visible = cells.row_cell >= 0
    sums = np.bincount(cells.row_cell[visible], weights=values[visible], minlength=len(cells.ids))
    return (sums / cells.count).astype(np.float32)
