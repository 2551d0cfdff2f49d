"""Binning a layout into grid cells: counts, members (CSR), hidden cells, mean activations."""

from __future__ import annotations

import time
import tracemalloc
import warnings

import numpy as np
import pytest
import torch

from atlaswidgets.layout.grid import MAX_GRID_SIZE, grid


def test_known_points_land_in_known_cells():
    # x and y both span [0, 4]: with n=4 each cell is 1 wide; the maximum falls in the last cell
    xy = np.array([[0.0, 0.0], [0.5, 0.2], [0.9, 0.9], [4.0, 4.0], [3.5, 0.1], [2.2, 1.7], [3.9, 3.1]])
    cells = grid(xy, n=4, min_count=1)
    # (row, col) = (floor(y), floor(x)) -> ids row * 4 + col
    expected = {0: [0, 1, 2], 3: [4], 6: [5], 15: [3, 6]}
    assert cells.ids.tolist() == sorted(expected)
    assert cells.count.tolist() == [len(expected[i]) for i in sorted(expected)]
    for k, cid in enumerate(cells.ids):
        assert cells.members(k).tolist() == expected[cid]
        assert cells.ij[k].tolist() == [cid // 4, cid % 4]
    np.testing.assert_allclose(cells.centers[0], [0.125, 0.125])
    np.testing.assert_allclose(cells.centers[list(cells.ids).index(3)], [0.875, 0.125])  # (x, y)


def test_cells_under_min_count_are_hidden():
    xy = np.array([[0.0, 0.0], [0.1, 0.1], [0.2, 0.0], [1.0, 1.0]])
    cells = grid(xy, n=2, min_count=2)
    assert cells.ids.tolist() == [0]
    assert cells.count.tolist() == [3]
    assert cells.row_cell.tolist() == [0, 0, 0, -1]
    assert cells.offsets.tolist() == [0, 3]
    with pytest.raises(ValueError, match="not visible cells"):
        cells.index([3])


def test_csr_partitions_the_visible_rows():
    rng = np.random.default_rng(0)
    xy = rng.normal(size=(500, 2))
    cells = grid(xy, n=7, min_count=3)
    assert (cells.count >= 3).all()
    assert cells.offsets[-1] == len(cells.order) == cells.count.sum()
    seen = np.concatenate([cells.members(k) for k in range(len(cells))])
    assert sorted(seen.tolist()) == sorted(np.flatnonzero(cells.row_cell >= 0).tolist())
    for k in range(len(cells)):
        assert (cells.row_cell[cells.members(k)] == k).all()
    # rows_of takes ids, members takes positions
    two = cells.ids[:2]
    np.testing.assert_array_equal(cells.rows_of(two), np.concatenate([cells.members(0), cells.members(1)]))


def test_mean_act_is_the_mean_of_members():
    rng = np.random.default_rng(1)
    xy = rng.uniform(size=(300, 2))
    acts = rng.normal(size=(300, 5)).astype(np.float32)
    cells = grid(xy, n=4, acts=torch.as_tensor(acts), min_count=1)
    assert cells.mean_act.shape == (len(cells), 5) and cells.mean_act.dtype == np.float32
    for k in range(len(cells)):
        np.testing.assert_allclose(cells.mean_act[k], acts[cells.members(k)].mean(0), rtol=1e-5, atol=1e-6)
    assert grid(xy, n=4).mean_act is None


def test_flat_axis_and_single_point():
    cells = grid(np.array([[1.0, 5.0], [1.0, 6.0], [1.0, 7.0]]), n=3, min_count=1)
    assert (cells.ij[:, 1] == 0).all()  # x is constant: every point in column 0
    assert cells.ij[:, 0].tolist() == [0, 1, 2]
    one = grid(np.array([[2.0, 3.0]]), n=5, min_count=1)
    assert one.ids.tolist() == [0]


def test_hundred_thousand_rows_take_milliseconds():
    rng = np.random.default_rng(0)
    xy = rng.normal(size=(100_000, 2)).astype(np.float32)
    acts = torch.as_tensor(rng.normal(size=(100_000, 32)).astype(np.float32))
    grid(xy[:1000], n=20, acts=acts[:1000])  # warm-up
    t = time.perf_counter()
    cells = grid(xy, n=20, acts=acts, min_count=3)
    elapsed = time.perf_counter() - t
    assert cells.count.sum() <= 100_000
    assert elapsed < 0.5, f"grid over 100k rows took {elapsed:.3f} s"


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(xy=np.zeros((4, 3))), r"shape \(n_rows, 2\)"),
        (dict(xy=np.zeros((0, 2))), "empty"),
        (dict(xy=np.array([[0.0, np.nan], [1.0, 1.0]])), "NaN"),
        (dict(xy=np.zeros((4, 2)), n=0), "grid size"),
        (dict(xy=np.zeros((4, 2)), n=2.5), "grid size"),
        (dict(xy=np.zeros((4, 2)), min_count=0), "min_count"),
        (dict(xy=np.zeros((4, 2)), acts=np.zeros((3, 2))), r"acts must have shape \(4, n_channels\)"),
        (dict(xy=np.zeros((2, 2)), acts=np.array([[np.inf], [0.0]])), "NaN or infinite"),
    ],
)
def test_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        grid(**kwargs)


def test_members_and_index_reject_bad_keys():
    cells = grid(np.random.default_rng(0).normal(size=(50, 2)), n=3, min_count=1)
    with pytest.raises(ValueError, match="cell position"):
        cells.members(len(cells))
    with pytest.raises(TypeError, match="list of ints"):
        cells.index([0.5])


def test_fixed_bounds_bin_over_the_given_range():
    # every x is positive, but with bounds x in [-1, 1] they stay in the right half of the grid
    xy = np.array([[0.1, 0.0], [0.6, 0.5], [1.0, 1.0], [0.49, 0.26]])
    cells = grid(xy, n=4, min_count=1, bounds=((-1.0, 0.0), (1.0, 1.0)))
    # col = floor((x + 1) / 2 * 4), row = floor(y * 4), the maximum in the last cell
    assert [cells.ij[cells.row_cell[i]].tolist() for i in range(4)] == [[0, 2], [2, 3], [3, 3], [1, 2]]
    np.testing.assert_array_equal(cells.lo, [-1.0, 0.0])
    np.testing.assert_array_equal(cells.hi, [1.0, 1.0])
    with pytest.raises(ValueError, match="outside bounds"):
        grid(xy, n=4, bounds=((0.2, 0.0), (1.0, 1.0)))
    with pytest.raises(ValueError, match="lo < hi"):
        grid(xy, n=4, bounds=((1.0, 0.0), (-1.0, 1.0)))
    with pytest.raises(ValueError, match=r"\(x_lo, y_lo\)"):
        grid(xy, n=4, bounds=(-1.0, 1.0))


def test_memory_follows_the_rows_not_n_squared():
    # 40 points on a 4096 x 4096 grid: a dense per-cell array would be 16.7M entries (134 MB of
    # int64); only the occupied cells may be materialised
    xy = np.random.default_rng(0).uniform(size=(40, 2))
    tracemalloc.start()
    try:
        cells = grid(xy, n=4096, min_count=1)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000, f"grid over 40 points used {peak / 1e6:.1f} MB at its peak"
    col = np.minimum(((xy[:, 0] - xy[:, 0].min()) / np.ptp(xy[:, 0]) * 4096).astype(int), 4095)
    row = np.minimum(((xy[:, 1] - xy[:, 1].min()) / np.ptp(xy[:, 1]) * 4096).astype(int), 4095)
    assert sorted(cells.ids.tolist()) == sorted(set((row * 4096 + col).tolist()))
    assert cells.count.sum() == 40 and cells.hidden_rows == 0


def test_grid_size_limit_keeps_ids_in_uint32():
    xy = np.random.default_rng(0).uniform(size=(40, 2))
    cells = grid(xy, n=MAX_GRID_SIZE, min_count=1)  # 2**32 cells: a dense count would not fit
    assert cells.ids.max() < 2**32 and len(cells) == 40
    with pytest.raises(ValueError, match=f"at most {MAX_GRID_SIZE} cells per side, got 1000000"):
        grid(xy, n=10**6)
    with pytest.raises(ValueError, match="uint32"):
        grid(xy, n=MAX_GRID_SIZE + 1)


def test_no_visible_cell_warns_and_says_so():
    xy = np.random.default_rng(0).uniform(size=(40, 2))
    with pytest.warns(UserWarning, match="every cell is hidden; lower min_count or n"):
        cells = grid(xy, n=20)  # 400 cells for 40 points: none reaches min_count=3
    assert len(cells) == 0 and cells.hidden_rows == 40 and (cells.row_cell == -1).all()
    assert "visible=0" in repr(cells) and "hidden_rows=40" in repr(cells)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        some = grid(xy, n=2)  # a grid with visible cells stays quiet
    assert len(some) > 0 and some.hidden_rows == 40 - some.count.sum()


def test_hidden_rows_leave_out_rows_not_kept():
    xy = np.array([[0.0, 0.0], [0.1, 0.1], [1.0, 1.0], [np.nan, np.nan]])
    cells = grid(xy, n=2, min_count=2, keep=np.array([True, True, True, False]))
    assert cells.ids.tolist() == [0] and cells.hidden_rows == 1
