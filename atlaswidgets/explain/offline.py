"""The explainer and simulator protocols, and the offline, deterministic ones that ship.

An **explainer** turns a unit's examples into a text explanation; a **simulator** reads only an
explanation and predicts the unit's activation on a sample. ``explain_layer`` calls them once per
unit and scores each explanation by correlation (``score_explanation``)::

    class Explainer(Protocol):
        name: str                                  # part of the results store's key
        def prepare(self, cache, layer, annotations) -> None: ...   # once per layer
        def explain(self, unit, samples: UnitSamples) -> str: ...   # once per unit

    class Simulator(Protocol):
        name: str
        def prepare(self, cache, layer, annotations) -> None: ...
        def simulate(self, explanation: str, sample_id: int): ...   # a number, or per position

A prediction is what ``score_explanation``'s ``simulate`` returns: a number for the whole sample,
an array (grid_h, grid_w) on an image layer, or one number per token on a text layer. Either side
may raise ``ExplanationFailed`` for one unit (an unusable reply): the unit is recorded as failed,
never given a score. Plain functions fit too (``RecordExplainer``, ``RecordSimulator``: the
records of ``describe``, as ``explain_unit`` takes them).

The offline pair for images, after network dissection (Bau et al. 2017): a **concept** is an
annotated object (a position's receptive field overlaps one of its boxes, ``rf_overlap``) or, with
``labels=True``, a class label (every position of an image of that class). ``ConceptExplainer``
thresholds the unit at a top quantile of its cached rows and names the concept with the largest
intersection over union with the rows above it; ``ConceptSimulator`` predicts 1 where the named
concept is and 0 elsewhere. For text, ``TokenExplainer`` takes the tokens and bigrams at the
unit's top examples as candidates and names the one whose indicator ("the token is X", "the token
is Y after X") at each sample's strongest token correlates best with the unit's value there, over
every sample (or, ``measure="iou"``, overlaps its top rows best); ``TokenSimulator`` predicts 1 on
the tokens that match. Explanations are plain text that name the concept, JSON-quoted:
``object "noodles"``, ``class "wok"``, ``token "salt"``, ``tokens "the" "salt"``.
"""

from __future__ import annotations

import json
import re
from typing import Any, Callable, Protocol, Sequence, runtime_checkable

import numpy as np
import torch

from ..cache.cache import ActivationCache
from ..cache.checks import is_int
from ..cache.targets import class_name
from ..cache.topk import UnitSamples
from ..cache.units import unit_maxima
from .score import describe, rf_overlap

__all__ = ["Explainer", "Simulator", "ExplanationFailed", "ConceptExplainer", "ConceptSimulator",
           "TokenExplainer", "TokenSimulator", "RecordExplainer", "RecordSimulator", "unit_values"]


class ExplanationFailed(Exception):
    """Raised by an explainer or simulator for a unit it cannot explain or simulate (a malformed
    reply, say): the unit is recorded as failed, with this message, and gets no score."""


@runtime_checkable
class Explainer(Protocol):
    name: str

    def prepare(self, cache: ActivationCache, layer: str, annotations: Any) -> None: ...

    def explain(self, unit: Any, samples: UnitSamples) -> str: ...


@runtime_checkable
class Simulator(Protocol):
    name: str

    def prepare(self, cache: ActivationCache, layer: str, annotations: Any) -> None: ...

    def simulate(self, explanation: str, sample_id: int) -> Any: ...


def unit_values(cache: ActivationCache, layer: str, unit) -> np.ndarray:
    """The unit's value at every cached row of ``layer``: float64 (n_rows,) (a channel's column,
    or the rows' dot product with a direction of shape (n_channels,))."""
    acts = cache.layers[layer].acts
    if is_int(unit):
        col = acts[:, int(unit)]
    else:
        col = acts.float() @ torch.as_tensor(np.asarray(unit), dtype=torch.float32, device=acts.device)
    return np.nan_to_num(col.detach().float().cpu().numpy().astype(np.float64), nan=-np.inf)


def _top_rows(values: np.ndarray, quantile: float, min_rows: int) -> np.ndarray:
    """Bool (n_rows,): the rows at or above the unit's ``quantile`` (at least ``min_rows`` rows)."""
    k = max(min_rows, int(np.ceil((1.0 - quantile) * len(values))))
    k = min(k, len(values))
    top = np.zeros(len(values), dtype=bool)
    top[np.argpartition(-values, k - 1)[:k]] = True
    return top


def _iou(top: np.ndarray, concepts: np.ndarray) -> np.ndarray:
    """IoU of a bool row mask (n_rows,) with each concept column of a bool (n_rows, K): (K,)."""
    inter = top.astype(np.float32) @ concepts.astype(np.float32)
    union = top.sum() + concepts.sum(0) - inter
    return np.where(union > 0, inter / np.maximum(union, 1), 0.0)


def _row_corr(values: np.ndarray, hits: np.ndarray) -> np.ndarray:
    """Pearson correlation of the unit's row values (n_rows,) with each bool column of (n_rows, K)."""
    v = np.where(np.isfinite(values), values, 0.0)
    v = v - v.mean()
    h = hits.astype(np.float64)
    h -= h.mean(0)
    den = np.sqrt((v ** 2).sum() * (h ** 2).sum(0))
    return np.where(den > 0, (v @ h) / np.maximum(den, 1e-300), 0.0)


def _check_quantile(quantile: float, min_rows: int) -> tuple[float, int]:
    if isinstance(quantile, bool) or not isinstance(quantile, (int, float)) or not 0 < quantile < 1:
        raise ValueError(f"quantile must be a number in (0, 1) (the share of rows below the unit's "
                         f"threshold, 0.99 keeps its top 1%), got {quantile!r}.")
    if not is_int(min_rows) or min_rows < 1:
        raise ValueError(f"min_rows must be an int >= 1, got {min_rows!r}.")
    return float(quantile), int(min_rows)


def quoted(kind: str, words: Sequence[str]) -> str:
    """``kind "w1" "w2"``: words JSON-quoted, so any string (quotes, spaces, markup) round-trips."""
    return kind + " " + " ".join(json.dumps(w, ensure_ascii=False) for w in words)


_QUOTED = re.compile(r'"(?:[^"\\]|\\.)*"')


def unquoted(explanation: str, kinds: Sequence[str]) -> tuple[str, list[str]]:
    """(kind, words) of an explanation written by ``quoted``; ExplanationFailed otherwise."""
    head, _, rest = explanation.partition(" ")
    try:
        words = [json.loads(m) for m in _QUOTED.findall(rest)]
    except ValueError:  # a quoted word with a broken escape ("\x")
        words = []
    if head not in kinds or not words or _QUOTED.sub("", rest).strip():
        forms = " or ".join(f'{k} "..."' for k in kinds)
        raise ExplanationFailed(f"Cannot read the explanation {explanation!r}: this simulator reads {forms}.")
    return head, words


# ----------------------------------------------------------------------------- images: concepts


class _Concepts:
    """Per concept, a bool (n_samples, grid_h, grid_w): where the concept is, on the layer's grid."""

    def __init__(self, cache: ActivationCache, layer: str, annotations, labels: bool):
        la = cache.layers[layer]
        if la.kind == "tokens":
            raise ValueError(f"Layer {layer!r} is a text layer; concepts read image annotations. "
                             "Use TokenExplainer and TokenSimulator on text.")
        if annotations is None:
            raise ValueError("Concept explanations need annotations=: each sample's list of "
                             "{'name', 'box'} dicts (e.g. kitchen.dataset(n).annotations).")
        self.hw = tuple(la.hw)
        names = sorted({a["name"] for ann in annotations for a in (ann or ())})
        self.maps: dict[str, np.ndarray] = {}
        for name in names:
            predicate = rf_overlap(cache, name, layer)
            self.maps[quoted("object", [name])] = np.stack(
                [predicate(ann) > 0 for ann in annotations]) if len(annotations) else np.zeros((0,) + self.hw, bool)
        if labels:
            label = cache.labels.cpu().numpy()
            for c in np.unique(label[label >= 0]).tolist():
                self.maps[quoted("class", [class_name(c, cache.classes)])] = np.broadcast_to(
                    (label == c)[:, None, None], (len(label),) + self.hw)
        self.names = list(self.maps)
        sid = la.sample_id.cpu().numpy()
        yx = np.maximum(la.yx.cpu().numpy().reshape(-1, 2), 0)
        # (n_rows, K): does the concept hold at each cached row? ("mean" rows: anywhere in the image)
        mean_row = la.yx.cpu().numpy().reshape(-1, 2)[:, 0] < 0
        cols = []
        for name in self.names:
            m = self.maps[name]
            col = m[sid, yx[:, 0], yx[:, 1]]
            if mean_row.any():
                col = np.where(mean_row, m[sid].reshape(len(sid), -1).any(1), col)
            cols.append(col)
        self.rows = np.stack(cols, 1) if cols else np.zeros((len(sid), 0), bool)


class ConceptExplainer:
    """Names the annotated object or class label whose positions best overlap the unit's top rows.

    quantile : the unit's rows above this quantile of its cached values are its "active" region
        (network dissection uses the top 0.5%; on a few thousand cached rows 0.98 keeps ~100)
    min_rows : the region holds at least this many rows
    labels : also offer the class labels as image-level concepts (off by default: a planted cue
        such as noodles comes with its class, wok, and a class covers every position of its
        images, so it would compete with the object the unit actually sees)
    """

    def __init__(self, quantile: float = 0.98, min_rows: int = 20, labels: bool = False):
        self.quantile, self.min_rows = _check_quantile(quantile, min_rows)
        self.labels = bool(labels)
        self.name = f"concepts(quantile={self.quantile:g}, min_rows={self.min_rows}, labels={self.labels})"
        self._concepts: _Concepts | None = None

    def prepare(self, cache: ActivationCache, layer: str, annotations) -> None:
        self._cache, self._layer = cache, layer
        self._concepts = _Concepts(cache, layer, annotations, self.labels)
        if not self._concepts.names:
            raise ValueError("The annotations name no object (and no class labels were offered); "
                             "concept explanations need annotated boxes.")

    def ious(self, unit) -> dict[str, float]:
        """Each concept's IoU with the unit's top rows (after ``prepare``)."""
        if self._concepts is None:
            raise RuntimeError("Call prepare(cache, layer, annotations) first (explain_layer does).")
        top = _top_rows(unit_values(self._cache, self._layer, unit), self.quantile, self.min_rows)
        return dict(zip(self._concepts.names, _iou(top, self._concepts.rows).tolist()))

    def explain(self, unit, samples: UnitSamples | None = None) -> str:
        ious = self.ious(unit)
        return max(ious, key=lambda k: (ious[k], k.startswith("object")))  # ties: the object


class ConceptSimulator:
    """Predicts 1.0 at the positions where the explained concept is (``object "x"``: a receptive
    field overlapping an x box; ``class "y"``: every position of an image labelled y), else 0."""

    name = "concepts"

    def prepare(self, cache: ActivationCache, layer: str, annotations) -> None:
        self._concepts = _Concepts(cache, layer, annotations, labels=True)

    def simulate(self, explanation: str, sample_id: int) -> np.ndarray:
        kind, words = unquoted(explanation, ("object", "class"))
        m = self._concepts.maps.get(quoted(kind, words[:1]))
        if m is None:  # a concept these annotations never show is nowhere
            return np.zeros(self._concepts.hw)
        return m[sample_id].astype(np.float64)


# ----------------------------------------------------------------------------- text: tokens


class _Tokens:
    """The token ids of a text cache's samples and of its cached rows (and the tokens before)."""

    def __init__(self, cache: ActivationCache, layer: str):
        la = cache.layers[layer]
        if la.kind != "tokens" or cache.tokens is None:
            raise ValueError(f"Layer {layer!r} is not a text layer; token explanations need a text "
                             "cache. Use ConceptExplainer and ConceptSimulator on images.")
        self.cache = cache
        self.ids = cache.tokens.cpu().numpy().astype(np.int64)  # (n_samples, T), -1 = padding
        sid = la.sample_id.cpu().numpy()
        t = la.yx.cpu().numpy().reshape(-1, 2)[:, 1]
        self.row_tok = np.where(t >= 0, self.ids[sid, np.maximum(t, 0)], -1)
        self.row_prev = np.where(t >= 1, self.ids[sid, np.maximum(t - 1, 0)], -1)
        self.vocab = cache.vocab

    def word(self, i: int) -> str:
        return self.vocab[i] if self.vocab is not None and 0 <= i < len(self.vocab) else f"#{i}"

    def lookup(self) -> dict[str, int]:
        ids = np.unique(self.ids[self.ids >= 0])
        return {self.word(int(i)): int(i) for i in ids}


class TokenExplainer:
    """Names the token, or the bigram, at the unit's top examples that best fits its cached rows
    (candidates from the top examples only: taking the tokens of every example as candidates was
    tried, and picks tokens such as "<bos>" that many rows share over the cue word).

    measure : "maxima" (default): the candidate whose indicator at each sample's strongest row
        correlates best with the unit's value there, over every sample: the score's own measure
        on all the data, not only the samples it scores; "corr": the same over every cached row,
        which favours tokens frequent at moderate values ("and" over "chopsticks"); "iou": network
        dissection's IoU with the unit's top rows, which favours bigrams that cover exactly the
        top rows (", salt") over the token a unit fires on everywhere ("salt")
    quantile, min_rows : the unit's active rows for "iou", as in ``ConceptExplainer``
    bigrams : also consider "Y after X" for the tokens at the top examples and the ones before
    """

    def __init__(self, measure: str = "maxima", quantile: float = 0.99, min_rows: int = 20,
                 bigrams: bool = True):
        if measure not in ("maxima", "corr", "iou"):
            raise ValueError(f"measure must be 'maxima', 'corr' or 'iou', got {measure!r}.")
        self.quantile, self.min_rows = _check_quantile(quantile, min_rows)
        self.measure, self.bigrams = measure, bool(bigrams)
        self.name = (f"tokens(measure={measure}, quantile={self.quantile:g}, min_rows={self.min_rows}, "
                     f"bigrams={self.bigrams})")
        self._tokens: _Tokens | None = None

    def prepare(self, cache: ActivationCache, layer: str, annotations=None) -> None:
        self._cache, self._layer = cache, layer
        self._tokens = _Tokens(cache, layer)

    def explain(self, unit, samples: UnitSamples) -> str:
        if self._tokens is None:
            raise RuntimeError("Call prepare(cache, layer) first (explain_layer does).")
        tk = self._tokens
        values = unit_values(self._cache, self._layer, unit)
        top = _top_rows(values, self.quantile, self.min_rows) if self.measure == "iou" else None
        ex = samples.groups["top"]
        t = ex.yx[:, 1]
        ok = t >= 0
        cands: list[tuple[str, np.ndarray]] = []
        for v in np.unique(tk.ids[ex.sample_id[ok], t[ok]]).tolist():
            if v >= 0:
                cands.append((quoted("token", [tk.word(v)]), tk.row_tok == v))
        if self.bigrams:
            okb = ok & (t >= 1)
            pairs = zip(tk.ids[ex.sample_id[okb], t[okb] - 1].tolist(), tk.ids[ex.sample_id[okb], t[okb]].tolist())
            for p, v in sorted(set(pairs)):
                if p >= 0 and v >= 0:
                    cands.append((quoted("tokens", [tk.word(p), tk.word(v)]), (tk.row_tok == v) & (tk.row_prev == p)))
        if not cands:
            raise ExplanationFailed("The unit's top examples hold no token to explain it with.")
        hits = np.stack([h for _, h in cands], 1)
        if self.measure == "maxima":  # each sample at its strongest row, as the score reads it
            m = unit_maxima(self._cache, unit, self._layer)
            fit = _row_corr(m.values.astype(np.float64), hits[m.rows])
        else:
            fit = _iou(top, hits) if top is not None else _row_corr(values, hits)
        return cands[int(np.argmax(fit))][0]  # ties: the first, a token before a bigram


class TokenSimulator:
    """Predicts 1.0 on the tokens an explanation names (``token "x"``: every x; ``tokens "x" "y"``:
    every y right after an x), 0.0 elsewhere: one number per token of the sample."""

    name = "tokens"

    def prepare(self, cache: ActivationCache, layer: str, annotations=None) -> None:
        self._tokens = _Tokens(cache, layer)
        self._ids = self._tokens.lookup()

    def simulate(self, explanation: str, sample_id: int) -> np.ndarray:
        _, words = unquoted(explanation, ("token", "tokens"))
        row = self._tokens.ids[sample_id]
        want = [self._ids.get(w, -2) for w in words]  # -2: a word this corpus never has
        hit = row == want[-1]
        for back, w in enumerate(reversed(want[:-1]), start=1):
            before = np.full(len(row), -3)
            before[back:] = row[:-back]
            hit &= before == w
        return (hit & (row >= 0)).astype(np.float64)


# ----------------------------------------------------------------------------- plain functions


class RecordExplainer:
    """An explainer from a function of the unit's top records (``describe``, with "activation"):
    ``explainer(records) -> str``, as ``explain_unit`` takes it (an LLM call, say)."""

    def __init__(self, explainer: Callable[[list[dict]], str], name: str | None = None):
        if not callable(explainer):
            raise TypeError(f"explainer must be a function (records) -> str, got {type(explainer).__name__}.")
        self.fn = explainer
        self.name = name or f"records:{getattr(explainer, '__qualname__', type(explainer).__name__)}"

    def prepare(self, cache, layer, annotations) -> None:
        self._cache, self._ann = cache, annotations

    def explain(self, unit, samples: UnitSamples) -> str:
        top = samples.groups["top"]
        return self.fn([describe(self._cache, s, self._ann, v, yx)
                        for s, v, yx in zip(top.sample_id, top.values, top.yx)])


class RecordSimulator:
    """A simulator from ``simulator(explanation, record) -> prediction`` (the record of
    ``describe`` without "activation"), as ``explain_unit`` takes it."""

    def __init__(self, simulator: Callable[[str, dict], Any], name: str | None = None):
        if not callable(simulator):
            raise TypeError(f"simulator must be a function (explanation, record) -> prediction, "
                            f"got {type(simulator).__name__}.")
        self.fn = simulator
        self.name = name or f"records:{getattr(simulator, '__qualname__', type(simulator).__name__)}"

    def prepare(self, cache, layer, annotations) -> None:
        self._cache, self._ann = cache, annotations

    def simulate(self, explanation: str, sample_id: int):
        return self.fn(explanation, describe(self._cache, sample_id, self._ann))

