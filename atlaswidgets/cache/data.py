"""The data forms capture() accepts, their validation, and per-sample checksums of the inputs."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch
import torch.nn.functional as F
import xxhash

__all__ = ["check_finite", "batches", "check_batch", "check_labels", "sample_digests", "DIGEST_SIZE", "logits_of",
           "check_display", "display_uint8", "display_hw", "DISPLAY_SIZE", "CROP_SIDE"]

DIGEST_SIZE = 16  # bytes of one sample's digest (XXH3-128)

def _as_tensor(x: Any) -> Any:
    # only numeric arrays: torch has no string or object dtype, and labels checks name those
    if isinstance(x, np.ndarray) and x.dtype.kind in "biufc":
        return torch.from_numpy(x)
    return x


def _is_image_batch(x: Any) -> bool:
    """Whether ``x`` is a batch of images (N, C, H, W) or of token ids (N, T), as a tensor or an array."""
    if not isinstance(x, (torch.Tensor, np.ndarray)):
        return False
    if x.ndim == 2:  # token ids: integers
        return not (x.is_floating_point() if isinstance(x, torch.Tensor) else x.dtype.kind in "fc")
    return x.ndim == 4


def _is_text_dict(item: Mapping) -> bool:
    """Whether a dict batch is passed to the model as keyword arguments (``model(**batch)``):
    it has input_ids, or no image key and no image-shaped tensor (say, ``inputs_embeds``)."""
    if "input_ids" in item:
        return True
    if any(k in item for k in IMAGE_KEYS):
        return False
    return not any(_is_image_batch(_as_tensor(v)) and _as_tensor(v).ndim == 4 for v in item.values())


def _length(x: Any) -> int | None:
    """len(x), or None for what has none (a scalar, a 0-d tensor)."""
    try:
        return len(x)
    except TypeError:
        return None


def _could_be_labels(x: Any) -> bool:
    """Whether ``x``, the second item of a pair, is meant as labels rather than another batch.

    Batches of images are 4-d, so anything of one or two dimensions (class ids, a one-hot matrix,
    a column) or a list of scalars (ints, floats, class names) is taken for labels, and then
    checked, so that a wrong label type gets a message about labels instead of the second item
    being run as "batch 1". A string is never labels (a file path in a list of batches).
    """
    if isinstance(x, (torch.Tensor, np.ndarray)):
        return 1 <= x.ndim <= 2
    if isinstance(x, (list, tuple)):
        return not any(isinstance(v, (torch.Tensor, np.ndarray)) and v.ndim >= 2 for v in x)
    return False


# where dict-shaped data (a Hugging Face dataset in torch format, a DataLoader over a Dataset of
# dicts) keeps its images and labels; the first key present is used
IMAGE_KEYS = ("images", "image", "pixel_values", "img", "inputs", "input", "x")
LABEL_KEYS = ("labels", "label", "targets", "target", "y")


def _from_mapping(item: Mapping, what: str) -> tuple[Any, Any]:
    """(images, labels or None) of a dict batch or dataset; for a text (keyword) dict, (the dict
    without its label keys, labels or None)."""
    if _is_text_dict(item):
        label_key = next((k for k in LABEL_KEYS if k in item), None)
        inputs = {k: v for k, v in item.items() if k not in LABEL_KEYS}
        return inputs, _as_tensor(item[label_key]) if label_key is not None else None
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


def batches(data: Any, batch_size: int, n_classes: int | None = None
            ) -> tuple[Iterable[tuple[Any, Any]], int | None]:
    """(images, labels or None) batches of any accepted data form, and the sample count if known.

    n_classes : the number of class names, when known; labels of a pair or a dict of columns are
        checked against it here, before the model runs (those of an iterable, by check_batch)
    """
    data = _as_tensor(data)
    if isinstance(data, Mapping) and _is_text_dict(data):  # columns of a tokenized dataset
        return _text_columns(data, batch_size, n_classes)
    if isinstance(data, Mapping):  # one dataset as a dict of columns, e.g. {"images": ..., "labels": ...}
        images, labels = _from_mapping(data, "data")
        if not isinstance(images, torch.Tensor) or images.ndim != 4:
            got = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise TypeError(f"data is a dict whose images must be one tensor (N, C, H, W), got {got}.")
        if labels is not None and _length(labels) != len(images):
            got = tuple(labels.shape) if hasattr(labels, "shape") else type(labels).__name__
            raise ValueError(f"data is a dict whose labels must be one integer per image, shape "
                             f"({len(images)},), got {got}.")
        if labels is not None:
            labels = check_labels(labels, len(images), "data's labels", n_classes)
        data = images
    else:
        labels = None
    if isinstance(data, torch.Tensor):
        n = len(data) if data.ndim > 0 else 0
        return ((data[i : i + batch_size], labels[i : i + batch_size] if labels is not None else None)
                for i in range(0, n, batch_size)), n
    # (images, labels, ...extra) of one dataset, e.g. kitchen.dataset(n); a list of image
    # batches differs in that its second item is another (N, C, H, W) batch
    if isinstance(data, (tuple, list)) and len(data) >= 2 and _is_image_batch(data[0]) \
            and _could_be_labels(data[1]):
        images, n = _as_tensor(data[0]), len(data[0])
        if len(data[1]) != n:
            got = f"shape {tuple(data[1].shape)}" if hasattr(data[1], "shape") else f"{len(data[1])} items"
            raise ValueError(f"data is a pair (images, labels) with {n} images, but its labels "
                             f"have {got}; pass one integer label per image, shape ({n},).")
        labels = check_labels(data[1], n, "data's labels", n_classes)  # all of them, before any work
        return ((images[i : i + batch_size], labels[i : i + batch_size]) for i in range(0, n, batch_size)), n
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
    "data must be an image tensor (N, C, H, W), token ids (N, T), a pair (inputs, labels), a dict "
    "with images and labels or with input_ids (a tokenizer's output), or an iterable (e.g. a "
    "DataLoader) of such batches, (inputs, labels) batches or dict batches."
)


def _text_columns(data: Mapping, batch_size: int, n_classes: int | None
                  ) -> tuple[Iterable[tuple[Any, Any]], int]:
    """Batches of a dict of columns passed as keyword arguments (input_ids, attention_mask, ...)."""
    inputs = {k: _as_tensor(v) for k, v in data.items() if k not in LABEL_KEYS}
    bad = [k for k, v in inputs.items() if not isinstance(v, torch.Tensor) or v.ndim == 0]
    if bad:
        raise TypeError(f"data is a dict whose {bad[0]!r} is a {type(inputs[bad[0]]).__name__}, not a "
                        "tensor with one row per sample; tokenize with return_tensors='pt' and "
                        "padding=True (or pass an iterable of batches).")
    n = len(next(iter(inputs.values()))) if inputs else 0
    uneven = [k for k, v in inputs.items() if len(v) != n]
    if uneven:
        raise ValueError(f"data is a dict whose columns differ in length: {uneven[0]!r} has "
                         f"{len(inputs[uneven[0]])} rows, the first has {n}.")
    label_key = next((k for k in LABEL_KEYS if k in data), None)
    labels = None
    if label_key is not None:
        labels = _as_tensor(data[label_key])
        ids = inputs.get("input_ids")
        if isinstance(labels, torch.Tensor) and isinstance(ids, torch.Tensor) and labels.ndim == 2 \
                and labels.shape == ids.shape:
            labels = None  # per-token targets (a language-modelling collator's), not sample classes
        else:
            labels = check_labels(labels, n, "data's labels", n_classes)
    return (({k: v[i : i + batch_size] for k, v in inputs.items()},
             labels[i : i + batch_size] if labels is not None else None)
            for i in range(0, n, batch_size)), n


def _split(item: Any, index: int) -> tuple[Any, Any]:
    """(images, labels or None) of one batch from an iterable."""
    item = _as_tensor(item)
    if isinstance(item, torch.Tensor):
        return item, None
    if isinstance(item, list) and item and all(isinstance(v, str) for v in item):
        return item, None  # a batch of texts, for a forward= that tokenizes them
    if isinstance(item, (tuple, list)) and len(item) >= 1:
        return item[0], item[1] if len(item) >= 2 else None
    if isinstance(item, Mapping):
        return _from_mapping(item, f"Batch {index}")
    raise TypeError(_DATA_FORMS + f" Batch {index} is a {type(item).__name__}.")


def check_batch(images: Any, labels: Any, index: int, n_classes: int | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Images as a float tensor (N, C, H, W) and labels as an integer tensor (N,) or None.

    n_classes : the number of class names, when known; labels must then be below it
    """
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
        labels = check_labels(labels, len(images), f"Batch {index}: labels", n_classes)
    return images, labels


# ----------------------------------------------------------------------------- labels


def check_labels(labels: Any, n: int, where: str, n_classes: int | None = None) -> torch.Tensor:
    """``labels`` as an integer tensor (n,) of class indices (-1: no label), or an error naming
    what is wrong and how to fix it.

    where : how the messages name the labels, e.g. "Batch 3: labels" or "data's labels"
    n_classes : the number of class names, when known; labels must then be below it
    """
    labels = _label_tensor(labels, where)
    shape = tuple(labels.shape)
    # the shapes other libraries give labels in, each with its one-line fix
    if labels.ndim == 2 and shape == (n, 1):
        raise ValueError(f"{where} have shape {shape}, a column; capture takes one class index per "
                         f"image, shape ({n},): pass labels.squeeze(1) or labels.reshape(-1).")
    if labels.ndim == 2 and shape[0] == n:
        raise ValueError(f"{where} have shape {shape}, one-hot vectors or scores of {shape[1]} "
                         f"classes per image; capture takes one class index per image, shape "
                         f"({n},): pass labels.argmax(1).")
    if labels.ndim != 1 or len(labels) != n:
        raise ValueError(f"{where} must have shape ({n},), one per image, got shape {shape}.")
    _check_label_values(labels, where)
    _check_label_range(labels, where, n_classes)
    return labels


def _label_tensor(labels: Any, where: str) -> torch.Tensor:
    """Labels of any form as a tensor; class names, which no tensor holds, are refused here."""
    labels = _as_tensor(labels)
    if isinstance(labels, torch.Tensor):
        return labels
    if isinstance(labels, np.ndarray):  # strings or objects: see _as_tensor
        labels = labels.tolist()
    if not isinstance(labels, (list, tuple)):
        raise TypeError(f"{where} must be integer class indices, one per image, got "
                        f"{type(labels).__name__}.")
    flat = labels
    while flat and isinstance(flat[0], (list, tuple)):  # nested lists, e.g. one-hot rows
        flat = flat[0]
    first = flat[0] if flat else None
    if isinstance(first, (str, bytes)):
        raise TypeError(
            f"{where} must be integer class indices, got str ({first!r}); map class names to ids "
            "and pass classes=[...], e.g. classes = sorted(set(names)); labels = "
            "[classes.index(c) for c in names]; capture(..., classes=classes)."
        )
    try:
        return torch.as_tensor(labels)
    except (TypeError, ValueError, RuntimeError):
        kinds = sorted({type(v).__name__ for v in flat})
        raise TypeError(f"{where} must be integer class indices, one per image, got a "
                        f"{type(labels).__name__} of {', '.join(kinds)}.") from None


def _check_label_values(labels: torch.Tensor, where: str) -> None:
    """Labels of an integer dtype; whole numbers stored as floats get the cast to use."""
    if not (labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool):
        return
    what = f"dtype {labels.dtype}"
    if labels.dtype == torch.bool:
        raise TypeError(f"{where} must be integer class indices, got bool ({what}); pass "
                        "labels.long() if True and False are classes 1 and 0.")
    values = labels.detach().reshape(-1)
    fractional = values[values != values.round()] if not labels.is_complex() else values
    if len(fractional):
        raise TypeError(f"{where} must be integer class indices, got float ({what}) such as "
                        f"{fractional[0].item():g}, not a class index. Pass the class index of "
                        "each image (-1 for unknown), or leave the labels out.")
    raise TypeError(f"{where} must be integer class indices, got float ({what}) holding whole "
                    "numbers; pass labels.long() (use -1 for unknown).")


def _check_label_range(labels: torch.Tensor, where: str, n_classes: int | None) -> None:
    """Class indices of existing classes: -1 (no label, as capture gives unlabelled data) up to
    n_classes - 1. Other values would show in the atlas as made-up class names."""
    if len(labels) == 0:
        return
    low, high = (int(v) for v in torch.aminmax(labels))
    if low < -1:
        at = int((labels < -1).nonzero()[0])
        raise ValueError(f"{where} hold {int(labels[at])} at position {at}; class indices are 0 "
                         "or more, or -1 for no label.")
    if n_classes is not None and high >= n_classes:
        at = int((labels >= n_classes).nonzero()[0])
        raise ValueError(
            f"{where} hold {int(labels[at])} at position {at}, but classes has {n_classes} names; "
            f"pass the full class list as classes=[...], or labels 0..{n_classes - 1} "
            "(-1 for no label)."
        )


# ----------------------------------------------------------------------------- checksums


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


def logits_of(out: Any, n: int, logits: int | str | None = None) -> torch.Tensor:
    """The model's per-sample logits as float32 (N, n_outputs), read by name (see
    ``inputs.select_logits``): a tensor, a dict's or ModelOutput's "logits", or ``logits=``'s item.
    Per-token logits (N, T, V) are refused: they are not one score per sample and class."""
    from .inputs import select_logits

    picked = select_logits(out, n, logits)
    if picked.ndim == 3:
        raise ValueError(f"The model's logits have shape {tuple(picked.shape)}, one row per token; "
                         "this needs per-sample logits (N, n_classes). Pass forward=fn returning "
                         "the logits of one position per sample, e.g. out.logits[:, -1].")
    return picked.detach().float()


# ----------------------------------------------------------------------------- display copies

# Display copies are RGB in [0, 1]. Inputs or to_display results beyond these bounds are taken for
# another scale, not for a slight overshoot: images in [0, 1] stay inside them even after
# resampling (bicubic or antialiased resizing overshoots by a few percent) or light noise, and the
# shipped kitchen data is exactly in [0, 1]; images in 0..255 exceed 1.5 as soon as any pixel is
# brighter than 1/255, and ImageNet-normalised ones reach -2.1 at black and 2.6 at white (a [-1, 1]
# normalisation, -1 at black).
DISPLAY_LOW, DISPLAY_HIGH = -0.5, 1.5

_DISPLAY_FIX = (
    "to_display=fn mapping a batch of model inputs to RGB in [0, 1], e.g. for ImageNet-normalised "
    "inputs, with mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1) and std = "
    "torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1), to_display=lambda x: x * std.to(x) + "
    "mean.to(x); for inputs in 0..255, to_display=lambda x: x / 255"
)


def _outside_display_range(x: torch.Tensor) -> tuple[float, float] | None:
    """(min, max) of x's finite values when they lie well outside [0, 1] (see DISPLAY_LOW), else
    None. Non-finite values are left to the check of the activations, which names the sample."""
    values = x.detach()
    if values.numel() == 0:
        return None
    low, high = (float(v) for v in torch.aminmax(values))
    if not (math.isfinite(low) and math.isfinite(high)):
        # rare: only then pay for the masked copy (the masking alone cost ~3% of a capture)
        values = values[torch.isfinite(values)]
        if values.numel() == 0:
            return None
        low, high = (float(v) for v in torch.aminmax(values))
    return (low, high) if low < DISPLAY_LOW or high > DISPLAY_HIGH else None


def check_display(x: torch.Tensor, to_display: Callable | None) -> str | None:
    """Check the display copies of the first batch ``x``, once per capture.

    A ``to_display`` that returns no floats, or values well outside [0, 1], is refused: clipping
    would make its images all white or black. Without ``to_display``, inputs well outside [0, 1]
    are allowed (the model may want them) but return a warning text, since clipping them to
    [0, 1] for display ruins most of each image.
    """
    if to_display is None:
        found = _outside_display_range(x)
        if found is None:
            return None
        return (
            f"The model's inputs range from {found[0]:.4g} to {found[1]:.4g}, not [0, 1], and the "
            "display copies of them (cache.images, the atlas's pictures) are clipped to [0, 1], "
            f"which loses most of each image. Pass {_DISPLAY_FIX}; or keep_images=False."
        )
    shown = _shown(x, to_display)
    found = _outside_display_range(shown)
    if found is not None:
        raise ValueError(
            f"to_display must return floats in [0, 1] of shape (N, 3, H, W), got values from "
            f"{found[0]:.4g} to {found[1]:.4g}; clipped, its images would be mostly black or white. "
            f"Pass {_DISPLAY_FIX}."
        )
    return None


def _shown(x: torch.Tensor, to_display: Callable | None) -> torch.Tensor:
    """``to_display(x)`` (or x), checked: floats of shape (N, 3 or 1, H, W)."""
    shown = to_display(x) if to_display is not None else x
    if not isinstance(shown, torch.Tensor) or shown.ndim != 4 or shown.shape[1] not in (1, 3) \
            or shown.shape[0] != x.shape[0]:
        got = tuple(shown.shape) if isinstance(shown, torch.Tensor) else type(shown).__name__
        raise ValueError(
            f"Display images must have shape (N, 3, H, W) (or 1 channel), got {got}. For inputs "
            "that are not RGB in [0, 1], pass to_display=fn mapping a batch to RGB in [0, 1], or "
            "keep_images=False."
        )
    if shown.shape[2:] != x.shape[2:]:
        # crops and receptive-field boxes are in input pixels, so the copies keep the inputs' size
        raise ValueError(
            f"to_display must keep the inputs' height and width {tuple(x.shape[2:])}, got "
            f"{tuple(shown.shape[2:])}: the atlas crops its pictures in input pixels. Map colours "
            "only (resize the inputs themselves if they are too large)."
        )
    if not shown.is_floating_point():  # e.g. (x * 255).byte(): scaled by 255 again, all white
        raise ValueError(
            f"to_display must return floats in [0, 1] of shape (N, 3, H, W), got dtype {shown.dtype}. "
            "Return the [0, 1] floats (e.g. x.float() / 255 instead of bytes); capture makes the "
            "uint8 copy itself."
        )
    return shown


# The widgets draw whole images at 96 px at most (the example panel's thumbnails; the neuron
# viewer's are 80 px) and crops of a receptive field at 48 px (the atlas's icons), so display
# copies keep a longest side of DISPLAY_SIZE, and more where a layer's receptive field would
# otherwise span fewer than CROP_SIDE display pixels: every picture is then shrunk to what the
# widgets draw, as it was from the full image, never blown up.
DISPLAY_SIZE = 128
CROP_SIDE = 48


def display_hw(input_hw: tuple[int, int], rfs, display_size: int | None) -> tuple[int, int]:
    """Height and width of the display copies of images of size ``input_hw``.

    rfs : the (height, width) receptive fields, in input pixels, of the layers captured
    display_size : the longest side wanted (None keeps the full size); raised where a receptive
        field would be cut from fewer than ``CROP_SIDE`` pixels; never above the input's size
    """
    h, w = int(input_hw[0]), int(input_hw[1])
    if display_size is None:
        return h, w
    scale = display_size / max(h, w)
    for rh, rw in rfs:
        scale = max(scale, CROP_SIDE / max(min(int(rh), h), 1), CROP_SIDE / max(min(int(rw), w), 1))
    if scale >= 1:
        return h, w
    return max(1, round(h * scale)), max(1, round(w * scale))


def display_uint8(x: torch.Tensor, to_display: Callable | None, out: torch.Tensor | None = None,
                  hw: tuple[int, int] | None = None) -> torch.Tensor:
    """uint8 RGB images (N, 3, h, w) for display: ``to_display(x)`` (or x) clamped to [0, 1] x 255.

    out : a uint8 tensor (N, 3, h, w) to write into (and return) instead of a new one
    hw : (h, w) of the copies (``display_hw``); shrunk from the inputs' (H, W) with antialiasing
        before rounding to uint8. None keeps (H, W).
    """
    shown = _shown(x, to_display)
    if hw is not None and tuple(shown.shape[-2:]) != tuple(hw):
        shown = F.interpolate(shown.detach().float(), size=tuple(hw), mode="bilinear",
                              align_corners=False, antialias=True)
    if shown.shape[1] == 1:
        shown = shown.expand(-1, 3, -1, -1)
    # one new float tensor, changed in place: this runs on every batch
    scaled = shown.detach().float().mul(255).clamp_(0, 255).round_()
    if out is None:
        return scaled.to(torch.uint8)
    return out.copy_(scaled)  # whole numbers in [0, 255]: the conversion is exact


def check_finite(shard: list[dict], names: list[str]) -> None:
    """Refuse a shard (pieces of capture's keys) whose activations or logits hold NaN or infinity,
    naming the first sample that does."""
    keys = [f"{n}/acts" for n in names] + ["logits"]
    for key in keys:
        for piece in shard:
            t = piece[key]
            # one reduction without a mask: the sum is finite unless some value is not (or the
            # sum overflows, which the exact check below then clears)
            if bool(torch.isfinite(t.sum(dtype=torch.float32))) or bool(torch.isfinite(t).all()):
                continue
            row = int((~torch.isfinite(t)).reshape(len(t), -1).any(dim=1).nonzero()[0])
            if key == "logits":  # a piece's first row of any layer belongs to its first sample
                sample, what = int(piece[f"{names[0]}/sample_id"][0]) + row, "The model's output (logits)"
            else:
                sample, what = int(piece[key.replace("/acts", "/sample_id")][row]), f"Layer {key[:-5]!r}"
            raise ValueError(
                f"{what} has NaN or infinite values, first at sample {sample}. Check the model's "
                "weights and the inputs (normalisation, dtype); a cache with non-finite "
                "activations would break the atlas, top examples and attribution."
            )
