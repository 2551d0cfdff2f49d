"""What the NeuronViewer shows for a unit of a text layer, gathered from the cache's functions.

Each example is a token context (``cache.contexts.token_contexts``) with a heat strip: the unit's
value at every token of the window, from re-running the model on the sample's tokens when the
viewer has the model (``cache.facts.LayerOutputs``; exact), else what the cache knows
(``row_values``: NaN at tokens without a row). Beside them: the tokens the unit is highest on,
on average (``cache.tokens.top_tokens``), and for an MLP neuron what it writes through the
unembedding (``cache.tokens.token_writes``). Every string here is a token of the vocabulary,
shown by the page as text.
"""

from __future__ import annotations

import numpy as np
import torch

from ..cache.cache import ActivationCache
from ..cache.contexts import row_values, token_contexts
from ..cache.facts import LayerOutputs, activation_maps, map_error
from ..cache.tokens import (
    model_writes,
    token_mean_table,
    token_writes,
    top_tokens,
    units_for_token,
)
from .neuron_image import NO_BOXES, NO_MAPS

__all__ = ["text_examples", "text_summary", "text_state", "token_search", "check_writes"]

BEFORE, AFTER = 10, 5  # tokens shown left and right of an example's token
N_TOKENS = 10  # top tokens and written tokens listed
MIN_COUNT = 3  # rows a token needs to be listed by its mean


def text_examples(cache: ActivationCache, layer: str, unit, ex, outputs: LayerOutputs | None):
    """Contexts and heat strips of examples ``ex`` (TopExamples).

    Returns (contexts: list of {"tokens", "index", "start"}, heat: float32 (k, w) NaN-padded,
    note, error: the largest |re-run - cached| at the examples' tokens, or None without a model).
    """
    sids = np.asarray(ex.sample_id, dtype=np.int64)
    if len(sids) == 0:
        return [], np.zeros((0, 0), np.float32), "", None
    if outputs is not None:
        full = activation_maps(outputs, cache.tokens, sids, layer, unit, cache[layer].hw)
        err = map_error(full, ex.yx, ex.values)
        values = full[:, 0, :]
        note = "heat: the unit's value at every token (model re-run on each sample's tokens)"
    else:
        kw = {"unit": int(unit)} if isinstance(unit, (int, np.integer)) else {"direction": unit}
        values = row_values(cache, layer, sids, **kw)
        err = None
        note = ("heat: the unit's value at the cached tokens only (grey: no cached row); pass "
                "model= to see every token")
    ctx = token_contexts(cache, sids, np.asarray(ex.yx)[:, 1], BEFORE, AFTER, values=values)
    width = max(len(c.tokens) for c in ctx)
    heat = np.full((len(ctx), width), np.nan, np.float32)
    for i, c in enumerate(ctx):
        heat[i, : len(c.values)] = c.values
    contexts = [{"tokens": list(c.tokens), "index": int(c.index), "start": int(c.start)} for c in ctx]
    return contexts, heat, note, err


def check_writes(writes, cache: ActivationCache, layers) -> dict:
    """``writes=`` of the viewer as {layer: (W_out (C, d), W_U (V, d))}: a pair for ``layers[0]``,
    or a dict by layer name."""
    if writes is None:
        return {}
    if isinstance(writes, dict):
        pairs = dict(writes)
    elif isinstance(writes, (tuple, list)) and len(writes) == 2:
        pairs = {layers[0]: tuple(writes)}
    else:
        raise TypeError("writes must be a pair (W_out, W_U): the neurons' output weights "
                        "(n_neurons, d_model) and the unembedding (vocab, d_model), or a dict "
                        "{layer: (W_out, W_U)}.")
    out = {}
    for name, pair in pairs.items():
        name = cache.layer_name(name)
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise TypeError(f"writes[{name!r}] must be a pair (W_out, W_U).")
        w, u = (torch.as_tensor(np.asarray(p.detach().cpu() if isinstance(p, torch.Tensor) else p),
                                dtype=torch.float32) for p in pair)
        c = cache[name].n_channels
        if w.ndim != 2 or w.shape[0] != c or u.ndim != 2 or u.shape[1] != w.shape[1]:
            raise ValueError(f"writes for {name!r} must be W_out ({c}, d_model) and W_U (vocab, "
                             f"d_model), got {tuple(w.shape)} and {tuple(u.shape)}.")
        if cache.vocab is not None and len(cache.vocab) != u.shape[0]:
            raise ValueError(f"W_U has {u.shape[0]} rows but the cache's vocabulary has "
                             f"{len(cache.vocab)} tokens.")
        out[name] = (w, u)
    return out


def text_summary(cache: ActivationCache, layer: str, unit, model, writes: dict):
    """Top tokens by mean activation and, for MLP neurons, the tokens written.

    Returns (top: list of {"token", "mean", "count"}, top_note, up, down: lists of
    {"token", "value"}, writes_note).
    """
    means = top_tokens(cache, unit, layer, k=N_TOKENS, min_count=MIN_COUNT)
    top = [{"token": t, "mean": float(m), "count": int(c)}
           for t, m, c in zip(means.tokens, means.means, means.counts)]
    top_note = f"mean over the cached rows of each token (seen at least {MIN_COUNT} times)"
    pair = writes.get(layer)
    if pair is None:
        pair = model_writes(model, layer, cache[layer].n_channels)
    if isinstance(pair, str):
        return top, top_note, [], [], f"what it writes: not available ({pair})"
    w, u = pair
    if isinstance(unit, (int, np.integer)):
        vec = w[int(unit)]
    else:  # a direction over the neurons writes the same mix of their output weights
        vec = torch.as_tensor(np.asarray(unit), dtype=torch.float32) @ w
    got = token_writes(vec, u, cache.vocab, k=N_TOKENS)
    up = [{"token": e["token"], "value": e["value"]} for e in got.promotes]
    down = [{"token": e["token"], "value": e["value"]} for e in got.suppresses]
    readout = getattr(pair, "readout", "the unembedding")
    return top, top_note, up, down, (f"what it writes: output weights through {readout} "
                                     "(direct logit change per unit of activation)")


def text_state(cache: ActivationCache, layer: str, unit, ex, outputs, model, writes: dict) -> dict:
    """The viewer's traits for text examples ``ex``: contexts, heat strips, top tokens, writes,
    and ``map_error`` (how far the re-run is from the cache at the examples' tokens, or None)."""
    contexts, heat, note, err = text_examples(cache, layer, unit, ex, outputs)
    top, top_note, up, down, writes_note = text_summary(cache, layer, unit, model, writes)
    finite = heat[np.isfinite(heat)]
    top_value = max(float(ex.values.max()) if len(ex) else 0.0, float(finite.max()) if finite.size else 0.0)
    return {"contexts": contexts, "heat": heat, "map_max": max(top_value, 1e-6), "note": note,
            "marking": "text", "sprite": b"", "sprite_cols": 1, "maps": NO_MAPS, "boxes": NO_BOXES,
            "map_hw": [1, int(cache[layer].hw[1])], "top_tokens": top, "top_tokens_note": top_note,
            "writes_up": up, "writes_down": down, "writes_note": writes_note, "map_error": err}


def token_search(cache: ActivationCache, layer: str, token: str, tables: dict, n: int):
    """The channels of ``layer`` whose top tokens include ``token`` as the viewer's search results
    [{"channel", "score": mean on the token}] and their title; ``tables`` keeps each layer's
    ``token_mean_table``."""
    if layer not in tables:
        tables[layer] = token_mean_table(cache, layer)
    found = units_for_token(cache, token, layer, k=N_TOKENS, min_count=MIN_COUNT, n=n, table=tables[layer])
    if not found:
        raise ValueError(f"No channel of {layer!r} has {token!r} among its {N_TOKENS} top tokens by "
                         "mean activation.")
    results = [{"channel": r["channel"], "score": r["mean"]} for r in found]
    return results, f"channels with {token.strip()!r} among their top tokens (mean activation)"
