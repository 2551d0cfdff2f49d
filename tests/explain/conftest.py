"""The kitchen cache the explanation tests share: block4 of the kitchen model, 360 images,
streamed statistics, captured once per session."""

from __future__ import annotations

import pytest

from atlaswidgets.cache.capture import capture


@pytest.fixture(scope="session")
def kitchen_block4():
    """(cache, annotations): ``kitchen.dataset(360, seed=7)`` captured at block4 with stats."""
    from atlaswidgets.zoo import kitchen

    data = kitchen.dataset(360, seed=7)
    cache = capture(kitchen.model(), (data.images, data.labels), ["block4"], progress=False, stats=True)
    return cache, data.annotations
