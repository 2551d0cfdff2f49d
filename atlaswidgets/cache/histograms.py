"""Mergeable per-channel histograms on dyadic bins, and the bottom-r selection per group that the
quantile sketch keeps: the building blocks of ``topk.ChannelStats``.

A histogram's bins are a power-of-two grid (``dyadic_grid``), so two histograms of the same data
split differently can always be regrouped onto the coarser of their grids (``regroup``) and added
exactly: per-shard statistics merge into the same totals as one pass over everything.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

__all__ = ["DyadicHist", "dyadic_grid", "regroup", "bottom_r", "count", "EMPTY"]

EMPTY = torch.iinfo(torch.int64).max  # key of an empty sketch slot: above every real key
_E_FLOOR = -100  # bin exponent of data that is all zeros; 2**100 still fits float32


def dyadic_grid(lo: torch.Tensor, hi: torch.Tensor, bins: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(e, a) per channel of the smallest dyadic grid covering [lo, hi]; lo, hi float64 (C,)."""
    span = (hi - lo).clamp_min(0)
    mag = torch.maximum(lo.abs(), hi.abs())
    # log2(0) is -inf: a single value (or all zeros) falls back to the floor below
    e_span = torch.ceil(torch.log2(span / (bins - 1)))
    e_mag = torch.ceil(torch.log2(mag)) - 22
    e = torch.maximum(torch.maximum(e_span, e_mag), torch.full_like(lo, _E_FLOOR))
    e = torch.where(torch.isfinite(lo), e, torch.full_like(lo, _E_FLOOR)).long()
    a = torch.floor(torch.where(torch.isfinite(lo), lo, 0) * torch.exp2(-e.double())).long()
    return e, a


def count(index: torch.Tensor, n: int) -> torch.Tensor:
    """``torch.bincount(index, minlength=n)`` of indices (any shape, int32 or int64) known to lie
    in [0, n): int64 (n,).

    One ``index_add_`` of ones instead: on CPU torch's bincount splits the work over threads and
    waits on them, so on a busy machine it ran several times slower (3 ms alone, 24 ms beside
    other work, for a million indices), while the serial add takes under 2 ms either way; counts
    are integers, so the result is the same.
    """
    index = index.reshape(-1)
    one = torch.ones(1, dtype=torch.int64, device=index.device).expand(len(index))
    return torch.zeros(n, dtype=torch.int64, device=index.device).index_add_(0, index, one)


def regroup(e_old, a_old, e_new, a_new, bins: int) -> torch.Tensor:
    """New bin index (C, bins) of each old bin, for a grid that only got coarser or shifted."""
    shift = (e_new - e_old).clamp(0, 62)
    g = a_old[:, None] + torch.arange(bins, device=a_old.device)
    return ((g >> shift[:, None]) - a_new[:, None]).clamp(0, bins - 1)


@dataclass
class DyadicHist:
    """Counts (C, bins) int64 on the dyadic grid (e, a), and the exact min and max seen."""

    e: torch.Tensor
    a: torch.Tensor
    counts: torch.Tensor
    lo: torch.Tensor  # float64 (C,), +inf when empty
    hi: torch.Tensor

    @classmethod
    def empty(cls, c: int, bins: int, device) -> "DyadicHist":
        z = torch.zeros(c, dtype=torch.int64, device=device)
        inf = torch.full((c,), math.inf, dtype=torch.float64, device=device)
        return cls(z + _E_FLOOR, z.clone(), torch.zeros(c, bins, dtype=torch.int64, device=device), inf, -inf)

    def widen(self, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor | None:
        """Grow the grid to cover [lo, hi] too; returns the old->new bin map, or None if unchanged."""
        lo, hi = torch.minimum(self.lo, lo), torch.maximum(self.hi, hi)
        e, a = dyadic_grid(lo, hi, self.counts.shape[1])
        self.lo, self.hi = lo, hi
        if torch.equal(e, self.e) and torch.equal(a, self.a):
            return None
        where = regroup(self.e, self.a, e, a, self.counts.shape[1])
        self.counts = torch.zeros_like(self.counts).scatter_add_(1, where, self.counts)
        self.e, self.a = e, a
        return where

    def bin_of(self, v: torch.Tensor, channel_dim: int, flat: bool = False) -> torch.Tensor:
        """Bin index of each value (any shape, channels along ``channel_dim``), int64; with
        ``flat``, channel * bins + bin (an index into ``counts.view(-1)``)."""
        shape = [1] * v.ndim
        shape[channel_dim] = -1
        bins = self.counts.shape[1]
        scale = torch.exp2(-self.e.float()).view(shape)
        # v * 2**-e is exact; the floor is the global cell g, exact below 2**22 by the choice of e.
        # In place after the one new tensor: the values are large (every position of a batch)
        g = v.float() * scale
        g.floor_()
        c = self.counts.shape[0]
        if flat and c * bins <= 1 << 23:
            # One add and one clamp: g + (offset - a), clamped to the channel's own bins. Every
            # term is an integer below 2**24 (|a| <= 2**22), so float32 adds them exactly, and
            # int32 halves the memory the count reads
            first = torch.arange(c, device=v.device) * bins
            g.add_((first - self.a).float().view(shape))
            g.clamp_(first.float().view(shape), (first + bins - 1).float().view(shape))
            return g.int()
        g.sub_(self.a.float().view(shape)).clamp_(0, bins - 1)
        if not flat:
            return g.long()
        return g.long() + (torch.arange(c, device=v.device).view(shape) * bins)

    def edges(self, channel: int) -> np.ndarray:
        """Bin edges (bins + 1,) float64 of one channel."""
        w = 2.0 ** int(self.e[channel])
        return (int(self.a[channel]) + np.arange(self.counts.shape[1] + 1)) * w


def bottom_r(group, key, payload: Sequence[torch.Tensor], n_groups: int, r: int):
    """Per group the r items with the smallest keys, as dense (n_groups, r) tensors.

    group, key : int64 (M,); payload : tensors (M,). Empty slots get key EMPTY and payload -1.
    """
    order = _group_key_order(group, key, n_groups)
    g = group[order]
    # each item's rank in its group: its index minus its group's first index (g is sorted)
    index = torch.arange(len(g), device=g.device)
    starts = torch.ones_like(g, dtype=torch.bool)
    starts[1:] = g[1:] != g[:-1]
    rank = index - torch.where(starts, index, 0).cummax(0).values
    keep = rank < r
    slot = g[keep] * r + rank[keep]
    kept = order[keep]
    out_key = torch.full((n_groups * r,), EMPTY, dtype=torch.int64, device=key.device)
    out_key[slot] = key[kept]
    outs = []
    for p in payload:
        o = torch.full((n_groups * r,), -1, dtype=p.dtype, device=p.device)
        o[slot] = p[kept]
        outs.append(o.view(n_groups, r))
    return out_key.view(n_groups, r), outs


def _group_key_order(group: torch.Tensor, key: torch.Tensor, n_groups: int) -> torch.Tensor:
    """The order of items by (group, key, index): ``bottom_r``'s sort.

    One sort of an int64 that holds the group in its top bits and the key's top bits below
    (keys are below 2**62), instead of two stable sorts. Where two items share that number, the
    key's dropped low bits might decide, so then it sorts twice, as the exact fallback.
    """
    gbits = max(1, int(n_groups - 1).bit_length())
    if len(key) and gbits <= 40 and int(key.min()) >= 0 and int(key.max()) < 1 << 62:
        packed = (group << (63 - gbits)) | (key >> (gbits - 1))
        sorted_, order = torch.sort(packed)
        if not bool((sorted_[1:] == sorted_[:-1]).any()):
            return order
    order = torch.argsort(key, stable=True)
    return order[torch.argsort(group[order], stable=True)]
