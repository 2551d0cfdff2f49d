"""Small display helpers for notebooks: put widgets side by side, show a row of images."""

from __future__ import annotations

import io
from typing import Sequence

import numpy as np
import torch

__all__ = ["show", "show_images", "to_png"]


def to_png(image) -> bytes:
    """PNG bytes of one image, shape (3, h, w), float in [0, 1] or uint8."""
    from PIL import Image

    arr = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if arr.ndim != 3 or arr.shape[0] not in (1, 3):
        raise ValueError(f"an image must have shape (3, h, w) or (1, h, w), got {arr.shape}.")
    if arr.dtype != np.uint8:
        arr = (np.clip(arr, 0.0, 1.0) * 255).round().astype(np.uint8)
    if arr.shape[0] == 1:
        arr = np.repeat(arr, 3, axis=0)
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(arr.transpose(1, 2, 0))).save(buf, format="PNG")
    return buf.getvalue()


def show_images(images, captions: Sequence[str] | None = None, scale: int = 2):
    """A row of images with text captions (captions are shown as text, never as HTML).

    images : array or tensor, shape (n, 3, h, w), float in [0, 1] or uint8
    """
    import ipywidgets as W

    if captions is not None and len(captions) != len(images):
        raise ValueError(f"got {len(images)} images but {len(captions)} captions.")
    items = []
    for i, img in enumerate(images):
        w = int(img.shape[-1]) * scale
        pic = W.Image(value=to_png(img), format="png", layout=W.Layout(width=f"{w}px"))
        parts = [pic]
        if captions is not None:
            parts.append(W.Label(str(captions[i])))
        items.append(W.VBox(parts, layout=W.Layout(align_items="center", margin="2px")))
    return W.HBox(items, layout=W.Layout(flex_flow="row wrap"))


def show(*widgets):
    """Lay widgets out side by side, wrapping on narrow screens."""
    import ipywidgets as W

    if not widgets:
        raise ValueError("show() needs at least one widget.")
    return W.HBox(list(widgets), layout=W.Layout(flex_flow="row wrap", align_items="flex-start"))
