"""What the NeuronViewer shows for a unit of an image layer: its examples' thumbnails, and on them
either the unit's activation map (the model re-run, ``cache.facts.LayerOutputs``) or, without a
model, the box of what the strongest position sees. How far a re-run's maps are from the captured
activations is measured at the examples' positions (``map_error``) and said in the note."""

from __future__ import annotations

import numpy as np
import torch

from ..cache.cache import ActivationCache, LayerActs, TopExamples
from ..cache.crops import display_images, resize_images, sprite_sheet, thumb_boxes
from ..cache.facts import LayerOutputs, activation_maps, map_error
from .display import to_png

__all__ = ["picture_state", "inexact", "icon_png", "NO_MAPS", "NO_BOXES"]

# what the maps and boxes traits hold when there are none (text examples too)
NO_MAPS = np.zeros((0, 0, 0), np.float32)
NO_BOXES = np.zeros((0, 4), np.int32)


def inexact(err: float | None, ex: TopExamples, tolerance: float = 1e-5) -> bool:
    """Whether re-run values differ from the cached ones by more than ``tolerance`` of the
    examples' largest value: 1e-5 is float noise; 1e-2 is more than any float noise of a
    re-run (another batch, TF32 on a GPU) and than uint8 display images, so wrong inputs."""
    scale = float(np.abs(ex.values).max()) if len(ex) else 0.0
    return err is not None and err > tolerance * max(scale, 1.0)


def picture_state(cache: ActivationCache, la: LayerActs, layer: str, unit, ex: TopExamples,
                  outputs: LayerOutputs | None, inputs, thumb_size: int) -> dict:
    """Traits of image examples: sprite sheet, maps (or boxes) and how exact the maps are.

    outputs : the viewer's model re-runs, or None without a model (then boxes)
    inputs : the images given to capture, or None (the maps then re-run on the display images)
    """
    s = thumb_size
    images = display_images(cache)
    pics = resize_images(images[torch.as_tensor(ex.sample_id, dtype=torch.long)], s) if len(ex) else None
    sprite, cols = sprite_sheet(pics, fmt="jpeg") if pics is not None else (b"", 1)
    maps, boxes, err = None, None, None
    if outputs is not None and len(ex):
        source = inputs if inputs is not None else images
        maps = activation_maps(outputs, source, ex.sample_id, layer, unit, la.hw)
        err = map_error(maps, ex.yx, ex.values)
    elif len(ex):
        boxes = thumb_boxes(cache, la, images.shape[-2:], ex.yx, s).numpy()
    top_value = float(ex.values.max()) if len(ex) else 1.0
    map_top = float(maps.max()) if maps is not None and maps.size else top_value
    if maps is None:
        note = "outline: what the strongest position sees (no model given, so no activation maps)"
    elif inexact(err, ex):
        where = "the captured inputs" if inputs is not None else "the uint8 display images"
        note = (f"heatmap, APPROXIMATE: re-run on {where}, the maps differ from the captured "
                f"activations by up to {err:.3g} at the examples' positions; pass inputs= (the "
                "images given to capture) and preprocess= (what capture applied) for exact maps")
    else:
        where = "the captured inputs" if inputs is not None else "the display images"
        note = f"heatmap: the unit's activation at each position (model re-run on {where})"
    return {"sprite": sprite, "sprite_cols": cols, "marking": "heatmap" if maps is not None else "box",
            "maps": maps if maps is not None else NO_MAPS, "map_hw": [int(la.hw[0]), int(la.hw[1])],
            "map_max": max(top_value, map_top, 1e-6), "boxes": boxes if boxes is not None else NO_BOXES,
            "note": note, "map_error": err}


def icon_png(model, layer: str, unit, cache: ActivationCache, steps: int, preprocess,
             callback=None) -> tuple[bytes, str]:
    """The unit's feature-vis icon as PNG bytes and its note; (b"", why) when it cannot render.
    ``callback`` as in ``render`` (its exceptions other than ValueError, TypeError and
    RuntimeError pass through: a cancel)."""
    try:
        from ..render.icons import unit_icon  # feature vis imports its own modules lazily

        icon = unit_icon(model, layer, unit, cache.input_hw, steps, preprocess,
                         cache.meta.get("prefix_tokens"), callback)
        return to_png(icon), "feature visualisation"
    except (ValueError, TypeError, RuntimeError) as e:
        return b"", f"no icon: {e}"
