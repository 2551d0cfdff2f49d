"""Explain and score every unit of a layer, kept in a resumable results store.

``explain_layer(cache, layer)`` asks an explainer for each unit's explanation (channels, MLP
neurons, or a list of directions such as atlas cells), scores it with a simulator by correlation
over the unit's top and random samples (``score_explanation``), and returns an
``ExplanationTable``. The results are kept, when the cache has a store directory (or ``store=``
names one), in::

    <store>/explanations-<key>/
      manifest.json     format, key, the settings the key was made from, the units asked for
      part-00000.json   {"key", "rows": [...]}: the units finished in one chunk, written atomically

The key hashes everything a result depends on: the capture's fingerprint (or the layer's
activations), the layer, the units, the explainer's and simulator's names, the annotations and the
sampling settings. A part is written, to a temporary name and renamed, after every ``chunk`` units
and when a run stops on an error, so a run that is killed loses at most the chunk it was in and
the next call with the same arguments explains only the units not yet in a part; a call that finds
every unit done reads the store and explains nothing. JSON only.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..cache.cache import ActivationCache
from ..cache.checks import (channel_index, checked_direction, is_int, one_of, positive_int,
                             random_seed)
from ..cache.files import atomic_write, user_path
from ..cache.topk import DEFAULT_RANGES
from ..cache.units import unit_samples
from .offline import (ConceptExplainer, ConceptSimulator, ExplanationFailed, RecordExplainer,
                      RecordSimulator, TokenExplainer, TokenSimulator)
from .score import _check_annotations, _Predictions, _score, token_strings
from .table import COLUMNS, ExplanationTable

__all__ = ["explain_layer", "results_key"]

FORMAT = "atlaswidgets.explanations/1"
MANIFEST = "manifest.json"


def _units(cache: ActivationCache, layer: str, units) -> list[tuple[str, int, Any]]:
    """(kind, index, unit) per unit: every channel (None), channel indices, or directions (m, C)."""
    n_channels = cache.layers[layer].n_channels
    if units is None:
        return [("channel", c, c) for c in range(n_channels)]
    if isinstance(units, (torch.Tensor, np.ndarray)) and np.ndim(units) == 2:
        return [("direction", i, checked_direction(d, n_channels, layer).cpu().numpy())
                for i, d in enumerate(units)]
    if isinstance(units, (str, bytes)) or not hasattr(units, "__iter__"):
        raise TypeError(f"units must be None (every channel), a list of channel indices, or "
                        f"directions of shape (m, {n_channels}) (e.g. atlas.cells.mean_act); got "
                        f"{type(units).__name__}.")
    out = []
    for i, u in enumerate(units):
        if is_int(u) or isinstance(u, bool):
            out.append(("channel", channel_index(u, n_channels, layer), channel_index(u, n_channels, layer)))
        else:
            out.append(("direction", i, checked_direction(u, n_channels, layer).cpu().numpy()))
    if not out:
        raise ValueError("units is empty; pass None for every channel of the layer.")
    keys = [(k, i) for k, i, _ in out]
    if len(set(keys)) != len(keys):
        raise ValueError("units lists a channel twice; each unit is explained once.")
    return out


def _as_explainer(explainer, kind: str):
    if explainer is None:
        return TokenExplainer() if kind == "tokens" else ConceptExplainer()
    if hasattr(explainer, "explain") and hasattr(explainer, "prepare"):
        return explainer
    if callable(explainer):
        return RecordExplainer(explainer)
    raise TypeError(f"explainer must have prepare() and explain() (see atlaswidgets.explain.Explainer) "
                    f"or be a function (records) -> str; got {type(explainer).__name__}.")


def _as_simulator(simulator, kind: str):
    if simulator is None:
        return TokenSimulator() if kind == "tokens" else ConceptSimulator()
    if hasattr(simulator, "simulate") and hasattr(simulator, "prepare"):
        return simulator
    if callable(simulator):
        return RecordSimulator(simulator)
    raise TypeError(f"simulator must have prepare() and simulate() (see atlaswidgets.explain.Simulator) "
                    f"or be a function (explanation, record) -> prediction; got {type(simulator).__name__}.")


def _name(part: Any) -> str:
    """The name an explainer or simulator goes by in the store's key (its class without one)."""
    name = getattr(part, "name", None)
    return name if isinstance(name, str) and name else f"{type(part).__module__}.{type(part).__qualname__}"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def results_key(cache: ActivationCache, layer: str, units, explainer_name: str, simulator_name: str,
                annotations, settings: dict) -> tuple[str, dict]:
    """(key, the JSON-able facts it hashes) of one ``explain_layer`` job."""
    fingerprint = (cache.meta or {}).get("fingerprint")
    if fingerprint is None:  # a cache built by hand: its activations are its identity
        fingerprint = _sha(cache.layers[layer].acts.detach().cpu().contiguous().numpy().tobytes())
    unit_ids = [[k, i] if k == "channel" else [k, i, _sha(np.asarray(u, np.float32).tobytes())[:16]]
                for k, i, u in units]
    facts = {
        "format": FORMAT, "layer": layer, "n_samples": cache.n_samples, "fingerprint": fingerprint,
        "units": _sha(json.dumps(unit_ids).encode()), "explainer": str(explainer_name),
        "simulator": str(simulator_name),
        "annotations": None if annotations is None else _sha(json.dumps(annotations, default=_plain).encode()),
        **settings,
    }
    return _sha(json.dumps(facts, sort_keys=True, default=_plain).encode()), facts


def _plain(x):
    if isinstance(x, (np.ndarray, torch.Tensor)):
        return np.asarray(x.detach().cpu() if isinstance(x, torch.Tensor) else x).tolist()
    if isinstance(x, (np.integer, np.floating)):
        return x.item()
    raise TypeError(f"{type(x).__name__} is not JSON-able")


def _num(x: float) -> float | None:
    return None if x is None or not np.isfinite(x) else float(x)


class _Store:
    """The results store directory of one job (or none: results kept in memory only)."""

    def __init__(self, root: Path | None, key: str, facts: dict):
        self.key, self.dir = key, None if root is None else root / f"explanations-{key[:24]}"
        self.facts = facts

    def read(self) -> dict[tuple[str, int], dict]:
        done: dict[tuple[str, int], dict] = {}
        if self.dir is None or not self.dir.is_dir():
            return done
        for part in sorted(self.dir.glob("part-*.json")):
            try:
                blob = json.loads(part.read_text())
            except (OSError, ValueError):
                continue  # unreadable (damaged from outside): its units are explained again
            if not isinstance(blob, dict) or blob.get("key") != self.key:
                continue
            rows = blob.get("rows")
            for row in rows if isinstance(rows, list) else []:
                if isinstance(row, dict) and set(COLUMNS) <= set(row) and isinstance(row["unit"], int):
                    done[(row["kind"], row["unit"])] = row
        return done

    def start(self) -> None:
        if self.dir is None:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        manifest = self.dir / MANIFEST
        if manifest.exists():
            try:
                if json.loads(manifest.read_text()).get("key") == self.key:
                    return
            except ValueError:
                pass
        body = {"format": FORMAT, "key": self.key, "settings": self.facts}
        atomic_write(manifest, json.dumps(body, indent=1, default=_plain).encode())

    def write(self, rows: list[dict]) -> None:
        if self.dir is None or not rows:
            return
        index = 1 + max([int(p.stem.split("-")[1]) for p in self.dir.glob("part-*.json")
                         if p.stem.split("-")[1].isdigit()], default=-1)
        atomic_write(self.dir / f"part-{index:05d}.json",
                     json.dumps({"key": self.key, "rows": rows}, ensure_ascii=False).encode())


def _store_root(cache: ActivationCache, store) -> Path | None:
    if store is None:
        return None
    if isinstance(store, str) and store == "auto":
        home = getattr(cache, "path", None)
        return Path(home) if home is not None and os.access(home, os.W_OK) else None
    return user_path(store, "keep the explanations in")


def explain_layer(
    cache: ActivationCache,
    layer: str | None = None,
    explainer: Any = None,
    simulator: Any = None,
    *,
    units: Sequence[Any] | np.ndarray | torch.Tensor | None = None,
    annotations: Sequence[Sequence[dict]] | None = None,
    n: int = 20,
    ranges: Sequence[tuple[float, float]] = DEFAULT_RANGES,
    seed: int = 0,
    source: str = "auto",
    store: Any = "auto",
    chunk: int = 16,
    progress: bool = True,
) -> ExplanationTable:
    """Explain every unit of a layer, score each explanation by simulation, keep the results.

    layer : a layer of the cache (default: its only one)
    explainer, simulator : objects of the ``Explainer`` / ``Simulator`` protocols, or plain
        functions as ``explain_unit`` takes them; default the offline pair for the layer's kind
        (``ConceptExplainer`` / ``ConceptSimulator`` on images, which read ``annotations``;
        ``TokenExplainer`` / ``TokenSimulator`` on text)
    units : None (every channel / MLP neuron), channel indices, or directions, an array
        (m, n_channels) or a list of (n_channels,) arrays (e.g. ``atlas.cells.mean_act``)
    annotations : per sample of the cache, its list of {"name", "box"} dicts
    n, ranges, seed, source : the examples scored per unit, as in ``score_explanation``
    store : a directory for the results store, "auto" (beside the cache's activation store when
        it has a writable one, else in memory only) or None (in memory only)
    chunk : units per part file (a killed run loses at most one chunk)
    Returns an ExplanationTable, one row per unit in the order of ``units``.
    """
    name = cache.layer_name(layer)
    kind = cache.layers[name].kind
    _check_annotations(cache, annotations)
    todo = _units(cache, name, units)
    n, chunk = positive_int(n, "n"), positive_int(chunk, "chunk")
    seed = random_seed(seed)
    one_of(source, "source", ("auto", "stats", "rows"))
    if source == "stats" and any(k == "direction" for k, _, _ in todo):
        raise ValueError("source='stats' holds channels only; directions are scored from the cached "
                         "rows: pass source='auto' (or 'rows').")
    try:
        ranges = [(float(qa), float(qb)) for qa, qb in ranges]
    except (TypeError, ValueError):
        raise ValueError(f"ranges must be pairs of quantiles (qa, qb), such as {list(DEFAULT_RANGES)}; "
                         f"got {ranges!r:.80}.") from None
    explainer, simulator = _as_explainer(explainer, kind), _as_simulator(simulator, kind)
    settings = {"n": n, "ranges": ranges, "seed": seed, "source": source}
    key, facts = results_key(cache, name, todo, _name(explainer), _name(simulator), annotations, settings)
    results = _Store(_store_root(cache, store), key, facts)
    done = results.read()
    remaining = [u for u in todo if (u[0], u[1]) not in done]
    if remaining:
        if annotations is None and kind == "tokens":
            annotations = token_strings(cache)  # once, not per unit (score_explanation's default)
        explainer.prepare(cache, name, annotations)
        simulator.prepare(cache, name, annotations)
        results.start()
        from tqdm.auto import tqdm

        pending: list[dict] = []
        try:
            with tqdm(total=len(todo), initial=len(todo) - len(remaining), unit="unit",
                      desc=f"explain {name}", disable=not progress) as bar:
                for unit_kind, index, unit in remaining:
                    row = _explain_one(cache, name, unit_kind, index, unit, explainer, simulator,
                                       annotations, n, ranges, seed, source)
                    done[(unit_kind, index)] = row
                    pending.append(row)
                    bar.update(1)
                    if len(pending) >= chunk:
                        results.write(pending)
                        pending = []
        finally:
            results.write(pending)  # what finished before an error or an interrupt is kept
    return ExplanationTable(name, [done[(k, i)] for k, i, _ in todo], results.dir)


def _explain_one(cache, layer, unit_kind, index, unit, explainer, simulator, annotations,
                 n, ranges, seed, source) -> dict:
    row = {"unit": int(index), "kind": unit_kind, "explanation": None, "score": None,
           "top_only": None, "random_only": None, "n_samples": 0, "error": None}
    samples = unit_samples(cache, unit, layer, n=n, ranges=ranges, seed=seed, source=source)
    try:
        text = explainer.explain(unit, samples)
        if not isinstance(text, str) or not text.strip():
            raise ExplanationFailed(f"the explainer returned {text!r}, not a non-empty explanation")
        row["explanation"] = text
        # the samples the explainer saw are the ones scored, as score_explanation would draw them
        predict = _Predictions(cache, layer, lambda i, image, ann: simulator.simulate(text, i), annotations)
        s = _score(samples, predict, text)
    except ExplanationFailed as err:
        row["error"] = str(err) or type(err).__name__
        return row
    row.update(score=_num(s.top_and_random), top_only=_num(s.top_only),
               random_only=_num(s.random_only), n_samples=int(s.n_examples))
    return row
