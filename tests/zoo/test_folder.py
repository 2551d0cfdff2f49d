"""image_folder: class sub-folders or a flat folder, resize + centre crop, labels, and its errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import atlaswidgets as aw
from atlaswidgets.zoo.folder import ImageFolder, image_folder, load_image, to_input
from atlaswidgets.zoo.imagenet import class_names


def _bands(width: int, height: int, colours: list[tuple[int, int, int]]) -> Image.Image:
    """Vertical bands of equal width, left to right."""
    pixels = np.zeros((height, width, 3), np.uint8)
    step = width // len(colours)
    for k, colour in enumerate(colours):
        pixels[:, k * step:(k + 1) * step] = colour
    return Image.fromarray(pixels)


RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)


@pytest.fixture
def class_tree(tmp_path: Path) -> Path:
    root = tmp_path / "photos"
    (root / "wok").mkdir(parents=True)
    (root / "frying_pan" / "more").mkdir(parents=True)
    _bands(40, 30, [RED, GREEN]).save(root / "wok" / "b.png")
    _bands(30, 50, [BLUE]).convert("L").save(root / "wok" / "a.png")            # greyscale
    _bands(36, 36, [GREEN]).convert("RGBA").save(root / "frying_pan" / "z.png")  # with alpha
    _bands(20, 20, [RED]).save(root / "frying_pan" / "more" / "c.png")          # nested
    (root / "wok" / "notes.txt").write_text("not an image")                     # skipped
    _bands(20, 20, [RED]).save(root / "wok" / ".hidden.png")                    # skipped
    return root


def test_class_folders_sorted_with_labels(class_tree):
    data = image_folder(class_tree, size=16, progress=False)
    assert isinstance(data, ImageFolder)
    assert data.classes == ["frying_pan", "wok"]
    assert [p.relative_to(class_tree).as_posix() for p in data.paths] == [
        "frying_pan/more/c.png", "frying_pan/z.png", "wok/a.png", "wok/b.png"]
    assert data.labels.tolist() == [0, 0, 1, 1]
    assert data.images.shape == (4, 3, 16, 16) and data.images.dtype == torch.float32
    assert 0 <= data.images.min() and data.images.max() <= 1
    # the greyscale blue image became grey RGB, the RGBA green one plain green
    grey = data.images[2]
    assert torch.allclose(grey[0], grey[1]) and torch.allclose(grey[1], grey[2])
    assert data.images[1, 1].mean() > 0.99 and data.images[1, 0].max() < 0.01


def test_folder_names_map_to_given_classes(class_tree):
    data = image_folder(class_tree, size=8, classes=class_names(), progress=False)
    assert data.labels.tolist() == [567, 567, 909, 909]   # "frying_pan" -> "frying pan"
    assert len(data.classes) == 1000 and data.classes[909] == "wok"


def test_flat_folder_has_unknown_labels(tmp_path):
    for i, colour in enumerate([RED, GREEN, BLUE]):
        _bands(24, 24, [colour]).save(tmp_path / f"img{2 - i}.png")
    data = image_folder(tmp_path, size=12, progress=False)
    assert [p.name for p in data.paths] == ["img0.png", "img1.png", "img2.png"]
    assert data.labels.tolist() == [-1, -1, -1] and data.classes == []
    assert data.images[0, 2].mean() > 0.99   # img0 is the blue one


def test_resize_shorter_side_then_centre_crop():
    # 90 x 30: red | green | blue thirds; shorter side to 10 gives 30 x 10, whose centre 10 x 10
    # is the green third
    out = to_input(_bands(90, 30, [RED, GREEN, BLUE]), size=10)
    assert out.shape == (3, 10, 10)
    assert out[1, :, 2:8].min() > 0.95 and out[0, :, 2:8].max() < 0.05 and out[2, :, 2:8].max() < 0.05
    tall = to_input(_bands(20, 60, [GREEN]), size=20)
    assert tall.shape == (3, 20, 20)


def test_exif_orientation_is_applied(tmp_path):
    # stored 40 wide x 20 high, red left, blue right; orientation 6 = shown rotated 90 degrees
    # clockwise, so upright it is 20 x 40 with red on top
    image = _bands(40, 20, [RED, BLUE])
    exif = Image.Exif()
    exif[0x0112] = 6
    image.save(tmp_path / "phone.jpg", exif=exif, quality=95)
    out = load_image(tmp_path / "phone.jpg", size=20)
    top, bottom = out[:, :8], out[:, 12:]
    assert top[0].mean() > 0.8 and top[2].mean() < 0.2
    assert bottom[2].mean() > 0.8 and bottom[0].mean() < 0.2


def test_capture_takes_an_image_folder(class_tree):
    data = image_folder(class_tree, size=16, progress=False)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                        nn.Flatten(), nn.Linear(4, 2))
    cache = aw.capture(net, data, layers="0", classes=data.classes, per_image=2, progress=False)
    assert cache.labels.tolist() == data.labels.tolist()
    assert cache["0"].hw == (16, 16) and cache.classes == data.classes


# ----------------------------------------------------------------------------- errors


def test_missing_folder_and_file_instead_of_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="No folder at"):
        image_folder(tmp_path / "nowhere")
    (tmp_path / "x.png").write_bytes(b"")
    with pytest.raises(ValueError, match="is a file, not a folder"):
        image_folder(tmp_path / "x.png")


def test_no_images(tmp_path):
    (tmp_path / "readme.txt").write_text("hello")
    with pytest.raises(ValueError, match="No images under"):
        image_folder(tmp_path)


def test_empty_class_folder(class_tree):
    (class_tree / "saucepan").mkdir()
    (class_tree / "saucepan" / "list.txt").write_text("no photos yet")
    with pytest.raises(ValueError, match="saucepan has no images"):
        image_folder(class_tree, progress=False)


def test_mixed_flat_images_and_class_folders(class_tree):
    _bands(10, 10, [RED]).save(class_tree / "loose.png")
    with pytest.raises(ValueError, match="mixes images .*loose.png.* with class sub-folders"):
        image_folder(class_tree, progress=False)


def test_unreadable_file_is_named(tmp_path):
    _bands(10, 10, [RED]).save(tmp_path / "good.png")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG this is not really a png")
    with pytest.raises(ValueError, match=r"Cannot read image .*broken\.png"):
        image_folder(tmp_path, progress=False)


def test_unknown_class_folder_suggests_a_name(class_tree):
    (class_tree / "wokk").mkdir()
    _bands(10, 10, [RED]).save(class_tree / "wokk" / "a.png")
    with pytest.raises(ValueError, match="'wokk' is not one of the given classes. Did you mean 'wok'"):
        image_folder(class_tree, classes=class_names(), progress=False)


@pytest.mark.parametrize("size", [0, -3, 2.5, True, "224"])
def test_bad_size(class_tree, size):
    with pytest.raises(ValueError, match="size must be a positive int"):
        image_folder(class_tree, size=size)


def test_bad_classes_and_bad_image_type(class_tree):
    with pytest.raises(TypeError, match="classes must be a list of class names"):
        image_folder(class_tree, classes="wok")
    with pytest.raises(TypeError, match="PIL.Image.Image"):
        to_input(np.zeros((10, 10, 3)))
    with pytest.raises(FileNotFoundError, match="No image file"):
        load_image(class_tree / "nope.png")
