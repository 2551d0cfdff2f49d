"""Painters for the things in a kitchen scene: cookware and context objects.

Each painter takes a :class:`~atlaswidgets.zoo.kitchen.draw.Canvas` and a spec dict in unit
coordinates (fractions of the image side, sampled in world.py) and returns the canvas box it
painted. Painters consume no randomness: all of it is in the spec, so dropping one object from a
scene leaves every other pixel exactly as it was (the annotation tests rely on this).
"""

from __future__ import annotations

import math

import numpy as np

from .draw import (_HALF_PI, _TWO_PI, Box, Canvas, bump, draw_ellipse, draw_ring, draw_segment,
                   ellipse_sd, fsin, soft, union_box)

# ---- cookware ----

_RIM = 0.06  # rim thickness as a fraction of the rim half-width


def opening(cook: dict) -> tuple[float, float, float, float] | None:
    """The visible inside of an open vessel or tray, (cy, cx, ry, rx) in unit coordinates.

    Context objects placed "inside" are centred here and clipped to it. ``None`` for closed
    cookware (kettles, lidded pots).
    """
    if cook["kind"] == "vessel" and not cook.get("lid"):
        ri = cook["R"] * (1 - _RIM)
        return cook["cy"], cook["cx"], cook["tilt"] * ri, ri
    if cook["kind"] == "tray":
        return cook["cy"], cook["cx"], cook["b"] * 0.8, cook["a"] * 0.85
    return None


def opening_clip(cook: dict, side: int):
    """A coverage function ``clip(ys, xs)`` (canvas pixels) for the cookware's inside."""
    op = opening(cook)
    if op is None:
        return None
    if cook["kind"] == "tray":
        return _rect_clip(cook, side, inset=0.1)
    cy, cx, ry, rx = (v * side for v in op)
    return lambda ys, xs: soft(ellipse_sd(ys, xs, cy, cx, ry, rx))


def _silhouette(ys, xs, cx, centres, widths, tilt):
    """Coverage of a stack of horizontal ellipses (a body of revolution seen from above-front).

    centres, widths : arrays, shape (k,), canvas pixels; each slice is an ellipse of half-width w
    and half-height tilt * w. Per column the union is bounded by the highest top and the lowest
    bottom, which is exact for convex profiles and cheap (work is per column, not per pixel).
    """
    ratio = (xs - cx) / widths[:, None, None]            # (k, 1, w)
    inside = np.abs(ratio) <= 1.0
    half = tilt * widths[:, None, None] * np.sqrt(np.clip(1.0 - ratio ** 2, 0.0, 1.0))
    top = np.where(inside, centres[:, None, None] - half, np.inf).min(axis=0)      # (1, w)
    bottom = np.where(inside, centres[:, None, None] + half, -np.inf).max(axis=0)
    return np.clip(np.minimum(ys - top, bottom - ys) + 0.5, 0.0, 1.0)


def _body_colour(ys, xs, cx, R, colour, light, top, height):
    """Metal body shading: brighter where the surface faces the light, darker towards the base."""
    u = np.clip((xs - cx) / R, -1.0, 1.0)
    v = np.clip((ys - top) / max(height, 1.0), 0.0, 1.0)
    shade = 0.55 + 0.35 * np.sqrt(1.0 - u * u) + 0.2 * light * u - 0.15 * v
    spec = 0.35 * bump((u - 0.45 * light) ** 2, 0.03)             # a vertical specular streak
    return np.asarray(colour, np.float32) * shade[..., None] + spec[..., None]


def _draw_handles(cv: Canvas, cook: dict, S: int) -> None:
    cx, cy, R, t = cook["cx"] * S, cook["cy"] * S, cook["R"] * S, cook["tilt"]
    for h in cook["handles"]:
        side = h["side"]
        if h["type"] == "long":
            p0 = (cy + 0.1 * t * R, cx + side * 0.9 * R)
            p1 = (p0[0] + math.sin(h["angle"]) * h["length"] * R,
                  p0[1] + side * math.cos(h["angle"]) * h["length"] * R)
            draw_segment(cv, p0, p1, h["width"] * R, h["colour"], half_width1=h["width"] * 1.3 * R,
                         track=False)
        else:  # a loop handle riveted to the side
            draw_ring(cv, cy + 0.15 * t * R, cx + side * 1.04 * R, 0.11 * R + 1, 0.15 * R + 1,
                      max(0.06 * R, 1.5), h["colour"], track=False)


def draw_vessel(cv: Canvas, cook: dict) -> None:
    """Frying pan, wok, saucepan or stock pot: a rim ellipse over a body of revolution.

    ``taper`` narrows the base (straight sloped sides), ``round`` bends the profile into a bowl
    (a wok's round bottom); the inside shows a flat floor for low ``round`` and a smooth bowl
    gradient for high ``round``. The shared middle range of these numbers is where a deep frying
    pan and a shallow wok look alike.
    """
    S = cv.side
    cx, cy, R, t = cook["cx"] * S, cook["cy"] * S, cook["R"] * S, cook["tilt"]
    depth = cook["depth"] * R * math.sqrt(1 - t * t)   # foreshortened by the view angle
    r, taper = cook["round"], cook["taper"]
    _draw_handles(cv, cook, S)
    win = cv.window(cy - t * R - 2, cx - R - 2, cy + depth + t * R + 2, cx + R + 2)
    if win is None:
        return
    box, ys, xs = win
    hs = np.linspace(0.0, 1.0, 9, dtype=np.float32)
    widths = R * ((1 - r) * (1 - taper * hs) + r * np.sqrt(np.clip(1 - 0.93 * hs * hs, 0.0, 1.0)))
    cover = _silhouette(ys, xs, cx, cy + hs * depth, widths, t)
    col = _body_colour(ys, xs, cx, R, cook["colour"], cook["light"], cy, depth + t * R)
    cv.paint(box, cover, col, track=False)
    # rim and inside only concern the rows of the rim ellipse
    win = cv.window(cy - t * R - 2, cx - R - 2, cy + t * R + 2, cx + R + 2)
    if win is None:
        return
    box, ys, xs = win
    rim_col = np.clip(np.asarray(cook["colour"], np.float32) * 1.25 + 0.12, 0, 1)
    cv.paint(box, soft(ellipse_sd(ys, xs, cy, cx, t * R, R)), rim_col, track=False)
    if cook.get("lid"):
        _draw_lid(cv, box, ys, xs, cook, cx, cy, R, t)
        return
    ri = R * (1 - _RIM)
    inner = soft(ellipse_sd(ys, xs, cy, cx, t * ri, ri))
    base = np.asarray(cook["inner"], np.float32)
    shade = np.zeros(inner.shape, np.float32)
    if r < 1.0:
        # flat floor: the base disc seen through the opening, lit; the far wall above it darker
        floor = soft(ellipse_sd(ys, xs, cy + 0.85 * depth, cx, t * R * (1 - taper),
                                R * (1 - taper)))
        wall_v = np.clip((ys - (cy - t * ri)) / (2 * t * ri), 0.0, 1.0)
        shade += (1 - r) * (0.6 + 0.2 * wall_v + 0.35 * floor)
    glint = 0.0
    if r > 0.0:
        # bowl: brightness falls smoothly from a lit spot towards the rim
        qy = (ys - cy - 0.25 * t * ri) / (t * ri)
        qx = (xs - cx - 0.2 * cook["light"] * ri) / ri
        q = np.clip(qy * qy + qx * qx, 0.0, 1.0)
        shade += r * (0.5 + 0.6 * (1.0 - q) * np.sqrt(1.0 - q))
        glint = (r * 0.25) * bump(q, 0.09)[..., None]
    cv.paint(box, inner, base * shade[..., None] + glint, track=False)


def _draw_lid(cv, box, ys, xs, cook, cx, cy, R, t):
    lid_col = np.asarray(cook["lid_colour"], np.float32)
    dome = 0.12 * R
    u = np.clip((xs - cx) / R, -1, 1)
    shade = (0.75 + 0.25 * np.sqrt(1 - u * u) + 0.1 * cook["light"] * u)[..., None]
    cv.paint(box, soft(ellipse_sd(ys, xs, cy - 0.4 * dome, cx, t * R * 0.98, R * 0.98)),
             lid_col * shade, track=False)
    draw_ellipse(cv, cy - dome - 0.06 * R, cx, 0.07 * R + 1, 0.14 * R + 1, lid_col * 0.45,
                 track=False)


def draw_kettle(cv: Canvas, cook: dict) -> None:
    """A kettle: rounded body narrowing to a small lid, a spout and an arched top handle."""
    S = cv.side
    cx, cy, R, t = cook["cx"] * S, cook["cy"] * S, cook["R"] * S, cook["tilt"]
    H = cook["height"] * R
    colour = np.asarray(cook["colour"], np.float32)
    side = cook["spout_side"]
    # spout behind the body: from the lower side up and out
    p0 = (cy + 0.65 * H, cx + side * 0.6 * R)
    p1 = (cy + 0.65 * H - 0.75 * R, cx + side * (0.6 + 0.75) * R)
    draw_segment(cv, p0, p1, 0.16 * R, colour * 0.8, half_width1=0.07 * R, track=False)
    draw_ring(cv, cy + 0.05 * H, cx, 0.55 * R, 0.5 * R, max(0.09 * R, 1.5), cook["handle_colour"],
              upper_only=True, track=False)
    win = cv.window(cy - t * R - 2, cx - R - 2, cy + H + t * R + 2, cx + R + 2)
    if win is None:
        return
    box, ys, xs = win
    hs = np.linspace(0.0, 1.0, 9, dtype=np.float32)
    widths = R * (0.45 + 0.55 * fsin(_HALF_PI * np.minimum(hs * 1.6, 1.0)))
    cover = _silhouette(ys, xs, cx, cy + hs * H, widths, t)
    cv.paint(box, cover, _body_colour(ys, xs, cx, R, colour, cook["light"], cy, H), track=False)
    draw_ellipse(cv, cy, cx, t * 0.42 * R, 0.42 * R, np.clip(colour * 1.2 + 0.1, 0, 1),
                 track=False)
    draw_ellipse(cv, cy - 0.06 * R, cx, 0.06 * R + 1, 0.1 * R + 1, cook["handle_colour"],
                 track=False)


def _rect_sd(ys, xs, cy, cx, b, a, angle):
    c, s = math.cos(angle), math.sin(angle)
    dx, dy = xs - cx, ys - cy
    u, v = c * dx + s * dy, -s * dx + c * dy
    return np.maximum(np.abs(u) - a, np.abs(v) - b)


def _rect_clip(cook: dict, side: int, inset: float):
    cy, cx = cook["cy"] * side, cook["cx"] * side
    a, b = cook["a"] * side * (1 - inset), cook["b"] * side * (1 - 2 * inset)
    return lambda ys, xs: soft(_rect_sd(ys, xs, cy, cx, b, a, cook["angle"]))


def draw_tray(cv: Canvas, cook: dict) -> None:
    """A baking tray: a flat rectangle seen from above, with a raised rim and a front edge."""
    S = cv.side
    cx, cy = cook["cx"] * S, cook["cy"] * S
    a, b, ang = cook["a"] * S, cook["b"] * S, cook["angle"]
    r = math.hypot(a, b) + 4
    win = cv.window(cy - r, cx - r, cy + r + 0.04 * S, cx + r)
    if win is None:
        return
    box, ys, xs = win
    colour = np.asarray(cook["colour"], np.float32)
    edge = 0.03 * S
    cv.paint(box, soft(_rect_sd(ys, xs, cy + edge, cx, b, a, ang)), colour * 0.55, track=False)
    cv.paint(box, soft(_rect_sd(ys, xs, cy, cx, b, a, ang)), np.clip(colour * 1.15 + 0.05, 0, 1),
             track=False)
    inset = 0.1
    inner = soft(_rect_sd(ys, xs, cy, cx, b * (1 - 2 * inset), a * (1 - inset), ang))
    shade = 0.8 + 0.2 * np.clip((xs - cx) / a, -1, 1) * cook["light"]
    cv.paint(box, inner, np.asarray(cook["inner"], np.float32) * shade[..., None], track=False)


COOKWARE_PAINTERS = {"vessel": draw_vessel, "kettle": draw_kettle, "tray": draw_tray}


# ---- context objects ----

def draw_noodles(cv: Canvas, obj: dict, clip=None) -> Box | None:
    """A nest of noodles: a golden base with wavy pale-yellow strands, clipped to the nest."""
    S = cv.side
    cy, cx, ry, rx = obj["cy"] * S, obj["cx"] * S, obj["ry"] * S, obj["rx"] * S
    win = cv.window(cy - ry - 1, cx - rx - 1, cy + ry + 1, cx + rx + 1)
    if win is None:
        return None
    box, ys, xs = win
    nest = soft(ellipse_sd(ys, xs, cy, cx, ry, rx))
    if clip is not None:
        nest = nest * clip(ys, xs)
    painted = cv.paint(box, nest, obj["base"], alpha=0.95)
    if painted is None:
        return None
    dy, dx = (ys - cy) / ry, (xs - cx) / rx          # nest-normalised coordinates
    thick = obj["thickness"]                         # strand half-width, fraction of the nest
    scale = min(rx, ry)
    strand = np.asarray(obj["strand"], np.float32)
    for k, (angle, offset, amp, freq, phase) in enumerate(obj["strands"]):
        c, s = math.cos(angle), math.sin(angle)
        along, across = c * dx + s * dy, -s * dx + c * dy
        curve = offset + amp * fsin(freq * along + phase)
        cover = soft((np.abs(across - curve) - thick) * scale) * nest
        tone = 1.0 if k % 2 == 0 else 0.88            # neighbouring strands catch light differently
        cv.paint(box, cover, np.clip(strand * tone, 0, 1), track=False)
    return painted


def _wobble(dy, dx, dist, terms) -> np.ndarray:
    """sum a * cos(k * theta + p) over (k, a, p) terms, theta the pixel's angle around the centre.

    Uses cos(k theta) + i sin(k theta) = ((dx + i dy) / dist) ** k, so no arctan2 is needed.
    """
    inv = 1.0 / np.maximum(dist, 1e-6)
    c1, s1 = dx * inv, dy * inv
    ck, sk, k_now = c1, s1, 1
    total = np.zeros_like(dist)
    for k, a, p in terms:
        while k_now < k:
            ck, sk, k_now = ck * c1 - sk * s1, sk * c1 + ck * s1, k_now + 1
        total += a * (ck * math.cos(p) - sk * math.sin(p))
    return total


def draw_eggs(cv: Canvas, obj: dict, clip=None) -> Box | None:
    """One or more fried eggs: a wobbly white with a yolk, lying flat (squashed by the tilt)."""
    S = cv.side
    painted = None
    for egg in obj["eggs"]:
        cy, cx, r, squash = egg["cy"] * S, egg["cx"] * S, egg["r"] * S, egg["squash"]
        win = cv.window(cy - 1.3 * r, cx - 1.3 * r, cy + 1.3 * r, cx + 1.3 * r)
        if win is None:
            continue
        box, ys, xs = win
        dy, dx = (ys - cy) / squash, xs - cx
        dist = np.sqrt(dx * dx + dy * dy)
        rho = r * (1.0 + _wobble(dy, dx, dist, egg["wobble"]))
        cover = soft((dist - rho) * squash)
        if clip is not None:
            cover = cover * clip(ys, xs)
        painted = union_box(painted, cv.paint(box, cover, egg["white"]))
        yc = (cy + egg["yolk"][0] * r * squash, cx + egg["yolk"][1] * r)
        yr = 0.38 * r
        yolk = soft(ellipse_sd(ys, xs, yc[0], yc[1], yr * max(squash, 0.7), yr))
        if clip is not None:
            yolk = yolk * clip(ys, xs)
        painted = union_box(painted, cv.paint(box, yolk, egg["yolk_colour"]))
        shine = soft(ellipse_sd(ys, xs, yc[0] - 0.3 * yr, yc[1] - 0.3 * yr, 0.25 * yr, 0.3 * yr))
        cv.paint(box, shine * (yolk > 0), (1.0, 0.95, 0.75), alpha=0.7, track=False)
    return painted


def draw_steam(cv: Canvas, obj: dict, clip=None) -> Box | None:
    """Pale translucent wisps rising and swaying, widest and faintest at the top."""
    S = cv.side
    painted = None
    for w in obj["wisps"]:
        x0, ybase, height = w["x"] * S, w["y"] * S, w["height"] * S
        amp, width = w["amp"] * S, w["width"] * S
        win = cv.window(ybase - height, x0 - amp - 2 * width, ybase, x0 + amp + 2 * width)
        if win is None:
            continue
        box, ys, xs = win
        f = np.clip((ybase - ys) / height, 0.0, 1.0)                # 0 at the base, 1 at the top
        centre = x0 + amp * fsin(w["freq"] * f * _TWO_PI + w["phase"])
        half = width * (0.5 + f)
        fade = np.sqrt(np.maximum(fsin(np.float32(np.pi) * f), 0.0))   # faint at base and top
        cover = soft(np.abs(xs - centre) - half) * fade * w["alpha"]
        painted = union_box(painted, cv.paint(box, cover, (0.96, 0.96, 0.97)))
    return painted


def draw_chopsticks(cv: Canvas, obj: dict, clip=None) -> Box | None:
    """Two thin sticks, nearly parallel, thicker at the back end."""
    S = cv.side
    painted = None
    for p0, p1 in obj["sticks"]:
        a = (p0[0] * S, p0[1] * S)
        b = (p1[0] * S, p1[1] * S)
        hw = obj["width"] * S
        painted = union_box(painted, draw_segment(cv, a, b, hw * 1.3, obj["colour"],
                                                  half_width1=hw * 0.7, clip=clip))
    return painted


def draw_tomato(cv: Canvas, obj: dict, clip=None) -> Box | None:
    """A red tomato with a highlight and a green calyx."""
    S = cv.side
    cy, cx, r = obj["cy"] * S, obj["cx"] * S, obj["r"] * S
    painted = draw_ellipse(cv, cy, cx, 0.9 * r, r, obj["colour"], clip=clip)
    if painted is None:
        return None
    draw_ellipse(cv, cy - 0.35 * r, cx - 0.35 * r, 0.2 * r + 0.5, 0.28 * r + 0.5,
                 (1.0, 0.8, 0.75), alpha=0.6, clip=clip, track=False)
    for k in range(5):
        ang = 2 * np.pi * k / 5 + obj["calyx"]
        leaf = draw_ellipse(cv, cy - 0.75 * r + 0.2 * r * math.sin(ang), cx + 0.3 * r * math.cos(ang),
                            0.1 * r + 0.5, 0.28 * r + 0.5, (0.2, 0.5, 0.15), angle=ang, clip=clip)
        painted = union_box(painted, leaf)
    return painted


CONTEXT_PAINTERS = {"noodles": draw_noodles, "eggs": draw_eggs, "steam": draw_steam,
                    "chopsticks": draw_chopsticks, "tomato": draw_tomato}
