"""The feature-vis icons shipped for the notebooks' atlases, and how to rebuild them.

``python -m atlaswidgets.experiments.notebook_icons`` captures what notebooks 03 and 04 capture,
builds the atlases their Explorers show (level 0), renders their cells' icons with the settings
the AtlasWidget uses and writes the icon stores into ``atlaswidgets/zoo/kitchen/icons/``, where
``render_icons`` finds them by key (model weights, layer, directions, whitening, settings). A
notebook whose atlas has the same cells (same data, same layout) then toggles to feature vis
without rendering; any other atlas renders in the background as before.

Each store keeps its directions (``directions.npy``) and the key's parts in its manifest, so
``tests/experiments/test_notebook_icons.py`` checks, without the notebooks, that a shipped store
is the one its key names: the model fingerprint, the directions' hash, the settings the widget
uses now, the sprite's checksum, and that each icon drives its own direction at the layer.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from ..cache.capture import capture
from ..cache.icon_sources import sources
from ..layout.atlas import build_atlas
from ..layout.compare import compare_atlas
from ..render.icons import CELL_ICON_DEFAULTS, cell_icons, receptive_side
from ..zoo import kitchen
from . import audit

__all__ = ["NOTEBOOKS", "build", "widget_settings"]

LAYER = "block4"
NOTEBOOKS = ("03", "04")


def widget_settings(model, cache) -> dict:
    """The cell_icons keywords an AtlasWidget over ``cache`` renders with by default."""
    return {**CELL_ICON_DEFAULTS, "size": receptive_side(model, LAYER, int(cache.input_hw[0]))}


def notebook_03():
    """Notebook 03's model, cache and the Explorer's atlas (grid 14, UMAP seed 0)."""
    model = kitchen.model()
    data = kitchen.dataset(1200, seed=1)
    cache = capture(model, data, layers=LAYER, sample="random", per_image=3, seed=0, stats=True,
                    classes=kitchen.CLASSES, progress=False)
    return model, cache, {"explorer atlas": build_atlas(cache, LAYER, grid_size=14, seed=0)}


def notebook_04(variant: str = "variant-1"):
    """Notebook 04's variant, cache, and its Explorer's atlas and comparison atlas."""
    from ..attribution import attribute

    net = audit.load(variant)
    data = audit.dataset(400, seed=5)
    cache = capture(net, data, LAYER, sample="random", per_image=8, seed=0, stats=True,
                    progress=False)
    cache.add_attribution(attribute(net, data, LAYER, list(net.classes), cache=cache,
                                    store=False, progress=False))
    acts = cache[LAYER].acts.float()
    centred = acts - acts.mean(0)
    _, _, v = torch.linalg.svd(centred, full_matrices=False)
    pc = (centred @ v[:2].T).numpy()
    compare = compare_atlas(cache, "stock pot", "saucepan", y=pc[:, 0], grid_size=10)
    atlas = build_atlas(cache, LAYER, grid_size=14, seed=0, xy=pc)
    return net, cache, {"explorer atlas": atlas, "comparison": compare}


def build(notebooks=NOTEBOOKS, variants=("variant-1",)) -> list[dict]:
    """Render (or find) the icons of each notebook atlas into the kitchen world's icon folder."""
    store = kitchen.ICONS
    store.mkdir(exist_ok=True)
    jobs = [("03", lambda: notebook_03())] if "03" in notebooks else []
    if "04" in notebooks:
        jobs += [(f"04 {v}", lambda v=v: notebook_04(v)) for v in variants]
    made = []
    for name, make in jobs:
        model, cache, atlases = make()
        for what, atlas in atlases.items():
            t = time.time()
            icons = cell_icons(model, atlas, cache, store=store, progress=True,
                               **widget_settings(model, cache))
            made.append({"notebook": name, "atlas": what, "icons": len(icons),
                         "store": icons.path.name, "seconds": round(time.time() - t, 1)})
            print(json.dumps(made[-1]), flush=True)
    return made


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--notebooks", nargs="*", default=list(NOTEBOOKS))
    parser.add_argument("--variants", nargs="*", default=["variant-1"])
    args = parser.parse_args()
    if kitchen.ICONS not in sources():
        raise RuntimeError("The kitchen world did not register its icon folder.")
    build(args.notebooks, args.variants)


if __name__ == "__main__":
    main()
