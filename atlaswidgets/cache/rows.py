"""A cache layer's rows, found in a batch's output: which (sample, position) each row is, the
values there, and a check that a batch is the data the rows came from. Attribution uses it to
read its per-position scores at exactly the cached rows (``aw.attribute(..., cache=)``).

``la`` is a cache layer (``cache[layer]``): rows of ``sample_id``, ``yx`` ((y, x), (0, t) for the
t-th valid token, or (-1, -1) for a "mean" row over the sample) and ``acts``.
"""

from __future__ import annotations

import torch

__all__ = ["token_values", "check_same_data", "layer_rows", "place_rows"]


def token_values(t: torch.Tensor, positions, sid: torch.Tensor, yx: torch.Tensor) -> torch.Tensor:
    """Rows of a (n, T, D) token output: (sample, token index among its valid tokens) -> (k, D);
    a "mean" row (yx = -1) gets the sum of its sample's valid tokens (the caller divides)."""
    pos, count = (v.to(t.device) for v in positions)
    mean_rows = yx[:, 0] < 0
    col = pos[sid, yx[:, 1].clamp(min=0).clamp(max=pos.shape[1] - 1)]
    vals = t[sid, col]
    if bool(mean_rows.any()):
        valid = torch.zeros(t.shape[:2], dtype=torch.bool, device=t.device)
        valid.scatter_(1, pos, True)
        vals[mean_rows] = (t * valid[:, :, None]).sum(1)[sid[mean_rows]]
    return vals


def check_same_data(la, act: torch.Tensor, layer: str, positions=None) -> None:
    """The first batch's activations must match the cache's rows of those samples."""
    n = len(act)
    sel = (la.sample_id < n).nonzero().squeeze(1)
    if sel.numel() == 0:
        return
    sid = la.sample_id[sel].to(act.device)
    yx = la.yx[sel].to(act.device)
    if positions is not None and act.ndim == 3:
        if la.kind != "tokens":
            raise ValueError(f"Layer {layer!r} holds image rows in the cache but gets token inputs "
                             "here; pass the data the cache was captured from.")
        if bool((yx[:, 1] >= positions[1].to(act.device)[sid]).any()):
            raise ValueError(f"The cache's rows of layer {layer!r} name tokens these samples do "
                             "not have: pass the same data, in the same order, that the cache was "
                             "captured from.")
        fresh = token_values(act, positions, sid, yx)
        mean_rows = yx[:, 0] < 0
        if bool(mean_rows.any()):
            fresh[mean_rows] /= positions[1].to(act.device)[sid[mean_rows]][:, None].to(fresh.dtype)
    elif act.ndim == 2:
        fresh = act[sid]
    elif bool((yx[:, 0] < 0).all()):
        fresh = act.mean((2, 3))[sid]
    else:
        fresh = act[sid, :, yx[:, 0], yx[:, 1]]
    cached = la.acts[sel].to(act.device, torch.float32)
    fresh = fresh.float()
    scale = float(cached.abs().max()) if cached.numel() else 0.0
    if float((fresh - cached).abs().max()) > 1e-2 * scale + 1e-3:
        raise ValueError(f"The activations of layer {layer!r} on this data do not match the cache: "
                         "pass the same data, in the same order, that the cache was captured from.")


def layer_rows(la, attr: torch.Tensor, start: int, n: int, layer: str, ordered: bool,
          positions=None) -> tuple[torch.Tensor, torch.Tensor]:
    """The attribution of the cache's rows of samples [start, start + n), in cache row order."""
    # the rows are found where the cache is and only they move to the model's device: moving the
    # whole columns cost a copy of every row per batch when the two devices differ
    sid = la.sample_id
    if ordered:  # rows sorted by sample (as capture makes them): a slice, no pass over all rows
        bounds = torch.tensor([start, start + n], device=sid.device, dtype=sid.dtype)
        lo, hi = torch.searchsorted(sid, bounds).tolist()
        sel = torch.arange(lo, hi, device=sid.device)
    else:
        sel = ((sid >= start) & (sid < start + n)).nonzero().squeeze(1)
    local = (sid[sel] - start).to(attr.device)
    yx = la.yx[sel].to(attr.device)
    mean_rows = yx[:, 0] < 0
    if positions is not None and attr.ndim == 3:  # token rows: (0, t) is the t-th valid token
        return sel, token_values(attr, positions, local, yx).detach()
    if attr.ndim == 2:
        if not bool(mean_rows.all()):
            raise ValueError(f"Layer {layer!r} has no spatial grid (output (N, C)) but the cache "
                             "has spatial rows for it.")
        vals = attr[local]
    else:
        h, w = attr.shape[2:]
        if tuple(la.hw) != (h, w):
            raise ValueError(f"Layer {layer!r} has a {h}x{w} grid here but {la.hw[0]}x{la.hw[1]} in "
                             "the cache; pass the data the cache was captured from.")
        y = yx[:, 0].clamp(min=0)
        x = yx[:, 1].clamp(min=0)
        vals = attr[local, :, y, x]
        if bool(mean_rows.any()):  # "mean" rows: the sum over all positions
            vals[mean_rows] = attr.sum((2, 3))[local[mean_rows]]
    return sel, vals.detach()


def place_rows(la, parts: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """(n_rows, C) float32 on the cache's device, each row at its index."""
    out = torch.zeros((la.n_rows, la.n_channels), dtype=torch.float32, device=la.acts.device)
    for sel, vals in parts:
        out[sel.to(out.device)] = vals.to(out.device, torch.float32)
    return out
