"""The NeuronViewer's search box, for an image cache: a class name, or a concept word.

A class name ranks the channels by their mean attribution toward that class (the cache's
single-class attributions). A concept word ("noodles") is looked up in the annotations the
viewer was given (``NeuronViewer(..., annotations=data.annotations)``: per sample, the list of
``{"name", "box"}`` of the objects in the image): the channels are ranked by the correlation, over
the cache's samples, between the channel's per-sample maximum (over the sample's cached rows) and
whether the image holds an object of that name. It is the cheap form of ``aw.find_units`` with a
"the image shows a <word>" explanation: one pass over the cached rows, not a scoring per channel.
A word that names neither gets an error that lists what the box takes.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch

from ..cache.cache import ActivationCache
from ..cache.facts import UnitFacts

__all__ = ["check_annotations", "class_search", "concept_search", "what_it_takes"]


def check_annotations(annotations, cache: ActivationCache) -> list[list[Mapping]] | None:
    """The annotations as a list per sample of the cache, or None; a TypeError or ValueError
    that says what is expected otherwise."""
    if annotations is None:
        return None
    if isinstance(annotations, (str, bytes, Mapping)) or not isinstance(annotations, Sequence):
        raise TypeError("annotations must be a list with, per sample of the cache, the list of its "
                        "objects as {'name': ..., 'box': ...} dicts (kitchen.dataset(n).annotations), "
                        f"got {type(annotations).__name__}.")
    if len(annotations) != cache.n_samples:
        raise ValueError(f"annotations has {len(annotations)} entries but the cache holds "
                         f"{cache.n_samples} samples; pass the annotations of the data the cache "
                         "was captured from.")
    out = []
    for i, objects in enumerate(annotations):
        objects = list(objects or ())
        if any(not isinstance(a, Mapping) or not isinstance(a.get("name"), str) for a in objects):
            raise TypeError(f"annotations[{i}] must be a list of dicts with a 'name' (str), got "
                            f"{objects[:2]!r}.")
        out.append(objects)
    return out


def class_search(facts: UnitFacts, layer: str, text: str, n: int) -> tuple[list[dict], str] | None:
    """Channels ranked by mean attribution toward the class named ``text`` (any case), with the
    results' title; None when no class with an attribution has that name."""
    names, means = facts.class_means(layer)
    lowered = [name.lower() for name in names]
    if text not in names and text.lower() not in lowered:
        return None
    k = names.index(text) if text in names else lowered.index(text.lower())
    order = torch.argsort(means[k], descending=True)[:n]
    results = [{"channel": int(c), "score": float(means[k, c]),
                "tip": f"mean attribution toward {names[k]}: {float(means[k, c]):.3g}"} for c in order]
    return results, f"channels pushing {names[k]} most (mean attribution)"


def annotation_names(annotations: list[list[Mapping]]) -> list[str]:
    """The object names the annotations hold, sorted."""
    return sorted({a["name"] for objects in annotations for a in objects})


def concept_search(cache: ActivationCache, layer: str, annotations: list[list[Mapping]], word: str,
                   memo: dict, n: int) -> tuple[list[dict], str] | None:
    """Channels ranked by how well their per-sample maximum tracks images holding a ``word``
    object (Pearson correlation over the samples with cached rows), with the results' title;
    None when no annotation is called ``word`` (any case; a plural's "s" may be left out).
    ``memo`` keeps each layer's per-sample maxima, shape (n_samples, n_channels)."""
    names = annotation_names(annotations)
    lowered = {name.lower(): name for name in names}
    key = word.strip().lower()
    name = lowered.get(key) or lowered.get(key + "s") or lowered.get(key + "es")
    if name is None:
        return None
    if layer not in memo:
        la = cache[layer]
        acts = la.acts.float().cpu()
        best = torch.full((cache.n_samples, acts.shape[1]), -torch.inf)
        idx = la.sample_id.cpu().long()[:, None].expand_as(acts)
        best.scatter_reduce_(0, idx, acts, reduce="amax")
        memo[layer] = best.numpy().astype(np.float64)
    best = memo[layer]
    seen = np.isfinite(best[:, 0])
    has = np.array([any(a["name"] == name for a in objects) for objects in annotations], np.float64)
    x, y = best[seen], has[seen]
    if y.std() == 0:
        return None  # every sample (or none) shows it: it ranks nothing
    xc, yc = x - x.mean(0), y - y.mean()
    corr = (xc * yc[:, None]).sum(0) / np.maximum(np.sqrt((xc ** 2).sum(0) * (yc ** 2).sum()), 1e-12)
    order = np.argsort(-corr)[:n]
    share = f"{int(y.sum())} of {len(y)} images"
    results = [{"channel": int(c), "score": float(corr[c]),
                "tip": f"correlation {corr[c]:.2f} between its per-sample maximum and showing {name} "
                       f"({share})"} for c in order]
    return results, f"channels firing on images with {name} (correlation over {len(y)} images)"


def what_it_takes(query: str, n_channels: int, facts: UnitFacts, layer: str,
                  annotations: list[list[Mapping]] | None) -> str:
    """The error for a search that matched nothing: what the box takes, with this viewer's names."""
    classes = facts.class_means(layer)[0]
    parts = [f"a channel number (0..{n_channels - 1})"]
    parts.append(f"a class name ({_some(classes)})" if classes else
                 "a class name, once the cache holds single-class attributions "
                 "(cache.add_attribution(aw.attribute(model, data, layer, ['wok', ...], cache=cache, "
                 "store=False)))")
    if annotations is not None:
        parts.append(f"an annotated object ({_some(annotation_names(annotations))})")
    else:
        parts.append("an annotated object such as 'noodles', when the viewer is given the "
                     "annotations: NeuronViewer(..., annotations=data.annotations)")
    return f"Nothing matches {query!r}. The search box takes " + "; ".join(parts) + "."


def _some(names: list[str], k: int = 8) -> str:
    return ", ".join(names[:k]) + (f", … ({len(names)} in all)" if len(names) > k else "")
