"""Painting primitives of the kitchen world: a float canvas, soft masks, backgrounds, lighting.

Everything here is a pure function of its arguments (no global random state), so a scene spec
renders to the same bytes every time. Shapes are evaluated only inside their bounding box, which
keeps a 128 x 128 canvas (64 px images drawn at 2x) at about a millisecond per scene.

Coordinates: the canvas is ``(S, S, 3)`` float32, pixel centres at ``i + 0.5``; scene specs are in
unit coordinates (fractions of the image side) and are multiplied by ``S`` here.
"""

from __future__ import annotations

import math

import numpy as np

Box = tuple[int, int, int, int]  # (y0, x0, y1, x1), half-open, in canvas pixels


class Canvas:
    """An RGB float32 image being painted, plus the bounding boxes of what was painted."""

    def __init__(self, side: int) -> None:
        self.side = side
        self.img = np.zeros((side, side, 3), np.float32)

    def window(self, y0: float, x0: float, y1: float, x1: float):
        """Clip a float box to the canvas; return (box, ys, xs) with pixel-centre coordinates.

        ys : array, shape (h, 1); xs : array, shape (1, w). ``None`` when the box is empty.
        """
        iy0, ix0 = max(int(np.floor(y0)), 0), max(int(np.floor(x0)), 0)
        iy1 = min(int(np.ceil(y1)) + 1, self.side)
        ix1 = min(int(np.ceil(x1)) + 1, self.side)
        if iy1 <= iy0 or ix1 <= ix0:
            return None
        ys = np.arange(iy0, iy1, dtype=np.float32)[:, None] + 0.5
        xs = np.arange(ix0, ix1, dtype=np.float32)[None, :] + 0.5
        return (iy0, ix0, iy1, ix1), ys, xs

    def paint(self, box: Box, cover: np.ndarray, color, alpha: float = 1.0,
              track: bool = True) -> Box | None:
        """Blend ``color`` over the box with per-pixel coverage ``cover`` in [0, 1].

        cover : array, shape (h, w); color : shape (3,) or (h, w, 3).
        Returns the tight box of the pixels actually touched (``None`` if none were), or
        ``None`` without looking when ``track`` is False (cookware is not annotated).
        """
        y0, x0, y1, x1 = box
        a = cover if alpha == 1.0 else cover * np.float32(alpha)
        region = self.img[y0:y1, x0:x1]
        col = np.asarray(color, np.float32)
        diff = col - region
        diff *= a[..., None]
        region += diff
        return tight_box(a > 0, box) if track else None


def tight_box(mask: np.ndarray, box: Box) -> Box | None:
    """Bounding box (canvas pixels, half-open) of the true pixels of ``mask`` placed at ``box``."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return (box[0] + int(rows[0]), box[1] + int(cols[0]),
            box[0] + int(rows[-1]) + 1, box[1] + int(cols[-1]) + 1)


def union_box(a: Box | None, b: Box | None) -> Box | None:
    if a is None:
        return b
    if b is None:
        return a
    return (min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]))


# ---- portable maths ----
# numpy's vectorised sin/exp/arctan2 may take different SIMD code paths on different CPUs and
# differ in the last bit. Pixels use only + - * / sqrt (exactly rounded everywhere) and these
# polynomials, and scalars use Python's math module, so a seed gives the same bytes anywhere.

_HALF_PI = np.float32(np.pi / 2)
_TWO_PI = np.float32(2 * np.pi)


def fsin(x) -> np.ndarray:
    """sin(x) for float32 arrays from + - * and floor only (abs error < 4e-6)."""
    x = np.asarray(x, np.float32)
    r = x - np.floor(x / _TWO_PI + np.float32(0.5)) * _TWO_PI            # [-pi, pi]
    r = np.where(r > _HALF_PI, np.float32(np.pi) - r, r)
    r = np.where(r < -_HALF_PI, np.float32(-np.pi) - r, r)                # [-pi/2, pi/2]
    r2 = r * r
    # Taylor series to x^9, evaluated Horner-style
    p = np.float32(1 / 362880)
    for c in (-1 / 5040, 1 / 120, -1 / 6, 1.0):
        p = p * r2 + np.float32(c)
    return p * r


def bump(d2, width2: float) -> np.ndarray:
    """A smooth bump, 1 at d2 = 0 falling to 0 at d2 = width2 (a Gaussian-like highlight)."""
    t = np.clip(1.0 - np.asarray(d2, np.float32) / np.float32(width2), 0.0, 1.0)
    return t * t


# ---- soft masks: coverage in [0, 1] from an approximate signed distance, 1-pixel ramp ----

def soft(signed_dist: np.ndarray) -> np.ndarray:
    """Coverage from a signed distance in pixels (negative inside)."""
    return np.clip(0.5 - signed_dist, 0.0, 1.0)


def ellipse_sd(ys, xs, cy, cx, ry, rx, angle=0.0):
    """Approximate signed distance (pixels) to an ellipse, rotated by ``angle`` radians."""
    dy, dx = ys - cy, xs - cx
    if angle:
        c, s = math.cos(angle), math.sin(angle)
        dx, dy = c * dx + s * dy, -s * dx + c * dy
    ux, uy = dx / rx, dy / ry
    q = np.sqrt(ux * ux + uy * uy)
    # first-order distance (q - 1) / |grad q|, so the edge ramp stays ~1 px wide all round
    grad = np.sqrt((ux / rx) ** 2 + (uy / ry) ** 2) / np.maximum(q, 1e-6)
    return (q - 1.0) / np.maximum(grad, 1e-6)


def segment_sd(ys, xs, p0, p1, half_width0, half_width1=None):
    """Signed distance (pixels) to a thick segment from p0 to p1 (each (y, x)), width may taper."""
    if half_width1 is None:
        half_width1 = half_width0
    (y0, x0), (y1, x1) = p0, p1
    vy, vx = y1 - y0, x1 - x0
    length2 = max(vy * vy + vx * vx, 1e-6)
    t = np.clip(((ys - y0) * vy + (xs - x0) * vx) / length2, 0.0, 1.0)
    d = np.sqrt((ys - y0 - t * vy) ** 2 + (xs - x0 - t * vx) ** 2)
    return d - (half_width0 + (half_width1 - half_width0) * t)


def draw_ellipse(cv: Canvas, cy, cx, ry, rx, color, alpha=1.0, angle=0.0, clip=None, track=True):
    """Paint a filled ellipse (canvas pixels); ``clip(ys, xs) -> coverage`` limits it."""
    r = max(rx, ry) + 1.0
    win = cv.window(cy - r, cx - r, cy + r, cx + r)
    if win is None:
        return None
    box, ys, xs = win
    cover = soft(ellipse_sd(ys, xs, cy, cx, ry, rx, angle))
    if clip is not None:
        cover = cover * clip(ys, xs)
    return cv.paint(box, cover, color, alpha, track)


def draw_segment(cv: Canvas, p0, p1, half_width0, color, half_width1=None, alpha=1.0, clip=None,
                 track=True):
    """Paint a thick (optionally tapering) segment between canvas points p0 and p1 (y, x)."""
    hw = max(half_width0, half_width1 or 0.0) + 1.0
    win = cv.window(min(p0[0], p1[0]) - hw, min(p0[1], p1[1]) - hw,
                    max(p0[0], p1[0]) + hw, max(p0[1], p1[1]) + hw)
    if win is None:
        return None
    box, ys, xs = win
    cover = soft(segment_sd(ys, xs, p0, p1, half_width0, half_width1))
    if clip is not None:
        cover = cover * clip(ys, xs)
    return cv.paint(box, cover, color, alpha, track)


def draw_ring(cv: Canvas, cy, cx, ry, rx, thickness, color, upper_only=False, track=True):
    """Paint an elliptical ring (a loop handle or a kettle's arched handle)."""
    r = max(rx, ry) + thickness + 1.0
    win = cv.window(cy - r, cx - r, cy + r, cx + r)
    if win is None:
        return None
    box, ys, xs = win
    sd = np.abs(ellipse_sd(ys, xs, cy, cx, ry, rx)) - thickness / 2
    cover = soft(sd)
    if upper_only:
        cover = cover * (ys <= cy + 0.5)
    return cv.paint(box, cover, color, track=track)


# ---- backgrounds ----

def _smooth_noise(rng: np.random.Generator, side: int, cells: int) -> np.ndarray:
    """Low-frequency noise in [0, 1], shape (side, side): a cells x cells grid, bilinear-upsampled."""
    grid = rng.random((cells + 1, cells + 1)).astype(np.float32)
    t = (np.arange(side, dtype=np.float32) + 0.5) / side * cells
    i = np.minimum(t.astype(np.int64), cells - 1)
    f = t - i
    rows = grid[i] * (1 - f)[:, None] + grid[i + 1] * f[:, None]          # (side, cells+1)
    return rows[:, i] * (1 - f)[None, :] + rows[:, i + 1] * f[None, :]


def background(cv: Canvas, spec: dict) -> None:
    """Fill the whole canvas with a kitchen surface described by ``spec`` (see world.py).

    The surface is computed at half the canvas resolution (the output resolution) and repeated
    2x2: backgrounds are smooth or have 1-px grout lines, and this is 4x fewer pixels to shade.
    """
    side = cv.side // 2
    rng = np.random.default_rng(spec["seed"])
    ys = (np.arange(side, dtype=np.float32)[:, None] + 0.5) / side
    xs = (np.arange(side, dtype=np.float32)[None, :] + 0.5) / side
    base = np.asarray(spec["color"], np.float32)
    kind = spec["kind"]
    if kind == "counter":
        n = _smooth_noise(rng, side, 4)
        img = base * (0.9 + 0.2 * n)[..., None]
    elif kind == "granite":
        # blotches, then pixel-sized grains of dark, light and accent minerals and a per-channel
        # grain jitter: real granite is speckled at the finest scale, and seeing it teaches a
        # model that fine random texture is countertop, not food
        n = _smooth_noise(rng, side, 16)
        img = base * (0.9 + 0.2 * n)[..., None]
        pick = rng.random((side, side), dtype=np.float32)
        p_dark, p_light, p_accent = spec["grains"]
        img[pick < p_dark] = base * 0.3
        img[(pick >= p_dark) & (pick < p_dark + p_light)] = np.minimum(base * 1.4 + 0.25, 1.0)
        accent = (pick >= p_dark + p_light) & (pick < p_dark + p_light + p_accent)
        img[accent] = np.asarray(spec["accent"], np.float32)
        jitter = rng.random((side, side, 3), dtype=np.float32) - np.float32(0.5)
        img += jitter * np.float32(spec["jitter"])
    elif kind == "wood":
        a = spec["angle"]
        along = xs * math.cos(a) + ys * math.sin(a)
        across = -xs * math.sin(a) + ys * math.cos(a)
        wobble = 0.6 * _smooth_noise(rng, side, 3)
        grain = fsin((across * spec["freq"] + wobble + 0.15 * fsin(along * 5.0)) * _TWO_PI)
        img = base * (0.85 + 0.15 * grain)[..., None]
    elif kind == "tiles":
        period = spec["period"]
        fy = (ys / period) % 1.0
        fx = (xs / period) % 1.0
        grout_w = 0.07
        grout = (np.minimum(fy, 1 - fy) < grout_w / 2) | (np.minimum(fx, 1 - fx) < grout_w / 2)
        img = np.broadcast_to(base, (side, side, 3)).copy()
        img *= (0.92 + 0.08 * (1 - fy))[..., None]          # glaze catches light at the top
        img[grout] = np.asarray(spec["grout"], np.float32)
    elif kind == "stove":
        img = np.broadcast_to(base, (side, side, 3)).copy()
        period, bar = spec["period"], spec["bar"]
        fy = ((ys + spec["offset"]) / period) % 1.0
        fx = ((xs + spec["offset"]) / period) % 1.0
        bars = (fy < bar) | (fx < bar)
        img[np.broadcast_to(bars, (side, side))] = np.asarray(spec["grate"], np.float32)
        # a burner ring under the grate
        r = np.sqrt((ys - spec["burner"][0]) ** 2 + (xs - spec["burner"][1]) ** 2)
        ring = np.abs(r - spec["burner"][2]) < 0.018
        img[ring & ~bars] = np.asarray(spec["grate"], np.float32) * 0.7
    else:  # pragma: no cover - specs come from world.py
        raise ValueError(f"unknown background kind {kind!r}")
    if spec.get("wall") is not None:
        # a back wall of tiles above a horizon line, the counter below
        h = spec["wall"]["horizon"]
        period = spec["wall"]["period"]
        fy = (ys / period) % 1.0
        fx = ((xs + 0.5 * (np.floor(ys / period) % 2) * period) / period) % 1.0
        grout = (np.minimum(fy, 1 - fy) < 0.04) | (np.minimum(fx, 1 - fx) < 0.04)
        wall = np.broadcast_to(np.asarray(spec["wall"]["color"], np.float32), (side, side, 3)).copy()
        wall[np.broadcast_to(grout, (side, side))] *= 0.8
        above = np.broadcast_to(ys < h, (side, side))
        img[above] = wall[above]
    cv.img[:] = img.repeat(2, axis=0).repeat(2, axis=1)


def lighting(img: np.ndarray, spec: dict) -> np.ndarray:
    """Global brightness, a linear light gradient and a colour tint, applied in place.

    img : array, shape (S, S, 3) float32
    """
    side = img.shape[0]
    t = (np.arange(side, dtype=np.float32) + 0.5) / side - 0.5
    a = spec["angle"]
    gx = np.float32(spec["gradient"] * math.cos(a)) * t
    gy = np.float32(spec["gradient"] * math.sin(a)) * t
    grad = (1.0 + gy[:, None, None] + gx[None, :, None]) * np.float32(spec["brightness"])
    img *= grad * np.asarray(spec["tint"], np.float32)
    return img


def downsample(img: np.ndarray) -> np.ndarray:
    """2x2 average pooling: (2s, 2s, 3) -> (s, s, 3). This is the anti-aliasing step."""
    # four strided adds are ~5x faster than reshape(...).mean(axis=(1, 3))
    total = img[0::2, 0::2] + img[1::2, 0::2]
    total += img[0::2, 1::2]
    total += img[1::2, 1::2]
    total *= np.float32(0.25)
    return total
