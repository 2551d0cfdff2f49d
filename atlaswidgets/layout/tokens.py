"""Text atlases: which token stands for a cell, and the token contexts of a selection's examples.

A text atlas (``build_atlas`` on a token layer) has no pictures: its rows are tokens. The widgets
draw each cell as a token in a short context, and each example of a selection as its context with
a heat strip; this module says which token and which values, so the widgets only draw.

Which token stands for a cell: its **most frequent token** among the cell's member rows, shown in
the context of the member with that token that points most nearly the way of the cell's mean
activation (cosine). Not simply the token of the row nearest the mean (``Atlas.typical_row``, what
an image atlas crops): in a language model's MLP layer most cells gather one token or a few, and
the nearest-to-mean row of a mixed cell is often a rare token that happens to sit near the middle,
so the icon would name a token that few members have. The most frequent token is what most members
*are*; its share (``CellTokens.share``) says how pure the cell is, as the top class's share does
for an image atlas. Ties go to the token whose best member is nearer the mean.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..cache.cache import ActivationCache
from ..cache.contexts import (
    TokenContext,
    is_text,
    row_values,
    token_contexts,
    token_strings,
)
from .atlas import Atlas

__all__ = ["CellTokens", "cell_tokens", "selection_contexts"]


@dataclass(repr=False)
class CellTokens:
    """The token that stands for each visible cell of a text atlas.

    token_id : int64 array, shape (m,), the most frequent token among each cell's members
    token : list of m strings, that token as text (from ``cache.vocab``; to be shown as text)
    share : float32 array, shape (m,), the share of the cell's members that are that token
    row : int64 array, shape (m,), the member shown: of those with that token, the one nearest
        (cosine) the cell's mean activation
    contexts : list of m ``TokenContext``, a short window around ``row``'s token, marked
    """

    token_id: np.ndarray
    token: list[str]
    share: np.ndarray
    row: np.ndarray
    contexts: list[TokenContext]

    def __len__(self) -> int:
        return len(self.token_id)

    def __repr__(self) -> str:
        return f"CellTokens({len(self)} cells, mean share {float(self.share.mean()) if len(self) else 0:.2f})"


def _check(atlas, cache) -> None:
    if not isinstance(atlas, Atlas):
        raise TypeError(f"atlas must be an Atlas (from aw.build_atlas), got {type(atlas).__name__}.")
    if not isinstance(cache, ActivationCache):
        raise TypeError(f"cache must be an ActivationCache, got {type(cache).__name__}.")
    if not is_text(cache) or cache[atlas.layer].kind != "tokens":
        raise ValueError(f"Layer {atlas.layer!r} of this cache is not a text layer (its rows are not "
                         "tokens); cell tokens and token contexts need a cache captured from token ids.")
    if atlas.acts is None:
        raise ValueError("This atlas has no activations attached; build it with aw.build_atlas().")
    atlas.check_cache(cache)  # the atlas's rows must be this cache's rows


def _row_tokens(cache: ActivationCache, layer: str, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(sample id, token index, token id) of each given row, int64 arrays of shape (len(rows),)."""
    la = cache[layer]
    sid = la.sample_id.cpu().numpy()[rows].astype(np.int64)
    tix = la.yx.cpu().numpy()[rows, 1].astype(np.int64)
    return sid, tix, cache.tokens.numpy()[sid, tix].astype(np.int64)


def cell_tokens(atlas: Atlas, cache: ActivationCache, before: int = 2, after: int = 1) -> CellTokens:
    """The token that stands for each visible cell of a text atlas (see the module docstring).

    atlas : an Atlas of a token layer of ``cache``
    cache : the text cache the atlas was built from (tokens and vocabulary)
    before, after : tokens of context left and right of the shown token
    Returns CellTokens, one entry per cell in the order of ``atlas.cells.ids``.
    """
    _check(atlas, cache)
    cells = atlas.cells
    m = len(cells.ids)
    if m == 0:
        return CellTokens(np.zeros(0, np.int64), [], np.zeros(0, np.float32), np.zeros(0, np.int64), [])
    acts = atlas.acts.acts
    order = cells.order.astype(np.int64)
    cell_of = np.repeat(np.arange(m), cells.count)
    member = acts[torch.as_tensor(order, device=acts.device)].float()
    means = torch.as_tensor(cells.mean_act, device=acts.device, dtype=member.dtype)
    cos = torch.nn.functional.cosine_similarity(member, means[torch.as_tensor(cell_of, device=acts.device)],
                                                dim=1, eps=1e-8).cpu().numpy()
    _, _, tok = _row_tokens(cache, atlas.layer, order)
    # one group per (cell, token); a key that cannot collide: tokens are < width
    width = int(tok.max()) + 1
    key = cell_of * width + tok
    groups, group_of, counts = np.unique(key, return_inverse=True, return_counts=True)
    group_of = group_of.reshape(-1)
    # each group's best member: members sorted by (group, -cos), the first of each group wins
    by_group = np.lexsort((-cos, group_of))
    first = np.searchsorted(group_of[by_group], np.arange(len(groups)))
    best_member = by_group[first]
    best_cos = cos[best_member]
    group_cell = groups // width
    # per cell the group with the most members, then the nearest best member
    pick = np.lexsort((-best_cos, -counts, group_cell))
    winners = pick[np.searchsorted(group_cell[pick], np.arange(m))]
    token_id = (groups[winners] % width).astype(np.int64)
    share = (counts[winners] / cells.count).astype(np.float32)
    row = order[best_member[winners]].astype(np.int64)
    sid, tix, _ = _row_tokens(cache, atlas.layer, row)
    contexts = token_contexts(cache, sid, tix, before=before, after=after)
    return CellTokens(token_id, token_strings(cache, token_id), share, row, contexts)


def selection_contexts(atlas: Atlas, cache: ActivationCache, cell_ids, rows, before: int = 8,
                       after: int = 4) -> list[TokenContext]:
    """The token contexts of a selection's example rows, each token valued along the selection.

    The value of a token is its activation's dot product with the mean activation of the selected
    cells' members (the direction ``Atlas.examples`` ranks by, so the marked token's value is its
    example's value); tokens the cache holds no row for (not sampled, or padding) are NaN.

    cell_ids : int array-like, ids of visible cells (the selection), or empty
    rows : int array-like, shape (k,), rows of the atlas's layer (e.g. ``atlas.examples(...).rows``)
    Returns one ``TokenContext`` per row, with ``values`` set.
    """
    _check(atlas, cache)
    rows = np.asarray(rows, dtype=np.int64).reshape(-1)
    if len(rows) == 0:
        return []
    members = atlas.rows_of(cell_ids)  # ValueError naming ids that are not visible cells
    if len(members) == 0:
        raise ValueError("The selection is empty; select at least one cell to value its examples.")
    n_rows = atlas.acts.n_rows
    if rows.min() < 0 or rows.max() >= n_rows:
        raise ValueError(f"rows must be row indices of layer {atlas.layer!r} in [0, {n_rows - 1}], "
                         f"got {rows.min()}..{rows.max()}.")
    acts = atlas.acts.acts
    direction = acts[torch.as_tensor(members, device=acts.device)].float().mean(0).cpu().numpy()
    sid, tix, _ = _row_tokens(cache, atlas.layer, rows)
    values = row_values(cache, atlas.layer, sid, direction=direction)
    return token_contexts(cache, sid, tix, before=before, after=after, values=values)
