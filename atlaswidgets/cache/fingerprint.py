"""Fingerprints of a capture: the model's weights, the data's samples, and which parts of two
capture configurations differ (a store records them; a capture into it or a save over it
compares them, see ``store``)."""

from __future__ import annotations

import hashlib

import torch

__all__ = ["CONFIG_KEYS", "model_fingerprint", "data_sha256", "config_differences", "describe_differences"]

# the parts of a fingerprint that say how a store was captured; "data" is checked shard by shard
CONFIG_KEYS = ("model", "model_class", "layers", "policy")


def model_fingerprint(model: torch.nn.Module) -> str:
    """sha256 of the model's class name and its state_dict (names, shapes, dtypes, bytes, sorted)."""
    h = hashlib.sha256(f"{type(model).__module__}.{type(model).__qualname__}".encode())
    for name, t in sorted(model.state_dict().items()):
        if not isinstance(t, torch.Tensor):  # extra state some modules keep
            h.update(f"|{name}|{t!r}".encode())
            continue
        h.update(f"|{name}|{tuple(t.shape)}|{t.dtype}|".encode())
        h.update(_tensor_bytes(t))
    return h.hexdigest()


def _tensor_bytes(t: torch.Tensor) -> memoryview:
    # through uint8 so that dtypes numpy lacks (bfloat16) hash too
    flat = t.detach().reshape(-1).contiguous().cpu()
    if flat.numel() == 0:
        return memoryview(b"")
    return memoryview(flat.view(torch.uint8).numpy())


def data_sha256(sample_digest: torch.Tensor, start: int, stop: int) -> str:
    """sha256 of a range of samples: the hash of their per-sample digests, concatenated."""
    return hashlib.sha256(sample_digest[start:stop].numpy().tobytes()).hexdigest()


_OTHER = {"model": "another model", "model_class": "another model class", "layers": "other layers",
          "policy": "another sampling policy"}


def config_differences(old: dict, new: dict) -> list[str]:
    """Which of model / layers / policy differ between two fingerprints."""
    return [k for k in CONFIG_KEYS if old.get(k) != new.get(k)]


def describe_differences(diff: list[str]) -> str:
    """The differences ``config_differences`` found, in words ("another model and other layers")."""
    return " and ".join(_OTHER[k] for k in diff)
