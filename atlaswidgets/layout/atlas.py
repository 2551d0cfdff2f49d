"""An activation atlas of one layer: UMAP layout, grid cells, and an icon per cell.

The icon of a cell is a dataset example: the receptive-field crop of the cell's most typical
member, the row whose activation points most nearly the way of the cell's mean activation (cosine);
a comparison atlas crops instead the member that carries the cell's attribution (``icon_row``).
Feature-visualisation icons are rendered separately (``render/icons.py``, the atlas widget).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import torch

from ..cache.cache import ActivationCache, LayerActs, TopExamples, best_rows
from ..cache.checks import int_at_least
from ..cache.crops import boxed_images, crop_rows, display_images
from ..cache.progress import checked_progress
from ..cache.targets import class_name
from .grid import Cells, grid
from .umap import umap_layout

__all__ = ["Atlas", "build_atlas", "cache_identity"]


@dataclass(repr=False)
class Atlas:
    """The atlas of one layer of a cache.

    Attributes
    ----------
    layer : str, the layer's name in the cache
    xy : float32 array, shape (n_rows, 2), the 2-D layout of every row of the layer
    cells : Cells, the visible grid cells (m of them) with their member rows
    icons : uint8 tensor, shape (m, 3, icon_size, icon_size), one picture per cell, the crop of its
        ``icon_row``; None for a text layer (its rows are tokens, with no pictures: a cell is
        shown by a token in context, see ``layout/tokens.py``)
    typical_row : int64 array, shape (m,), the member closest (cosine) to the cell's mean activation
    icon_row : int64 array, shape (m,), the member each cell's picture is cropped from: its
        ``typical_row`` here; a comparison atlas picks the member that carries the cell's
        attribution (``ComparisonAtlas``)
    top_class : int64 array, shape (m,), most common label among the members' samples (-1: unknown)
    top_class_share : float32 array, shape (m,), the share of members with that label
    classes : class names indexed by label, or None
    acts : the cache's LayerActs of ``layer`` (a reference, not a copy), for queries
    min_count : the fewest rows a visible cell holds (cells with fewer were hidden)
    built_from : ``cache_identity`` of the cache the atlas was built from, or None when that cache
        had no capture fingerprint (one put together by hand); ``check_cache`` compares it
    """

    layer: str
    xy: np.ndarray
    cells: Cells
    icons: torch.Tensor | None
    typical_row: np.ndarray
    top_class: np.ndarray
    top_class_share: np.ndarray
    classes: list[str] | None = None
    acts: LayerActs | None = field(default=None)
    min_count: int = 3
    built_from: dict | None = None
    icon_row: np.ndarray | None = None

    def __post_init__(self):
        if self.icon_row is None:
            self.icon_row = self.typical_row

    def __repr__(self) -> str:
        n = self.cells.n
        return (
            f"Atlas(layer={self.layer!r}, rows={len(self.xy)}, cells={len(self.cells.ids)} "
            f"visible of {n}x{n}, {icon_text(self.icons)})"
        )

    @property
    def top_class_names(self) -> list[str]:
        """Name of each cell's most common class ("class:3" without names, "?" where unknown)."""
        return [class_name(int(c), self.classes) for c in self.top_class]

    def check_cache(self, cache: ActivationCache) -> None:
        """Raise ValueError unless ``cache`` holds the rows this atlas was built from.

        Checks that the cache has the atlas's layer with as many rows and, when both this atlas
        and the cache carry a capture fingerprint, that they name the same model, data and
        sampling (``cache_identity``). Two captures of the same model and data pass (their rows
        are the same); a cache put together by hand, without a fingerprint, is checked by layer
        and row count only.
        """
        rebuild = (f"aw.build_atlas(cache, {self.layer!r}, ...)" if type(self) is Atlas else
                   f"the function that made this {type(self).__name__}, given this cache")
        how = f"rebuild the atlas with {rebuild} or pass the cache the atlas was built from."
        if self.layer not in cache.layers:
            raise ValueError(f"The atlas shows layer {self.layer!r}, which this cache lacks "
                             f"({list(cache.layers)}); {how}")
        n_rows = cache[self.layer].n_rows
        if n_rows != len(self.xy):
            raise ValueError(f"The atlas has {len(self.xy)} rows but the cache's layer "
                             f"{self.layer!r} has {n_rows}; {how}")
        theirs = cache_identity(cache)
        if self.built_from is not None and theirs is not None and theirs != self.built_from:
            what = [k for k in ("model", "data", "policy") if theirs.get(k) != self.built_from.get(k)]
            raise ValueError(
                f"This atlas was built from another cache (its {' and '.join(what)} "
                f"differ{'s' if len(what) == 1 else ''}: another capture, e.g. a re-run capture "
                f"cell); {how}"
            )

    def regrid(self, cache: ActivationCache, grid_size: int) -> "Atlas":
        """The same layout binned into a ``grid_size`` x ``grid_size`` grid: no new UMAP run.

        Keeps ``xy``, ``min_count`` and the icon size. With ``grid_size = 2 * cells.n`` every cell
        (r, c) of the new grid lies inside cell (r // 2, c // 2) of this one, because both grids
        normalise the layout by the same minimum and maximum; a zoomed-in atlas uses that.

        cache : the ActivationCache this atlas was built from (for the icons and class counts)
        Returns a new Atlas. Raises ValueError when no cell of the new grid holds ``min_count`` rows.
        """
        if type(self) is not Atlas:
            raise TypeError(
                f"regrid re-bins a plain Atlas; a {type(self).__name__} has its own builder "
                "(compare_atlas(..., y=atlas.y, grid_size=...) for a comparison atlas)."
            )
        self.check_cache(cache)  # the layout's rows must be this cache's rows
        return build_atlas(cache, self.layer, grid_size=grid_size, min_count=self.min_count,
                           icon_size=icon_size_of(self.icons), xy=self.xy)

    def rows_of(self, cell_ids) -> np.ndarray:
        """Row indices of all members of the given cells (by id); see ``Cells.rows_of``."""
        return self.cells.rows_of(cell_ids)

    def examples(self, cell_ids, k: int = 12, by: str = "alignment") -> TopExamples:
        """The selection's top dataset examples: its members ranked by alignment with its mean.

        The direction is the mean activation of all members of the given cells; members are scored
        by their dot product with it and only the best row of each sample is kept, so up to ``k``
        distinct samples come back, best first.

        cell_ids : int array-like, shape (s,), ids of visible cells (``cells.ids``)
        by : "alignment", the only ranking of a plain atlas (a comparison atlas has another)
        Returns TopExamples with up to ``k`` rows; empty when ``cell_ids`` is empty.
        """
        if by != "alignment":
            raise ValueError(
                f'by must be "alignment" for an atlas without attributions, got {by!r}; '
                '"attribution" ranks the members of a comparison atlas (aw.compare_atlas).'
            )
        rows = self._selection_rows(cell_ids, k)
        if len(rows) == 0:
            return _no_examples()
        la = self.acts
        rows_t = torch.as_tensor(rows, device=la.acts.device)
        member_acts = la.acts[rows_t].float()
        scores = member_acts @ member_acts.mean(0)  # one matmul over the selection
        return best_rows(la, scores, k, rows=rows_t)

    def _selection_rows(self, cell_ids, k) -> np.ndarray:
        """Checks shared by the example queries; returns the selection's member rows."""
        int_at_least(k, "k", 1)
        if self.acts is None:
            raise ValueError("This atlas has no activations attached; build it with build_atlas().")
        return self.rows_of(cell_ids)

    def example_images(self, cache: ActivationCache, cell_ids, k: int = 12, size: int = 96,
                       **kwargs) -> tuple[TopExamples, torch.Tensor]:
        """The selection's top examples (``examples``) and their pictures, each the whole sample
        image with the example's receptive field outlined.

        cache : the ActivationCache the atlas was built from (for the images)
        kwargs : passed on to ``examples`` (e.g. ``by=`` of a comparison atlas)
        Returns (TopExamples, uint8 tensor shape (len(examples), 3, size, size)).
        """
        self.check_cache(cache)  # the pictures must be of the examples' own samples
        if cache[self.layer].kind == "tokens":
            raise ValueError(f"Layer {self.layer!r} is a text layer: its examples are tokens, with no "
                             "pictures. Use atlas.examples(cell_ids) for their rows (sample_id, "
                             "token index in yx[:, 1]) and show them in context with cache.tokens "
                             "and cache.vocab.")
        ex = self.examples(cell_ids, k=k, **kwargs)
        return ex, boxed_images(cache, self.layer, ex.rows, size=size)


def icon_text(icons) -> str:
    """The icons part of an atlas's repr: "icon_size=48", or "text cells" without icons."""
    return "text cells" if icons is None else f"icon_size={icons.shape[-1]}"


def icon_size_of(icons, default: int = 48) -> int:
    """The icons' side in pixels (``default`` for a text atlas, which has none)."""
    return default if icons is None else int(icons.shape[-1])


def _no_examples() -> TopExamples:
    return TopExamples(
        sample_id=np.zeros(0, np.int64), yx=np.zeros((0, 2), np.int64),
        values=np.zeros(0, np.float32), rows=np.zeros(0, np.int64),
    )


def build_atlas(
    cache: ActivationCache,
    layer: str | None = None,
    grid_size: int = 20,
    min_count: int = 3,
    seed: int = 0,
    n_neighbors: int = 15,
    min_dist: float = 0.5,
    icon_size: int = 48,
    xy=None,
    progress: bool = True,
) -> Atlas:
    """Lay out a layer's rows with UMAP, bin them into a grid and give every visible cell an icon.

    Parameters
    ----------
    cache : ActivationCache with images (captured with ``keep_images=True``) for the icons, or a
        text cache (a token layer: cells get no icons, ``Atlas.icons`` is None)
    layer : layer name, or None when the cache holds one layer
    grid_size : cells per side of the grid
    min_count : cells with fewer rows are hidden
    seed, n_neighbors, min_dist : UMAP settings (see ``umap_layout``). ``min_dist`` is 0.5, not
        umap-learn's 0.1: tight clumps leave most grid cells empty (kitchen block4, 8,000 rows,
        20x20 grid: 156 visible cells at 0.1, 288 at 0.5), and the atlas needs cells, not clusters
    icon_size : side of each icon in pixels
    xy : array, shape (n_rows, 2), optional; a precomputed layout, which skips UMAP
    progress : True shows the UMAP's phases as bars (see ``umap_layout``); False hides them

    Returns
    -------
    Atlas
    """
    checked_progress(progress)
    name, la, acts = _checked_layer(cache, layer, grid_size)
    xy = _layout(name, la, acts, xy, seed, n_neighbors, min_dist, progress)
    return Atlas(**_grid_parts(cache, name, acts, xy, grid_size, min_count, icon_size))


def _layout(name, la, acts, xy, seed, n_neighbors, min_dist, progress=True) -> np.ndarray:
    """The 2-D layout of a layer's rows: UMAP when ``xy`` is None, else ``xy`` checked."""
    if xy is None:
        return umap_layout(acts, n_neighbors=n_neighbors, min_dist=min_dist, seed=seed,
                           progress=progress)
    xy = xy.detach().cpu().numpy() if isinstance(xy, torch.Tensor) else np.asarray(xy)
    if xy.shape != (la.n_rows, 2):
        raise ValueError(
            f"xy must have shape ({la.n_rows}, 2), one point per row of layer {name!r}; "
            f"got {xy.shape}."
        )
    return xy.astype(np.float32)


def _checked_layer(cache: ActivationCache, layer: str | None, grid_size) -> tuple[str, LayerActs, torch.Tensor]:
    """Checks shared by the atlas builders; returns the layer's name, data and float activations."""
    if not isinstance(cache, ActivationCache):
        raise TypeError(f"cache must be an ActivationCache, got {type(cache).__name__}.")
    int_at_least(grid_size, "grid_size", 1)
    name = cache.layer_name(layer)
    la = cache[name]
    if la.n_rows == 0:
        raise ValueError(f"Layer {name!r} has no rows; capture some data first.")
    if la.kind != "tokens":  # a text layer's cells are shown as tokens, not crops
        display_images(cache)  # icons are crops of them: fail before the slow layout, not after
    acts = la.acts.float()
    if not torch.isfinite(acts).all():
        raise ValueError(f"Layer {name!r} has NaN or infinite activations; check the model.")
    return name, la, acts


def _grid_parts(cache, name, acts, xy, grid_size, min_count, icon_size, bounds=None, keep=None,
                icon_rows=None) -> dict:
    """Bin a layout into cells and give each its typical row, top class and icon: the fields
    every atlas has, as keyword arguments for Atlas or a subclass.

    icon_rows : a function (Cells -> int64 array (m,)) picking the member each cell's picture is
        cropped from; None: the typical row
    """
    la = cache[name]
    with warnings.catch_warnings():
        # grid warns when every cell is hidden; an atlas refuses that case below with its own words
        warnings.filterwarnings("ignore", message="grid: no cell", category=UserWarning)
        cells = grid(xy, grid_size, acts=acts, min_count=min_count, bounds=bounds, keep=keep)
    if len(cells.ids) == 0:
        n_rows = la.n_rows if keep is None else int(np.count_nonzero(keep))
        raise ValueError(
            f"No cell of the {grid_size}x{grid_size} grid holds {min_count} rows or more "
            f"({n_rows} rows in all); lower min_count or grid_size."
        )
    typical = _typical_rows(acts, cells)
    shown = typical if icon_rows is None else np.asarray(icon_rows(cells), dtype=np.int64)
    top_class, share = _top_classes(cache, la, cells)
    icons = None if la.kind == "tokens" else crop_rows(cache, name, shown, size=icon_size)
    return dict(
        layer=name, xy=xy, cells=cells, icons=icons, typical_row=typical, icon_row=shown,
        top_class=top_class, top_class_share=share, classes=cache.classes, acts=la,
        min_count=int(min_count), built_from=cache_identity(cache),
    )


# policy entries that do not change which rows a capture holds: whether it kept images, at what
# size, and which statistics it streamed (the sampled positions depend on seed, sample and shape)
_NOT_ROWS = ("keep_images", "display_size", "stats")


def cache_identity(cache: ActivationCache) -> dict | None:
    """What decides the rows of a captured cache: its model's weights, its data and its sampling.

    Read from ``cache.meta["fingerprint"]`` (written by ``capture`` once it has seen all the data,
    and kept by ``save``/``load``). Two captures with equal identities hold the same rows, whatever
    layers or extras they also captured.

    Returns a JSON-able dict {"model", "data", "policy"}, or None for a cache without a complete
    fingerprint (one put together by hand).
    """
    meta = cache.meta if isinstance(cache.meta, dict) else {}
    fp = meta.get("fingerprint")
    if not isinstance(fp, dict) or fp.get("model") is None or fp.get("data") is None:
        return None
    policy = fp.get("policy") if isinstance(fp.get("policy"), dict) else {}
    return {
        "model": fp["model"],
        "data": fp["data"],
        "policy": {k: v for k, v in policy.items() if k not in _NOT_ROWS},
    }


def _typical_rows(acts: torch.Tensor, cells: Cells) -> np.ndarray:
    """Per cell, the member with the highest cosine similarity to the cell's mean activation."""
    order = torch.as_tensor(cells.order, device=acts.device)
    means = torch.as_tensor(cells.mean_act, device=acts.device)
    member = acts[order]
    cell_of = torch.as_tensor(np.repeat(np.arange(len(cells.ids)), cells.count), device=acts.device)
    cos = torch.nn.functional.cosine_similarity(member, means[cell_of], dim=1, eps=1e-8)
    cos = cos.cpu().numpy()
    # sort each cell's members by similarity (best first); the first of each segment wins
    rank = np.lexsort((-cos, cell_of.cpu().numpy()))
    return cells.order[rank[cells.offsets[:-1]]].astype(np.int64)


def _top_classes(cache: ActivationCache, la: LayerActs, cells: Cells) -> tuple[np.ndarray, np.ndarray]:
    labels = cache.labels.cpu().numpy()[la.sample_id.cpu().numpy()[cells.order]]
    m = len(cells.ids)
    n_classes = max(int(labels.max(initial=-1)) + 1, len(cache.classes or []), 1)
    cell_of = np.repeat(np.arange(m), cells.count)
    known = labels >= 0
    table = np.bincount(
        cell_of[known] * n_classes + labels[known], minlength=m * n_classes
    ).reshape(m, n_classes)
    top = table.argmax(1).astype(np.int64)
    share = table[np.arange(m), top] / cells.count
    top[table.sum(1) == 0] = -1  # no member has a known label
    return top, share.astype(np.float32)


