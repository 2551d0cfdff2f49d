"""capture()'s checks of labels, display images and model outputs: clear errors, before the work."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from atlaswidgets.cache.capture import capture

from .conftest import N_SAMPLES, TinyCNN

CLASSES = ["a", "b", "c", "d"]


def cap(model, data, layers="conv2", **kw):
    kw.setdefault("progress", False)
    return capture(model, data, layers, **kw)


class Counting(TinyCNN):
    """TinyCNN that counts its forward passes, to show that an error came before any work."""

    def __init__(self):
        super().__init__(0)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return super().forward(x)


@pytest.fixture()
def counting():
    return Counting().eval()


# ----------------------------------------------------------------------------- labels of a pair


def test_pair_labels_that_are_not_class_ids_are_named_before_the_model_runs(counting, data):
    images, labels = data
    bad = [
        ([float(v) for v in labels], TypeError, r"integer class indices, got float.*whole numbers.*\.long\(\)"),
        (labels.float(), TypeError, r"integer class indices, got float \(dtype torch.float32\).*labels.long\(\)"),
        ([CLASSES[v] for v in labels], TypeError, r"got str \('[a-d]'\).*map class names to ids.*classes=\["),
        (np.array([CLASSES[v] for v in labels]), TypeError, r"got str.*map class names to ids"),
        (nn.functional.one_hot(labels, 4), ValueError,
         rf"\({N_SAMPLES}, 4\), one-hot.*labels.argmax\(1\)"),
        (labels[:, None], ValueError, rf"\({N_SAMPLES}, 1\), a column.*labels.squeeze\(1\)"),
        (labels.float() / 2, TypeError, r"integer class indices, got float .*such as \d\.5, not a class index"),
        ([True] * N_SAMPLES, TypeError, r"integer class indices, got bool"),
    ]
    for value, error, message in bad:
        with pytest.raises(error, match=rf"^data's labels (must be|have shape) .*{message}"):
            cap(counting, (images, value))
        assert counting.calls == 0, message  # refused before the model ran on "batch 0"
    with pytest.raises(ValueError, match=r"one-hot.*argmax"):  # a dict of columns gets the same checks
        cap(counting, {"images": images, "labels": nn.functional.one_hot(labels, 4)})
    assert counting.calls == 0


def test_lists_of_image_batches_are_still_batches(model, data):
    images, labels = data
    whole = cap(model, images)
    for form in ([images[:20], images[20:]], (images[:20], images[20:]), [images[:30], images[30:]]):
        got = cap(model, form)  # the second item is another batch (N, C, H, W), not labels
        assert got.n_samples == N_SAMPLES and torch.equal(got.logits, whole.logits)
    got = cap(model, [(images[:20], labels[:20]), (images[20:], labels[20:])])
    assert torch.equal(got.labels, labels)
    with pytest.raises(TypeError, match="Batch 1 is a str"):  # a string is never labels
        cap(model, [images[:4], "abcd"])


# ----------------------------------------------------------------------------- labels of batches


class _Named(Dataset):
    """(image, class name) samples, as an image-folder dataset without a target transform gives."""

    def __init__(self, images, labels):
        self.images, self.labels = images, labels

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i], CLASSES[int(self.labels[i])]


def test_string_labels_in_batches(counting, data):
    images, labels = data
    names = [CLASSES[v] for v in labels]
    forms = [
        DataLoader(_Named(images, labels), batch_size=8),  # default_collate: a list of str
        [{"image": images[:8], "label": names[:8]}],
        [(images[:8], np.array(names[:8]))],
    ]
    for form in forms:
        with pytest.raises(TypeError, match=r"^Batch 0: labels must be integer class indices, got str "
                                            r"\('[a-d]'\).*map class names to ids.*classes=\["):
            cap(counting, form)
    assert counting.calls == 0
    with pytest.raises(TypeError, match=r"Batch 0: labels must be integer class indices, got float.*\.long\(\)"):
        cap(counting, [(images[:8], labels[:8].double())])
    with pytest.raises(ValueError, match=r"Batch 0: labels have shape \(8, 4\).*argmax"):
        cap(counting, [(images[:8], nn.functional.one_hot(labels[:8], 4))])


# ----------------------------------------------------------------------------- labels and classes


def test_labels_outside_classes(counting, data, tmp_path):
    images, labels = data
    shifted = labels.clone()
    shifted[3] = 13
    with pytest.raises(ValueError, match=r"^data's labels hold 13 at position 3, but classes has 4 names; "
                                         r"pass the full class list as classes=\[\.\.\.\], or labels 0\.\.3"):
        cap(counting, (images, shifted), classes=CLASSES, store=tmp_path / "pair")
    assert counting.calls == 0 and not (tmp_path / "pair").exists()
    with pytest.raises(ValueError, match=r"hold [23] at position \d+, but classes has 2 names.*labels 0\.\.1"):
        cap(counting, (images, labels), classes=["a", "b"])
    with pytest.raises(ValueError, match=r"hold -2 at position 0; class indices are 0 or more, or -1 for no label"):
        cap(counting, (images, torch.full((N_SAMPLES,), -2)))
    assert counting.calls == 0

    counting.classes = CLASSES  # the model's own class names bound the labels too
    try:
        with pytest.raises(ValueError, match=r"data's labels hold 13 at position 3, but classes has 4 names"):
            cap(counting, (images, shifted))
    finally:
        del counting.classes

    # batches: checked one at a time, before the batch runs or reaches the store
    def stream():
        for i in range(0, N_SAMPLES, 8):
            yield images[i : i + 8], labels[i : i + 8] + (10 if i == 16 else 0)

    path = tmp_path / "store"
    with pytest.raises(ValueError, match=r"^Batch 2: labels hold 1\d at position \d, but classes has 4 names"):
        cap(counting, stream(), classes=CLASSES, store=path, shard_samples=8)
    # batches 0 and 1 filled shards 0 and 1; batch 2 never ran
    assert sorted(f for f in os.listdir(path) if f.startswith("shard-")) == ["shard-00000.safetensors",
                                                                             "shard-00001.safetensors"]
    assert counting.calls == 1 + 2  # the first image's probe, then batches 0 and 1


def test_minus_one_means_no_label(model, data):
    images, labels = data
    partial = labels.clone()
    partial[::3] = -1
    cache = cap(model, (images, partial), classes=CLASSES)
    assert torch.equal(cache.labels, partial)
    assert cap(model, (images, labels + 10)).labels.max() >= 10  # no class names: no upper bound


# ----------------------------------------------------------------------------- display images


def _display_warnings(record):
    return [w for w in record if issubclass(w.category, UserWarning) and "to_display" in str(w.message)]


def test_inputs_outside_0_1_warn_once_that_display_copies_are_clipped(model, data):
    images = data[0]
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    for inputs in (images * 255, (images - mean) / std):
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            cap(model, inputs, batch_size=8)  # five batches, one warning
        found = _display_warnings(record)
        assert len(found) == 1, [str(w.message) for w in record]
        text = str(found[0].message)
        assert "clipped to [0, 1]" in text and "to_display=lambda x: x * std" in text
        assert found[0].filename == __file__  # points at the capture() call
    with_inf = images.clone()
    with_inf[0, 0, 0, 0] = float("inf")  # left to the check of the activations
    for quiet in ({}, {"keep_images": False, "data": images * 255}, {"data": with_inf, "sample": "mean"},
                  {"to_display": lambda x: x / 255, "data": images * 255}):
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            try:
                cap(model, quiet.pop("data", images), **quiet)
            except ValueError as e:
                assert "NaN or infinite" in str(e)
        assert not _display_warnings(record)


def test_to_display_must_return_floats_in_0_1(counting, data):
    images = data[0]
    for fn, got in ((lambda x: (x * 255).byte(), r"dtype torch.uint8"),
                    (lambda x: x * 255, r"values from [\d.]+ to 2\d\d"),
                    (lambda x: x - 2, r"values from -[12][\d.]* to -1")):
        with pytest.raises(ValueError, match=rf"^to_display must return floats in \[0, 1\] of shape "
                                             rf"\(N, 3, H, W\), got {got}"):
            cap(counting, images, to_display=fn)
        assert counting.calls == 1  # the first image's probe, whose errors about the layout come first
        counting.calls = 0
    # a resized copy would not line up with crops in input pixels
    with pytest.raises(ValueError, match=r"to_display must keep the inputs' height and width"):
        cap(counting, images, to_display=lambda x: x[:, :, ::2, ::2])
    # a little outside [0, 1] (e.g. a resampling overshoot) is clipped, not refused
    cache = cap(counting, images, to_display=lambda x: x * 1.1 - 0.05)
    assert cache.images.min() == 0 and cache.images.max() == 255


# ----------------------------------------------------------------------------- model outputs


def test_a_dict_output_without_logits_names_its_keys(counting, data):
    class Dict(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return {"out": self.inner(x), "aux": x.mean()}

    model = Dict(counting)
    with pytest.raises(ValueError, match=r"returned a dict with keys \['aux', 'out'\] and no tensor under "
                                         r"'logits'.*model\(x\)\['out'\]"):
        cap(model, data[0], "inner.conv2")
    assert counting.calls == 1  # only the first image's probe
