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
  and the readout of a model that offers them: ``model.neuron_output_weights(i)`` and
  ``model.unembed`` (the zoo's TinyLM), or a Hugging Face model (see ``model_writes``: the MLP's
  output projection, read through the LM head, or through the word embedding matrix when the
  model has no head, as a BERT sentence encoder like MiniLM); else pass ``(W_out, W_U)`` yourself.

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
           "units_for_token", "token_writes", "model_writes", "WritePair"]


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


class WritePair(tuple):
    """``(W_out (C, d_model), W_U (V, d_model))``, unpacked as a pair, with ``readout``: a phrase
    saying what W_U is ("the unembedding", "the word embedding matrix ...")."""

    def __new__(cls, w_out: torch.Tensor, unembed: torch.Tensor, readout: str = "the unembedding"):
        pair = super().__new__(cls, (w_out, unembed))
        pair.readout = readout
        return pair


def model_writes(model, layer: str, n_channels: int):
    """The output weights and readout of a model layer's MLP neurons, as a ``WritePair``
    (W_out (n_channels, d_model), W_U (V, d_model)), or a str saying why there are none.

    - A model with ``neuron_output_weights(i)`` and ``unembed`` (the zoo's TinyLM): i is the first
      number in the layer's name (e.g. ``blocks.1.mlp.act``).
    - A Hugging Face model (``get_input_embeddings()``): the neurons are the layer's channels, and
      their output projection is the one Linear (or GPT-2 Conv1D) in the nearest enclosing module
      that maps n_channels to d_model (BERT: ``encoder.layer.i.output.dense`` for the GELU
      neurons ``encoder.layer.i.intermediate``; GPT-2: ``h.i.mlp.c_proj`` for ``h.i.mlp.act``).
      The readout is the LM head (``get_output_embeddings()``) when the model has one, else the
      word embedding matrix, the readout a BERT's tied masked-LM head uses (a ``BertModel`` such
      as MiniLM ships without that head). Direct path only: in a post-norm BERT the block's
      LayerNorm, and every later layer, sit between the neuron and that readout.
    """
    if model is None:
        return "no model given: pass model=, or writes=(W_out, W_U)"
    if callable(getattr(model, "neuron_output_weights", None)) and hasattr(model, "unembed"):
        return _own_writes(model, layer, n_channels)
    if callable(getattr(model, "get_input_embeddings", None)):
        return _hf_writes(model, layer, n_channels)
    return ("this model offers neither neuron_output_weights(i) and unembed (as the zoo's TinyLM) "
            "nor Hugging Face's get_input_embeddings(): pass writes=(W_out, W_U) to the viewer")


def _own_writes(model, layer: str, n_channels: int):
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
    return WritePair(w.detach().cpu().float(), u.detach().cpu().float())


def _projection(module, n_in: int, n_out: int) -> torch.Tensor | None:
    """The (n_in, n_out) weight of a Linear or GPT-2-style Conv1D mapping n_in to n_out, else None."""
    if isinstance(module, torch.nn.Linear):
        if (module.in_features, module.out_features) == (n_in, n_out):
            return module.weight.T
    elif type(module).__name__ == "Conv1D":  # transformers' GPT-2 layer: weight (in, out)
        w = getattr(module, "weight", None)
        if isinstance(w, torch.Tensor) and tuple(w.shape) == (n_in, n_out):
            return w
    return None


def _hf_writes(model, layer: str, n_channels: int):
    modules = dict(model.named_modules())
    if layer not in modules:
        return f"the model has no module {layer!r}: pass writes=(W_out, W_U)"
    head = model.get_output_embeddings() if callable(getattr(model, "get_output_embeddings", None)) else None
    u = getattr(head, "weight", None)
    readout = "the unembedding (the model's LM head)"
    if not (isinstance(u, torch.Tensor) and u.ndim == 2):
        u = getattr(model.get_input_embeddings(), "weight", None)
        readout = "the word embedding matrix (the model has no LM head; a BERT's masked-LM head reads it)"
        if not (isinstance(u, torch.Tensor) and u.ndim == 2):
            return "the model's input embeddings have no (vocab, d_model) weight: pass writes=(W_out, W_U)"
    d = int(u.shape[1])
    parts = layer.split(".")
    for depth in range(len(parts) - 1, 0, -1):  # the nearest enclosing module first
        prefix = ".".join(parts[:depth]) + "."
        found = [(name, w) for name, m in modules.items() if name.startswith(prefix)
                 for w in [_projection(m, n_channels, d)] if w is not None]
        if len(found) == 1:
            return WritePair(found[0][1].detach().cpu().float(), u.detach().cpu().float(), readout)
        if found:
            names = ", ".join(name for name, _ in found[:4])
            return (f"{layer!r} is not an MLP's neurons: {len(found)} layers near it map its "
                    f"{n_channels} channels to d_model={d} ({names}); pass writes=(W_out, W_U)")
    return (f"no layer maps {layer!r}'s {n_channels} channels to d_model={d}: it is not an MLP's "
            "neurons (for BERT, capture encoder.layer.i.intermediate); pass writes=(W_out, W_U)")
