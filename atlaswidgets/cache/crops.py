"""Dataset-example pictures of cached rows: receptive-field crops, outlined images, sprite sheets.

They sit beside ``regions`` (where a row looks) because the layouts, the widgets and the
experiments all cut pictures from the cache; ``render`` is feature visualisation.

Where a row looks follows ``atlaswidgets.cache.regions``: a row at grid position (y, x) of a layer
with an (H, W) grid is centred on input pixel ((y + 0.5) * H_in / H, (x + 0.5) * W_in / W), and
sees a window the size of the layer's receptive field. The cache's display images may be smaller
or larger than the model input; positions and sizes are scaled to them.
"""

from __future__ import annotations

import io

import numpy as np
import torch
import torch.nn.functional as F

from .checks import int_at_least, number, one_of
from .cache import ActivationCache

__all__ = ["crop_rows", "boxed_images", "display_images", "sprite_sheet", "rf_windows", "resize_images",
           "thumb_boxes"]

# outline of the receptive field on example pictures: a light core with dark edges reads on any image
_BOX_CORE = (255, 214, 0)
_BOX_EDGE = (20, 20, 20)


def crop_rows(cache: ActivationCache, layer: str | None, rows, size: int = 48,
              fraction: float = 1.0) -> torch.Tensor:
    """The part of each row's sample image that the row's position sees, resized to ``size``.

    The window is the layer's receptive field (at most the whole image) times ``fraction`` per
    side, centred on the row's
    position and shifted inwards at the image border, so a crop never needs padding; near a border
    the position is therefore off-centre in its crop. Rows of the "mean" policy (yx = -1) get the
    whole image.

    Parameters
    ----------
    cache : ActivationCache captured with ``keep_images=True``
    layer : layer name, or None when the cache has one layer
    rows : int array-like, shape (k,), row indices of the layer
    size : int >= 1, side of the output crops in pixels
    fraction : float in (0, 1], the window's side as a share of the receptive field's; the
        centre of a receptive field is where a position looks hardest

    Returns
    -------
    uint8 tensor, shape (k, 3, size, size), on the CPU
    """
    images, la, rows_t, size = _prepare(cache, layer, rows, size)
    number(fraction, "fraction", 0, 1, low_open=True)
    k = len(rows_t)
    out = torch.empty(k, 3, size, size, dtype=torch.uint8)
    if k == 0:
        return out
    sid, yx = _rows_of(la, rows_t)
    whole = yx[:, 0] < 0
    if whole.any():
        out[whole] = resize_images(images[sid[whole]], size)
    part = ~whole
    if part.any():
        y0, x0, ch, cw = rf_windows(cache, la, images.shape[-2:], yx[part], fraction=fraction)
        pics = images[sid[part]]  # (p, 3, h, w)
        ys = y0[:, None] + torch.arange(ch)  # (p, ch)
        xs = x0[:, None] + torch.arange(cw)  # (p, cw)
        idx = torch.arange(len(pics))[:, None, None]
        # advanced indexing puts the gathered (p, ch, cw) first and the channel axis last
        crops = pics.permute(0, 2, 3, 1)[idx, ys[:, :, None], xs[:, None, :]]
        out[part] = resize_images(crops.permute(0, 3, 1, 2), size)
    return out


def boxed_images(
    cache: ActivationCache, layer: str | None, rows, size: int = 96, width: int = 2
) -> torch.Tensor:
    """Each row's whole sample image, resized to ``size``, with the row's receptive field outlined.

    rows : int array-like, shape (k,)
    width : line width of the outline in output pixels (a dark edge is added on both sides)
    Returns uint8 tensor, shape (k, 3, size, size), on the CPU.
    """
    images, la, rows_t, size = _prepare(cache, layer, rows, size)
    width = int_at_least(width, "width", 1)
    k = len(rows_t)
    if k == 0:
        return torch.empty(0, 3, size, size, dtype=torch.uint8)
    sid, yx = _rows_of(la, rows_t)
    pics = resize_images(images[sid], size)
    boxes = thumb_boxes(cache, la, images.shape[-2:], yx, size)
    for i in range(k):  # k is a page of examples (tens), not the rows of a layer
        _outline(pics[i], boxes[i].tolist(), width)
    return pics


def thumb_boxes(cache: ActivationCache, la, image_hw, yx, size: int) -> torch.Tensor:
    """The receptive field of positions ``yx`` on a ``size`` x ``size`` thumbnail of the images.

    la : the layer's LayerActs; image_hw : (h, w) of the display images the thumbnails shrink
    yx : int tensor, shape (k, 2), grid positions; (-1, -1) ("mean" rows) gets the whole picture
    Returns int64 tensor, shape (k, 4): y0, x0, y1, x1 in thumbnail pixels (y1/x1 exclusive),
    clipped to [0, size].
    """
    h, w = int(image_hw[0]), int(image_hw[1])
    yx = torch.as_tensor(yx)
    y0, x0, ch, cw = rf_windows(cache, la, (h, w), yx, shift=False)
    boxes = torch.stack([y0, x0, y0 + ch, x0 + cw], dim=1).float()
    boxes = boxes.clamp_min(0) * torch.tensor([size / h, size / w, size / h, size / w])
    boxes = boxes.round().long().clamp(0, size)
    boxes[yx[:, 0] < 0] = torch.tensor([0, 0, size, size])
    return boxes


def sprite_sheet(icons, cols: int | None = None, fmt: str = "png") -> tuple[bytes, int]:
    """Lay icons out in rows of ``cols`` and encode them as one PNG (or JPEG).

    icons : uint8 array or tensor, shape (m, 3, s, s), m >= 1
    cols : icons per row; default ceil(sqrt(m)), a square-ish sheet
    fmt : "png" (lossless; empty slots transparent) or "jpeg" (quality 90, empty slots black).
        JPEG is for sheets of photographs that are sent on every click (example panels, the
        neuron viewer): a 42-thumbnail sheet of 64 px encodes in about 2 ms instead of about
        35 ms at PNG level 1, and is about 4x smaller; the pages draw only the m icons.
    Returns (bytes, cols). Icon i sits at pixel (col * s, row * s) with ``row, col = divmod(i, cols)``.
    """
    from PIL import Image

    arr = icons.detach().cpu().numpy() if isinstance(icons, torch.Tensor) else np.asarray(icons)
    if arr.ndim != 4 or arr.shape[1] != 3 or arr.shape[2] != arr.shape[3]:
        raise ValueError(f"icons must have shape (m, 3, s, s), got {arr.shape}.")
    if arr.dtype != np.uint8:
        raise TypeError(f"icons must be uint8, got {arr.dtype}; scale to 0..255 and cast first.")
    m, _, s, _ = arr.shape
    if m == 0:
        raise ValueError("sprite_sheet needs at least one icon.")
    one_of(fmt, "fmt", ("png", "jpeg"))
    if cols is None:
        cols = int(np.ceil(np.sqrt(m)))
    cols = int_at_least(cols, "cols", 1)
    cols = int(min(cols, m))
    n_rows = -(-m // cols)
    sheet = np.zeros((n_rows * s, cols * s, 4), dtype=np.uint8)
    tiles = np.zeros((n_rows * cols, s, s, 4), dtype=np.uint8)
    tiles[:m, :, :, :3] = arr.transpose(0, 2, 3, 1)
    tiles[:m, :, :, 3] = 255
    # (rows, cols, s, s, 4) -> (rows, s, cols, s, 4) is the sheet's pixel order
    sheet[:] = tiles.reshape(n_rows, cols, s, s, 4).transpose(0, 2, 1, 3, 4).reshape(sheet.shape)
    buf = io.BytesIO()
    if fmt == "jpeg":
        Image.fromarray(np.ascontiguousarray(sheet[..., :3]), mode="RGB").save(buf, format="JPEG", quality=90)
        return buf.getvalue(), cols
    # level 1, not PIL's 6: a 42-thumbnail sheet encodes in ~45 ms instead of ~130 ms, and the
    # sheet goes to a page on the same machine, where the extra bytes cost less than the wait
    Image.fromarray(sheet, mode="RGBA").save(buf, format="PNG", compress_level=1)
    return buf.getvalue(), cols


def display_images(cache: ActivationCache) -> torch.Tensor:
    """The cache's display images, uint8 (n_samples, 3, h, w) on the CPU, or a clear error.

    Every icon and example picture is cut from these, so the atlas builders check them too.
    """
    if not isinstance(cache, ActivationCache):
        raise TypeError(f"cache must be an ActivationCache, got {type(cache).__name__}.")
    if cache.images is None and cache.tokens is not None:
        raise ValueError(
            "This is a text cache: its rows are tokens, which have no pictures to crop. Show a row "
            "as its token in context (cache.tokens[sample_id], cache.vocab; the row's token index "
            "is yx[:, 1])."
        )
    if cache.images is None:
        raise ValueError(
            "This cache has no images, and atlas icons and example pictures are crops of them; "
            "capture it with keep_images=True (aw.capture(..., keep_images=True))."
        )
    images = cache.images.cpu()
    if images.ndim != 4 or images.shape[1] != 3 or images.dtype != torch.uint8:
        raise ValueError(
            f"cache.images must be uint8 of shape (n_samples, 3, h, w), got "
            f"{images.dtype} {tuple(images.shape)}."
        )
    return images


def _prepare(cache: ActivationCache, layer, rows, size):
    images = display_images(cache)
    size = int_at_least(size, "size", 1)
    la = cache.layer(layer)
    r = rows.detach().cpu().numpy() if isinstance(rows, torch.Tensor) else np.asarray(rows)
    if r.ndim != 1 or (r.size and not np.issubdtype(r.dtype, np.integer)):
        raise TypeError(f"rows must be a 1-D array of integer row indices, got {r.dtype} {r.shape}.")
    if r.size and (r.min() < 0 or r.max() >= la.n_rows):
        raise ValueError(f"row indices must lie in [0, {la.n_rows}); got {r.min()}..{r.max()}.")
    return images, la, torch.as_tensor(r.astype(np.int64)), int(size)


def _rows_of(la, rows_t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(sample ids, (y, x)) of the given rows, on the CPU; picked where the cache is, so a GPU
    cache sends only these rows, not its whole columns."""
    at = rows_t.to(la.sample_id.device)
    return la.sample_id[at].cpu(), la.yx[at].cpu()


def rf_windows(cache, la, image_hw, yx, shift: bool = True, fraction: float = 1.0):
    """Each row's receptive-field window in the pixels of images of size ``image_hw``.

    la : the layer's LayerActs; yx : int tensor, shape (p, 2), grid positions of the rows
    shift : move windows inwards at the image border (a crop then never needs padding)
    fraction : float in (0, 1], the window's side as a share of the receptive field's
    Returns (y0, x0, ch, cw): int64 tensors of shape (p,), the top-left corners, and the window's
    height and width (ints, the same for every row).
    """
    h, w = int(image_hw[0]), int(image_hw[1])
    h_in, w_in = cache.input_hw
    if h_in <= 0 or w_in <= 0:  # no recorded input size: the images are the input
        h_in, w_in = h, w
    gh, gw = la.hw
    sy, sx = h / h_in, w / w_in
    ch = int(min(max(round(la.rf[0] * sy * fraction), 1), h))
    cw = int(min(max(round(la.rf[1] * sx * fraction), 1), w))
    cy = (yx[:, 0].double() + 0.5) * (h_in / gh) * sy
    cx = (yx[:, 1].double() + 0.5) * (w_in / gw) * sx
    y0 = torch.round(cy - ch / 2).long()
    x0 = torch.round(cx - cw / 2).long()
    if shift:
        y0 = y0.clamp(0, h - ch)
        x0 = x0.clamp(0, w - cw)
    return y0, x0, ch, cw


def resize_images(pics: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 (k, 3, h, w) -> uint8 (k, 3, size, size), bilinear with antialiasing when shrinking."""
    if pics.shape[-2:] == (size, size):
        return pics.clone()
    x = pics.float()
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return x.round().clamp(0, 255).to(torch.uint8)


def _outline(pic: torch.Tensor, box: list[int], width: int) -> None:
    """Draw a rectangle outline in place on a uint8 (3, s, s) image; box is y0, x0, y1, x1."""
    s = pic.shape[-1]
    y0, x0, y1, x1 = box
    # the dark edge first, one pixel wider on each side, then the bright core over it
    for pad, color in ((1, _BOX_EDGE), (0, _BOX_CORE)):
        t = width + 2 * pad
        a0, b0 = max(y0 - pad, 0), max(x0 - pad, 0)
        a1, b1 = min(y1 + pad, s), min(x1 + pad, s)
        c = torch.tensor(color, dtype=torch.uint8)[:, None, None]
        pic[:, a0 : min(a0 + t, a1), b0:b1] = c
        pic[:, max(a1 - t, a0) : a1, b0:b1] = c
        pic[:, a0:a1, b0 : min(b0 + t, b1)] = c
        pic[:, a0:a1, max(b1 - t, b0) : b1] = c
