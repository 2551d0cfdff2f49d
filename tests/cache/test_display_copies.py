"""Display copies at the size the widgets draw, and capture's growing buffers (issue #17, item 7)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import atlaswidgets.cache.buffers as buffers
from atlaswidgets.cache.buffers import Columns
from atlaswidgets.cache.cache import ActivationCache
from atlaswidgets.cache.capture import capture
from atlaswidgets.cache.crops import boxed_images, crop_rows, resize_images
from atlaswidgets.cache.data import CROP_SIDE, display_hw


class WideNet(nn.Module):
    """160 px RGB -> 3 classes through a 10 x 10 grid whose receptive field is about 100 px, like
    the mid layers of ImageNet models that atlases are made of (the cache tests' TinyCNN sees
    16 px images, which are kept whole)."""

    def __init__(self):
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        self.down = nn.Sequential(nn.Conv2d(3, 4, 9, stride=4, padding=4), nn.ReLU(),
                                  nn.Conv2d(4, 8, 9, stride=4, padding=4), nn.ReLU())
        self.grid = nn.Conv2d(8, 8, 5, padding=2)
        self.fc = nn.Linear(8, 3)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.rand(p.shape, generator=gen) * 0.2)  # positive: every pixel counts

    def forward(self, x):
        return self.fc(self.grid(self.down(x)).mean(dim=(2, 3)))


@pytest.fixture(scope="module")
def wide():
    gen = torch.Generator().manual_seed(3)
    # smooth images (upsampled noise), so that a shrunk copy keeps what a crop shows
    images = nn.functional.interpolate(torch.rand(12, 3, 20, 20, generator=gen), size=(160, 160),
                                       mode="bilinear", align_corners=False)
    model = WideNet().eval()
    kw = dict(layers="grid", sample="random", per_image=3, progress=False, batch_size=5)
    small = capture(model, images, **kw)
    full = capture(model, images, display_size=None, **kw)
    return model, images, small, full


def test_display_hw_keeps_what_the_widgets_draw():
    assert display_hw((224, 224), [(91, 91)], 128) == (128, 128)
    assert display_hw((224, 112), [(224, 224)], 128) == (128, 64)  # aspect kept
    assert display_hw((224, 224), [(91, 91)], None) == (224, 224)
    assert display_hw((64, 64), [(46, 46)], 128) == (64, 64)  # small images stay as they are
    # a receptive field of 46 px would be cut from 26 px of a 128 px copy: the copy stays larger
    assert display_hw((224, 224), [(46, 46)], 128) == (224, 224)
    h, w = display_hw((400, 400), [(200, 200), (100, 100)], 96)
    assert h == w == round(400 * CROP_SIDE / 100)  # the smallest field spans CROP_SIDE pixels


def test_capture_keeps_display_sized_copies(wide):
    _, images, small, full = wide
    assert small.images.shape == (12, 3, 128, 128) and small.images.dtype == torch.uint8
    assert full.images.shape == (12, 3, 160, 160)
    assert small.input_hw == full.input_hw == (160, 160)
    assert small.meta["display_size"] == 128 and full.meta["display_size"] is None
    # the pictures are what the full copy gives shrunk, and the activations are untouched
    shrunk = resize_images(full.images, 128)
    assert (small.images.int() - shrunk.int()).abs().max() <= 2
    assert torch.equal(small["grid"].acts, full["grid"].acts)
    assert torch.equal(small.sample_digest, full.sample_digest)


def test_crops_and_thumbnails_match_the_full_size_ones(wide):
    _, _, small, full = wide
    rows = np.arange(small["grid"].n_rows)
    assert small["grid"].rf[0] * 128 / 160 >= CROP_SIDE  # the crops are shrunk, never enlarged
    for pictures in (lambda c: crop_rows(c, "grid", rows, size=48),
                     lambda c: crop_rows(c, "grid", rows, size=48, fraction=0.5),
                     lambda c: boxed_images(c, "grid", rows, size=96)):
        a, b = pictures(small), pictures(full)
        assert a.shape == b.shape
        # windows fall on whole pixels of each copy, up to 0.6 input pixels apart: a few levels
        # of 255 on average, where the picture of another row differs by tens
        same = (a.int() - b.int()).abs().float().mean()
        other = (a.int() - b.roll(1, dims=0).int()).abs().float().mean()
        assert same < 4 and other > 5 * same, (same, other)


def test_patch_from_cell_keeps_its_size_in_input_pixels(wide):
    from atlaswidgets.experiments.cells import patch_from_cell
    from atlaswidgets.layout.atlas import build_atlas

    _, _, small, full = wide
    xy = np.random.default_rng(0).random((small["grid"].n_rows, 2)).astype(np.float32)
    patches = []
    for cache in (small, full):
        atlas = build_atlas(cache, "grid", grid_size=2, min_count=1, xy=xy)
        patches.append(patch_from_cell(atlas, cache, int(atlas.cells.ids[0])))
    assert patches[0].shape == patches[1].shape  # the receptive field's side at 160 px
    assert (patches[0] - patches[1]).abs().mean() < 0.02


def test_display_size_is_checked(model, data):
    with pytest.raises(ValueError, match="display_size must be an int >= 16"):
        capture(model, data, "conv1", display_size=8, progress=False)
    with pytest.raises(TypeError, match="display_size"):
        capture(model, data, "conv1", display_size="small", progress=False)


def test_store_keeps_the_display_copies_and_their_size(wide, tmp_path):
    model, images, small, _ = wide
    kw = dict(layers="grid", sample="random", per_image=3, progress=False, batch_size=5)
    stored = capture(model, images, store=tmp_path / "s", **kw)
    loaded = ActivationCache.load(tmp_path / "s", model=model)
    assert torch.equal(loaded.images, small.images)
    with pytest.raises(ValueError, match="another sampling policy"):  # not mixed with full-size copies
        capture(model, images, store=tmp_path / "s", display_size=None, **kw)
    assert stored.images.shape == (12, 3, 128, 128)


def test_columns_grow_in_chunks_and_copy_once():
    cpu = torch.device("cpu")
    specs = {"rows": ((3, 4), torch.float32, cpu), "labels": ((), torch.int64, cpu)}
    cols = Columns(specs, capacity=None, chunk_bytes=3 * 4 * 4 * 10)  # 10 samples a chunk
    assert cols.chunk_samples == 10
    want = []
    for n in (4, 4, 4, 7, 12, 1):  # 12 is more than a chunk: it gets a chunk of its own
        v = cols.views(n)
        x = torch.randn(n, 3, 4)
        v["rows"].copy_(x)
        v["labels"].copy_(torch.arange(n))
        want.append(x)
    # chunks are never regrown or copied while filling: a batch that does not fit starts a new one
    assert [(c["used"], c["size"]) for c in cols.chunks] == [(8, 10), (4, 10), (7, 10), (12, 12), (1, 10)]
    out = cols.take()
    assert cols.copies == 2 and cols.chunks == []  # each column joined once
    assert torch.equal(out["rows"], torch.cat(want))
    assert torch.equal(out["labels"], torch.cat([torch.arange(n) for n in (4, 4, 4, 7, 12, 1)]))


def test_columns_of_known_length_are_one_buffer_with_no_copy():
    cpu = torch.device("cpu")
    cols = Columns({"rows": ((2,), torch.float32, cpu)}, capacity=9, chunk_bytes=8)
    first = cols.views(4)["rows"]
    cols.views(4)
    cols.views(1)
    assert len(cols.chunks) == 1
    out = cols.take()
    assert cols.copies == 0 and out["rows"].data_ptr() == first.data_ptr() and len(out["rows"]) == 9
    more = Columns({"rows": ((2,), torch.float32, cpu)}, capacity=4, chunk_bytes=8)
    for _ in range(3):  # data longer than announced: further chunks, joined once
        more.views(3)
    assert len(more.chunks) == 3 and len(more.take()["rows"]) == 9 and more.copies == 1


def test_unknown_length_capture_is_the_known_length_one(wide, monkeypatch):
    model, images, small, _ = wide
    made = []
    real = Columns.take

    def take(self):
        out = real(self)
        made.append((self.copies, len(self.specs)))
        return out

    monkeypatch.setattr(Columns, "take", take)
    # chunks of about 2 samples' display copies: several chunks for 12 images in batches of 5
    monkeypatch.setattr(Columns.__init__, "__defaults__", (None, 2 * 3 * 128 * 128))
    batches = (images[i : i + 5] for i in range(0, 12, 5))
    grown = capture(model, batches, "grid", sample="random", per_image=3, progress=False)
    assert made == [(made[0][1], made[0][1])]  # every column copied exactly once, at the end
    for key in ("acts", "sample_id", "yx"):
        assert torch.equal(getattr(grown["grid"], key), getattr(small["grid"], key))
    for key in ("images", "labels", "logits", "sample_digest"):
        assert torch.equal(getattr(grown, key), getattr(small, key))
    assert buffers.CHUNK_BYTES >= 1 << 20
