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
    "ablate": "atlaswidgets.cache.hooks",
    "resolve_layers": "atlaswidgets.cache.hooks",
    "umap_layout": "atlaswidgets.layout.umap",
    "grid": "atlaswidgets.layout.grid",
    "Cells": "atlaswidgets.layout.grid",
    "Atlas": "atlaswidgets.layout.atlas",
    "build_atlas": "atlaswidgets.layout.atlas",
    "ComparisonAtlas": "atlaswidgets.layout.compare",
    "compare_atlas": "atlaswidgets.layout.compare",
    "ClassAtlas": "atlaswidgets.layout.classes",
    "DiffAtlas": "atlaswidgets.layout.diff",
    "diff_atlas": "atlaswidgets.layout.diff",
    "class_atlas": "atlaswidgets.layout.classes",
    "AtlasWidget": "atlaswidgets.widgets.atlas",
    "ExamplePanel": "atlaswidgets.widgets.examples",
    "ComparisonWidget": "atlaswidgets.widgets.compare",
    "DiffWidget": "atlaswidgets.widgets.diff",
    "NeuronViewer": "atlaswidgets.widgets.neuron",
    "Explorer": "atlaswidgets.widgets.explorer",
    "selection_direction": "atlaswidgets.layout.select",
    "strongest_cells": "atlaswidgets.layout.select",
    "patch_attack": "atlaswidgets.experiments.patch",
    "PatchTable": "atlaswidgets.experiments.patch",
    "patch_from_cell": "atlaswidgets.experiments.cells",
    "patch_from_icon": "atlaswidgets.experiments.cells",
    "cell_ranking": "atlaswidgets.experiments.cells",
    "diff_models": "atlaswidgets.experiments.diff",
    "ModelDiff": "atlaswidgets.experiments.diff",
    "available_pairs": "atlaswidgets.widgets.compare",
    "image_folder": "atlaswidgets.zoo.folder",
    "ImageFolder": "atlaswidgets.zoo.folder",
    "link": "atlaswidgets.widgets.link",
    "show": "atlaswidgets.widgets.display",
    "show_images": "atlaswidgets.widgets.display",
    "shutdown_kernel": "atlaswidgets.session",
    "shutdown_button": "atlaswidgets.session",
    "rf_boxes": "atlaswidgets.cache.regions",
    "context_share": "atlaswidgets.cache.regions",
    "overlaps_context": "atlaswidgets.cache.regions",
    "attribute": "atlaswidgets.attribution",
    "Attribution": "atlaswidgets.attribution",
    # targets: one spelling of classes, pairs (and later next-token targets) (issue #16)
    "Target": "atlaswidgets.cache.targets",
    "target_key": "atlaswidgets.cache.targets",
    "class_name": "atlaswidgets.cache.targets",
    "model_classes": "atlaswidgets.cache.targets",
    # feature visualisation (issue #5)
    # the function is feature_vis; aw.render is always the subpackage (see _MODULES), which
    # Python would bind to that name anyway once any atlaswidgets.render module is imported
    "feature_vis": "atlaswidgets.render.fv:render",
    "Rendered": "atlaswidgets.render.fv",
    "render_icons": "atlaswidgets.render.icons",
    "IconSettings": "atlaswidgets.render.icons",
    "cell_icons": "atlaswidgets.render.icons",
    "Icons": "atlaswidgets.render.icons",
    "whitening": "atlaswidgets.render.objectives",
    # per-unit statistics and explanations (issue #6)
    "ChannelStats": "atlaswidgets.cache.topk",
    "UnitSamples": "atlaswidgets.cache.topk",
    "unit_samples": "atlaswidgets.cache.units",
    "unit_maxima": "atlaswidgets.cache.units",
    # what a text layer's units read and write, in tokens (issue #15)
    "top_tokens": "atlaswidgets.cache.tokens",
    "units_for_token": "atlaswidgets.cache.tokens",
    "token_writes": "atlaswidgets.cache.tokens",
    "score_explanation": "atlaswidgets.explain",
    "find_units": "atlaswidgets.explain",
    "rf_overlap": "atlaswidgets.explain",
    "explain_unit": "atlaswidgets.explain",
    "ExplanationScore": "atlaswidgets.explain",
    # every unit of a layer explained, scored and kept (issue #19)
    "explain_layer": "atlaswidgets.explain.layer",
    "ExplanationTable": "atlaswidgets.explain.table",
    "ConceptExplainer": "atlaswidgets.explain.offline",
    "ConceptSimulator": "atlaswidgets.explain.offline",
    "TokenExplainer": "atlaswidgets.explain.offline",
    "TokenSimulator": "atlaswidgets.explain.offline",
    "ExplanationFailed": "atlaswidgets.explain.offline",
    "compare_sampling": "atlaswidgets.explain.sampling",
}

# public name -> module exported whole: aw.objectives.channel(...)
_MODULES = {"objectives": "atlaswidgets.render.objectives", "transforms": "atlaswidgets.render.transforms",
            "audit": "atlaswidgets.experiments.audit", "render": "atlaswidgets.render"}

__all__ = sorted([*_LAZY, *_MODULES]) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name in _MODULES:
        value = importlib.import_module(_MODULES[name])
    elif name in _LAZY:
        module, _, attr = _LAZY[name].partition(":")  # "module:attr" exports attr under another name
        value = getattr(importlib.import_module(module), attr or name)
    else:
        raise AttributeError(f"module 'atlaswidgets' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
