"""Quantile-bin samples of any unit of a cache: a channel or a direction such as an atlas cell's mean.

A channel with streamed statistics (``capture(..., stats=True)``) is answered from them (see
``atlaswidgets.cache.topk``); a direction, or ``source="rows"``, is answered exactly from the cached
rows: each sample's best cached row, ranked, then sampled per quantile range with a seeded
generator.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

from .cache import ActivationCache, TopExamples, best_per_sample, finite_scores
from .checks import channel_index, checked_direction, is_int, one_of, positive_int
from .topk import DEFAULT_RANGES, UnitSamples, _check_ranges, _range_name

__all__ = ["unit_samples", "unit_maxima"]


def _scores(cache: ActivationCache, layer: str, unit) -> torch.Tensor:
    """Each cached row's value of the unit (a channel index or a direction), float32 (n_rows,)."""
    la = cache.layers[layer]
    if is_int(unit):
        return la.acts[:, channel_index(unit, la.n_channels, layer)].float()
    if not isinstance(unit, (torch.Tensor, np.ndarray, list, tuple)):
        raise TypeError(f"unit must be a channel index (int) or a direction (array of shape "
                        f"({la.n_channels},)), got {type(unit).__name__}.")
    d = checked_direction(unit, la.n_channels, layer)
    return finite_scores(la.acts.float() @ d.to(la.acts.device))


def unit_maxima(cache: ActivationCache, unit, layer: str | None = None) -> TopExamples:
    """Each sample's best cached row for a unit: its value there and its position.

    unit : a channel index, or a direction of shape (n_channels,) (its value is the dot product)
    Returns TopExamples with one entry per sample that has rows, in sample order (ties: the first
    row), ``rows`` included.
    """
    name = cache.layer_name(layer)
    la = cache.layers[name]
    scores = _scores(cache, name, unit)
    rows = best_per_sample(la.sample_id, scores, cache.n_samples)
    return TopExamples(la.sample_id[rows].cpu().numpy(),
                       la.yx[rows].cpu().numpy().reshape(-1, 2),
                       scores[rows].cpu().numpy().astype(np.float32),
                       rows.cpu().numpy())


def _rows_samples(cache, layer, unit, n, n_top, ranges, n_random, seed, maxima=None) -> UnitSamples:
    """Exact groups from the cached rows: each sample's best cached row, ranked."""
    if maxima is None:
        maxima = unit_maxima(cache, unit, layer)
    sids, yx, vals, rows = maxima.sample_id, maxima.yx, maxima.values, maxima.rows
    order = np.lexsort((sids, -vals))  # strongest first, ties by sample id
    asc = order[::-1]
    m = len(order)

    def ex(idx):
        idx = idx[np.argsort(-vals[idx], kind="stable")]
        return TopExamples(sids[idx], yx[idx].reshape(-1, 2), vals[idx], None if rows is None else rows[idx])

    rng = np.random.default_rng(seed)
    groups = {"top": ex(order[: (n if n_top is None else n_top)])}
    names = {}
    for qa, qb in _check_ranges(ranges):
        lo, hi = int(math.floor(qa * m)), max(int(math.ceil(qb * m)), int(math.floor(qa * m)) + 1)
        pool = asc[lo:min(hi, m)]
        groups[_range_name(qa, qb)] = ex(rng.permutation(pool)[:n])
        names[_range_name(qa, qb)] = (qa, qb)
    groups["random"] = ex(rng.permutation(asc)[: (n if n_random is None else n_random)])
    unit_id = int(unit) if isinstance(unit, (int, np.integer)) else np.asarray(torch.as_tensor(unit).detach().cpu())
    return UnitSamples(layer, unit_id, groups, names, "rows")


def unit_samples(
    cache: ActivationCache,
    unit: int | np.ndarray | torch.Tensor,
    layer: str | None = None,
    n: int = 20,
    n_top: int | None = None,
    ranges: Sequence[tuple[float, float]] = DEFAULT_RANGES,
    n_random: int | None = None,
    seed: int = 0,
    source: str = "auto",
    maxima: TopExamples | None = None,
) -> UnitSamples:
    """Top samples, quantile-range samples and a random sample of a channel or a direction.

    unit : a channel index, or a direction, array of shape (n_channels,) (e.g. an atlas cell's
        mean activation; its value at a row is the dot product)
    n : samples per quantile range (and the default for n_top and n_random)
    ranges : quantile ranges (qa, qb), default the neuron-explainer viewer's
    source : "stats" (a channel's streamed statistics, over every position), "rows" (exact,
        from the cached rows only) or "auto" (stats when the layer has them and unit is a channel)
    maxima : ``unit_maxima(cache, unit, layer)`` when the caller has it already (a viewer that
        also draws its histogram), so the rows are not scored twice; used only from the rows
    Returns a UnitSamples whose groups are "top", one per range, then "random"; each example is
    a sample at its strongest position.
    """
    name = cache.layer_name(layer)
    n = positive_int(n, "n")
    if n_top is not None:
        n_top = positive_int(n_top, "n_top")
    if n_random is not None:
        n_random = positive_int(n_random, "n_random")
    one_of(source, "source", ("auto", "stats", "rows"))
    is_channel = is_int(unit)
    stats = getattr(cache, "stats", {}).get(name)
    if source == "stats" or (source == "auto" and is_channel and stats is not None):
        if stats is None:
            raise ValueError(f"Layer {name!r} has no streamed statistics; capture with stats=True, "
                             "or pass source='rows'.")
        if not is_channel:
            raise ValueError("Streamed statistics are per channel; for a direction use source='rows' (or 'auto').")
        return stats.samples(unit, n, n_top, ranges, n_random, seed, layer=name)
    return _rows_samples(cache, name, unit, n, n_top, ranges, n_random, seed, maxima)


