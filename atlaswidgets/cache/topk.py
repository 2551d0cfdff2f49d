"""Per-channel statistics gathered while capturing, and quantile-bin samples of any unit.

``capture(..., stats=True)`` feeds every spatial position of each captured layer's output (not
only the sampled rows) to a :class:`ChannelStats` per layer, batch by batch, on the capture's
device. Per channel it keeps, in memory that does not grow with the data:

- the **top k samples**: the k samples whose strongest position is strongest, each with that
  position and value (one example per sample, as a viewer shows k different images);
- a **histogram of all positions'** activations, and one of the **per-sample maxima**;
- a **bottom-r sketch** of the per-sample maxima per histogram bin, from which quantile-bin
  samples are drawn (see below).

Histograms (the error, and why it is exact to merge). Bins are ``bins`` consecutive cells of one
dyadic grid: cell width ``w = 2**e``, cells ``[g * w, (g + 1) * w)`` for integers g, the histogram
covering cells ``a .. a + bins - 1``. ``e`` is the smallest exponent with ``w >= (max - min) /
(bins - 1)`` (and ``w >= max|v| * 2**-22``, the float32 resolution of the values themselves), so
the bins always cover ``[min, max]`` and a bin is at most ``2 (max - min) / (bins - 1)`` wide. A
value's bin is exact (``v * 2**-e`` is exact in float32). When the range grows, ``e`` grows and
cells merge in aligned pairs (an integer shift of g), so counts stay exact integers, and since
``e`` and ``a`` depend only on the data's min and max, the histogram of a data set does not depend
on the order or batching of the data: merging per-shard statistics gives bit-identical results.
A quantile read from a histogram is off by at most one bin width (``histogram()`` returns the
edges, so the error is visible).

Quantile-bin samples in one streaming pass. Every (sample, channel) pair gets a fixed random key
(a splitmix64 hash of ``(seed, sample, channel)``). Per histogram bin of the per-sample maxima the
sketch keeps the ``reservoir`` items with the smallest keys. Bottom-r sets merge exactly (the
bottom r of a union are among the bottom r of its parts), also when bins merge. To sample a
quantile range ``[qa, qb)`` of a channel's per-sample maxima: the range's ranks
``[qa n, qb n)`` cover some bins fully and at most two partly; an item of a partly covered bin
is eligible with probability equal to the covered fraction (a second, seeded hash), and the
items with key below ``T``, the smallest r-th key among the bins involved, are a uniform sample
of the eligible ones, of which up to ``n`` are drawn with the query's seed. So a sample is
uniform over the range, up to the partly covered bins at its two edges, where values up to one
bin width beyond the exact quantile can enter. It can hold fewer than ``n`` items when the range
is narrow or one bin dominates it (raise ``reservoir``). The plain random sample is the range
``[0, 1]``. ``atlaswidgets.cache.units.unit_samples`` on a direction (or with ``source="rows"``) computes the
same groups exactly from the cached rows instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .cache import TopExamples
from .checks import channel_index, integer, one_of, positive_int
from .histograms import EMPTY, DyadicHist, bottom_r, count, regroup
from .sampling import _splitmix64, _splitmix64_int

__all__ = [
    "DEFAULT_RANGES", "STATS_DEFAULTS", "ChannelStats", "UnitSamples",
    "stats_config",
]

# the neuron-explainer viewer's quantile ranges of a unit's activations, top down
DEFAULT_RANGES: tuple[tuple[float, float], ...] = ((0.99, 0.999), (0.9, 0.99), (0.5, 0.9), (0.0, 0.5))
STATS_DEFAULTS = {"k": 32, "bins": 64, "reservoir": 8, "seed": 0}
_MAX_BINS = 4096
_KEY_MASK = (1 << 62) - 1
_MAX_SAMPLE = (1 << 31) - 1  # sample ids below it pack beside a value in an int64 (top-k merge)
# the "grid" of a text layer's statistics: one row of tokens whose length varies by sample
TOKENS_HW = (1, 0)


def stats_config(stats: Any) -> dict | None:
    """Normalise capture's ``stats=`` argument: None/False -> None, True -> defaults, a dict ->
    defaults updated with its keys ``k``, ``bins``, ``reservoir``, ``seed``."""
    if stats is None or stats is False:
        return None
    if stats is True:
        return dict(STATS_DEFAULTS)
    if not isinstance(stats, dict):
        raise TypeError(f"stats must be True, False or a dict like {STATS_DEFAULTS}; got {type(stats).__name__}.")
    unknown = set(stats) - set(STATS_DEFAULTS)
    if unknown:
        raise ValueError(f"Unknown stats option(s) {sorted(unknown)}; allowed: {sorted(STATS_DEFAULTS)}.")
    cfg = {**STATS_DEFAULTS, **stats}
    for key in ("k", "bins", "reservoir", "seed"):
        cfg[key] = integer(cfg[key], f"stats[{key!r}]")
    if cfg["k"] < 1:
        raise ValueError(f"stats['k'] must be >= 1 (the top samples kept per channel), got {cfg['k']}.")
    if cfg["reservoir"] < 1:
        raise ValueError(f"stats['reservoir'] must be >= 1, got {cfg['reservoir']}.")
    if not 2 <= cfg["bins"] <= _MAX_BINS:
        raise ValueError(f"stats['bins'] must be between 2 and {_MAX_BINS}, got {cfg['bins']}; "
                         "64 is the default (the bin width bounds a quantile's error).")
    if cfg["seed"] < 0:
        raise ValueError(f"stats['seed'] must be >= 0, got {cfg['seed']}.")
    return cfg


# ----------------------------------------------------------------------------- examples


@dataclass
class UnitSamples:
    """Top samples, then samples from quantile ranges, then a plain random sample, of one unit.

    groups : dict name -> TopExamples, in display order: "top", "[0.99, 0.999]", ..., "random"
    ranges : dict name -> (qa, qb) quantile range of each quantile group
    source : "stats" (streamed over every position during capture) or "rows" (the cached rows)
    """

    layer: str
    unit: Any
    groups: dict[str, TopExamples]
    ranges: dict[str, tuple[float, float]] = field(default_factory=dict)
    source: str = "stats"

    def all(self) -> TopExamples:
        """Every group's examples together (duplicates kept); ``rows`` when every group has them."""
        parts = list(self.groups.values())
        rows = None if any(p.rows is None for p in parts) else np.concatenate([p.rows for p in parts])
        return TopExamples(np.concatenate([p.sample_id for p in parts]),
                           np.concatenate([p.yx for p in parts]).reshape(-1, 2),
                           np.concatenate([p.values for p in parts]).astype(np.float32), rows)


def _range_name(qa: float, qb: float) -> str:
    return f"[{qa:g}, {qb:g}]"


def _check_ranges(ranges) -> list[tuple[float, float]]:
    out = []
    for item in ranges:
        try:
            qa, qb = (float(v) for v in item)
        except (TypeError, ValueError):
            raise TypeError(f"ranges must be pairs (qa, qb) of quantiles, got {item!r}.") from None
        if not 0.0 <= qa < qb <= 1.0:
            raise ValueError(f"Each quantile range needs 0 <= qa < qb <= 1, got ({qa}, {qb}).")
        out.append((qa, qb))
    return out


_BLOCK = 8  # tokens per block of ``_first_max``


def _first_true(eq: torch.Tensor) -> torch.Tensor:
    """Index of the first True along dim 1 of a bool (B, n, C) (n when none is): the largest of
    ``eq * (n - index)``, in uint8 when n fits (a vectorised ``amax``, unlike ``argmax``)."""
    n = eq.shape[1]
    dtype = torch.uint8 if n < 256 else torch.int32
    rev = torch.arange(n, 0, -1, device=eq.device, dtype=dtype).view(1, n, 1)
    return n - (eq.to(dtype) * rev).amax(dim=1).long()


def _first_max(out: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``out.max(dim=1)`` of (B, T, C) over the valid tokens (``mask`` (B, T) bool, None: all):
    values and indices (B, C), the first index on ties, exactly as torch's ``max`` gives them;
    None when a maximum is not finite (the caller then takes the plain way).

    Why not ``max`` itself: its index-tracking reduction over the middle dimension runs several
    times slower than ``amax``, which vectorises across C. So only ``amax`` touches every token:
    per block of ``_BLOCK`` tokens, then over the blocks; the first block holding the maximum and
    the first token in it equal to it are found by comparisons on those small tensors. Padding
    becomes -inf by adding -inf (and -0.0, the identity, to valid tokens), cheaper than
    ``masked_fill``; a padding value of +inf gives NaN, which the caller's fallback handles.
    """
    b, t, c = out.shape
    tp = -(-t // _BLOCK) * _BLOCK
    if mask is None and tp == t:
        x = out
    else:
        x = out.new_empty(b, tp, c)
        x[:, t:] = -math.inf
        if mask is None:
            x[:, :t] = out
        else:
            bias = torch.full(mask.shape, -0.0, dtype=out.dtype, device=out.device).masked_fill_(~mask, -math.inf)
            torch.add(out, bias[:, :, None], out=x[:, :t])
    blocks = x.view(b, tp // _BLOCK, _BLOCK, c)
    block_max = blocks.amax(dim=2)  # (B, T / _BLOCK, C)
    top = block_max.amax(dim=1, keepdim=True)  # (B, 1, C)
    if not bool(torch.isfinite(top).all()):
        return None
    block = _first_true(block_max == top)  # (B, C): the first block holding the maximum
    inner = blocks.gather(1, block[:, None, None, :].expand(b, 1, _BLOCK, c))[:, 0]  # (B, _BLOCK, C)
    at = _first_true(inner == top)
    # the value read at its index, not ``top``: of a -0.0 and a 0.0, max gives the first
    return inner.gather(1, at[:, None]).squeeze(1), block * _BLOCK + at


def _hash01(keys: torch.Tensor, seed: int) -> torch.Tensor:
    """A seeded hash of int64 keys as float64 in [0, 1)."""
    h = _splitmix64(keys ^ _splitmix64_int(seed))
    return ((h >> 11) & ((1 << 53) - 1)).double() / float(1 << 53)


# ----------------------------------------------------------------------------- ChannelStats


class ChannelStats:
    """Streaming per-channel statistics of one layer (see the module docstring).

    Build with ``ChannelStats(n_channels, hw, k=..., bins=..., reservoir=..., seed=...)``;
    ``update(output, first_sample)`` with each batch of the layer's output, shape (B, C, H, W) or
    (B, C), or ``update_tokens(output, first_sample, mask)`` with a text layer's (B, T, C) (built
    with ``hw=TOKENS_HW``); ``merge`` combines two (exact, order-free). Everything lives on the
    device of the outputs fed to it.
    """

    _TENSORS = ("top_value", "top_sample", "top_pos", "r_key", "r_sample", "r_value", "r_pos")

    def __init__(self, n_channels: int, hw: tuple[int, int], k: int = 32, bins: int = 64,
                 reservoir: int = 8, seed: int = 0, device: torch.device | str = "cpu"):
        cfg = stats_config({"k": k, "bins": bins, "reservoir": reservoir, "seed": seed})
        self.n_channels, self.hw = int(n_channels), (int(hw[0]), int(hw[1]))
        self.k, self.bins, self.reservoir, self.seed = cfg["k"], cfg["bins"], cfg["reservoir"], cfg["seed"]
        c, dev = self.n_channels, torch.device(device)
        self.n_samples = 0
        self.top_value = torch.full((c, self.k), -math.inf, device=dev)
        self.top_sample = torch.full((c, self.k), -1, dtype=torch.int64, device=dev)
        self.top_pos = torch.full((c, self.k), -1, dtype=torch.int64, device=dev)
        self.positions = DyadicHist.empty(c, self.bins, dev)  # every position's activation
        self.maxima = DyadicHist.empty(c, self.bins, dev)  # each sample's maximum
        shape = (c, self.bins, self.reservoir)
        self.r_key = torch.full(shape, EMPTY, dtype=torch.int64, device=dev)
        self.r_sample = torch.full(shape, -1, dtype=torch.int64, device=dev)
        self.r_value = torch.full(shape, -1.0, device=dev)
        self.r_pos = torch.full(shape, -1, dtype=torch.int64, device=dev)

    @property
    def config(self) -> dict:
        return {"k": self.k, "bins": self.bins, "reservoir": self.reservoir, "seed": self.seed}

    @property
    def device(self) -> torch.device:
        return self.top_value.device

    def __repr__(self) -> str:
        return (f"ChannelStats(channels={self.n_channels}, grid={self.hw}, samples={self.n_samples}, "
                f"k={self.k}, bins={self.bins}, reservoir={self.reservoir}, {self.device})")

    # -- streaming ---------------------------------------------------------------------------

    def update(self, out: torch.Tensor, first_sample: int, valid: torch.Tensor | None = None) -> None:
        """Add a batch of the layer's output: shape (B, C, H, W) or (B, C), samples
        ``first_sample .. first_sample + B - 1``. Non-finite batches are skipped (capture refuses
        them with its own error).

        valid : (B, H * W) bool, the positions that count (tokens: True for the valid ones, left
            aligned, of a layer built with ``hw=TOKENS_HW``); padding enters no statistic
        """
        found = self.candidates(out, first_sample, valid)
        if found is not None:
            self.take(*found)

    def update_tokens(self, out: torch.Tensor, first_sample: int, mask: torch.Tensor | None = None) -> None:
        """``update`` of a text layer's output (B, T, C) (statistics built with ``hw=TOKENS_HW``)
        with ``mask`` (B, T) bool of the valid tokens (None: all): the same as ``update`` on each
        sample's valid tokens packed to the left, without packing them."""
        found = self.token_candidates(out, first_sample, mask)
        if found is not None:
            self.take(*found)

    # ``update`` in two steps, so that capture can gather the per-sample maxima of several
    # batches and take them at once: the sketch's sorts cost about the same for a batch as for
    # many, and since every merge is exact and order-free, the statistics are bit-identical.

    def candidates(self, out: torch.Tensor, first_sample: int, valid: torch.Tensor | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
        """``update``'s first step: every position into the positions histogram; returns each
        sample's maximum per channel as (value float32 (C, B), sample (C, B), position (C, B)),
        for ``take``, or None for a skipped batch."""
        out = out.detach()
        if out.ndim == 2:
            out = out[:, :, None, None]
        b, c, h, w = out.shape
        fits = (h, w) == self.hw or (self.hw == TOKENS_HW and h == 1)
        if c != self.n_channels or not fits:
            raise ValueError(f"ChannelStats for {self.n_channels} channels on a {self.hw} grid got "
                             f"an output of shape {tuple(out.shape)}.")
        flat = out.reshape(b, c, h * w)
        if valid is None:
            best, pos = flat.max(dim=2)  # (B, C): each sample's strongest position
            lo = out.amin(dim=(0, 2, 3)).double()
        else:
            keep = valid[:, None, :]
            best, pos = flat.masked_fill(~keep, -math.inf).max(dim=2)
            lo = flat.masked_fill(~keep, math.inf).amin(dim=(0, 2)).double()
        if valid is None:
            return self._count(lo, best, pos, first_sample, lambda: self.positions.bin_of(out, 1, flat=True))
        # only the valid positions' bins are counted
        return self._count(lo, best, pos, first_sample, lambda: self.positions.bin_of(
            out, 1, flat=True).reshape(b, c, h * w).transpose(1, 2)[valid])

    def token_candidates(self, out: torch.Tensor, first_sample: int, mask: torch.Tensor | None = None
                         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
        """``update_tokens``'s first step (see ``candidates``); positions are indices among each
        sample's valid tokens."""
        out = out.detach()
        if out.ndim != 3 or out.shape[2] != self.n_channels or self.hw != TOKENS_HW:
            raise ValueError(f"ChannelStats for {self.n_channels} channels on a {self.hw} grid got "
                             f"a token output of shape {tuple(out.shape)}; token outputs (B, T, C) "
                             f"need hw={TOKENS_HW}.")
        b, t, c = out.shape
        # (B, C): each sample's strongest valid token (the first, on ties); not finite: the plain
        # way, which gives the same answer and leaves the batch to _count's check
        found = _first_max(out, mask)
        if found is None:
            found = (out if mask is None else out.masked_fill(~mask[:, :, None], -math.inf)).max(dim=1)
        best, at = found
        if mask is None:
            values = out.reshape(b * t, c)
            pos = at
        else:
            # (R, C): the valid tokens only, for the positions histogram (index_select of whole
            # rows is several times faster than boolean indexing)
            values = out.reshape(b * t, c).index_select(0, mask.reshape(-1).nonzero().flatten())
            pos = (mask.long().cumsum(1) - 1).gather(1, at)  # its index among the valid tokens
        lo = values.amin(dim=0).double()
        return self._count(lo, best, pos, first_sample, lambda: self.positions.bin_of(values, 1, flat=True))

    def _count(self, lo, best, pos, first_sample: int, bins_of):
        """The candidates' shared tail: None for a non-finite batch; else every position into the
        positions histogram (``bins_of()``: their flat bins, once the grid covers [lo, max of
        best]: one count) and the candidates (C, B) of ``best``, ``pos`` (B, C)."""
        hi = best.amax(dim=0).double()
        if not bool(torch.isfinite(lo).all() & torch.isfinite(hi).all()):
            return None
        b, c = best.shape
        self.positions.widen(lo, hi)
        self.positions.counts += count(bins_of(), c * self.bins).view(c, self.bins)
        sid = torch.arange(first_sample, first_sample + b, device=best.device)
        return best.float().T, sid.expand(c, b), pos.T

    def take(self, value, sample, pos) -> None:
        """``update``'s second step: merge candidates (C, m) of per-sample maxima, of distinct
        samples not taken before, into top-k, maxima histogram and sketch."""
        c, m = value.shape
        self.n_samples += m  # candidates are distinct samples
        self._merge_top(value, sample, pos)
        where = self.maxima.widen(value.amin(1).double(), value.amax(1).double())
        if where is not None:
            self._regroup_sketch(where)
        bin_ = self.maxima.bin_of(value, 0)
        offsets = torch.arange(c, device=value.device)[:, None] * self.bins
        self.maxima.counts += count(bin_ + offsets, c * self.bins).view(c, self.bins)
        key = self._keys(sample)
        self._insert(bin_, key, sample, value, pos)

    def _keys(self, sample: torch.Tensor) -> torch.Tensor:
        """Fixed random key of each (sample, channel), int64 in [0, 2**62)."""
        ch = torch.arange(sample.shape[0], device=sample.device)[:, None]
        sample = sample.to(torch.int64)
        if len(sample) and torch.equal(sample, sample[:1].expand_as(sample)):
            # capture's candidates: the same samples for every channel, so hash them once
            sample = sample[:1]
        base = _splitmix64(sample + _splitmix64_int(self.seed))
        return _splitmix64(base * 1_000_003 + ch) & _KEY_MASK

    def _merge_top(self, value, sample, pos) -> None:
        v = torch.cat([self.top_value, value], 1)
        s = torch.cat([self.top_sample, sample], 1)
        p = torch.cat([self.top_pos, pos], 1)
        # ties go to the smaller sample id, so the result does not depend on the order of merging
        if len(s) and int(s.min()) >= -1 and int(s.max()) < _MAX_SAMPLE:
            # one topk of (value, -sample) packed into an int64: the float's bits made monotone
            # (negatives flipped; + 0.0 turns -0.0, which compares equal to 0.0, into 0.0)
            bits = (v + 0.0).view(torch.int32).long()
            bits = torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits)
            order = torch.topk((bits << 32) | (_MAX_SAMPLE - s), min(self.k, v.shape[1]), dim=1).indices
        else:
            order = torch.argsort(s, dim=1, stable=True)
            order = order.gather(1, torch.argsort(v.gather(1, order), dim=1, descending=True, stable=True))
            order = order[:, : self.k]
        self.top_value, self.top_sample, self.top_pos = v.gather(1, order), s.gather(1, order), p.gather(1, order)

    def _regroup_sketch(self, where: torch.Tensor) -> None:
        """After the maxima grid changed: bins merged or shifted, so re-take each bin's bottom r.

        Only the channels whose grid changed are redone (after the first batches, few are).
        """
        c, nb, r = self.r_key.shape
        moved = (where != torch.arange(nb, device=where.device)).any(1).nonzero().flatten()
        if len(moved) == 0:
            return
        m = len(moved)
        group = (where[moved] + torch.arange(m, device=where.device)[:, None] * nb)[:, :, None].expand(m, nb, r)
        keys = self.r_key[moved]
        full = keys != EMPTY
        key, (sample, value, pos) = bottom_r(
            group[full], keys[full], (self.r_sample[moved][full], self.r_value[moved][full],
                                      self.r_pos[moved][full]), m * nb, r)
        for name, new in (("r_key", key), ("r_sample", sample), ("r_value", value), ("r_pos", pos)):
            getattr(self, name)[moved] = new.view(m, nb, r)

    def _set_sketch(self, key, sample, value, pos) -> None:
        c, nb, r = self.r_key.shape
        self.r_key, self.r_sample = key.view(c, nb, r), sample.view(c, nb, r)
        self.r_value, self.r_pos = value.view(c, nb, r), pos.view(c, nb, r)

    def _insert(self, bin_, key, sample, value, pos) -> None:
        """Offer items (C, m) to the sketch; only those below their bin's r-th key can enter."""
        c, nb, r = self.r_key.shape
        group = (bin_ + torch.arange(c, device=bin_.device)[:, None] * nb).reshape(-1)
        key = key.reshape(-1)
        limit = self.r_key.view(c * nb, r)[:, -1]
        # the flat indices of the items that can enter: one selection, then index_select of each
        # tensor (a boolean index of each costs a full pass over all the items every time)
        idx = (key < limit[group]).nonzero().flatten()
        if len(idx) == 0:
            return
        g_in, k_in = group.index_select(0, idx), key.index_select(0, idx)
        # Only a group's r smallest new keys can enter. Keys are uniform, so about 2r of a group's
        # n new items lie below 2r / n of the key range: the rest are dropped before the sort,
        # except in a group with fewer than r below the cut, which keeps all (exact either way)
        n_new = count(g_in, c * nb)
        cut = torch.where(n_new > 2 * r, (_KEY_MASK + 1) // n_new.clamp_min(1) * (2 * r), EMPTY)
        below = k_in < cut[g_in]
        short = count(g_in[below], c * nb) < r
        sel = (below | short[g_in]).nonzero().flatten()
        idx, g_new, k_new = idx.index_select(0, sel), g_in.index_select(0, sel), k_in.index_select(0, sel)
        new = lambda t: t.reshape(-1).index_select(0, idx)  # noqa: E731 (one-line selector)
        # the sorted distinct groups entered and each item's index among them (torch.unique's
        # answer without its sort: the groups are small integers)
        hit = torch.zeros(c * nb, dtype=torch.bool, device=bin_.device)
        hit[g_new] = True
        touched = hit.nonzero().flatten()
        local = (hit.cumsum(0) - 1)[g_new]
        rows_key = self.r_key.view(c * nb, r)[touched]
        live = rows_key != EMPTY
        old_group = torch.arange(len(touched), device=key.device)[:, None].expand(-1, r)[live]
        flat = lambda t: t.view(c * nb, r)[touched][live]  # noqa: E731 (one-line selector)
        k2, (s2, v2, p2) = bottom_r(
            torch.cat([old_group, local]), torch.cat([rows_key[live], k_new]),
            (torch.cat([flat(self.r_sample), new(sample)]), torch.cat([flat(self.r_value), new(value)]),
             torch.cat([flat(self.r_pos), new(pos)])),
            len(touched), r)
        for name, new in (("r_key", k2), ("r_sample", s2), ("r_value", v2), ("r_pos", p2)):
            getattr(self, name).view(c * nb, r)[touched] = new

    def merge(self, other: "ChannelStats") -> "ChannelStats":
        """Statistics of both inputs' data together (they must hold different samples)."""
        if (other.n_channels, other.hw, other.config) != (self.n_channels, self.hw, self.config):
            raise ValueError(f"Cannot merge {other!r} into {self!r}: channels, grid and config must match.")
        out = self.clone()
        dev = out.device
        out.positions.widen(other.positions.lo.to(dev), other.positions.hi.to(dev))
        o = other.to(dev)
        where = regroup(o.positions.e, o.positions.a, out.positions.e, out.positions.a, out.bins)
        out.positions.counts += torch.zeros_like(o.positions.counts).scatter_add_(1, where, o.positions.counts)
        # the other's maxima: widen to them, then move their counts and sketch onto our grid
        n_before = out.n_samples
        where_self = out.maxima.widen(o.maxima.lo, o.maxima.hi)
        if where_self is not None:
            out._regroup_sketch(where_self)
        where = regroup(o.maxima.e, o.maxima.a, out.maxima.e, out.maxima.a, out.bins)
        out.maxima.counts += torch.zeros_like(o.maxima.counts).scatter_add_(1, where, o.maxima.counts)
        out._merge_top(o.top_value, o.top_sample, o.top_pos)
        c, nb, r = out.r_key.shape
        offsets = torch.arange(c, device=dev)[:, None, None] * nb
        group_o = (where[:, :, None] + offsets).expand(c, nb, r)
        group_s = (torch.arange(nb, device=dev)[None, :, None] + offsets).expand(c, nb, r)
        fs, fo = out.r_key != EMPTY, o.r_key != EMPTY
        key, (s, v, p) = bottom_r(
            torch.cat([group_s[fs], group_o[fo]]), torch.cat([out.r_key[fs], o.r_key[fo]]),
            (torch.cat([out.r_sample[fs], o.r_sample[fo]]), torch.cat([out.r_value[fs], o.r_value[fo]]),
             torch.cat([out.r_pos[fs], o.r_pos[fo]])), c * nb, r)
        out._set_sketch(key, s, v, p)
        out.n_samples = n_before + o.n_samples
        return out

    # -- copies and persistence ----------------------------------------------------------------

    def clone(self) -> "ChannelStats":
        return self.to(self.device, copy=True)

    def to(self, device: torch.device | str, copy: bool = False) -> "ChannelStats":
        out = ChannelStats.__new__(ChannelStats)
        out.__dict__.update({k: v for k, v in self.__dict__.items()})
        for name in self._TENSORS:
            setattr(out, name, getattr(self, name).to(device, copy=copy))
        for name in ("positions", "maxima"):
            h = getattr(self, name)
            setattr(out, name, DyadicHist(*(t.to(device, copy=copy) for t in (h.e, h.a, h.counts, h.lo, h.hi))))
        return out

    def to_tensors(self, prefix: str = "") -> dict[str, torch.Tensor]:
        """Every tensor of the state, keyed ``prefix + name`` (for a safetensors shard)."""
        out = {prefix + name: getattr(self, name) for name in self._TENSORS}
        for name in ("positions", "maxima"):
            h = getattr(self, name)
            for field_ in ("e", "a", "counts", "lo", "hi"):
                out[f"{prefix}{name}.{field_}"] = getattr(h, field_)
        out[prefix + "n_samples"] = torch.tensor([self.n_samples], dtype=torch.int64)
        return out

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], prefix: str, config: dict,
                     hw: tuple[int, int], device: torch.device | str = "cpu") -> "ChannelStats":
        """The inverse of ``to_tensors``; raises ValueError when a tensor is missing or misshapen."""
        try:
            c = int(tensors[prefix + "top_value"].shape[0])
            out = cls(c, hw, device="meta", **{k: int(config[k]) for k in STATS_DEFAULTS})
            for name in cls._TENSORS:
                setattr(out, name, tensors[prefix + name].to(device))
            for name in ("positions", "maxima"):
                setattr(out, name, DyadicHist(*(tensors[f"{prefix}{name}.{f}"].to(device)
                                           for f in ("e", "a", "counts", "lo", "hi"))))
            out.n_samples = int(tensors[prefix + "n_samples"][0])
        except KeyError as e:
            raise ValueError(f"The stored statistics lack the tensor {e.args[0]!r}; the store is "
                             "damaged or from another version. Capture again with stats=...") from None
        if out.r_key.shape != (c, out.bins, out.reservoir) or out.top_value.shape != (c, out.k):
            raise ValueError("The stored statistics do not match their config (k, bins, reservoir); "
                             "the store is damaged. Capture again with stats=...")
        return out

    # -- queries -----------------------------------------------------------------------------

    def _channel(self, channel) -> int:
        return channel_index(channel, self.n_channels)

    def _yx(self, pos: np.ndarray) -> np.ndarray:
        w = self.hw[1]
        if self.hw == TOKENS_HW:  # a token's index among its sample's valid tokens
            return np.stack([np.zeros_like(pos), pos], axis=-1).reshape(-1, 2).astype(np.int64)
        return np.stack([pos // w, pos % w], axis=-1).reshape(-1, 2).astype(np.int64)

    def top(self, channel: int, n: int | None = None) -> TopExamples:
        """The channel's top samples, strongest first (at most k)."""
        c = self._channel(channel)
        n = self.k if n is None else min(positive_int(n, "n"), self.k)
        v = self.top_value[c, :n].cpu().numpy()
        keep = np.isfinite(v)
        return TopExamples(self.top_sample[c, :n].cpu().numpy()[keep],
                           self._yx(self.top_pos[c, :n].cpu().numpy()[keep]), v[keep].astype(np.float32))

    def histogram(self, channel: int, of: str = "positions") -> tuple[np.ndarray, np.ndarray]:
        """(edges (bins + 1,) float64, counts (bins,) int64) of a channel's activations.

        of : "positions" (every spatial position) or "maxima" (each sample's maximum)
        """
        c = self._channel(channel)
        one_of(of, "of", ("positions", "maxima"))
        h = getattr(self, of)
        return h.edges(c), h.counts[c].cpu().numpy()

    def quantile(self, channel: int, q: float, of: str = "maxima") -> float:
        """The q-quantile of a channel's activations from the histogram (error <= one bin width)."""
        edges, counts = self.histogram(channel, of)
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"q must lie in [0, 1], got {q}.")
        cum = np.concatenate([[0], np.cumsum(counts)])
        if cum[-1] == 0:
            raise ValueError("No data has been seen yet.")
        return float(np.interp(q * cum[-1], cum, edges))

    def sample_range(self, channel: int, qa: float, qb: float, n: int, seed: int = 0) -> TopExamples:
        """Up to n samples whose maxima lie in the quantile range [qa, qb) (see module docstring)."""
        c = self._channel(channel)
        counts = self.maxima.counts[c].cpu().double()
        total = float(counts.sum())
        end = torch.cumsum(counts, 0)
        start = end - counts
        overlap = (end.clamp_max(qb * total) - start.clamp_min(qa * total)).clamp_min(0)
        frac = torch.where(counts > 0, overlap / counts.clamp_min(1), torch.zeros_like(counts))
        key = self.r_key[c].cpu()
        involved = frac > 0
        if not bool(involved.any()):
            return TopExamples(np.zeros(0, np.int64), np.zeros((0, 2), np.int64), np.zeros(0, np.float32))
        limit = key[:, -1][involved].min()  # below it, every bin involved kept all its items
        live = (key != EMPTY) & (key < limit)
        eligible = live & (_hash01(key, seed) < frac[:, None])
        k_el = key[eligible]
        order = torch.argsort(_hash01(k_el, seed + 1))[:n]  # a seeded choice among the eligible
        pick = lambda t: t[c].cpu()[eligible][order].numpy()  # noqa: E731
        vals, sids, pos = pick(self.r_value), pick(self.r_sample), pick(self.r_pos)
        by_value = np.argsort(-vals, kind="stable")
        return TopExamples(sids[by_value], self._yx(pos[by_value]), vals[by_value].astype(np.float32))

    def samples(self, channel: int, n: int = 20, n_top: int | None = None,
                ranges=DEFAULT_RANGES, n_random: int | None = None, seed: int = 0,
                layer: str = "") -> UnitSamples:
        """Top samples, then up to n per quantile range, then a plain random sample."""
        n = positive_int(n, "n")
        groups = {"top": self.top(channel, n if n_top is None else n_top)}
        names = {}
        for i, (qa, qb) in enumerate(_check_ranges(ranges)):
            name = _range_name(qa, qb)
            groups[name] = self.sample_range(channel, qa, qb, n, seed + 7919 * (i + 1))
            names[name] = (qa, qb)
        groups["random"] = self.sample_range(channel, 0.0, 1.0, n if n_random is None else positive_int(n_random, "n_random"), seed)
        return UnitSamples(layer, int(channel), groups, names, "stats")
