"""The data forms capture() accepts, their validation, and per-sample checksums of the inputs."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch
import xxhash

__all__ = ["batches", "check_batch", "sample_digests", "DIGEST_SIZE", "logits_of", "display_uint8"]

DIGEST_SIZE = 16  # bytes of one sample's digest (XXH3-128)

def _as_tensor(x: Any) -> Any:
    return torch.from_numpy(x) if isinstance(x, np.ndarray) else x


def _labels_like(x: Any, n: int | None) -> bool:
    """Whether ``x`` looks like labels: a 1-d tensor or list of ints, of length n (any if None)."""
    x = _as_tensor(x)
    if isinstance(x, list):
        return (n is None or len(x) == n) and all(isinstance(v, (int, np.integer)) for v in x)
    return isinstance(x, torch.Tensor) and x.ndim == 1 and (n is None or len(x) == n)


# where dict-shaped data (a Hugging Face dataset in torch format, a DataLoader over a Dataset of
# dicts) keeps its images and labels; the first key present is used
IMAGE_KEYS = ("images", "image", "pixel_values", "img", "inputs", "input", "x")
LABEL_KEYS = ("labels", "label", "targets", "target", "y")


def _from_mapping(item: Mapping, what: str) -> tuple[Any, Any]:
    """(images, labels or None) of a dict batch or dataset."""
    image_key = next((k for k in IMAGE_KEYS if k in item), None)
    if image_key is None:
        keys = sorted(map(str, item))[:20]
        raise TypeError(
            f"{what} is a dict with keys {keys}, none of which holds images; capture looks for "
            f"them under the first of {list(IMAGE_KEYS)} and for labels under {list(LABEL_KEYS)}. "
            "Rename the keys, or pass (images, labels) batches, e.g. "
            "((b['my_images'], b['my_labels']) for b in loader)."
        )
    label_key = next((k for k in LABEL_KEYS if k in item), None)
    return _as_tensor(item[image_key]), _as_tensor(item[label_key]) if label_key is not None else None


def batches(data: Any, batch_size: int) -> tuple[Iterable[tuple[Any, Any]], int | None]:
    """(images, labels or None) batches of any accepted data form, and the sample count if known."""
    data = _as_tensor(data)
    if isinstance(data, Mapping):  # one dataset as a dict of columns, e.g. {"images": ..., "labels": ...}
        images, labels = _from_mapping(data, "data")
        if not isinstance(images, torch.Tensor) or images.ndim != 4:
            got = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise TypeError(f"data is a dict whose images must be one tensor (N, C, H, W), got {got}.")
        if labels is not None and not _labels_like(labels, len(images)):
            got = tuple(labels.shape) if isinstance(labels, torch.Tensor) else type(labels).__name__
            raise ValueError(f"data is a dict whose labels must be one integer per image, shape "
                             f"({len(images)},), got {got}.")
        data = images
    else:
        labels = None
    if isinstance(data, torch.Tensor):
        n = len(data) if data.ndim > 0 else 0
        labels = torch.as_tensor(labels) if labels is not None else None
        return ((data[i : i + batch_size], labels[i : i + batch_size] if labels is not None else None)
                for i in range(0, n, batch_size)), n
    # (images, labels, ...extra) of one dataset, e.g. kitchen.dataset(n); a list of image
    # batches differs in that its second item is another (N, C, H, W) batch
    if (
        isinstance(data, (tuple, list))
        and len(data) >= 2
        and isinstance(_as_tensor(data[0]), torch.Tensor)
        and _as_tensor(data[0]).ndim == 4
        and _labels_like(data[1], len(data[0]))
    ):
        images, labels = _as_tensor(data[0]), torch.as_tensor(_as_tensor(data[1]))
        n = len(images)
        return ((images[i : i + batch_size], labels[i : i + batch_size]) for i in range(0, n, batch_size)), n
    if (
        isinstance(data, (tuple, list))
        and len(data) >= 2
        and isinstance(_as_tensor(data[0]), torch.Tensor)
        and _as_tensor(data[0]).ndim == 4
        and _labels_like(data[1], None)
    ):  # (images, labels) whose labels do not fit; running it as a list of batches would fail later
        second = _as_tensor(data[1])
        got = f"shape {tuple(second.shape)}" if isinstance(second, torch.Tensor) else f"{len(second)} items"
        raise ValueError(f"data is a pair (images, labels) with {len(data[0])} images, but its labels "
                         f"have {got}; pass one integer label per image, shape ({len(data[0])},).")
    if isinstance(data, (str, bytes, Path)):
        raise TypeError(_DATA_FORMS + f" Got {type(data).__name__}.")
    try:
        iterator = iter(data)
    except TypeError:
        raise TypeError(_DATA_FORMS + f" Got {type(data).__name__}.") from None
    dataset = getattr(data, "dataset", None)
    total = len(dataset) if hasattr(dataset, "__len__") else None
    return (_split(item, i) for i, item in enumerate(iterator)), total


_DATA_FORMS = (
    "data must be an image tensor (N, C, H, W), a pair (images, labels), a dict with images and "
    "labels, or an iterable (e.g. a DataLoader) of image batches, (images, labels) batches or dict "
    "batches."
)


def _split(item: Any, index: int) -> tuple[Any, Any]:
    """(images, labels or None) of one batch from an iterable."""
    item = _as_tensor(item)
    if isinstance(item, torch.Tensor):
        return item, None
    if isinstance(item, (tuple, list)) and len(item) >= 1:
        return item[0], item[1] if len(item) >= 2 else None
    if isinstance(item, Mapping):
        return _from_mapping(item, f"Batch {index}")
    raise TypeError(_DATA_FORMS + f" Batch {index} is a {type(item).__name__}.")


def check_batch(images: Any, labels: Any, index: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Images as a float tensor (N, C, H, W) and labels as an integer tensor (N,) or None."""
    images = _as_tensor(images)
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"Batch {index}: images must be a float tensor of shape (N, C, H, W), got "
                        f"{type(images).__name__}.")
    if images.ndim == 3:
        raise ValueError(
            f"Batch {index} has shape {tuple(images.shape)}, one image; capture expects batches of "
            "shape (N, C, H, W). Add a batch dimension (image[None]) or wrap a Dataset in "
            "torch.utils.data.DataLoader(dataset, batch_size=64)."
        )
    if images.ndim != 4:
        raise ValueError(f"Batch {index}: images must have shape (N, C, H, W), got shape "
                         f"{tuple(images.shape)}.")
    if not images.is_floating_point():
        raise TypeError(
            f"Batch {index}: images must be a float tensor (N, C, H, W) as the model takes it, got "
            f"dtype {images.dtype}. Convert, e.g. images.float() / 255."
        )
    if labels is not None:
        labels = torch.as_tensor(_as_tensor(labels))
        if labels.ndim != 1 or len(labels) != len(images):
            raise ValueError(f"Batch {index}: labels must have shape ({len(images)},), one per "
                             f"image, got shape {tuple(labels.shape)}.")
        if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
            raise TypeError(f"Batch {index}: labels must be integer class indices, got dtype "
                            f"{labels.dtype}. Pass labels.long() (use -1 for unknown).")
    return images, labels


def sample_digests(images: torch.Tensor, labels: torch.Tensor) -> bytes:
    """Concatenated XXH3-128 digests (16 bytes each) of each sample's image bytes and label.

    Hashing per sample makes the hash of any range of samples independent of how the data was
    batched or sharded. The digests tell a resumed capture whether it reads the same data, an
    accident to catch, not an attack to resist, so a fast non-cryptographic hash does: XXH3 hashed
    the kitchen bench's 512 images in 2.7 ms where sha256 (with the CPU's SHA instructions) took
    22 ms, 3% of the forward pass that capture() must stay close to. Images on a GPU are copied to
    the host for this.
    """
    cpu = images.detach().to("cpu").contiguous()
    rows = cpu.reshape(len(cpu), -1).view(torch.uint8).numpy()
    prefix = f"{cpu.dtype}|{tuple(cpu.shape[1:])}|".encode()
    out = bytearray()
    for row, label in zip(rows, labels.tolist()):
        h = xxhash.xxh3_128(prefix + f"{label}|".encode())
        h.update(row)
        out += h.digest()
    return bytes(out)


def logits_of(out: Any, n: int) -> torch.Tensor:
    """The model's logits as float32 (N, n_outputs), from a tensor, (logits, ...), or .logits."""
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        out = out[0]  # e.g. (logits, aux) outputs
    elif isinstance(out, dict) and isinstance(out.get("logits"), torch.Tensor):
        out = out["logits"]
    elif isinstance(getattr(out, "logits", None), torch.Tensor):
        out = out.logits
    if not isinstance(out, torch.Tensor) or out.ndim == 0 or out.shape[0] != n:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"The model's output must be a tensor of logits (N, n_classes) with N={n}, "
                         f"got {shape}.")
    return out.detach().reshape(n, -1).float()


def display_uint8(x: torch.Tensor, to_display: Callable | None, out: torch.Tensor | None = None) -> torch.Tensor:
    """uint8 RGB images (N, 3, H, W) for display: ``to_display(x)`` (or x) clamped to [0, 1] x 255.

    out : a uint8 tensor (N, 3, H, W) to write into (and return) instead of a new one
    """
    shown = to_display(x) if to_display is not None else x
    if not isinstance(shown, torch.Tensor) or shown.ndim != 4 or shown.shape[1] not in (1, 3) \
            or shown.shape[0] != x.shape[0]:
        got = tuple(shown.shape) if isinstance(shown, torch.Tensor) else type(shown).__name__
        raise ValueError(
            f"Display images must have shape (N, 3, H, W) (or 1 channel), got {got}. For inputs "
            "that are not RGB in [0, 1], pass to_display=fn mapping a batch to RGB in [0, 1], or "
            "keep_images=False."
        )
    if shown.shape[1] == 1:
        shown = shown.expand(-1, 3, -1, -1)
    # one new float tensor, changed in place: this runs on every batch
    scaled = shown.detach().float().mul(255).clamp_(0, 255).round_()
    if out is None:
        return scaled.to(torch.uint8)
    return out.copy_(scaled)  # whole numbers in [0, 255]: the conversion is exact
