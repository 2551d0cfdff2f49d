"""atlaswidgets: activation atlases, class-comparison atlases and neuron viewers in JupyterLab.

The public API is flat. Widgets and layout pull in anywidget and umap-learn (numba), which are slow
to import, so those names load on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> module that defines it
_LAZY = {
    "ActivationCache": "atlaswidgets.cache.cache",
    "LayerActs": "atlaswidgets.cache.cache",
    "TopExamples": "atlaswidgets.cache.cache",
    "capture": "atlaswidgets.cache.capture",
    "hooks": "atlaswidgets.cache.hooks",
    "resolve_layers": "atlaswidgets.cache.hooks",
    "umap_layout": "atlaswidgets.layout.umap",
    "grid": "atlaswidgets.layout.grid",
    "Cells": "atlaswidgets.layout.grid",
    "Atlas": "atlaswidgets.layout.atlas",
    "build_atlas": "atlaswidgets.layout.atlas",
    "ComparisonAtlas": "atlaswidgets.layout.compare",
    "compare_atlas": "atlaswidgets.layout.compare",
    "ClassAtlas": "atlaswidgets.layout.classes",
    "class_atlas": "atlaswidgets.layout.classes",
    "AtlasWidget": "atlaswidgets.widgets.atlas",
    "ExamplePanel": "atlaswidgets.widgets.examples",
    "ComparisonWidget": "atlaswidgets.widgets.compare",
    "available_pairs": "atlaswidgets.widgets.compare",
    "image_folder": "atlaswidgets.zoo.folder",
    "ImageFolder": "atlaswidgets.zoo.folder",
    "link": "atlaswidgets.widgets.link",
    "show": "atlaswidgets.widgets.display",
    "show_images": "atlaswidgets.widgets.display",
    "rf_boxes": "atlaswidgets.cache.regions",
    "context_share": "atlaswidgets.cache.regions",
    "overlaps_context": "atlaswidgets.cache.regions",
    "attribute": "atlaswidgets.attribution",
}

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'atlaswidgets' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
