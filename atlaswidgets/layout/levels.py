"""Zoom levels of an atlas, and a selection carried from one level to another.

Level 0 is the atlas as built (n x n cells); level k bins the same layout (same xy, no new UMAP
run, same ``min_count``) into ``n * 2**k`` cells per side, so fine cell (r, c) lies inside coarse
cell (r >> k, c >> k). A selection at one level is the same region of the plane at another: the
visible children of the selected cells when zooming in, their parents when zooming out.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from ..cache.checks import integer
from .atlas import Atlas

__all__ = ["AtlasLevels", "carry_selection"]


class AtlasLevels:
    """The zoom levels of one atlas, each built on first use and kept.

    base : the Atlas of level 0
    regrid : callable (base, grid_size) -> Atlas of the same kind over the same layout, binned into
        ``grid_size`` cells per side (``lambda a, n: a.regrid(cache, n)`` for a plain Atlas)
    """

    def __init__(self, base: Atlas, regrid: Callable[[Atlas, int], Atlas]):
        self.base = base
        self._regrid = regrid
        self._built: dict[int, Atlas] = {0: base}

    def __repr__(self) -> str:
        return f"AtlasLevels(base {self.base.cells.n}x{self.base.cells.n}, built {sorted(self._built)})"

    def grid_size(self, level: int) -> int:
        """Cells per side of ``level``: ``n * 2**level``."""
        return self.base.cells.n * 2 ** int(level)

    def __getitem__(self, level: int) -> Atlas:
        """The Atlas of ``level`` (an int >= 0). Raises ValueError when the level is too fine for
        the data (no cell holds ``min_count`` rows); the caller decides what that means."""
        level = integer(level, "level")
        if level < 0:
            raise ValueError(f"level must be >= 0, got {level}.")
        if level not in self._built:
            self._built[level] = self._regrid(self.base, self.grid_size(level))
        return self._built[level]


def carry_selection(old: Atlas, new: Atlas, selected) -> list[int]:
    """The cells of ``new`` that cover the selected cells of ``old``, two grids of one layout whose
    sides differ by a power of two: the visible children when zooming in, the parents when out.

    selected : int array-like, shape (s,), cell ids of ``old``
    Returns the covering visible cell ids of ``new``, sorted ascending (empty for an empty selection).
    """
    if len(selected) == 0:
        return []
    n_old, n_new = old.cells.n, new.cells.n
    ids = np.asarray(selected, dtype=np.int64)
    row, col = ids // n_old, ids % n_old
    if n_new >= n_old:
        f = n_new // n_old
        sub = np.arange(f)
        rows = (row[:, None, None] * f + sub[None, :, None]).repeat(f, 2)
        cols = (col[:, None, None] * f + sub[None, None, :]).repeat(f, 1)
        wanted = (rows * n_new + cols).ravel()
    else:
        f = n_old // n_new
        wanted = (row // f) * n_new + col // f
    return sorted(set(np.intersect1d(wanted, new.cells.ids).tolist()))
