"""Receptive-field boxes and their overlap with annotations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from atlaswidgets.cache.cache import ActivationCache, LayerActs
from atlaswidgets.cache.regions import context_share, overlaps_context, rf_boxes


def _cache(yx, sample_id, hw=(8, 8), rf=(16, 16), input_hw=(64, 64)):
    n = len(yx)
    la = LayerActs(
        acts=torch.zeros(n, 4),
        sample_id=torch.as_tensor(sample_id),
        yx=torch.as_tensor(yx),
        hw=hw,
        rf=rf,
    )
    s = int(max(sample_id)) + 1
    return ActivationCache({"l": la}, labels=torch.zeros(s, dtype=torch.long), logits=torch.zeros(s, 2), input_hw=input_hw)


def test_boxes_are_centred_on_the_position_and_clipped():
    cache = _cache([[0, 0], [4, 4], [7, 7], [-1, -1]], [0, 0, 0, 0])
    boxes = rf_boxes(cache, "l")
    # position (4, 4) of an 8x8 grid over 64 px is centred on pixel 36; a 16 px field spans 28..44
    assert boxes[1].tolist() == [28, 28, 44, 44]
    assert boxes[0].tolist() == [0, 0, 12, 12]  # clipped at the top-left corner
    assert boxes[2].tolist() == [52, 52, 64, 64]
    assert boxes[3].tolist() == [0, 0, 64, 64]  # a "mean" row sees the whole image


def test_overlap_with_annotations():
    cache = _cache([[0, 0], [7, 7], [0, 0]], [0, 0, 1])
    annotations = [
        [{"name": "noodles", "box": [50, 50, 60, 60]}],
        [{"name": "eggs", "box": [0, 0, 10, 10]}],
    ]
    hit = overlaps_context(cache, "l", None, annotations, "noodles")
    assert hit.tolist() == [False, True, False]
    assert context_share(cache, "l", [1, 2], annotations, "noodles") == 0.5
    assert context_share(cache, "l", None, annotations, "eggs") == pytest.approx(1 / 3)
    # a stricter overlap: only 4 of the 100 annotated pixels fall inside row 0's box
    tight = [[{"name": "noodles", "box": [10, 10, 20, 20]}], []]
    assert overlaps_context(cache, "l", [0], tight, "noodles").tolist() == [True]
    assert overlaps_context(cache, "l", [0], tight, "noodles", min_overlap=0.5).tolist() == [False]


def test_bad_input():
    cache = _cache([[0, 0]], [0])
    with pytest.raises(ValueError, match="annotations has 2 entries"):
        context_share(cache, "l", None, [[], []], "noodles")
    with pytest.raises(ValueError, match="No rows given"):
        context_share(cache, "l", np.array([], dtype=np.int64), [[]], "noodles")
    with pytest.raises(ValueError, match=r"row indices must lie in \[0, 1\)"):
        rf_boxes(cache, "l", [3])
    with pytest.raises(TypeError, match="integer row indices"):
        rf_boxes(cache, "l", [0.5])
    with pytest.raises(KeyError, match="was not captured"):
        rf_boxes(cache, "other")
    unknown = _cache([[0, 0]], [0], input_hw=(0, 0))
    with pytest.raises(ValueError, match="input_hw is unknown"):
        rf_boxes(unknown, "l")
