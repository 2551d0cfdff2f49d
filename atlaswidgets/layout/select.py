"""What a selection of atlas cells means in activation space, and where a channel is strongest.

Plain functions on an Atlas (or ComparisonAtlas) with its activations attached; the Explorer calls
them to link its atlases and its neuron viewer, and a notebook can call them directly.
"""

from __future__ import annotations

import numpy as np
import torch

from ..cache.checks import channel_index, int_at_least
from .atlas import Atlas

__all__ = ["selection_direction", "strongest_cells"]


def selection_direction(atlas: Atlas, cell_ids) -> np.ndarray:
    """The mean activation of all member rows of the given cells, a direction for the viewer.

    atlas : an Atlas (or ComparisonAtlas) with its activations attached
    cell_ids : int array-like, shape (s,), ids of visible cells, s >= 1
    Returns float32 array, shape (n_channels,). Every member row counts once, so a big cell weighs
    more than a small one (the mean of the rows, not of the cell means).
    """
    if atlas.acts is None:
        raise ValueError("This atlas has no activations attached; build it with aw.build_atlas().")
    rows = atlas.rows_of(cell_ids)  # ValueError naming ids that are not visible cells
    if len(rows) == 0:
        raise ValueError("The selection is empty; select at least one cell to get a direction.")
    acts = atlas.acts.acts
    mean = acts[torch.as_tensor(rows, device=acts.device)].float().mean(0)
    return mean.cpu().numpy().astype(np.float32)


def strongest_cells(atlas: Atlas, channel: int, n: int = 4) -> list[int]:
    """Ids of the ``n`` visible cells whose members have the highest mean activation of ``channel``.

    atlas : an Atlas (or ComparisonAtlas) with its activations attached
    channel : int in [0, n_channels)
    n : int >= 1, how many cells (fewer when the atlas has fewer visible cells)
    Returns the cell ids, sorted ascending (as a widget's ``selected`` holds them).
    """
    if atlas.acts is None:
        raise ValueError("This atlas has no activations attached; build it with aw.build_atlas().")
    c = atlas.acts.n_channels
    channel_index(channel, c, atlas.layer)
    int_at_least(n, "n", 1, "how many cells to pick")
    cells = atlas.cells
    if len(cells.ids) == 0:
        return []
    column = atlas.acts.acts[:, int(channel)].float().cpu().numpy().astype(np.float64)
    # one pass over the rows grouped by cell: sums per cell from the offsets of ``order``
    sums = np.add.reduceat(column[cells.order], cells.offsets[:-1])
    means = sums / np.maximum(cells.count, 1)
    best = np.argsort(-means, kind="stable")[: int(n)]
    return sorted(int(i) for i in cells.ids[best])
