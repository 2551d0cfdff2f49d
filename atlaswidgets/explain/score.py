"""Explanation scoring by simulation, after "Language models can explain neurons" (Bills et al. 2023).

An explanation of a unit (a channel, or any direction) is scored by how well a *simulation* built
from it predicts the unit's true activations. The examples are the unit's top samples and samples
from quantile ranges of its activation distribution plus a plain random sample
(``topk.unit_samples``); each example is a sample at its strongest position. Like the paper we
report the Pearson correlation over the top examples only ("top only") and over the top and the
random / quantile examples together ("top and random", the main score).

A simulation is ``simulate(sample_id, image, annotations) -> prediction``: ``image`` is the
cache's uint8 display copy (3, h, w) (at display size, see ``capture``'s ``display_size``) or None, ``annotations`` the sample's annotation list (or
None). The prediction is a number (for the whole sample) or an array of shape (grid_h, grid_w)
on the layer's grid, read at the example's position. Explanations come from a person (a predicate
over annotations, or ``rf_overlap`` for "this position sees a noodles box") or from a pluggable
explainer, an LLM call a user supplies (``explain_unit``).

Text. On a token layer (``LayerActs.kind == "tokens"``) an example is a sample at one token, and a
prediction is a number for the whole sample or one number per token: an array (T,) (or (1, T))
over the sample's valid tokens from the left (the columns of ``cache.tokens``; for right-padded
inputs, the inputs' own columns), read at the example's token. A sample's annotations default to
its token strings (``cache.vocab``), so ``find_units(cache, lambda toks: [t == "salt" for t in
toks])`` scores a token-identity explanation; annotations may also be a per-token array
(n_samples, T) such as ``text.corpus(...).truth["in_quotes"]``, and ``find_units`` takes such an
array in place of the predicate (the truth is the prediction). ``describe`` gives a text
sample's tokens, and the example's token and position, to an explainer or simulator.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from ..cache.cache import ActivationCache
from ..cache.checks import channel_index, positive_int
from ..cache.topk import DEFAULT_RANGES, UnitSamples
from ..cache.units import unit_samples

__all__ = ["ExplanationScore", "score_explanation", "find_units", "rf_overlap", "explain_unit",
           "describe", "token_strings"]

Simulate = Callable[[int, Any, Any], Any]


@dataclass
class ExplanationScore:
    """How well an explanation predicts a unit.

    top_and_random : correlation over every example (top, quantile ranges, random): the score
    top_only : correlation over the top examples only (0.0 when either side is constant there)
    random_only : correlation over the quantile-range and random examples only
    actual, predicted : float64 arrays, shape (n_examples,), in the order of ``groups``
    groups : the group name of each example ("top", "[0.99, 0.999]", ..., "random")
    """

    layer: str
    unit: Any
    top_and_random: float
    top_only: float
    random_only: float
    n_examples: int
    explanation: str | None = None
    actual: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)
    predicted: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)
    groups: list[str] = field(default_factory=list, repr=False)


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation; 0.0 when either side is constant (a constant prediction explains nothing)."""
    if len(a) < 2 or np.std(a) == 0 or np.std(b) == 0:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


def _check_annotations(cache: ActivationCache, annotations) -> None:
    if annotations is not None and not hasattr(annotations, "__len__"):
        raise TypeError(f"annotations must hold one entry per sample (a list, or an array "
                        f"(n_samples, T) per token), got {type(annotations).__name__}.")
    if annotations is not None and len(annotations) != cache.n_samples:
        raise ValueError(f"annotations has {len(annotations)} entries but the cache holds "
                         f"{cache.n_samples} samples; pass the annotations of the data the cache "
                         "was captured from, one list per sample.")


class _Predictions:
    """Calls ``simulate`` once per sample and checks what it returns."""

    def __init__(self, cache: ActivationCache, layer: str, simulate: Simulate, annotations):
        if not callable(simulate):
            raise TypeError(f"simulate must be a function (sample_id, image, annotations) -> "
                            f"prediction, got {type(simulate).__name__}.")
        self.cache, self.simulate, self.annotations = cache, simulate, annotations
        self.hw = tuple(cache.layers[layer].hw)
        self.tokens = cache.layers[layer].kind == "tokens"
        if self.tokens and annotations is None:
            self.annotations = token_strings(cache)
        self.memo: dict[int, Any] = {}

    def __call__(self, sample_id: int, yx) -> float:
        pred = self.memo.get(sample_id)
        if pred is None:
            image = self.cache.images[sample_id] if self.cache.images is not None else None
            ann = self.annotations[sample_id] if self.annotations is not None else None
            if isinstance(ann, torch.Tensor):
                ann = ann.detach().cpu().numpy()
            pred = self.memo[sample_id] = self._check(self.simulate(sample_id, image, ann), sample_id)
        if pred.ndim == 0:
            return float(pred)
        if self.tokens:
            if int(yx[0]) < 0:  # a "mean" row: the mean over the sample's tokens
                return float(pred[:self._count(sample_id)].mean())
            return float(pred[int(yx[1])])
        return float(pred[max(int(yx[0]), 0), max(int(yx[1]), 0)])

    def _count(self, sample_id: int) -> int:
        """Valid tokens of a sample (its row of cache.tokens before the -1s)."""
        row = self.cache.tokens[sample_id] if self.cache.tokens is not None else None
        return int((row >= 0).sum()) if row is not None else self.hw[1]

    def _check(self, value, sample_id: int) -> np.ndarray:
        if isinstance(value, torch.Tensor):
            value = value.detach().cpu().numpy()
        try:
            arr = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError):
            raise TypeError(f"simulate returned {type(value).__name__} for sample {sample_id}; it must "
                            f"return a number or an array of shape {self.hw} (the layer's grid).") from None
        if self.tokens and arr.ndim in (1, 2):
            flat = arr.reshape(-1) if arr.ndim == 1 or arr.shape[0] == 1 else None
            need = self._count(sample_id)
            if flat is None or len(flat) < need:
                raise ValueError(f"simulate returned shape {arr.shape} for sample {sample_id}; on a "
                                 f"text layer it must return a number or one number per token, "
                                 f"shape ({need},) or longer (the sample's tokens from the left).")
            arr = flat
        elif arr.ndim != 0 and arr.shape != self.hw:
            raise ValueError(f"simulate returned shape {arr.shape} for sample {sample_id}; it must "
                             f"return a number or an array of shape {self.hw} (the layer's grid).")
        if not np.isfinite(arr).all():
            raise ValueError(f"simulate returned NaN or infinite values for sample {sample_id}; "
                             "predictions must be finite numbers.")
        return arr


def _score(samples: UnitSamples, predict: _Predictions, explanation=None) -> ExplanationScore:
    actual, predicted, groups = [], [], []
    for name, ex in samples.groups.items():
        for sid, yx, v in zip(ex.sample_id, ex.yx, ex.values):
            actual.append(float(v))
            predicted.append(predict(int(sid), yx))
            groups.append(name)
    actual, predicted = np.asarray(actual), np.asarray(predicted)
    top = np.array([g == "top" for g in groups], dtype=bool)
    if len(actual) < 2:
        raise ValueError("Fewer than two examples to score; capture more samples.")
    return ExplanationScore(
        samples.layer, samples.unit, _corr(actual, predicted), _corr(actual[top], predicted[top]),
        _corr(actual[~top], predicted[~top]), len(actual), explanation, actual, predicted, groups,
    )


def score_explanation(
    cache: ActivationCache,
    unit: int | np.ndarray | torch.Tensor,
    simulate: Simulate,
    layer: str | None = None,
    annotations: Sequence[Sequence[Mapping]] | None = None,
    n: int = 20,
    ranges: Sequence[tuple[float, float]] = DEFAULT_RANGES,
    seed: int = 0,
    source: str = "auto",
    explanation: str | None = None,
) -> ExplanationScore:
    """Correlation between a simulation's predictions and a unit's true activations.

    unit : a channel index or a direction, shape (n_channels,)
    simulate : (sample_id, image uint8 (3, H, W) or None, annotations or None) -> a number or
        an array of shape (grid_h, grid_w) of the layer
    annotations : per sample of the cache, its list of {"name", "box"} dicts, or None
    n : examples per group (top, each quantile range, random); see ``topk.unit_samples``
    Returns an ExplanationScore (``top_and_random`` is the score, ``top_only`` as in the paper).
    """
    name = cache.layer_name(layer)
    _check_annotations(cache, annotations)
    samples = unit_samples(cache, unit, name, n=n, ranges=ranges, seed=seed, source=source)
    return _score(samples, _Predictions(cache, name, simulate, annotations), explanation)


def token_strings(cache: ActivationCache) -> list[list[str]]:
    """Each sample's valid tokens as strings (``cache.vocab``; "#17" for an id without one)."""
    if cache.tokens is None:
        raise ValueError("This cache holds no tokens; token annotations need a text cache.")
    return [token_strings_of(cache, i) for i in range(cache.n_samples)]


def _from_predicate(predicate: Any, cache: ActivationCache | None = None) -> Simulate:
    if not callable(predicate) and cache is not None and cache.tokens is not None and isinstance(
            predicate, (torch.Tensor, np.ndarray)):
        values = predicate.detach().cpu().numpy() if isinstance(predicate, torch.Tensor) else predicate
        if values.ndim != 2 or len(values) != cache.n_samples:
            raise ValueError(f"A per-token predicate array must have shape (n_samples, T) = "
                             f"({cache.n_samples}, T), got {values.shape}.")
        values = values.astype(np.float64)
        return lambda sample_id, image, ann: values[sample_id]
    if not callable(predicate):
        raise TypeError(f"predicate must be a function of a sample's annotations (or, on a text "
                        f"cache, a per-token array (n_samples, T)), got {type(predicate).__name__}.")
    return lambda sample_id, image, ann: predicate(ann)


def find_units(
    cache: ActivationCache,
    predicate: Callable[[Any], Any],
    layer: str | None = None,
    annotations: Sequence[Sequence[Mapping]] | None = None,
    channels: Sequence[int] | None = None,
    top: int | None = 10,
    **score_kw: Any,
) -> list[ExplanationScore]:
    """Channels ranked by how well ``predicate`` explains them, best first.

    predicate : a sample's annotations -> bool / number (e.g. ``lambda ann: any(a["name"] ==
        "noodles" for a in ann)``) or an array (grid_h, grid_w) per position (``rf_overlap``).
        On a text layer: annotations -> a number or one number per token (annotations default to
        the sample's token strings), or a per-token array (n_samples, T) itself (see module doc)
    channels : the channels to score (default all); top : how many to return (None = all)
    score_kw : passed to ``score_explanation`` (n, ranges, seed, source)
    """
    name = cache.layer_name(layer)
    if annotations is None and cache.layers[name].kind != "tokens":  # text: the tokens by default
        raise ValueError("find_units needs annotations=: the list of each sample's annotations "
                         "(e.g. kitchen.dataset(n).annotations) that the predicate reads.")
    _check_annotations(cache, annotations)
    n_channels = cache.layers[name].n_channels
    chosen = range(n_channels) if channels is None else list(channels)
    for ch in chosen:
        channel_index(ch, n_channels, name)
    if top is not None:
        top = positive_int(top, "top", "or None")
    predict = _Predictions(cache, name, _from_predicate(predicate, cache), annotations)  # shared: one call per sample
    n, ranges = score_kw.pop("n", 20), score_kw.pop("ranges", DEFAULT_RANGES)
    seed, source = score_kw.pop("seed", 0), score_kw.pop("source", "auto")
    if score_kw:
        raise TypeError(f"find_units got unexpected keyword(s) {sorted(score_kw)}; allowed: n, ranges, seed, source.")
    scores = [_score(unit_samples(cache, int(ch), name, n=n, ranges=ranges, seed=seed, source=source), predict)
              for ch in chosen]
    scores.sort(key=lambda s: -s.top_and_random)
    return scores if top is None else scores[:top]


def rf_overlap(cache: ActivationCache, name: str, layer: str | None = None,
               min_overlap: float = 0.0) -> Callable[[Any], np.ndarray]:
    """A per-position predicate: 1.0 where a position's receptive field overlaps a ``name`` box.

    Returns ``predicate(annotations) -> float array (grid_h, grid_w)``, for ``find_units`` (or,
    wrapped as ``lambda i, img, ann: predicate(ann)``, for ``score_explanation``). Boxes follow
    ``atlaswidgets.cache.regions``: a position's receptive field centred on its input pixel.
    min_overlap : fraction of the annotation's area that must fall inside the field (0 = any)
    """
    la = cache.layer(layer)
    h_in, w_in = cache.input_hw
    if h_in <= 0 or w_in <= 0:
        raise ValueError("cache.input_hw is unknown; capture the cache with aw.capture().")
    gh, gw = la.hw
    rh, rw = la.rf
    cy = (np.arange(gh) + 0.5) * h_in / gh
    cx = (np.arange(gw) + 0.5) * w_in / gw
    y0 = np.clip(np.floor(cy - rh / 2), 0, h_in)[:, None]
    y1 = np.clip(np.ceil(cy + rh / 2), 0, h_in)[:, None]
    x0 = np.clip(np.floor(cx - rw / 2), 0, w_in)[None, :]
    x1 = np.clip(np.ceil(cx + rw / 2), 0, w_in)[None, :]

    def predicate(annotations) -> np.ndarray:
        hit = np.zeros((gh, gw), dtype=bool)
        for ann in annotations or ():
            if ann["name"] != name:
                continue
            ay0, ax0, ay1, ax1 = ann["box"]
            inter = np.clip(np.minimum(y1, ay1) - np.maximum(y0, ay0), 0, None) * \
                np.clip(np.minimum(x1, ax1) - np.maximum(x0, ax0), 0, None)
            area = max(1, (ay1 - ay0) * (ax1 - ax0))
            hit |= (inter > 0) & (inter / area >= min_overlap)
        return hit.astype(np.float64)

    return predicate


def describe(cache: ActivationCache, sample_id: int, annotations=None, value: float | None = None,
             yx=None) -> dict:
    """A text-friendly record of one sample for an explainer or simulator (an LLM prompt):
    {"sample_id", "label", "objects": annotation names, and "activation" when given}. For a text
    cache: "tokens" (the sample's token strings) instead of "objects", and with ``yx`` (the
    example's (0, t)) "position" t and its "token"."""
    record = {"sample_id": int(sample_id), "label": cache.label_names([int(sample_id)])[0]}
    if cache.tokens is not None:
        tokens = token_strings_of(cache, int(sample_id))
        record["tokens"] = tokens
        if yx is not None and int(yx[0]) >= 0 and int(yx[1]) < len(tokens):
            record["position"], record["token"] = int(yx[1]), tokens[int(yx[1])]
    else:
        record["objects"] = (sorted({a["name"] for a in annotations[sample_id]})
                             if annotations is not None else [])
    if value is not None:
        record["activation"] = float(value)
    return record


def token_strings_of(cache: ActivationCache, sample_id: int) -> list[str]:
    """One sample's valid tokens as strings (see ``token_strings``)."""
    vocab = cache.vocab
    return [vocab[i] if vocab is not None and i < len(vocab) else f"#{i}"
            for i in cache.tokens[sample_id].tolist() if i >= 0]


def explain_unit(
    cache: ActivationCache,
    unit: int | np.ndarray | torch.Tensor,
    explainer: Callable[[list[dict]], str],
    simulator: Callable[[str, dict], float],
    layer: str | None = None,
    annotations: Sequence[Sequence[Mapping]] | None = None,
    n: int = 20,
    seed: int = 0,
    **score_kw: Any,
) -> ExplanationScore:
    """Explain a unit with a pluggable explainer, then score the explanation by simulation.

    explainer : records of the unit's top examples (``describe``, with "activation"; on text with
        the tokens and the example's token) -> an explanation (str), e.g. an LLM call
    simulator : (explanation, record without "activation") -> predicted activation (a number;
        on text also one number per token of ``record["tokens"]``)
    The score's ``explanation`` holds the text.
    """
    name = cache.layer_name(layer)
    _check_annotations(cache, annotations)
    samples = unit_samples(cache, unit, name, n=n, seed=seed)
    top = samples.groups["top"]
    records = [describe(cache, s, annotations, v, yx) for s, v, yx in zip(top.sample_id, top.values, top.yx)]
    text = explainer(records)
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"The explainer must return a non-empty explanation (str), got {text!r}.")

    def simulate(sample_id, image, ann):
        return simulator(text, describe(cache, sample_id, annotations))

    return score_explanation(cache, unit, simulate, name, annotations, n=n, seed=seed,
                             explanation=text, **score_kw)
