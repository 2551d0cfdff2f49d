"""Receptive-field crops, outlined example images and sprite sheets."""

from __future__ import annotations

import dataclasses
import io

import numpy as np
import pytest
import torch
from PIL import Image

from atlaswidgets.cache.cache import ActivationCache, LayerActs
from atlaswidgets.cache.crops import boxed_images, crop_rows, sprite_sheet


def _cache(yx, images, hw=(4, 4), rf=(8, 8), input_hw=(32, 32)):
    n = len(yx)
    la = LayerActs(
        acts=torch.zeros(n, 2), sample_id=torch.zeros(n, dtype=torch.long),
        yx=torch.as_tensor(yx, dtype=torch.long), hw=hw, rf=rf,
    )
    return ActivationCache(
        {"l": la}, labels=torch.zeros(1, dtype=torch.long), logits=torch.zeros(1, 2),
        images=images, input_hw=input_hw,
    )


def _square_image(side=32, y=(18, 22), x=(2, 6)):
    img = torch.zeros(1, 3, side, side, dtype=torch.uint8)
    img[:, :, y[0] : y[1], x[0] : x[1]] = 255
    return img


def test_crop_is_centred_on_the_row_position():
    # a 4x4 layer over 32 px: position (2, 0) is centred on pixel (20, 4); an 8 px field spans 16..24, 0..8
    cache = _cache([[2, 0], [0, 3]], _square_image())
    crops = crop_rows(cache, "l", [0, 1], size=8)
    assert crops.shape == (2, 3, 8, 8) and crops.dtype == torch.uint8
    assert (crops[0, :, 2:6, 2:6] == 255).all()  # the square sits at 18..22, 2..6 of the image
    assert crops[0].float().mean() == pytest.approx(255 * 16 / 64)
    assert (crops[1] == 0).all()  # the far corner does not see it


def test_crop_scales_to_display_images_of_another_size():
    # same scene, stored at 64 px while the model saw 32 px: the crop must find the square again
    big = torch.nn.functional.interpolate(_square_image().float(), scale_factor=2, mode="nearest")
    cache = _cache([[2, 0]], big.to(torch.uint8))
    crop = crop_rows(cache, "l", [0], size=16)
    assert (crop[0, :, 4:12, 4:12] == 255).all()


def test_border_windows_shift_inwards_and_mean_rows_get_the_whole_image():
    img = torch.arange(32, dtype=torch.uint8).repeat(3, 32, 1)[None]  # value = column index
    cache = _cache([[0, 0], [-1, -1]], img, rf=(16, 16))
    crops = crop_rows(cache, "l", [0, 1], size=16)
    # centre (4, 4) with a 16 px field would start at -4: shifted to start at column 0
    assert crops[0, 0, 0].tolist() == list(range(16))
    whole = torch.nn.functional.interpolate(img.float(), size=(16, 16), mode="bilinear", antialias=True)
    assert torch.equal(crops[1], whole[0].round().to(torch.uint8))


def test_field_larger_than_the_image_is_clamped():
    cache = _cache([[1, 1]], _square_image(), rf=(100, 100))
    crop = crop_rows(cache, "l", [0], size=32)
    assert torch.equal(crop[0], _square_image()[0])


def test_boxed_images_outline_the_receptive_field():
    img = torch.zeros(1, 3, 32, 32, dtype=torch.uint8)
    cache = _cache([[2, 2], [-1, -1]], img)
    pics = boxed_images(cache, "l", [0, 1], size=64, width=2)
    assert pics.shape == (2, 3, 64, 64)
    # field of (2, 2): pixels 16..24 of 32 -> 32..48 of 64; the bright core starts on its edge
    assert pics[0, :, 32, 40].tolist() == [255, 214, 0]
    assert pics[0, :, 40, 32].tolist() == [255, 214, 0]
    assert (pics[0, :, 40, 40] == 0).all()  # inside stays the image
    assert (pics[0, :, 5:28, 5:28] == 0).all()  # far outside too
    assert pics[1, :, 0, 30].tolist() == [255, 214, 0]  # a mean row: the whole image outlined


def test_sprite_sheet_decodes_to_the_right_layout():
    icons = torch.zeros(5, 3, 4, 4, dtype=torch.uint8)
    for i in range(5):
        icons[i, 0] = 10 * (i + 1)
    png, cols = sprite_sheet(icons)
    assert cols == 3
    sheet = np.asarray(Image.open(io.BytesIO(png)))
    assert sheet.shape == (8, 12, 4)  # 2 rows x 3 cols of 4 px icons, RGBA
    for i in range(5):
        r, c = divmod(i, cols)
        assert (sheet[r * 4 : r * 4 + 4, c * 4 : c * 4 + 4, 0] == 10 * (i + 1)).all()
        assert (sheet[r * 4 : r * 4 + 4, c * 4 : c * 4 + 4, 3] == 255).all()
    assert (sheet[4:, 8:, 3] == 0).all()  # the empty slot is transparent
    png1, cols1 = sprite_sheet(icons.numpy(), cols=5)
    assert cols1 == 5 and Image.open(io.BytesIO(png1)).size == (20, 4)


def test_bad_input():
    cache = _cache([[0, 0]], _square_image())
    with pytest.raises(ValueError, match="keep_images=True"):
        crop_rows(dataclasses.replace(cache, images=None), "l", [0])
    with pytest.raises(ValueError, match=r"row indices must lie in \[0, 1\)"):
        crop_rows(cache, "l", [1])
    with pytest.raises(TypeError, match="integer row indices"):
        crop_rows(cache, "l", [0.5])
    with pytest.raises(ValueError, match="size"):
        crop_rows(cache, "l", [0], size=0)
    with pytest.raises(ValueError, match="was not captured"):
        crop_rows(cache, "other", [0])
    with pytest.raises(ValueError, match="uint8"):
        crop_rows(dataclasses.replace(cache, images=cache.images.float()), "l", [0])
    with pytest.raises(ValueError, match=r"\(m, 3, s, s\)"):
        sprite_sheet(torch.zeros(2, 3, 4, 5, dtype=torch.uint8))
    with pytest.raises(TypeError, match="uint8"):
        sprite_sheet(torch.zeros(2, 3, 4, 4))
    with pytest.raises(ValueError, match="at least one icon"):
        sprite_sheet(torch.zeros(0, 3, 4, 4, dtype=torch.uint8))
    assert crop_rows(cache, "l", [], size=4).shape == (0, 3, 4, 4)
