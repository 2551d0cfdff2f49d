"""Bin a 2-D layout into an n x n grid of cells: the icons of an activation atlas.

Each axis of the layout is scaled to [0, 1] on its own (min-max), so the points fill the whole
square. UMAP axes have no shared unit, so keeping the aspect ratio would only leave empty rows or
columns. A point at normalised (x, y) falls in cell row ``floor(y * n)``, column ``floor(x * n)``
(the maximum lands in the last cell); row 0 is drawn at the top. The cell id is ``row * n + col``.

Everything is vectorised (one ``np.unique`` over the occupied cells, one stable argsort), so 100k
rows take milliseconds, and the cost does not grow with ``n * n``: only occupied cells are held.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch

from ..cache.checks import int_at_least

__all__ = ["MAX_GRID_SIZE", "Cells", "grid"]

# cells per side at most: the widgets send cell ids (row * n + col) to the browser as uint32, so
# n * n must stay within 2**32; an atlas at 6 zoom levels (n * 32 per side) can start from n = 2048
MAX_GRID_SIZE = 2**16


@dataclass(repr=False)
class Cells:
    """The visible cells of a grid over a 2-D layout, members stored as CSR.

    Attributes
    ----------
    n : int, cells per side of the grid
    ids : int64 array, shape (m,), id ``row * n + col`` of each visible cell, ascending
    ij : int64 array, shape (m, 2), (row, col) of each visible cell
    count : int64 array, shape (m,), number of rows in each cell
    order : int64 array, shape (count.sum(),), row indices grouped by cell, cell k's rows at
        ``order[offsets[k]:offsets[k + 1]]``, ascending within a cell
    offsets : int64 array, shape (m + 1,)
    centers : float32 array, shape (m, 2), (x, y) centre of each cell in the unit square
    row_cell : int64 array, shape (n_rows,), position k (0..m-1) of each row's cell, -1 for rows
        in hidden cells (cells with fewer than ``min_count`` rows)
    mean_act : float32 array, shape (m, n_channels), mean activation of each cell's rows, or None
    lo, hi : float64 arrays, shape (2,), the (x, y) minimum and maximum used to normalise the layout
    hidden_rows : int, binned rows that fell in hidden cells (0 when every binned row is visible)
    """

    n: int
    ids: np.ndarray
    ij: np.ndarray
    count: np.ndarray
    order: np.ndarray
    offsets: np.ndarray
    centers: np.ndarray
    row_cell: np.ndarray
    mean_act: np.ndarray | None
    lo: np.ndarray
    hi: np.ndarray
    hidden_rows: int = 0

    def __len__(self) -> int:
        return len(self.ids)

    def __repr__(self) -> str:
        channels = "" if self.mean_act is None else f", n_channels={self.mean_act.shape[1]}"
        return (
            f"Cells(n={self.n}, visible={len(self.ids)}, rows={int(self.count.sum())}, "
            f"hidden_rows={self.hidden_rows}{channels})"
        )

    def members(self, k: int) -> np.ndarray:
        """Row indices of the cell at position ``k`` (0 <= k < m, an index into ``ids``)."""
        if not isinstance(k, (int, np.integer)) or not 0 <= k < len(self.ids):
            raise ValueError(
                f"k must be a cell position in [0, {len(self.ids)}), got {k!r}; to look a cell "
                "up by its id use cells.rows_of([cell_id]) or cells.index([cell_id])."
            )
        return self.order[self.offsets[k] : self.offsets[k + 1]]

    def index(self, cell_ids) -> np.ndarray:
        """Positions (0..m-1) of the given cell ids; ValueError for ids that are not visible cells.

        cell_ids : int array-like, shape (s,)
        Returns int64 array, shape (s,).
        """
        ids = np.asarray(cell_ids)
        if ids.ndim != 1 or (ids.size and not np.issubdtype(ids.dtype, np.integer)):
            raise TypeError(f"cell ids must be a 1-D list of ints, got {ids.dtype} {ids.shape}.")
        ids = ids.astype(np.int64)
        pos = np.searchsorted(self.ids, ids)
        pos = np.minimum(pos, max(len(self.ids) - 1, 0))
        ok = self.ids[pos] == ids if len(self.ids) else np.zeros(len(ids), dtype=bool)
        if not ok.all():
            bad = ids[~ok][:10].tolist()
            raise ValueError(
                f"cell ids {bad} are not visible cells of this {self.n}x{self.n} grid "
                f"({len(self.ids)} visible; ids are row * {self.n} + col, see cells.ids)."
            )
        return pos.astype(np.int64)

    def rows_of(self, cell_ids) -> np.ndarray:
        """Row indices of all members of the given cells (by id), cell after cell.

        Returns int64 array, shape (sum of the cells' counts,).
        """
        pos = self.index(cell_ids)
        if len(pos) == 0:
            return np.zeros(0, dtype=np.int64)
        return np.concatenate([self.order[self.offsets[k] : self.offsets[k + 1]] for k in pos])


def grid(xy, n: int = 20, acts=None, min_count: int = 3, bounds=None, keep=None) -> Cells:
    """Bin layout points into an ``n`` x ``n`` grid; cells with fewer than ``min_count`` rows are hidden.

    Parameters
    ----------
    xy : array or tensor, shape (n_rows, 2), finite; e.g. the output of ``umap_layout``
    n : int, 1 <= n <= ``MAX_GRID_SIZE`` (65536), cells per side
    acts : array or tensor, shape (n_rows, n_channels), optional; gives ``Cells.mean_act``.
        A tensor stays on its device for the sum (a GPU cache is not copied to the host).
    min_count : int >= 1, the smallest number of rows a visible cell holds
    bounds : ((x_lo, y_lo), (x_hi, y_hi)), optional; the range binned on each axis instead of the
        points' own min-max, for axes with a fixed meaning (the comparison atlas bins x over
        [-1, 1]). Every point must lie inside it.
    keep : bool array, shape (n_rows,), optional; only these rows are binned (the others belong
        to no cell, ``row_cell`` -1, and their xy may be NaN). A class atlas keeps a subset of a
        layer's rows this way, so its cells still hold the layer's own row indices.

    Returns
    -------
    Cells
        With no visible cell (``len(cells) == 0``) grid warns and names the fix (lower
        ``min_count`` or ``n``); ``cells.hidden_rows`` counts the rows in hidden cells.
    """
    int_at_least(n, "n (grid size)", 1)
    if n > MAX_GRID_SIZE:
        raise ValueError(
            f"n (grid size) must be at most {MAX_GRID_SIZE} cells per side, got {n}: cell ids "
            "(row * n + col) must fit the uint32 the widgets send to the browser. An atlas "
            "needs far fewer (20 to a few hundred); pass a smaller n."
        )
    int_at_least(min_count, "min_count", 1)
    n = int(n)
    pts = _as_numpy(xy, "xy").astype(np.float64, copy=False)
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise ValueError(f"xy must have shape (n_rows, 2), got {pts.shape}.")
    if len(pts) == 0:
        raise ValueError("xy is empty: the grid needs at least one point.")
    n_rows = len(pts)
    kept = _keep_mask(keep, n_rows)
    if not kept.any():
        raise ValueError("keep selects no rows: the grid needs at least one point.")
    if not np.isfinite(pts[kept]).all():
        raise ValueError("xy contains NaN or infinite values; check the layout input.")
    inside = pts[kept]

    if bounds is None:
        lo, hi = inside.min(axis=0), inside.max(axis=0)
    else:
        lo, hi = _bounds(bounds)
        if (inside < lo).any() or (inside > hi).any():
            raise ValueError(
                f"xy has points outside bounds {lo.tolist()}..{hi.tolist()} (xy spans "
                f"{inside.min(axis=0).tolist()}..{inside.max(axis=0).tolist()}); clip the points "
                "or widen the bounds."
            )
    span = np.where(hi > lo, hi - lo, 1.0)  # a flat axis puts every point in the first cell
    unit = (inside - lo) / span
    col = np.minimum((unit[:, 0] * n).astype(np.int64), n - 1)
    row = np.minimum((unit[:, 1] * n).astype(np.int64), n - 1)
    cell = row * n + col

    # only occupied cells exist from here on: memory and time follow the rows, not n * n
    occupied, cell_of_row, per_cell = np.unique(cell, return_inverse=True, return_counts=True)
    shown = per_cell >= min_count
    ids = occupied[shown].astype(np.int64)
    position = np.where(shown, np.cumsum(shown) - 1, -1)
    row_cell = np.full(n_rows, -1, dtype=np.int64)
    row_cell[kept] = position[cell_of_row.reshape(-1)]

    visible = np.flatnonzero(row_cell >= 0)
    # stable sort keeps row indices ascending within each cell
    order = visible[np.argsort(row_cell[visible], kind="stable")].astype(np.int64)
    count = per_cell[shown].astype(np.int64)
    offsets = np.zeros(len(ids) + 1, dtype=np.int64)
    np.cumsum(count, out=offsets[1:])
    hidden_rows = len(inside) - len(order)
    ij = np.stack([ids // n, ids % n], axis=1).astype(np.int64)
    centers = ((ij[:, ::-1] + 0.5) / n).astype(np.float32)

    mean_act = None
    if acts is not None:
        mean_act = _cell_means(acts, order, offsets, count, n_rows)

    # after every input check, so bad input gets its error alone
    if len(ids) == 0:
        warnings.warn(
            f"grid: no cell of the {n}x{n} grid holds min_count={min_count} rows or more "
            f"({len(inside)} rows, at most {int(per_cell.max())} in one cell), so every cell is "
            "hidden; lower min_count or n.",
            UserWarning,
            stacklevel=2,
        )
    return Cells(
        n=n, ids=ids, ij=ij, count=count, order=order, offsets=offsets, centers=centers,
        row_cell=row_cell, mean_act=mean_act, lo=lo, hi=hi, hidden_rows=int(hidden_rows),
    )


def _cell_means(acts, order: np.ndarray, offsets: np.ndarray, count: np.ndarray, n_rows: int) -> np.ndarray:
    a = acts if isinstance(acts, torch.Tensor) else torch.as_tensor(np.asarray(acts))
    if a.ndim != 2 or a.shape[0] != n_rows:
        raise ValueError(f"acts must have shape ({n_rows}, n_channels) to match xy, got {tuple(a.shape)}.")
    a = a.float()
    if not torch.isfinite(a).all():
        raise ValueError("acts contains NaN or infinite values.")
    m = len(count)
    # the member lists are already CSR, so the per-cell sums are one sparse (m, n_rows) @ acts
    # product: about 3x faster than index_add_ on a CPU, and it runs on the acts' device
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Ss]parse.*")
        select = torch.sparse_csr_tensor(
            torch.as_tensor(offsets, device=a.device),
            torch.as_tensor(order, device=a.device),
            torch.ones(len(order), device=a.device),
            size=(m, n_rows),
            check_invariants=False,
        )
        sums = select @ a
    means = sums / torch.as_tensor(count, device=a.device, dtype=torch.float32).clamp_min(1)[:, None]
    return means.cpu().numpy().astype(np.float32)


def _keep_mask(keep, n_rows: int) -> np.ndarray:
    if keep is None:
        return np.ones(n_rows, dtype=bool)
    k = _as_numpy(keep, "keep")
    if k.dtype != bool or k.shape != (n_rows,):
        raise ValueError(
            f"keep must be a bool mask with shape ({n_rows},), one entry per row of xy; "
            f"got {k.dtype} {k.shape}."
        )
    return k


def _bounds(bounds) -> tuple[np.ndarray, np.ndarray]:
    try:
        b = np.asarray(bounds, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise TypeError(f"bounds must be ((x_lo, y_lo), (x_hi, y_hi)), got {bounds!r}.") from err
    if b.shape != (2, 2) or not np.isfinite(b).all() or (b[1] <= b[0]).any():
        raise ValueError(
            f"bounds must be ((x_lo, y_lo), (x_hi, y_hi)) with finite lo < hi, got {bounds!r}."
        )
    return b[0], b[1]


def _as_numpy(x, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    try:
        return np.asarray(x)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{name} must be an array or tensor, got {type(x).__name__}.") from err
