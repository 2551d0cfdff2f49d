"""A small atlas over a synthetic clustered cache, shared by the widget tests."""

from __future__ import annotations

import pytest

from atlaswidgets.layout.atlas import build_atlas

from ..layout._synthetic import clustered_cache

XSS = "<img src=x onerror=alert(1)>"


@pytest.fixture(scope="module")
def small():
    cache, xy, cluster = clustered_cache(classes=[XSS, "wok", "frying pan", "b&w <b>bold</b>"])
    atlas = build_atlas(cache, "block", grid_size=6, min_count=2, xy=xy, icon_size=12)
    return cache, atlas
