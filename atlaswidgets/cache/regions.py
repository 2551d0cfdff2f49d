"""Where in the input image a cached row looks: receptive-field boxes, and overlap with annotations.

A row at grid position (y, x) of a layer with an (H, W) grid sits at the centre of input pixel
((y + 0.5) * H_in / H, (x + 0.5) * W_in / W); its box is the layer's measured receptive field
around that centre, clipped to the image. Rows of the "mean" policy (yx = -1) see the whole image.
"""

from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import numpy as np
import torch

from .cache import ActivationCache

__all__ = ["rf_boxes", "context_share", "overlaps_context"]


def rf_boxes(cache: ActivationCache, layer: str | None = None, rows=None) -> np.ndarray:
    """Receptive-field box of each row in input pixels.

    rows : int array, shape (k,), or None for every row of the layer
    Returns int64 array, shape (k, 4): y0, x0, y1, x1 (y1/x1 exclusive), clipped to the image.
    """
    la = cache.layer(layer)
    h_in, w_in = cache.input_hw
    if h_in <= 0 or w_in <= 0:
        raise ValueError("cache.input_hw is unknown; capture the cache with aw.capture().")
    yx = la.yx.cpu().numpy() if rows is None else la.yx.cpu().numpy()[_as_rows(rows, la.n_rows)]
    gh, gw = la.hw
    rh, rw = la.rf
    cy = (yx[:, 0] + 0.5) * h_in / gh
    cx = (yx[:, 1] + 0.5) * w_in / gw
    boxes = np.stack(
        [np.floor(cy - rh / 2), np.floor(cx - rw / 2), np.ceil(cy + rh / 2), np.ceil(cx + rw / 2)],
        axis=1,
    )
    boxes = np.clip(boxes, 0, [h_in, w_in, h_in, w_in]).astype(np.int64)
    whole = yx[:, 0] < 0
    boxes[whole] = [0, 0, h_in, w_in]
    return boxes


def overlaps_context(
    cache: ActivationCache,
    layer: str | None,
    rows,
    annotations: Sequence[Iterable[Mapping]],
    name: str,
    min_overlap: float = 0.0,
) -> np.ndarray:
    """For each row, whether its receptive field overlaps an annotation called ``name``.

    annotations : per sample of the cache, the list of {"name", "box": [y0, x0, y1, x1]} dicts
    min_overlap : the fraction of the annotation's area that must fall inside the box (0 = any)
    Returns bool array, shape (k,).
    """
    la = cache.layer(layer)
    if len(annotations) != cache.n_samples:
        raise ValueError(
            f"annotations has {len(annotations)} entries but the cache holds {cache.n_samples} "
            "samples; pass the annotations of the same data the cache was captured from."
        )
    rows = np.arange(la.n_rows) if rows is None else _as_rows(rows, la.n_rows)
    boxes = rf_boxes(cache, layer, rows)
    samples = la.sample_id.cpu().numpy()[rows]
    hit = np.zeros(len(rows), dtype=bool)
    # one pass over rows; annotation lists are short (a handful of objects per image)
    for i, (sample, box) in enumerate(zip(samples, boxes)):
        for ann in annotations[sample]:
            if ann["name"] != name:
                continue
            ay0, ax0, ay1, ax1 = ann["box"]
            inter = max(0, min(box[2], ay1) - max(box[0], ay0)) * max(
                0, min(box[3], ax1) - max(box[1], ax0)
            )
            area = max(1, (ay1 - ay0) * (ax1 - ax0))
            if inter > 0 and inter / area >= min_overlap:
                hit[i] = True
                break
    return hit


def context_share(
    cache: ActivationCache,
    layer: str | None,
    rows,
    annotations: Sequence[Iterable[Mapping]],
    name: str,
    min_overlap: float = 0.0,
) -> float:
    """Fraction of the given rows (None = all) whose receptive field overlaps a ``name`` object."""
    hit = overlaps_context(cache, layer, rows, annotations, name, min_overlap)
    if hit.size == 0:
        raise ValueError("No rows given: select at least one cell or pass rows=None for all rows.")
    return float(hit.mean())


def _as_rows(rows, n_rows: int) -> np.ndarray:
    arr = rows.cpu().numpy() if isinstance(rows, torch.Tensor) else np.asarray(rows)
    if arr.ndim != 1 or (arr.size and not np.issubdtype(arr.dtype, np.integer)):
        raise TypeError(f"rows must be a 1-D array of integer row indices, got {arr.dtype} {arr.shape}.")
    if arr.size and (arr.min() < 0 or arr.max() >= n_rows):
        raise ValueError(f"row indices must lie in [0, {n_rows}); got {arr.min()}..{arr.max()}.")
    return arr.astype(np.int64)
