"""Scores from a budget of inputs: uniform, top-only, and model-guided importance sampling (MG-IS).

A unit's **all-data score** is the correlation between a simulator's predictions and the unit's
activations over every sample of the cache (each at its strongest position, ``unit_maxima``).
With a costly simulator (a language model, a person) only a budget of inputs can be simulated,
and the score is estimated from them. The activations are known for every input (the model is
cheap to run), so they can choose the inputs: **MG-IS** draws ``budget`` inputs without
replacement with inclusion probabilities proportional to ``mix * mean + (1 - mix) * |a - mean(a)|``
(capped at 1; systematic sampling in a random order, so the sample has exactly ``budget`` inputs
and exactly those probabilities), and estimates the correlation with each input weighted by the
inverse of its inclusion probability (the Horvitz-Thompson weights, normalised). The floor
``mix`` keeps every input reachable: a unit's misses (inputs the explanation claims but the unit
ignores) sit at low activations, and top activations alone never see them.

``compare_sampling`` measures, per unit, the mean absolute error of each estimate against the
all-data score, over ``repeats`` draws: "uniform" (``budget`` inputs uniformly, plain
correlation), "top" (the ``budget`` strongest inputs; deterministic) and "mgis".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..cache.cache import ActivationCache
from ..cache.checks import number, positive_int, random_seed
from ..cache.units import unit_maxima
from .score import _Predictions
from .table import ExplanationTable

__all__ = ["weighted_corr", "inclusion_probabilities", "systematic_sample", "mgis_sample",
           "SamplingComparison", "compare_sampling"]


def weighted_corr(a: np.ndarray, p: np.ndarray, w: np.ndarray | None = None) -> float:
    """Pearson correlation of a and p (n,) with weights w (n,) (None: equal); 0.0 when either
    side is constant (as ``score_explanation`` scores a constant prediction)."""
    a, p = np.asarray(a, np.float64), np.asarray(p, np.float64)
    w = np.ones(len(a)) if w is None else np.asarray(w, np.float64)
    if len(a) < 2 or w.sum() <= 0 or np.ptp(a) == 0 or np.ptp(p) == 0:
        return 0.0
    w = w / w.sum()
    da, dp = a - (w * a).sum(), p - (w * p).sum()
    va, vp = (w * da * da).sum(), (w * dp * dp).sum()
    if va <= 1e-300 or vp <= 1e-300:
        return 0.0
    return float(np.clip((w * da * dp).sum() / np.sqrt(va * vp), -1.0, 1.0))


def inclusion_probabilities(size: np.ndarray, budget: int) -> np.ndarray:
    """Probabilities (n,) proportional to ``size`` (>= 0), summing to ``budget``, none above 1
    (those that would be are set to 1 and the rest scaled again)."""
    size = np.asarray(size, np.float64)
    n = len(size)
    if budget >= n:
        return np.ones(n)
    pi, fixed = np.zeros(n), np.zeros(n, dtype=bool)
    while True:
        rest, free = budget - fixed.sum(), ~fixed
        total = size[free].sum()
        pi[free] = rest * size[free] / total if total > 0 else rest / free.sum()
        over = free & (pi >= 1.0)
        if not over.any():
            return np.clip(pi, 0.0, 1.0)
        fixed |= over
        pi[fixed] = 1.0


def systematic_sample(pi: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """round(sum(pi)) distinct indices, index i included with probability pi[i] (systematic
    sampling over a random order)."""
    order = rng.permutation(len(pi))
    cum = np.cumsum(pi[order])
    points = rng.random() + np.arange(round(float(pi.sum())))
    return order[np.minimum(np.searchsorted(cum, points), len(pi) - 1)]


def mgis_sample(values: np.ndarray, budget: int, rng: np.random.Generator,
                mix: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    """(indices (budget,), their weights (budget,)): MG-IS's draw from a unit's activations (n,)."""
    a = np.asarray(values, np.float64)
    dev = np.abs(a - a.mean())
    pi = inclusion_probabilities(mix * dev.mean() + (1.0 - mix) * dev + 1e-12, budget)
    idx = systematic_sample(pi, rng)
    return idx, 1.0 / pi[idx]


@dataclass
class SamplingComparison:
    """Per unit, the all-data score and each method's mean absolute error against it.

    units : the table's unit of each row; full : all-data scores (n_units,)
    errors : method -> (n_units,) mean absolute error over the repeats ("top": one draw)
    """

    layer: str
    budget: int
    repeats: int
    units: list[int]
    full: np.ndarray
    errors: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def mae(self) -> dict[str, float]:
        """Each method's error averaged over the units."""
        return {k: float(v.mean()) for k, v in self.errors.items()}

    def __repr__(self) -> str:
        parts = ", ".join(f"{k} {v:.4f}" for k, v in self.mae.items())
        return (f"SamplingComparison({len(self.units)} units of {self.layer!r}, budget {self.budget}, "
                f"{self.repeats} repeats; mean absolute error: {parts})")


def compare_sampling(
    cache: ActivationCache,
    table: ExplanationTable,
    simulator: Any,
    annotations: Any = None,
    budget: int = 50,
    repeats: int = 20,
    seed: int = 0,
    mix: float = 0.3,
) -> SamplingComparison:
    """Uniform, top-only and MG-IS estimates of each explained unit's all-data score, at a budget.

    table : ``explain_layer``'s result (its channels; failed units and directions are skipped)
    simulator : a ``Simulator`` (``prepare`` is called here), the one the table was scored with
    budget : inputs per unit; repeats : draws per unit of the random methods
    mix : MG-IS's uniform floor, in [0, 1] (1 is uniform sampling with weights)
    """
    layer = cache.layer_name(table.layer)
    budget, repeats = positive_int(budget, "budget"), positive_int(repeats, "repeats")
    seed = random_seed(seed)
    mix = number(mix, "mix", 0.0, 1.0)
    if not (hasattr(simulator, "prepare") and hasattr(simulator, "simulate")):
        raise TypeError(f"simulator must have prepare() and simulate() (a Simulator), got "
                        f"{type(simulator).__name__}.")
    rows = [r for r in table if r["kind"] == "channel" and r["explanation"] is not None and r["score"] is not None]
    if not rows:
        raise ValueError("The table holds no scored channel; run explain_layer first.")
    simulator.prepare(cache, layer, annotations)
    rng = np.random.default_rng(seed)
    full, errors = [], {"uniform": [], "top": [], "mgis": []}
    for row in rows:
        m = unit_maxima(cache, row["unit"], layer)
        text = row["explanation"]
        predict = _Predictions(cache, layer, lambda i, image, ann, text=text: simulator.simulate(text, i),
                               annotations)
        a = m.values.astype(np.float64)
        p = np.array([predict(int(s), yx) for s, yx in zip(m.sample_id, m.yx)])
        score = weighted_corr(a, p)
        full.append(score)
        n = len(a)
        b = min(budget, n)
        top = np.argsort(-a, kind="stable")[:b]
        errors["top"].append(abs(weighted_corr(a[top], p[top]) - score))
        uni, mg = [], []
        for _ in range(repeats):
            u = rng.choice(n, b, replace=False)
            uni.append(abs(weighted_corr(a[u], p[u]) - score))
            i, w = mgis_sample(a, b, rng, mix)
            mg.append(abs(weighted_corr(a[i], p[i], w) - score))
        errors["uniform"].append(float(np.mean(uni)))
        errors["mgis"].append(float(np.mean(mg)))
    return SamplingComparison(layer, budget, repeats, [r["unit"] for r in rows], np.asarray(full),
                              {k: np.asarray(v) for k, v in errors.items()})
