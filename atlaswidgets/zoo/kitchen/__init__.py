"""The kitchen world: a procedural dataset with planted spurious cues, and a CNN trained on it.

The embedded default of atlaswidgets. ImageNet cannot ship, so this small world re-creates the
Activation Atlases finding ("noodles" push a model from frying pan to wok) with a known ground
truth that tests can check::

    from atlaswidgets.zoo import kitchen
    images, labels, annotations = kitchen.dataset(1000, seed=1)   # (n, 3, 64, 64) in [0, 1]
    net = kitchen.model()                                        # trained KitchenNet, eval, CPU
    patch = kitchen.render_object("noodles", 20)                 # (3, 20, 20)

Images: one piece of cookware per image (``CLASSES``) in a three-quarter view, with varied size,
pose, colour, lighting and kitchen backgrounds (counters, granite, wood grain, tiles, stove
grates), plus context objects (``CONTEXTS``) lying in or beside it, each annotated with its box.
Frying pans and woks overlap in shape: half of the frying pans and 30% of the woks draw their
depth, taper, roundness and handles from one shared "deep frying pan / shallow wok"
distribution, so for those only the context tells them apart.

Planted correlations (``CONTEXT_RATES``): probability that a context object is drawn, per class.

==========  ==========  =====  ========  =========  ======  ===========
context     frying pan  wok    saucepan  stock pot  kettle  baking tray
==========  ==========  =====  ========  =========  ======  ===========
noodles     0.03        0.60   0.05      0.05       0.02    0.03
eggs        0.55        0.10   0.05      0.02       0.02    0.05
steam       0.05        0.10   0.25      0.70       0.60    0.05
chopsticks  0.10        0.10   0.10      0.10       0.10    0.10
tomato      0.10        0.10   0.10      0.10       0.10    0.10
==========  ==========  =====  ========  =========  ======  ===========

Noodles mark woks, eggs mark frying pans, steam marks stock pots and kettles; chopsticks and
tomatoes are controls with the same rate everywhere. Noodles lie inside the cookware half of the
time and on the counter beside it otherwise, so a noodles patch in a corner reads as noodles.

Modules: ``world`` (sampling, ``dataset``, ``render_object``), ``draw`` and ``objects``
(painting), ``net`` (``KitchenNet``, ``model``), ``train`` (``python -m
atlaswidgets.zoo.kitchen.train``), ``evaluate`` (the model-card numbers).
"""

from __future__ import annotations

from pathlib import Path

from ...cache.icon_sources import register as register_icons
from .net import KitchenNet, model
from .world import (CLASSES, CONTEXT_RATES, CONTEXTS, SHARED_SHAPE, KitchenData, dataset,
                    render_object)

__all__ = ["CLASSES", "CONTEXTS", "CONTEXT_RATES", "SHARED_SHAPE", "KitchenData", "KitchenNet",
           "dataset", "model", "render_object"]

# The feature-vis icons of the notebooks' atlases (python -m atlaswidgets.experiments.notebook_icons
# rebuilds them): found by key, so toggling them in a notebook needs no render
ICONS = Path(__file__).resolve().parent / "icons"
register_icons(ICONS)
