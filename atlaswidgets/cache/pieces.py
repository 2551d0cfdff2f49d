"""Shard pieces and caches: a cache cut into the tensors of its shards, and shard pieces joined
back into a cache.

A piece is a dict with a shard's keys (``{layer}/acts``, ``{layer}/sample_id``, ``{layer}/yx``,
``{layer}/attr/{key}``, ``labels``, ``logits``, ``images``, ``sample_digest``, ``tokens``; see
``store.py``) covering consecutive samples. The store writes pieces (``shard_of``) and reads
them back (``assemble``); a capture joins its own (``run.py``).
"""

from __future__ import annotations

import torch

from .cache import ActivationCache, LayerActs
from .targets import Target

__all__ = ["join", "assemble", "shard_of"]


def join(parts: list[torch.Tensor], key: str, device: torch.device | None = None) -> torch.Tensor:
    """Pieces of one shard key concatenated along rows; "tokens" pieces padded to one width with -1."""
    if device is not None:
        parts = [t.to(device) for t in parts]
    if key == "tokens" and len({t.shape[1] for t in parts}) > 1:
        width = max(t.shape[1] for t in parts)
        parts = [torch.nn.functional.pad(t, (0, width - t.shape[1]), value=-1) for t in parts]
    return parts[0] if len(parts) == 1 else torch.cat(parts)


def assemble(
    pieces: list[dict[str, torch.Tensor]],
    header: dict,
    device: torch.device,
    ready: dict[str, torch.Tensor] | None = None,
) -> ActivationCache:
    """An ActivationCache from consecutive shard pieces (same keys as a shard) and the manifest facts.

    ready : whole tensors for some keys, already joined (capture's preallocated buffers)
    Activations, sample ids, positions, labels and logits go to ``device``; images and sample
    digests stay on the CPU.
    """
    if not pieces:
        raise ValueError("The store lists no shards, so it holds no samples; capture again.")
    ready = ready or {}

    def cat(key: str, on: torch.device) -> torch.Tensor:
        if key in ready:
            return ready[key].to(on)
        missing = sum(key not in p for p in pieces)
        if missing:
            raise ValueError(f"{missing} shard(s) lack the tensor {key!r} that the manifest "
                             "implies; the store is damaged or was written by another version. "
                             "Capture again into a new directory.")
        # one piece: no copy; several: one copy, directly on the target device
        return join([p[key] for p in pieces], key, on).to(on)

    layers = {}
    for name, info in header["layers"].items():
        layers[name] = LayerActs(
            acts=cat(f"{name}/acts", device),
            sample_id=cat(f"{name}/sample_id", device),
            yx=cat(f"{name}/yx", device),
            hw=tuple(info["hw"]),
            rf=tuple(info["rf"]),
            attributions={k: cat(f"{name}/attr/{k}", device) for k in info.get("attributions", [])},
            kind=info.get("kind", "grid"),
            # stores written before targets were recorded have none: their keys resolve by spelling
            attribution_targets={k: Target.from_json(v)
                                 for k, v in info.get("attribution_targets", {}).items()},
        )
    keys = pieces[0].keys() if pieces else ()
    cpu = torch.device("cpu")
    return ActivationCache(
        layers=layers,
        labels=cat("labels", device),
        logits=cat("logits", device),
        images=cat("images", cpu) if "images" in keys else None,
        input_hw=tuple(header["input_hw"]),
        classes=list(header["classes"]) if header.get("classes") is not None else None,
        meta=dict(header.get("meta", {})),
        sample_digest=cat("sample_digest", cpu) if "sample_digest" in keys else None,
        tokens=cat("tokens", cpu) if "tokens" in keys else None,
        vocab=list(header["vocab"]) if header.get("vocab") is not None else None,
    )


def shard_of(cache: ActivationCache, start: int, stop: int) -> dict[str, torch.Tensor]:
    """The shard tensors of samples [start, stop) of a cache whose rows are ordered by sample."""
    out = {}
    whole = start == 0 and stop == cache.n_samples  # also right for rows in any order
    for name, la in cache.layers.items():
        sid = la.sample_id
        if whole:
            out[f"{name}/acts"], out[f"{name}/sample_id"], out[f"{name}/yx"] = la.acts, sid, la.yx
            for key, t in la.attributions.items():
                out[f"{name}/attr/{key}"] = t
            continue
        bounds = torch.tensor([start, stop], device=sid.device, dtype=sid.dtype)
        lo, hi = torch.searchsorted(sid, bounds).tolist()
        out[f"{name}/acts"] = la.acts[lo:hi]
        out[f"{name}/sample_id"] = sid[lo:hi]
        out[f"{name}/yx"] = la.yx[lo:hi]
        for key, t in la.attributions.items():
            out[f"{name}/attr/{key}"] = t[lo:hi]
    if start == 0:
        for name, st in cache.stats.items():
            out.update(st.to_tensors(f"{name}/stats/"))
    out["labels"] = cache.labels[start:stop]
    out["logits"] = cache.logits[start:stop]
    if cache.images is not None:
        out["images"] = cache.images[start:stop]
    if cache.sample_digest is not None:
        out["sample_digest"] = cache.sample_digest[start:stop]
    if cache.tokens is not None:
        out["tokens"] = cache.tokens[start:stop]
    return out
