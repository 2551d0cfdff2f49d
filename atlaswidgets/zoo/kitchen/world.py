"""The kitchen world's generator: scene sampling, rendering, ``dataset`` and ``render_object``.

A scene is a plain dict of numbers sampled from ``np.random.default_rng([seed, i])``, so image i
depends only on (seed, i). Rendering is a pure function of the scene: a canvas at twice the output
size, painted by draw.py / objects.py, average-pooled 2x2 (anti-aliasing), plus sensor noise,
rounded to 8-bit levels. Pixels are computed with exactly rounded float operations only (no
vectorised sin/exp, whose SIMD code differs between CPUs; see draw.py), so the same seed gives
the same bytes on any machine.

The planted correlations live in ``CONTEXT_RATES`` (see the table in the package docstring).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch

from ...cache.checks import is_int
from ...cache.progress import progress_bar
from .draw import Canvas, background, downsample, lighting
from .objects import COOKWARE_PAINTERS, CONTEXT_PAINTERS, opening, opening_clip

CLASSES: list[str] = ["frying pan", "wok", "saucepan", "stock pot", "kettle", "baking tray"]
CONTEXTS: list[str] = ["noodles", "eggs", "steam", "chopsticks", "tomato"]

# P(context object drawn | class), one column per class in CLASSES order. Noodles mark woks,
# eggs mark frying pans, steam marks stock pots and kettles; chopsticks and tomatoes are
# uncorrelated distractors (same rate for every class).
CONTEXT_RATES: dict[str, tuple[float, ...]] = {
    #              pan   wok   sauce stock kettle tray
    "noodles":    (0.03, 0.60, 0.05, 0.05, 0.02, 0.03),
    "eggs":       (0.55, 0.10, 0.05, 0.02, 0.02, 0.05),
    "steam":      (0.05, 0.10, 0.25, 0.70, 0.60, 0.05),
    "chopsticks": (0.10, 0.10, 0.10, 0.10, 0.10, 0.10),
    "tomato":     (0.10, 0.10, 0.10, 0.10, 0.10, 0.10),
}
# Fraction of frying pans and of woks whose shape (size, depth, taper, roundness, handles) is
# drawn from one shared "deep frying pan / shallow wok" distribution: for these only the context
# can tell the classes apart, which is what makes the model lean on noodles and eggs. More pans
# than woks share it, so a shared shape with no context still reads as a frying pan.
SHARED_SHAPE: dict[str, float] = {"frying pan": 0.5, "wok": 0.3}

MIN_SIZE = 16

# drawing order: things lying in or beside the cookware first, steam (translucent, above) last
_ORDER = ["tomato", "eggs", "noodles", "chopsticks", "steam"]


class KitchenData(NamedTuple):
    """Images, labels and annotations of a kitchen dataset.

    images : tensor, shape (n, 3, size, size), float32 in [0, 1]
    labels : tensor, shape (n,), int64 indices into ``CLASSES``
    annotations : list of n lists of ``{"name": str, "box": [y0, x0, y1, x1]}``, one dict per
        context object drawn; boxes are int pixels of the ``size`` frame, half-open
        (``images[i, :, y0:y1, x0:x1]`` is the object's crop).
    """

    images: torch.Tensor
    labels: torch.Tensor
    annotations: list[list[dict]]


# ---- palettes (RGB in [0, 1]) ----

_DARK_METAL = [(0.14, 0.14, 0.15), (0.28, 0.28, 0.30), (0.52, 0.53, 0.55), (0.24, 0.26, 0.32),
               (0.40, 0.33, 0.27)]
_PAN_INSIDE = [(0.12, 0.12, 0.13), (0.33, 0.33, 0.34), (0.58, 0.58, 0.60), (0.30, 0.26, 0.22)]
_POT_METAL = [(0.62, 0.63, 0.65), (0.72, 0.45, 0.30), (0.68, 0.16, 0.13), (0.20, 0.30, 0.60),
              (0.16, 0.16, 0.17), (0.30, 0.50, 0.35)]
_POT_INSIDE = [(0.62, 0.63, 0.65), (0.85, 0.84, 0.80), (0.30, 0.30, 0.31)]
_KETTLE = [(0.66, 0.67, 0.70), (0.70, 0.14, 0.12), (0.88, 0.87, 0.84), (0.15, 0.15, 0.16),
           (0.35, 0.55, 0.40), (0.85, 0.70, 0.30)]
_TRAY = [(0.70, 0.70, 0.72), (0.30, 0.30, 0.32), (0.70, 0.60, 0.42)]
_TRAY_INSIDE = [(0.62, 0.62, 0.64), (0.22, 0.22, 0.24), (0.90, 0.85, 0.72)]
_HANDLE = [(0.08, 0.08, 0.08), (0.45, 0.30, 0.18), (0.58, 0.58, 0.60), (0.55, 0.12, 0.10)]
_COUNTER = [(0.88, 0.87, 0.84), (0.80, 0.72, 0.60), (0.55, 0.55, 0.55), (0.24, 0.24, 0.26),
            (0.45, 0.55, 0.45), (0.45, 0.55, 0.66), (0.70, 0.40, 0.30)]
_WOOD = [(0.62, 0.44, 0.26), (0.45, 0.30, 0.18), (0.75, 0.60, 0.42), (0.30, 0.20, 0.13)]
_TILE = [(0.90, 0.90, 0.88), (0.35, 0.50, 0.60), (0.20, 0.22, 0.25), (0.75, 0.80, 0.70),
         (0.85, 0.75, 0.55)]
_GRAIN = [(0.85, 0.55, 0.50), (0.30, 0.30, 0.45), (0.75, 0.70, 0.55), (0.40, 0.55, 0.40)]
_STICKS = [(0.72, 0.56, 0.36), (0.10, 0.10, 0.10), (0.55, 0.10, 0.08)]


def _colour(rng: np.random.Generator, palette, jitter: float = 0.04) -> tuple[float, ...]:
    base = np.asarray(palette[rng.integers(len(palette))])
    return tuple(np.clip(base + rng.uniform(-jitter, jitter, 3), 0.0, 1.0).tolist())


# ---- scene sampling ----

def _sample_background(rng: np.random.Generator) -> dict:
    kind = ["counter", "granite", "wood", "tiles", "stove"][
        rng.choice(5, p=[0.2, 0.2, 0.25, 0.2, 0.15])]
    spec: dict = {"kind": kind, "seed": int(rng.integers(2**32))}
    if kind == "counter":
        spec["color"] = _colour(rng, _COUNTER)
    elif kind == "granite":
        spec.update(color=_colour(rng, _COUNTER), accent=_colour(rng, _GRAIN, 0.1),
                    grains=tuple(rng.uniform(0.0, 0.25, 3).tolist()),
                    jitter=float(rng.uniform(0.05, 0.6)))
    elif kind == "wood":
        spec.update(color=_colour(rng, _WOOD), angle=float(rng.uniform(-0.3, 0.3) + np.pi / 2 *
                                                           rng.integers(2)),
                    freq=float(rng.uniform(6, 16)))
    elif kind == "tiles":
        spec.update(color=_colour(rng, _TILE), grout=_colour(rng, [(0.6, 0.6, 0.58),
                                                                   (0.2, 0.2, 0.2)]),
                    period=float(rng.uniform(0.12, 0.3)))
    else:
        spec.update(color=_colour(rng, [(0.12, 0.12, 0.13), (0.55, 0.55, 0.57)]),
                    grate=_colour(rng, [(0.05, 0.05, 0.05), (0.25, 0.25, 0.26)], 0.02),
                    period=float(rng.uniform(0.3, 0.5)), bar=float(rng.uniform(0.04, 0.07)),
                    offset=float(rng.uniform(0, 0.5)),
                    burner=(float(rng.uniform(0.3, 0.7)), float(rng.uniform(0.3, 0.7)),
                            float(rng.uniform(0.15, 0.3))))
    spec["wall"] = None
    if kind != "stove" and rng.random() < 0.3:
        spec["wall"] = {"horizon": float(rng.uniform(0.08, 0.28)),
                        "period": float(rng.uniform(0.08, 0.15)), "color": _colour(rng, _TILE)}
    return spec


def _long_handle(rng, side):
    return {"type": "long", "side": side, "angle": float(rng.uniform(-0.45, 0.25)),
            "length": float(rng.uniform(0.8, 1.3)), "width": float(rng.uniform(0.06, 0.09)),
            "colour": _colour(rng, _HANDLE)}


def _loop(rng, side, colour):
    return {"type": "loop", "side": side, "colour": colour}


def _pan_or_wok_shape(rng: np.random.Generator, style: str) -> dict:
    """Shape numbers and handles of a frying pan ("pan"), a wok ("wok") or the shared middle."""
    lo_hi = {  # R, depth, taper, round
        "pan": ((0.22, 0.30), (0.12, 0.30), (0.08, 0.20), (0.00, 0.25)),
        "shared": ((0.23, 0.31), (0.30, 0.50), (0.18, 0.35), (0.30, 0.65)),
        "wok": ((0.24, 0.32), (0.50, 0.75), (0.30, 0.50), (0.70, 1.00)),
    }[style]
    R, depth, taper, rnd = (float(rng.uniform(*r)) for r in lo_hi)
    side = int(rng.choice([-1, 1]))
    # handle style: (long only, long + helper loop, two loops)
    p = {"pan": (0.85, 0.15, 0.0), "shared": (0.42, 0.28, 0.30), "wok": (0.10, 0.35, 0.55)}[style]
    hstyle = rng.choice(3, p=p)
    loop_colour = _colour(rng, _HANDLE)
    if hstyle == 0:
        handles = [_long_handle(rng, side)]
    elif hstyle == 1:
        handles = [_long_handle(rng, side), _loop(rng, -side, loop_colour)]
    else:
        handles = [_loop(rng, -1, loop_colour), _loop(rng, 1, loop_colour)]
    return {"kind": "vessel", "R": R, "depth": depth, "taper": taper, "round": rnd,
            "handles": handles, "colour": _colour(rng, _DARK_METAL),
            "inner": _colour(rng, _PAN_INSIDE)}


def _sample_cookware(rng: np.random.Generator, label: int) -> dict:
    name = CLASSES[label]
    tilt = float(rng.uniform(0.3, 0.55))
    if name in ("frying pan", "wok"):
        style = "shared" if rng.random() < SHARED_SHAPE[name] else ("pan" if name == "frying pan"
                                                                      else "wok")
        cook = _pan_or_wok_shape(rng, style)
        cook["style"] = style
    elif name == "saucepan":
        side = int(rng.choice([-1, 1]))
        cook = {"kind": "vessel", "R": float(rng.uniform(0.14, 0.2)),
                "depth": float(rng.uniform(0.8, 1.2)), "taper": float(rng.uniform(0, 0.06)),
                "round": float(rng.uniform(0, 0.15)), "handles": [_long_handle(rng, side)],
                "colour": _colour(rng, _POT_METAL), "inner": _colour(rng, _POT_INSIDE)}
        if rng.random() < 0.35:
            cook["lid"], cook["lid_colour"] = True, cook["colour"]
    elif name == "stock pot":
        loop_colour = _colour(rng, _HANDLE)
        cook = {"kind": "vessel", "R": float(rng.uniform(0.2, 0.28)),
                "depth": float(rng.uniform(1.0, 1.5)), "taper": float(rng.uniform(0, 0.05)),
                "round": float(rng.uniform(0, 0.1)),
                "handles": [_loop(rng, -1, loop_colour), _loop(rng, 1, loop_colour)],
                "colour": _colour(rng, _POT_METAL), "inner": _colour(rng, _POT_INSIDE)}
        if rng.random() < 0.4:
            cook["lid"], cook["lid_colour"] = True, cook["colour"]
    elif name == "kettle":
        cook = {"kind": "kettle", "R": float(rng.uniform(0.17, 0.24)),
                "height": float(rng.uniform(1.0, 1.5)), "spout_side": int(rng.choice([-1, 1])),
                "colour": _colour(rng, _KETTLE), "handle_colour": _colour(rng, _HANDLE)}
    else:
        cook = {"kind": "tray", "a": float(rng.uniform(0.28, 0.4)),
                "b": float(rng.uniform(0.15, 0.25)), "angle": float(rng.uniform(-0.3, 0.3)),
                "colour": _colour(rng, _TRAY), "inner": _colour(rng, _TRAY_INSIDE)}
    cook["tilt"] = tilt
    cook["light"] = float(rng.uniform(-1, 1))
    # place it: centre the visible extent around a jittered point; a long handle pulls the
    # body the other way so the handle mostly stays in frame
    top, bottom, half_w = _extent(cook)
    yc, xc = rng.uniform(0.42, 0.58), rng.uniform(0.42, 0.58)
    longs = [h["side"] for h in cook.get("handles", []) if h["type"] == "long"]
    if longs:
        xc -= longs[0] * rng.uniform(0.06, 0.14)
    cook["cy"] = float(yc - (bottom + top) / 2)
    cook["cx"] = float(xc)
    return cook


def _extent(cook: dict) -> tuple[float, float, float]:
    """(top, bottom, half-width) of the cookware body relative to its centre, unit coordinates."""
    if cook["kind"] == "vessel":
        R, t = cook["R"], cook["tilt"]
        return -t * R, cook["depth"] * R * math.sqrt(1 - t * t) + t * R, R
    if cook["kind"] == "kettle":
        R, t = cook["R"], cook["tilt"]
        return -t * R - 0.55 * R, cook["height"] * R + t * R, R
    r = math.hypot(cook["a"], cook["b"])
    return -cook["b"] - 0.02, cook["b"] + 0.05, r


def _body_box(cook: dict) -> tuple[float, float, float, float]:
    top, bottom, hw = _extent(cook)
    return cook["cy"] + top, cook["cx"] - hw, cook["cy"] + bottom, cook["cx"] + hw


def _beside(rng: np.random.Generator, cook: dict, ry: float, rx: float) -> tuple[float, float]:
    """A centre for an object of half-size (ry, rx) on the counter, avoiding the cookware body."""
    y0, x0, y1, x1 = _body_box(cook)
    best, best_overlap = (0.5, 0.5), np.inf
    for _ in range(12):
        cy = float(rng.uniform(ry * 0.7, 1 - ry * 0.7))
        cx = float(rng.uniform(rx * 0.7, 1 - rx * 0.7))
        oy = max(0.0, min(y1, cy + ry) - max(y0, cy - ry))
        ox = max(0.0, min(x1, cx + rx) - max(x0, cx - rx))
        if oy * ox < best_overlap:
            best, best_overlap = (cy, cx), oy * ox
        if best_overlap == 0.0:
            break
    return best


def _inside_point(rng, op, spread=0.2):
    cy, cx, ry, rx = op
    return (float(cy + rng.uniform(-spread, spread) * ry),
            float(cx + rng.uniform(-spread, spread) * rx))


def _noodles(rng: np.random.Generator, cy: float, cx: float, ry: float, rx: float) -> dict:
    strands = [(float(rng.uniform(0, np.pi)), float(rng.uniform(-0.85, 0.85)),
                float(rng.uniform(0.08, 0.2)), float(rng.uniform(6, 12)),
                float(rng.uniform(0, 2 * np.pi))) for _ in range(int(rng.integers(6, 10)))]
    return {"name": "noodles", "cy": cy, "cx": cx, "ry": ry, "rx": rx, "strands": strands,
            "thickness": float(rng.uniform(0.08, 0.11)),
            "base": _colour(rng, [(0.74, 0.56, 0.24)], 0.05),
            "strand": _colour(rng, [(0.98, 0.88, 0.52)], 0.03)}


def _egg(rng, cy, cx, r, squash) -> dict:
    return {"cy": cy, "cx": cx, "r": r, "squash": squash,
            "wobble": [(k, float(rng.uniform(0, 0.08)), float(rng.uniform(0, 2 * np.pi)))
                       for k in (2, 3, 5)],
            "yolk": (float(rng.uniform(-0.25, 0.25)), float(rng.uniform(-0.25, 0.25))),
            "white": _colour(rng, [(0.96, 0.95, 0.91)], 0.03),
            "yolk_colour": _colour(rng, [(1.0, 0.68, 0.1)], 0.05)}


def _sample_context(rng: np.random.Generator, name: str, cook: dict) -> dict:
    op = opening(cook)
    inside_p = {"noodles": 0.5, "eggs": 0.7, "tomato": 0.2}.get(name, 0.0)
    inside = op is not None and rng.random() < inside_p
    if name == "noodles":
        if inside:
            cy, cx = _inside_point(rng, op)
            rx = op[3] * float(rng.uniform(0.55, 0.85))
            ry = max(rx * op[2] / op[3] * float(rng.uniform(1.0, 1.3)), 0.04)
        else:
            rx = float(rng.uniform(0.1, 0.16))
            ry = rx * float(rng.uniform(0.6, 0.9))
            cy, cx = _beside(rng, cook, ry, rx)
        obj = _noodles(rng, cy, cx, ry, rx)
    elif name == "eggs":
        if inside:
            n = int(rng.integers(1, 3))
            r = op[3] * float(rng.uniform(0.25, 0.36)) * (0.8 if n == 2 else 1.0)
            squash = max(op[2] / op[3], 0.35)
            offsets = [0.0] if n == 1 else [-0.42, 0.42]
            eggs = [_egg(rng, *_inside_point(rng, op, 0.15), r, squash) for _ in offsets]
            for egg, dx in zip(eggs, offsets):
                egg["cx"] = float(egg["cx"] + dx * op[3])
        else:
            r = float(rng.uniform(0.06, 0.09))
            squash = float(rng.uniform(0.5, 0.8))
            eggs = [_egg(rng, *_beside(rng, cook, r * squash, r), r, squash)]
        obj = {"name": "eggs", "eggs": eggs}
    elif name == "steam":
        top, _, hw = _extent(cook)
        if cook["kind"] == "kettle":
            side = cook["spout_side"]
            xs = [cook["cx"] + side * 1.4 * cook["R"]]
            ybase = cook["cy"] + 0.65 * cook["height"] * cook["R"] - 0.8 * cook["R"]
        else:
            xs = [cook["cx"] + float(rng.uniform(-0.6, 0.6)) * hw
                  for _ in range(int(rng.integers(2, 5)))]
            ybase = cook["cy"] + 0.3 * top
        obj = {"name": "steam", "wisps": [
            {"x": float(x), "y": float(ybase), "height": float(rng.uniform(0.2, 0.35)),
             "amp": float(rng.uniform(0.01, 0.03)), "width": float(rng.uniform(0.012, 0.022)),
             "freq": float(rng.uniform(0.5, 1.2)), "phase": float(rng.uniform(0, 2 * np.pi)),
             "alpha": float(rng.uniform(0.35, 0.6))} for x in xs]}
    elif name == "chopsticks":
        cy, cx = rng.uniform(0.2, 0.8, 2)
        ang, length = rng.uniform(0, np.pi), rng.uniform(0.35, 0.5)
        gap, spread = rng.uniform(0.02, 0.04), rng.uniform(-0.03, 0.03)
        dy, dx = math.sin(ang) * length / 2, math.cos(ang) * length / 2
        ny, nx = math.cos(ang), -math.sin(ang)                  # unit normal to the sticks
        sticks = []
        for sgn in (-1, 1):
            g0, g1 = sgn * (gap / 2 + spread), sgn * gap / 2
            sticks.append(((float(cy - dy + ny * g0), float(cx - dx + nx * g0)),
                           (float(cy + dy + ny * g1), float(cx + dx + nx * g1))))
        obj = {"name": "chopsticks", "sticks": sticks, "width": float(rng.uniform(0.008, 0.012)),
               "colour": _colour(rng, _STICKS)}
    else:  # tomato
        r = float(rng.uniform(0.05, 0.08))
        cy, cx = _inside_point(rng, op) if inside else _beside(rng, cook, r, r)
        obj = {"name": "tomato", "cy": cy, "cx": cx, "r": r,
               "colour": _colour(rng, [(0.85, 0.15, 0.1)], 0.06),
               "calyx": float(rng.uniform(0, 2 * np.pi))}
    obj["inside"] = bool(inside)
    return obj


def sample_scene(rng: np.random.Generator, rates: dict | None = None) -> dict:
    """All the numbers of one scene: class label, background, cookware, context objects, light.

    rates : P(context | class) per context name, like ``CONTEXT_RATES`` (the default); another
        table re-wires the world's correlations (the planted flaws of ``experiments.audit``)
        while drawing the same random numbers, so every other part of the scene is unchanged.
    """
    rates = CONTEXT_RATES if rates is None else rates
    label = int(rng.integers(len(CLASSES)))
    scene = {"label": label, "background": _sample_background(rng)}
    cook = _sample_cookware(rng, label)
    scene["cookware"] = cook
    present = [name for name in _ORDER if rng.random() < rates[name][label]]
    scene["objects"] = [_sample_context(rng, name, cook) for name in present]
    scene["light"] = {"brightness": float(rng.uniform(0.75, 1.15)),
                      "gradient": float(rng.uniform(0.0, 0.5)),
                      "angle": float(rng.uniform(0, 2 * np.pi)),
                      "tint": tuple((1 + rng.uniform(-0.06, 0.06, 3)).tolist())}
    scene["noise"] = {"sigma": float(rng.uniform(0.0, 0.03)), "seed": int(rng.integers(2**32))}
    return scene


# ---- rendering ----

def _finish(canvas: np.ndarray, light: dict, noise: dict | None) -> np.ndarray:
    """Downsample a 2x canvas, light it, add sensor noise, round to 8-bit levels.

    canvas : array, shape (2 * size, 2 * size, 3) float32. Returns shape (size, size, 3) uint8.
    Lighting is smooth, so applying it after the 2x2 pooling gives the same picture for a
    quarter of the work.
    """
    img = lighting(downsample(canvas), light)
    if noise is not None and noise["sigma"] > 0:
        nrng = np.random.default_rng(noise["seed"])
        # uniform noise with the given standard deviation: ~3x cheaper to draw than normal
        half = np.float32(noise["sigma"] * np.sqrt(3.0))
        img += (nrng.random(img.shape, dtype=np.float32) - np.float32(0.5)) * (2 * half)
    img *= np.float32(255.0)
    np.clip(img, 0.0, 255.0, out=img)
    return np.rint(img).astype(np.uint8)


def _to_frame(box, side: int) -> list[int]:
    """A canvas box (2x frame, half-open) to the output frame, rounded outwards."""
    y0, x0, y1, x1 = box
    return [y0 // 2, x0 // 2, min(-(-y1 // 2), side // 2), min(-(-x1 // 2), side // 2)]


def render_scene(scene: dict, size: int, skip: tuple[int, ...] = ()) -> tuple[np.ndarray, list]:
    """Render a scene at ``size`` px.

    skip : indices into ``scene["objects"]`` to leave out (to check an annotation honestly).
    Returns (image, annotations): image shape (size, size, 3) uint8; annotations as in
    ``KitchenData``.
    """
    cv = Canvas(2 * size)
    background(cv, scene["background"])
    cook = scene["cookware"]
    COOKWARE_PAINTERS[cook["kind"]](cv, cook)
    inside_clip = opening_clip(cook, cv.side)
    annotations = []
    for k, obj in enumerate(scene["objects"]):
        if k in skip:
            continue
        clip = inside_clip if obj["inside"] else None
        box = CONTEXT_PAINTERS[obj["name"]](cv, obj, clip)
        if box is not None:
            annotations.append({"name": obj["name"], "box": _to_frame(box, cv.side)})
    return _finish(cv.img, scene["light"], scene["noise"]), annotations


def _check_int(value, name: str, minimum: int, hint: str) -> int:
    if not is_int(value):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} ({value!r}). {hint}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}. {hint}")
    return int(value)


def dataset(n: int, seed: int = 0, size: int = 64, progress: bool = True) -> KitchenData:
    """Generate ``n`` kitchen images with labels and context-object annotations.

    Image i depends only on (seed, i): ``dataset(100, s)`` starts with ``dataset(10, s)``.

    n : number of images, >= 1
    seed : int >= 0
    size : image side in pixels, >= 16
    progress : True shows a bar over the images (as ``aw.capture`` does: about 500 images a
        second on one core, so 2,000 take seconds); False hides it
    Returns ``KitchenData(images, labels, annotations)``: images shape (n, 3, size, size)
    float32 in [0, 1], labels shape (n,) int64.
    """
    n = _check_int(n, "n", 1, "Ask for at least one image, e.g. kitchen.dataset(1000).")
    seed = _check_int(seed, "seed", 0, "Use a non-negative integer seed.")
    size = _check_int(size, "size", MIN_SIZE, f"Use size={MIN_SIZE} or more (default 64).")
    with progress_bar("kitchen images", n, "img", progress) as bar:
        images, labels, annotations = render_range(0, n, seed, size, on_image=bar.update)
    tensor = torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255.0).contiguous()
    return KitchenData(tensor, torch.from_numpy(labels), annotations)


def render_range(start: int, stop: int, seed: int, size: int, on_image=None):
    """Images start..stop-1 of the dataset with this seed, as compact uint8 arrays.

    on_image : called with 1 after each image (a progress bar's ``update``), or None

    Returns (images, labels, annotations): images shape (stop - start, size, size, 3) uint8,
    labels shape (stop - start,) int64. Training keeps its data in this form (4x smaller).
    """
    images = np.empty((stop - start, size, size, 3), np.uint8)
    labels = np.empty(stop - start, np.int64)
    annotations = []
    for k, i in enumerate(range(start, stop)):
        scene = sample_scene(np.random.default_rng([seed, i]))
        images[k], ann = render_scene(scene, size)
        labels[k] = scene["label"]
        annotations.append(ann)
        if on_image is not None:
            on_image(1)
    return images, labels, annotations


def scene_for_object(name: str, seed: int = 0) -> dict:
    """A scene holding one context object that fills the frame, on a plain counter."""
    if name not in CONTEXTS:
        raise ValueError(f"unknown context object {name!r}; choose one of {CONTEXTS}.")
    rng = np.random.default_rng([seed, 1_000_003])   # a stream no dataset image uses
    # steam is pale: show it on a dark counter; everything else on a light one
    counters = [_COUNTER[3], _WOOD[3]] if name == "steam" else _COUNTER[:3]
    bg = {"kind": "counter", "seed": int(rng.integers(2**32)),
          "color": _colour(rng, counters), "wall": None}
    if name == "noodles":
        rx = float(rng.uniform(0.44, 0.48))
        obj = _noodles(rng, 0.5, 0.5, rx * float(rng.uniform(0.8, 0.95)), rx)
    elif name == "eggs":
        obj = {"name": "eggs", "eggs": [_egg(rng, 0.5, 0.5, 0.36, float(rng.uniform(0.7, 0.9)))]}
    elif name == "steam":
        obj = {"name": "steam", "wisps": [
            {"x": float(x), "y": 0.98, "height": 0.9, "amp": float(rng.uniform(0.03, 0.06)),
             "width": 0.06, "freq": float(rng.uniform(0.5, 1.0)),
             "phase": float(rng.uniform(0, 2 * np.pi)), "alpha": 0.6} for x in (0.3, 0.5, 0.7)]}
    elif name == "chopsticks":
        obj = {"name": "chopsticks", "sticks": [((0.1, 0.22), (0.82, 0.9)), ((0.18, 0.1),
                                                                             (0.9, 0.78))],
               "width": 0.035, "colour": _colour(rng, _STICKS)}
    else:
        obj = {"name": "tomato", "cy": 0.55, "cx": 0.5, "r": 0.38,
               "colour": _colour(rng, [(0.85, 0.15, 0.1)], 0.06),
               "calyx": float(rng.uniform(0, 2 * np.pi))}
    obj["inside"] = False
    return {"background": bg, "objects": [obj], "noise": None,
            "light": {"brightness": 1.0, "gradient": 0.0, "angle": 0.0, "tint": (1.0, 1.0, 1.0)}}


def render_object(name: str, size: int, seed: int = 0) -> torch.Tensor:
    """One context object as an RGB patch filling the frame (e.g. the noodles patch of an attack).

    name : one of ``CONTEXTS``
    size : patch side in pixels, >= 4
    seed : int >= 0, varies colours and the object's details
    Returns a tensor of shape (3, size, size), float32 in [0, 1].
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, one of {CONTEXTS}; got {type(name).__name__}.")
    size = _check_int(size, "size", 4, "Use a patch size of at least 4 pixels, e.g. 20.")
    seed = _check_int(seed, "seed", 0, "Use a non-negative integer seed.")
    scene = scene_for_object(name, seed)
    cv = Canvas(2 * size)
    background(cv, scene["background"])
    CONTEXT_PAINTERS[name](cv, scene["objects"][0], None)
    img = _finish(cv.img, scene["light"], None)
    return torch.from_numpy(img).permute(2, 0, 1).float().div_(255.0).contiguous()
