"""Load a folder of photos as model inputs: one sub-folder per class, or a flat folder of images.

So that a person can run the pan-vs-wok comparison on their own photos::

    from atlaswidgets.zoo import imagenet
    from atlaswidgets.zoo.folder import image_folder

    model = imagenet.load("efficientnet_lite0")
    photos = image_folder("my_photos", classes=model.classes)   # my_photos/wok/*.jpg, ...
    cache = aw.capture(model, photos, layers=model.atlas_layer, classes=model.classes)

Every image is read with PIL, turned upright by its EXIF orientation (phone photos), converted to
RGB, resized so that its shorter side is ``size`` (bicubic) and centre-cropped to ``size`` x
``size``: float32 in [0, 1], the input the zoo's models take (they normalise inside).
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple, Sequence

import numpy as np
import torch

from ..cache.checks import positive_int
from ..cache.progress import checked_progress, progress_bar

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

__all__ = ["IMAGE_SUFFIXES", "ImageFolder", "image_folder", "load_image", "to_input"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


class ImageFolder(NamedTuple):
    """Images of a folder, as ``aw.capture`` takes them (a pair (images, labels, ...)).

    images : tensor, shape (n, 3, size, size), float32 RGB in [0, 1]
    labels : tensor, shape (n,), int64 indices into ``classes``; -1 for a flat folder
    classes : class names indexed by label (the sub-folder names, or the ``classes`` given)
    paths : the n image files, in the order of ``images``
    """

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    paths: list[Path]


def to_input(image: PILImage, size: int = 224) -> torch.Tensor:
    """One PIL image as a model input: shorter side resized to ``size``, centre crop, RGB [0, 1].

    image : a PIL image (any mode; EXIF orientation is applied)
    Returns a tensor, shape (3, size, size), float32 in [0, 1].
    """
    from PIL import Image, ImageOps

    if not isinstance(image, Image.Image):
        raise TypeError(f"image must be a PIL.Image.Image, got {type(image).__name__}. Use "
                        "load_image(path, size) for a file.")
    size = positive_int(size, "size", "pixels")
    image = ImageOps.exif_transpose(image).convert("RGB")
    w, h = image.size
    scale = size / min(w, h)
    # at least `size` on both sides, so the crop below never runs off the image
    new_w, new_h = max(size, round(w * scale)), max(size, round(h * scale))
    image = image.resize((new_w, new_h), Image.Resampling.BICUBIC)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    image = image.crop((left, top, left + size, top + size))
    pixels = np.asarray(image, dtype=np.float32) / 255.0
    return torch.from_numpy(pixels.copy()).permute(2, 0, 1).contiguous()


def load_image(path: str | Path, size: int = 224) -> torch.Tensor:
    """The image file at ``path`` as a model input, shape (3, size, size), float32 in [0, 1].

    Raises FileNotFoundError for a missing file and ValueError naming the file when PIL cannot
    read it.
    """
    from PIL import Image

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No image file at {path}.")
    try:
        with Image.open(path) as image:
            image.load()
            return to_input(image, size)
    except (OSError, ValueError, SyntaxError) as error:  # PIL's errors for broken files
        raise ValueError(f"Cannot read image {path}: {error}. Remove or replace the file.") from error


def image_folder(
    path: str | Path,
    size: int = 224,
    classes: Sequence[str] | None = None,
    progress: bool = True,
) -> ImageFolder:
    """All images under ``path``, loaded as model inputs, in sorted (deterministic) order.

    path : either a folder with one sub-folder per class (``path/wok/1.jpg``; images anywhere below
        a class folder count for that class), or a flat folder of images (labels -1). Files whose
        suffix is not in ``IMAGE_SUFFIXES`` and hidden files are skipped.
    size : side of the square inputs in pixels (224 for the ImageNet models)
    classes : names the labels index, e.g. ``model.classes``. Each sub-folder's name is looked up
        there (ignoring case, with "_" read as a space: ``frying_pan`` is "frying pan") and its
        images get that index as label, so the labels match the model's outputs. Without it the
        labels are 0, 1, ... in sorted sub-folder order and ``classes`` are the folder names.
    progress : True shows a bar over the files (as ``aw.capture`` does); False hides it
    Returns an ``ImageFolder`` (images, labels, classes, paths), which ``aw.capture`` takes as data.
    Images are held in memory: 0.6 MB each at 224 px.
    """
    root = Path(path)
    if not root.exists():
        raise FileNotFoundError(f"No folder at {root}. Pass the folder that holds the images or "
                                "their class sub-folders.")
    if not root.is_dir():
        raise ValueError(f"{root} is a file, not a folder. Pass the folder that holds it.")
    size = positive_int(size, "size", "pixels")
    checked_progress(progress)
    if classes is not None:
        if isinstance(classes, str) or not all(isinstance(c, str) for c in classes):
            raise TypeError("classes must be a list of class names (str), e.g. model.classes.")
        classes = list(classes)
    files, labels, names = _listing(root, classes)

    images = torch.empty(len(files), 3, size, size)
    with progress_bar("images", len(files), "img", progress) as bar:
        for i, file in enumerate(files):
            images[i] = load_image(file, size)
            bar.update(1)
    return ImageFolder(images, torch.tensor(labels, dtype=torch.long), names, files)


def _images_in(folder: Path, recursive: bool) -> list[Path]:
    found = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(
        (p for p in found
         if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
         and not any(part.startswith(".") for part in p.relative_to(folder).parts)),
        key=lambda p: p.relative_to(folder).as_posix(),
    )


def _listing(root: Path, classes: list[str] | None) -> tuple[list[Path], list[int], list[str]]:
    """Image files, their labels and the class names of a folder (see ``image_folder``)."""
    flat = _images_in(root, recursive=False)
    subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    per_class = {d.name: _images_in(d, recursive=True) for d in subdirs}
    with_images = [name for name, found in per_class.items() if found]
    if flat and with_images:
        raise ValueError(
            f"{root} mixes images ({flat[0].name}, ...) with class sub-folders ({with_images[0]}, "
            "...). Use either one sub-folder per class, or a flat folder of images only: move the "
            "loose images into a class folder."
        )
    if flat:
        return flat, [-1] * len(flat), list(classes) if classes is not None else []
    if not with_images:
        raise ValueError(f"No images under {root} (looked for {', '.join(IMAGE_SUFFIXES)} files, "
                         "directly or one sub-folder per class).")
    empty = [name for name, found in per_class.items() if not found]
    if empty:
        raise ValueError(f"Class folder {root / empty[0]} has no images. Add images to it or "
                         "remove it.")
    if classes is None:
        names = list(per_class)
        ids = dict(zip(names, range(len(names))))
    else:
        names, ids = classes, {name: _class_index(name, classes) for name in per_class}
    files: list[Path] = []
    labels: list[int] = []
    for name, found in per_class.items():
        files += found
        labels += [ids[name]] * len(found)
    return files, labels, names


def _canonical(name: str) -> str:
    return " ".join(name.replace("_", " ").lower().split())


def _class_index(folder_name: str, classes: list[str]) -> int:
    """Index in ``classes`` of a class sub-folder's name (case and "_" vs " " ignored)."""
    lookup: dict[str, int] = {}
    for i, c in enumerate(classes):
        lookup.setdefault(_canonical(c), i)
    key = _canonical(folder_name)
    if key in lookup:
        return lookup[key]
    close = difflib.get_close_matches(key, list(lookup), n=3, cutoff=0.6)
    hint = f" Did you mean {', '.join(repr(classes[lookup[c]]) for c in close)}?" if close else ""
    raise ValueError(f"Sub-folder {folder_name!r} is not one of the given classes.{hint} Rename the "
                     "folder to a class name, or leave out classes= to number the folders 0, 1, ...")
