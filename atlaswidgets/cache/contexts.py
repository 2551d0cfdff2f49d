"""Token contexts: the text counterpart of dataset crops.

A row of a text cache is one token of one sample (``LayerActs.kind == "tokens"``, ``yx = (0, t)``
with ``t`` the token's column in ``cache.tokens``). To show it, take a window of the sample's
tokens around it, mark the row's token, and colour each token of the window by its activation
(a heat strip). Everything here returns plain data: strings to be shown **as text** by the
widgets (a vocabulary may hold ``<img src=x onerror=...>``), and float arrays.

Activations of the whole window are known from the cache itself only where it kept every token
(``sample="all"``); ``row_values`` gives what the cache knows (NaN elsewhere), and a caller with
the model can fill the rest by re-running it (``cache.facts.LayerOutputs``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .cache import ActivationCache
from .checks import channel_index, checked_direction, non_negative_int

__all__ = ["TokenContext", "token_strings", "token_contexts", "row_values", "is_text"]


@dataclass
class TokenContext:
    """A window of one sample's tokens around one of them.

    sample_id : the sample
    start : token index (column of ``cache.tokens``) of the window's first token
    index : position of the marked token within the window
    ids : int64 array, shape (w,), the window's token ids
    tokens : the window's token strings (from ``cache.vocab``; ``"[id]"`` without one)
    values : float32 array, shape (w,), the activation of each token (NaN where unknown), or None
    """

    sample_id: int
    start: int
    index: int
    ids: np.ndarray
    tokens: list[str]
    values: np.ndarray | None = None

    @property
    def token(self) -> str:
        """The marked token's string."""
        return self.tokens[self.index]

    def text(self, mark: str = "[[{}]]") -> str:
        """The window as one plain string with the marked token wrapped by ``mark``."""
        return " ".join(mark.format(t) if i == self.index else t for i, t in enumerate(self.tokens))


def is_text(cache: ActivationCache) -> bool:
    """Whether the cache was captured from token inputs (it keeps ``cache.tokens``)."""
    return getattr(cache, "tokens", None) is not None


def _check_text(cache: ActivationCache) -> torch.Tensor:
    if not isinstance(cache, ActivationCache):
        raise TypeError(f"cache must be an ActivationCache, got {type(cache).__name__}.")
    if not is_text(cache):
        raise ValueError("This cache holds no tokens (it was captured from images); token contexts "
                         "need a cache captured from token ids (input_ids).")
    return cache.tokens


def token_strings(cache: ActivationCache, ids) -> list[str]:
    """The strings of token ``ids`` in ``cache.vocab``; ``"[id]"`` where there is no vocabulary
    or the id is outside it."""
    vocab = cache.vocab
    out = []
    for i in np.asarray(ids, dtype=np.int64).reshape(-1).tolist():
        out.append(vocab[i] if vocab is not None and 0 <= i < len(vocab) else f"[{i}]")
    return out


def token_contexts(cache: ActivationCache, sample_id, token_index, before: int = 8, after: int = 4,
                   values: np.ndarray | None = None) -> list[TokenContext]:
    """Windows of ``before`` tokens left and ``after`` right of each (sample, token index).

    sample_id, token_index : int arrays, shape (k,) (a row's ``sample_id`` and ``yx[:, 1]``)
    values : optional float array, shape (k, T_max), each sample's per-token activations (as
        ``row_values`` gives), cut to the same windows
    Returns one ``TokenContext`` per pair, the windows stopping at the sample's last valid token.
    """
    tokens = _check_text(cache)
    for name, v in (("before", before), ("after", after)):
        non_negative_int(v, name, "tokens shown")
    sid = np.asarray(sample_id, dtype=np.int64).reshape(-1)
    tix = np.asarray(token_index, dtype=np.int64).reshape(-1)
    if sid.shape != tix.shape:
        raise ValueError(f"sample_id and token_index must have the same length, got {len(sid)} and "
                         f"{len(tix)}.")
    if values is not None and (np.ndim(values) != 2 or len(values) != len(sid)):
        raise ValueError(f"values must have shape ({len(sid)}, T): one row of per-token values per "
                         f"context, got {np.shape(values)}.")
    n, width = tokens.shape
    if len(sid) and (sid.min() < 0 or sid.max() >= n):
        raise ValueError(f"sample ids must be in [0, {n - 1}], got {sid.min()}..{sid.max()}.")
    table = tokens.numpy()
    out = []
    for k, (s, t) in enumerate(zip(sid.tolist(), tix.tolist())):
        row = table[s]
        length = int((row >= 0).sum())
        if not 0 <= t < length:
            raise ValueError(f"Token index {t} is outside sample {s}, which has {length} tokens.")
        lo, hi = max(0, t - int(before)), min(length, t + int(after) + 1)
        ids = row[lo:hi].astype(np.int64)
        vals = None
        if values is not None:
            vals = np.full(hi - lo, np.nan, np.float32)
            got = np.asarray(values[k], dtype=np.float32)[lo:min(hi, np.shape(values)[1])]
            vals[: len(got)] = got
        out.append(TokenContext(s, lo, t - lo, ids, token_strings(cache, ids), vals))
    return out


def row_values(cache: ActivationCache, layer: str | None, sample_ids, unit=None,
               direction=None) -> np.ndarray:
    """Each given sample's per-token activation of a unit (channel index) or along a direction,
    as far as the cache knows it: shape (k, T_max), float32, NaN for tokens without a row (not
    sampled, or padding). A ``sample="all"`` capture knows every token."""
    tokens = _check_text(cache)
    name = cache.layer_name(layer)
    la = cache.layer(name)
    if (unit is None) == (direction is None):
        raise ValueError("Pass exactly one of unit= (a channel index) or direction= (a vector).")
    if unit is not None:
        scores = la.acts[:, channel_index(unit, la.n_channels, name)].float()
    else:
        d = checked_direction(direction, la.n_channels, name)
        scores = la.acts.float() @ d.to(la.acts.device)
    sids = np.asarray(sample_ids, dtype=np.int64).reshape(-1)
    uniq, back = np.unique(sids, return_inverse=True)
    out = np.full((len(uniq), tokens.shape[1]), np.nan, np.float32)
    row_sid = la.sample_id.cpu().numpy()
    keep = np.isin(row_sid, uniq)
    cols = la.yx[:, 1].cpu().numpy()[keep]
    out[np.searchsorted(uniq, row_sid[keep]), cols] = scores.cpu().numpy()[keep]
    return out[back.reshape(-1)]
