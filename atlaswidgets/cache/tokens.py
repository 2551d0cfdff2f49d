"""What a unit of a text layer reads and writes, in tokens.

- **Reads** (``top_tokens``): the unit's mean activation per token id over the cache's rows (each
  row is one token of one sample), with the number of rows behind each mean; tokens seen fewer
  than ``min_count`` times are left out, so that a one-off does not top the list.
  ``token_mean_table`` gives the same for every channel at once, which ``units_for_token`` ranks to
  answer "which units read this token" (typing "salt" in the viewer).
- **Writes** (``token_writes``): for an MLP neuron, its output weight vector (what one unit of its
  activation adds to the residual stream) through the unembedding matrix, read as the tokens whose
  logits it raises and lowers most. This is the direct path only: anything between the neuron and
  the unembedding (later layers, a final layer norm's gain and scaling) is left out, so compare
  tokens within one neuron, not numbers across models. ``model_writes`` finds the output weights
  and unembedding of a model that offers them (``model.neuron_output_weights(i)`` and
  ``model.unembed``, as the zoo's TinyLM does); Hugging Face models are not wired yet: pass
  ``(W_out, W_U)`` yourself (for GPT-2, ``mlp.c_proj.weight`` and ``lm_head.weight``).

Token strings come from ``cache.vocab`` and are plain data: the widgets show them as text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import torch

from .cache import ActivationCache, checked_direction
from .checks import int_at_least
from .contexts import token_strings

__all__ = ["TokenMeans", "TokenWrites", "row_tokens", "token_mean_table", "top_tokens",
           "units_for_token", "token_writes", "model_writes"]


@dataclass
class TokenMeans:
    """A unit's mean activation per token, strongest first.

    ids : int64 (k,) token ids; tokens : their strings; means : float32 (k,); counts : int64 (k,),
    the rows behind each mean
    """

    ids: np.ndarray
    tokens: list[str]
    means: np.ndarray
    counts: np.ndarray

    def as_list(self) -> list[dict]:
        return [{"id": int(i), "token": t, "mean": float(m), "count": int(c)}
                for i, t, m, c in zip(self.ids, self.tokens, self.means, self.counts)]


@dataclass
class TokenWrites:
    """The tokens a written vector promotes and suppresses through the unembedding.

    promotes, suppresses : lists of {"id", "token", "value"} (value: the logit change per unit of
    activation), strongest first
    """

    promotes: list[dict]
    suppresses: list[dict]


def row_tokens(cache: ActivationCache, layer: str | None = None) -> torch.Tensor:
    """The token id of each row of a token layer, int64 (n_rows,) on the CPU."""
    if not isinstance(cache, ActivationCache):
        raise TypeError(f"cache must be an ActivationCache, got {type(cache).__name__}.")
    if getattr(cache, "tokens", None) is None:
        raise ValueError("This cache holds no tokens (it was captured from images); token means "
                         "need a cache captured from token ids (input_ids).")
    name = cache.layer_name(layer)
    la = cache.layers[name]
    if la.kind != "tokens":
        raise ValueError(f"Layer {name!r} is not a token layer (its kind is {la.kind!r}); token "
                         "means need a layer whose output is (N, T, D) on text.")
    t = la.yx[:, 1].cpu().long()
    if len(t) and int(t.min()) < 0:
        raise ValueError(f"Layer {name!r} was captured with sample='mean': its rows are means over "
                         "tokens, not tokens. Capture with sample='random' or 'all'.")
    return cache.tokens[la.sample_id.cpu().long(), t]


def token_mean_table(cache: ActivationCache, layer: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Every channel's mean activation per token id over the cached rows.

    Returns (means, counts): float32 (V, C) and int64 (V,), V the vocabulary size (or the largest
    id + 1 without a vocabulary); tokens without rows have mean NaN and count 0.
    """
    tok = row_tokens(cache, layer)
    acts = cache.layer(layer).acts.float().cpu()
    v = max(len(cache.vocab) if cache.vocab is not None else 0, int(tok.max()) + 1 if len(tok) else 0)
    sums = torch.zeros(v, acts.shape[1], dtype=torch.float64).index_add_(0, tok, acts.double())
    counts = torch.bincount(tok, minlength=v)
    means = (sums / counts.clamp_min(1)[:, None]).float()
    means[counts == 0] = float("nan")
    return means, counts


def top_tokens(cache: ActivationCache, unit, layer: str | None = None, k: int = 10,
               min_count: int = 3) -> TokenMeans:
    """The tokens on which a unit is highest on average over the cached rows.

    unit : a channel index, or a direction (n_channels,) (its value at a row is the dot product)
    k : tokens returned; min_count : fewest rows a token needs (one-offs are noise)
    Returns TokenMeans, strongest mean first (ties: lower id first).
    """
    k, min_count = int_at_least(k, "k", 1), int_at_least(min_count, "min_count", 1)
    tok = row_tokens(cache, layer)
    name = cache.layer_name(layer)
    la = cache.layers[name]
    if isinstance(unit, (int, np.integer)) and not isinstance(unit, bool):
        if not 0 <= unit < la.n_channels:
            raise ValueError(f"channel {unit} is out of range: layer {name!r} has channels 0..{la.n_channels - 1}.")
        scores = la.acts[:, int(unit)].double().cpu()
    else:
        d = checked_direction(unit, la.n_channels, name)
        scores = la.acts.double().cpu() @ d.double().cpu()
    v = max(len(cache.vocab) if cache.vocab is not None else 0, int(tok.max()) + 1 if len(tok) else 0)
    sums = torch.zeros(v, dtype=torch.float64).index_add_(0, tok, scores)
    counts = torch.bincount(tok, minlength=v)
    ok = (counts >= min_count).nonzero().flatten()
    means = sums[ok] / counts[ok]
    order = torch.as_tensor(np.lexsort((ok.numpy(), -means.numpy())))[:k]
    ids = ok[order].numpy()
    return TokenMeans(ids.astype(np.int64), token_strings(cache, ids), means[order].numpy().astype(np.float32),
                      counts[ok][order].numpy().astype(np.int64))


def units_for_token(cache: ActivationCache, token, layer: str | None = None, k: int = 10,
                    min_count: int = 3, n: int = 10, table=None) -> list[dict]:
    """Channels whose ``k`` top tokens by mean activation include ``token``.

    token : a token string of ``cache.vocab`` (exact, or else the only case-insensitive match) or an id
    table : ``token_mean_table(cache, layer)`` when the caller keeps it
    Returns up to ``n`` {"channel", "rank", "mean", "count"}, best rank first, then highest mean.
    """
    k, min_count, n = int_at_least(k, "k", 1), int_at_least(min_count, "min_count", 1), int_at_least(n, "n", 1)
    vocab = cache.vocab or []
    if isinstance(token, str):
        if token in vocab:
            tid = vocab.index(token)
        else:
            hits = [i for i, s in enumerate(vocab) if s.lower() == token.strip().lower()]
            if len(hits) != 1:
                raise ValueError(f"No token {token!r} in the cache's vocabulary" +
                                 (f" ({len(hits)} case-insensitive matches)" if hits else "") +
                                 "; type a token exactly as the vocabulary spells it.")
            tid = hits[0]
    elif isinstance(token, (int, np.integer)) and not isinstance(token, bool):
        tid = int(token)
    else:
        raise TypeError(f"token must be a str or a token id, got {type(token).__name__}.")
    means, counts = table if table is not None else token_mean_table(cache, layer)
    if not 0 <= tid < len(counts):
        raise ValueError(f"token id {tid} is outside the vocabulary (0..{len(counts) - 1}).")
    if counts[tid] < min_count:
        raise ValueError(f"Token {token!r} has {int(counts[tid])} cached rows, fewer than "
                         f"min_count={min_count}; no unit's mean on it is reliable.")
    m = means.clone()
    m[counts < min_count] = -float("inf")
    # rank of the token among each channel's tokens: how many tokens have a higher mean
    rank = (m > m[tid][None, :]).sum(0)
    good = (rank < k).nonzero().flatten()
    order = np.lexsort((-m[tid, good].numpy(), rank[good].numpy()))[:n]
    return [{"channel": int(good[i]), "rank": int(rank[good[i]]) + 1, "mean": float(m[tid, good[i]]),
             "count": int(counts[tid])} for i in order]


def token_writes(w_out, unembed, vocab=None, k: int = 10) -> TokenWrites:
    """The tokens a vector written to the residual stream promotes and suppresses.

    w_out : (d_model,) what the unit adds per unit of activation (an MLP neuron's output weights)
    unembed : (V, d_model) the unembedding matrix (logits = unembed @ stream)
    vocab : token strings indexed by id (``"[id]"`` without one); k : tokens each way
    Returns TokenWrites; value = (unembed @ w_out)[token], the direct logit change.
    """
    k = int_at_least(k, "k", 1)
    w = torch.as_tensor(np.asarray(w_out.detach().cpu() if isinstance(w_out, torch.Tensor) else w_out),
                        dtype=torch.float64)
    u = torch.as_tensor(np.asarray(unembed.detach().cpu() if isinstance(unembed, torch.Tensor) else unembed),
                        dtype=torch.float64)
    if u.ndim != 2 or w.ndim != 1 or u.shape[1] != w.shape[0]:
        raise ValueError(f"w_out must be (d_model,) and unembed (V, d_model) with the same d_model, got "
                         f"{tuple(w.shape)} and {tuple(u.shape)}.")
    if not (torch.isfinite(w).all() and torch.isfinite(u).all()):
        raise ValueError("w_out and unembed must be finite.")
    if vocab is not None and len(vocab) != u.shape[0]:
        raise ValueError(f"vocab has {len(vocab)} tokens but unembed has {u.shape[0]} rows.")
    effect = u @ w
    k = min(k, len(effect))

    def entry(i):
        i = int(i)
        name = vocab[i] if vocab is not None else f"[{i}]"
        return {"id": i, "token": str(name), "value": float(effect[i])}

    up = torch.argsort(effect, descending=True, stable=True)[:k]
    down = torch.argsort(effect, stable=True)[:k]
    return TokenWrites([entry(i) for i in up if effect[i] > 0], [entry(i) for i in down if effect[i] < 0])


def model_writes(model, layer: str, n_channels: int):
    """(W_out (n_channels, d_model), W_U (V, d_model)) of a model layer's MLP neurons, or a str
    saying why there are none.

    Read from ``model.neuron_output_weights(i)`` (i: the first number in the layer's name, e.g.
    ``blocks.1.mlp.act``) and ``model.unembed``, which the zoo's TinyLM has.
    """
    if model is None:
        return "no model given: pass model=, or writes=(W_out, W_U)"
    if not (callable(getattr(model, "neuron_output_weights", None)) and hasattr(model, "unembed")):
        return ("this model offers no neuron_output_weights(i) and unembed (Hugging Face models are "
                "not wired yet): pass writes=(W_out, W_U) to the viewer")
    found = re.search(r"\d+", layer)
    if found is None:
        return f"no block number in the layer name {layer!r}: pass writes=(W_out, W_U)"
    try:
        w = model.neuron_output_weights(int(found.group()))
        u = model.unembed
    except (ValueError, IndexError) as e:
        return f"no output weights for {layer!r}: {e}"
    if w.ndim != 2 or w.shape[0] != n_channels or u.ndim != 2 or u.shape[1] != w.shape[1]:
        return (f"{layer!r} is not the MLP neurons of block {found.group()} (it has {n_channels} "
                f"channels; the block's output weights are {tuple(w.shape)}): pass writes=(W_out, W_U)")
    return w.detach().cpu().float(), u.detach().cpu().float()
