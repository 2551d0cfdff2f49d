"""Notebook display helpers."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from atlaswidgets.widgets.display import show, show_images, to_png


def test_to_png_round_trip():
    img = torch.zeros(3, 5, 7)
    img[0] = 1.0  # pure red
    decoded = np.asarray(Image.open(io.BytesIO(to_png(img))))
    assert decoded.shape == (5, 7, 3)
    assert (decoded[..., 0] == 255).all() and (decoded[..., 1:] == 0).all()
    with pytest.raises(ValueError, match=r"shape \(3, h, w\)"):
        to_png(np.zeros((5, 7)))


def test_show_images_captions_are_text():
    hostile = "<img src=x onerror=alert(1)>"
    box = show_images(torch.rand(2, 3, 8, 8), captions=["wok", hostile])
    labels = [item.children[1] for item in box.children]
    assert [lab.value for lab in labels] == ["wok", hostile]
    assert all(type(lab).__name__ == "Label" for lab in labels)  # Label renders text, not HTML
    with pytest.raises(ValueError, match="2 images but 1 captions"):
        show_images(torch.rand(2, 3, 8, 8), captions=["one"])


def test_show_needs_widgets():
    with pytest.raises(ValueError, match="at least one widget"):
        show()
