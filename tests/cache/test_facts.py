"""The neuron viewer's facts about a unit: layer outputs of a model, remembered, and activation maps."""

from __future__ import annotations

import numpy as np
import pytest

import atlaswidgets as aw
from atlaswidgets.cache.facts import LayerOutputs, activation_maps
from atlaswidgets.zoo import kitchen

NOODLES = 84  # block4's best "noodles" channel on this data (see tests/widgets/test_neuron_viewer.py)


@pytest.fixture(scope="module")
def world():
    """A 200-image kitchen cache of block4 with display images, and its model."""
    model = kitchen.model()
    cache = aw.capture(model, kitchen.dataset(200, seed=1), ["block4"], progress=False)
    return model, cache


def test_layer_outputs_are_remembered_and_give_the_same_maps(world):
    model, cache = world
    images = cache.images
    runs = []
    handle = model.register_forward_pre_hook(lambda m, args: runs.append(len(args[0])))
    try:
        outputs = LayerOutputs(model, cache.input_hw, None)
        first = activation_maps(outputs, images, [3, 5, 3, 9], "block4", NOODLES, (8, 8))
        assert runs == [3]  # one run, for the distinct samples
        again = activation_maps(outputs, images, [9, 5, 11], "block4", NOODLES, (8, 8))
        assert runs == [3, 1]  # only sample 11 was new
        direction = np.random.default_rng(0).normal(size=128).astype(np.float32)
        along = activation_maps(outputs, images, [5, 9], "block4", direction, (8, 8))
        assert runs == [3, 1]
    finally:
        handle.remove()
    # the same maps as a fresh computation, whatever was remembered
    fresh = activation_maps(LayerOutputs(model, cache.input_hw, None), images, [3, 5, 3, 9, 11], "block4",
                            NOODLES, (8, 8))
    np.testing.assert_allclose(np.concatenate([first, again[2:]]), fresh, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(first[0], first[2])
    full = LayerOutputs(model, cache.input_hw, None)(images, "block4", (8, 8), np.array([5, 9]))
    np.testing.assert_allclose(along, np.einsum("nchw,c->nhw", full.numpy(), direction), rtol=1e-4, atol=1e-4)


def test_layer_outputs_stay_within_their_budget(world):
    model, cache = world
    per_sample = 128 * 8 * 8 * 4  # block4, float32
    outputs = LayerOutputs(model, cache.input_hw, None, budget_mb=3.5 * per_sample / 2**20)
    outputs(cache.images, "block4", (8, 8), np.arange(6))  # more than fits: kept for this call only
    assert len(outputs._kept) == 6
    outputs(cache.images, "block4", (8, 8), np.array([6]))
    assert [i for _, i in outputs._kept] == [4, 5, 6]  # the oldest went first, down to the budget
    assert outputs._bytes == 3 * per_sample
    with pytest.raises(ValueError, match="grid"):
        outputs(cache.images, "block4", (4, 4), np.array([100]))
