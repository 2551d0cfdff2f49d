"""Per-channel statistics while capturing: a recorder fed by capture's hooks, and merging the
statistics stored with each shard of a store (see ``atlaswidgets.cache.topk`` for what they are).
"""

from __future__ import annotations

from typing import Sequence

import torch

from .topk import TOKENS_HW, ChannelStats

__all__ = ["StatsRecorder", "stats_from_shards"]


def stats_from_shards(pieces: Sequence[dict[str, torch.Tensor]], layers: dict[str, dict],
                      device: torch.device | str) -> dict[str, ChannelStats]:
    """Merge the per-shard statistics stored under ``{layer}/stats/`` of each shard piece.

    layers : the manifest's per-layer facts; a layer has statistics when it lists a "stats" config
    """
    out = {}
    for name, info in layers.items():
        cfg = info.get("stats")
        if cfg is None:
            continue
        prefix = f"{name}/stats/"
        hw = TOKENS_HW if info.get("kind") == "tokens" else tuple(info["hw"])
        parts = [ChannelStats.from_tensors(p, prefix, cfg, hw, device)
                 for p in pieces if prefix + "top_value" in p]
        if not parts:
            raise ValueError(f"The manifest says layer {name!r} has statistics, but no shard holds "
                             "them; the store is damaged. Capture again with stats=...")
        total = parts[0]
        for part in parts[1:]:
            total = total.merge(part)
        out[name] = total
    return out


class StatsRecorder:
    """Feeds each layer's full output to ChannelStats during capture, one partial per shard.

    Partials are kept per shard (shards start at multiples of ``shard_samples``) and written into
    the shard file, so a resumed capture starts from the stored partials of the shards it reuses;
    since merging is exact and order-free, the result equals an uninterrupted capture's.

    Each batch's positions go into the partial's histogram at once; its per-sample maxima (one
    candidate per sample and channel) wait, up to ``_WAITING`` of them per partial, and are taken
    together when the shard closes: the top-k and sketch merges sort all they hold each time, so
    one merge per shard instead of one per batch is several times cheaper, with the same result.
    """

    _WAITING = 1 << 20  # candidates (sample x channel) a partial holds before taking them

    def __init__(self, config: dict, shard_samples: int):
        self.config, self.shard_samples = dict(config), shard_samples
        self.resume_at = 0
        self.parts: dict[int, dict[str, ChannelStats]] = {}  # shard start -> layer -> partial
        self.total: dict[str, ChannelStats] = {}
        # (shard start, layer) -> candidates not yet taken: [(value, sample, pos) (C, b) each]
        self.waiting: dict[tuple[int, str], list[tuple[torch.Tensor, ...]]] = {}

    def feed(self, name: str, out: torch.Tensor, start: int, mask: torch.Tensor | None = None) -> None:
        """The output (B, C, H, W), (B, C) or, for text, (B, T, D) of layer ``name`` for samples
        start .. start + B - 1. A text layer's tokens are counted by their index among the valid
        tokens of their sample (``mask``: (B, T) bool, or None for all valid)."""
        tokens = out.ndim == 3
        n = int(out.shape[0])
        lo = max(start, self.resume_at)  # samples before the resume point are in reused shards
        while lo < start + n:
            shard = lo // self.shard_samples * self.shard_samples
            hi = min(start + n, shard + self.shard_samples)
            layers = self.parts.setdefault(shard, {})
            part = layers.get(name)
            if part is None:
                hw = TOKENS_HW if tokens else (int(out.shape[2]), int(out.shape[3])) if out.ndim == 4 else (1, 1)
                part = layers[name] = ChannelStats(int(out.shape[2 if tokens else 1]), hw, device=out.device,
                                                   **self.config)
            if tokens:
                found = part.token_candidates(out[lo - start : hi - start], lo,
                                              None if mask is None else mask[lo - start : hi - start])
            else:
                found = part.candidates(out[lo - start : hi - start], lo)
            if found is not None:
                waiting = self.waiting.setdefault((shard, name), [])
                waiting.append(found)
                if sum(v.numel() for v, _, _ in waiting) >= self._WAITING:
                    self._take(shard, name)
            lo = hi

    def _take(self, shard: int, name: str) -> None:
        """Merge the waiting candidates of one partial into it."""
        waiting = self.waiting.pop((shard, name), [])
        if waiting:
            self.parts[shard][name].take(*(torch.cat(t, dim=1) for t in zip(*waiting)))

    def add(self, name: str, part: ChannelStats) -> None:
        self.total[name] = part if name not in self.total else self.total[name].merge(part)

    def close_shard(self, start: int) -> dict[str, torch.Tensor]:
        """Merge the partials of the shard starting at ``start``; return them as shard tensors."""
        tensors = {}
        for name in self.parts.get(start, {}):
            self._take(start, name)
        for name, part in self.parts.pop(start, {}).items():
            self.add(name, part)
            tensors.update(part.to_tensors(f"{name}/stats/"))
        return tensors

