"""Patches from atlas cells, so that discovery in an atlas -> a patch attack is one step.

``patch_from_cell`` cuts the centre of the receptive field of a cell's top dataset example;
``patch_from_icon`` renders the cell's feature visualisation (the article's way: its patches were
icons of the comparison atlas's cells) and cuts the same centre region out of it.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..cache.checks import int_at_least, is_int, non_negative_int, number
from ..cache.cache import ActivationCache

__all__ = ["patch_from_cell", "patch_from_icon", "cell_ranking"]


def patch_from_cell(atlas, cache: ActivationCache, cell: int | None = None, *,
                    size: int | None = None, rank: int = 0, crop: float = 0.5) -> torch.Tensor:
    """A patch from an atlas cell: the centre of the receptive field of the cell's top example.

    (Feature-visualisation icons will replace the crop once they exist.) Members of the cell are
    ranked, best sample first, one row per sample:
    - ComparisonAtlas: by attribution difference ``atlas.diff``, most toward ``atlas.a`` first;
    - Atlas: by alignment with the cell's mean activation (``atlas.examples``).

    Parameters
    ----------
    atlas : Atlas or ComparisonAtlas built from ``cache``
    cache : the ActivationCache the atlas was built from, with images (``keep_images=True``)
    cell : a visible cell id (``atlas.cells.ids``); None on a ComparisonAtlas picks the cell
        with the largest ``mean_diff`` (the one pushing hardest toward ``a``)
    size : side of the patch in pixels; default the crop's side in the model's input pixels
        (the display copies may be smaller than the input: the cut is then enlarged to it)
    rank : 0 for the top example, 1 for the next sample, ...
    crop : float in (0, 1], the side of the cut as a share of the receptive field's, centred on
        the position. A position's effective receptive field is concentrated at its centre, and
        the whole field often holds the object the evidence sits next to: on the kitchen model
        (block4, receptive field 46 px at 64 px), patches from the most wok-attributed cell's top
        5 examples flipped 43-70% of test frying pans as whole-field cuts and 83-100% as half-field
        cuts (noise: 10%)

    Returns
    -------
    float32 tensor, shape (3, size, size), RGB in [0, 1] (the cache's display images). For a model
    that takes normalised input, normalise the patch like the images before ``patch_attack``.
    """
    from ..cache.crops import crop_rows, display_images, rf_windows

    _check_atlas_cache(atlas, cache)
    images = display_images(cache)  # a clear error for a cache without images
    non_negative_int(rank, "rank")
    ranked = cell_ranking(atlas, cell)
    if rank >= len(ranked):
        raise ValueError(f"The cell has {len(ranked)} distinct example image(s), so rank must be "
                         f"< {len(ranked)}; got {rank}.")
    row = int(ranked[rank])
    la = cache[atlas.layer]
    number(crop, "crop", 0, 1, low_open=True)
    if size is None:  # in input pixels, so the patch covers as much of an input image as the crop
        hw = cache.input_hw if min(cache.input_hw) > 0 else images.shape[-2:]
        _, _, ch, cw = rf_windows(cache, la, hw, la.yx.cpu()[[row]], fraction=crop)
        size = max(ch, cw)
    else:
        int_at_least(size, "size", 1)
    cut = crop_rows(cache, atlas.layer, np.array([row]), size=int(size), fraction=crop)[0]
    return cut.float() / 255.0


def patch_from_icon(model: nn.Module, atlas, cache: ActivationCache, cell: int | None = None, *,
                    size: int | None = None, crop: float = 0.5, steps: int = 128, seed: int = 0,
                    store=None, progress: bool = True, **render_kwargs) -> torch.Tensor:
    """A patch from an atlas cell's feature visualisation: render the icon of the cell's mean
    activation (``render_icons``, whitened by the cache) at the model's input size and cut the
    centre of the receptive field of the centre position, which the icon objective targets.

    Parameters
    ----------
    model : the model the cache was captured from, taking images of ``cache.input_hw``
    atlas, cache, cell : as in ``patch_from_cell`` (cell None: the most a-attributed cell of a
        ComparisonAtlas)
    size : side of the patch in pixels; default the cut's own side
    crop : float in (0, 1], the cut's side as a share of the receptive field's
    steps, seed, store, progress, render_kwargs : passed to ``render_icons`` (``store`` keeps the
        icon on disk, so asking again is instant)

    Returns
    -------
    float32 tensor, shape (3, size, size), RGB in [0, 1]
    """
    from ..cache.crops import rf_windows
    from ..render.icons import render_icons

    _check_atlas_cache(atlas, cache)
    cell = _cell_id(atlas, cell)
    number(crop, "crop", 0, 1, low_open=True)
    h, w = (int(v) for v in cache.input_hw)
    if h <= 0 or h != w:
        raise ValueError(f"patch_from_icon renders square icons at the model's input size; this "
                         f"cache records input size {cache.input_hw}.")
    k = int(atlas.cells.index([cell])[0])
    direction = torch.as_tensor(atlas.cells.mean_act[k : k + 1])
    icon = render_icons(model, atlas.layer, direction, size=h, steps=steps, seed=seed,
                        whiten=cache, store=store, progress=progress, **render_kwargs).icons[0]
    la = cache[atlas.layer]
    centre = torch.tensor([[la.hw[0] // 2, la.hw[1] // 2]])
    y0, x0, ch, cw = rf_windows(cache, la, (h, w), centre, fraction=crop)
    cut = icon[:, int(y0[0]) : int(y0[0]) + ch, int(x0[0]) : int(x0[0]) + cw].float()[None]
    if size is None:
        size = max(ch, cw)
    int_at_least(size, "size", 1)
    cut = torch.nn.functional.interpolate(cut, size=(int(size), int(size)), mode="bilinear",
                                          align_corners=False, antialias=True)[0]
    return (cut / 255.0).clamp(0.0, 1.0)


def cell_ranking(atlas, cell: int | None = None) -> np.ndarray:
    """The members of an atlas cell in the order ``patch_from_cell``'s ``rank`` counts them.

    One row per sample (its best row), best sample first: by attribution difference toward
    ``atlas.a`` on a ComparisonAtlas, by alignment with the cell's mean activation on an Atlas.
    cell : a visible cell id; None on a ComparisonAtlas: the cell with the largest ``mean_diff``
    Returns int64 array of row indices of the atlas's layer, shape (k,).
    """
    from ..layout.compare import ComparisonAtlas

    cell = _cell_id(atlas, cell)
    if not isinstance(atlas, ComparisonAtlas):
        return atlas.examples([int(cell)], k=int(atlas.cells.count.max())).rows
    if atlas.acts is None:
        raise ValueError("This atlas has no activations attached; build it with aw.compare_atlas().")
    rows = atlas.rows_of([int(cell)])
    order = rows[np.argsort(-atlas.diff[rows], kind="stable")]
    # the best row of each sample, best samples first
    _, first = np.unique(atlas.acts.sample_id.cpu().numpy()[order], return_index=True)
    return order[np.sort(first)].astype(np.int64)


def _cell_id(atlas, cell) -> int:
    """A visible cell id; None on a ComparisonAtlas: the cell with the largest mean_diff."""
    from ..layout.compare import ComparisonAtlas

    ids = atlas.cells.ids
    if cell is None:
        if not isinstance(atlas, ComparisonAtlas):
            raise ValueError("cell=None picks the most a-attributed cell of a ComparisonAtlas; "
                             "for a plain Atlas pass a cell id from atlas.cells.ids.")
        return int(ids[int(np.argmax(atlas.mean_diff))])
    if not is_int(cell):
        raise TypeError(f"cell must be an int cell id (see atlas.cells.ids), got {cell!r}.")
    if int(cell) not in set(ids.tolist()):
        n = atlas.cells.n
        raise ValueError(f"Cell {cell} is not a visible cell of this {n}x{n} atlas (hidden or out "
                         f"of range); pick one of atlas.cells.ids ({len(ids)} cells, "
                         f"{ids[:8].tolist()}...).")
    return int(cell)


def _check_atlas_cache(atlas, cache) -> None:
    from ..layout.atlas import Atlas

    if not isinstance(atlas, Atlas):
        raise TypeError(f"atlas must be an Atlas or ComparisonAtlas (aw.build_atlas / "
                        f"aw.compare_atlas), got {type(atlas).__name__}.")
    if not isinstance(cache, ActivationCache):
        raise TypeError(f"cache must be an ActivationCache, got {type(cache).__name__}.")
    _check_match(atlas, cache)


def _check_match(atlas, cache: ActivationCache) -> None:
    """The atlas must have been built from this cache: same layer, rows and activations."""
    hint = "pass the cache the atlas was built from (or rebuild the atlas from this cache)."
    if atlas.layer not in cache.layers:
        raise ValueError(f"The atlas shows layer {atlas.layer!r}, which this cache does not have "
                         f"({list(cache.layers)}); {hint}")
    la = cache[atlas.layer]
    if la.n_rows != len(atlas.xy):
        raise ValueError(f"The atlas has {len(atlas.xy)} rows of layer {atlas.layer!r} but the "
                         f"cache has {la.n_rows}; {hint}")
    ref = atlas.acts
    if ref is not None and ref is not la:
        same = (ref.acts.shape == la.acts.shape and torch.equal(ref.sample_id.cpu(), la.sample_id.cpu())
                and torch.equal(ref.yx.cpu(), la.yx.cpu())
                and torch.equal(ref.acts.cpu(), la.acts.cpu()))
        if not same:
            raise ValueError(f"The cache's rows of layer {atlas.layer!r} differ from the atlas's; "
                             f"{hint}")
