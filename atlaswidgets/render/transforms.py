"""Random image transformations applied before every forward pass of a feature visualisation.

An image that excites a unit only at one exact pixel alignment is an adversarial pattern, not a
feature; asking that it keep working under small random shifts, zooms and rotations is what makes
the optimised picture robust and readable. Every transform is a callable
``t(images, generator) -> images`` on a float batch (n, 3, h, w), differentiable, drawing a
*separate* random setting for each image of the batch from ``generator`` (a CPU torch.Generator),
so a batch of icons behaves like icons rendered one at a time, and a seeded run repeats exactly.

Transforms compose with ``compose(...)`` (or a list). ``default_transforms(size)`` scales the
usual recipe (pad, jitter, scale, rotate, jitter) to the image size and applies it as one
``random_affine``: a single bilinear resampling per step instead of a pad, two crops and two
resamplings, which is both cheaper and sharper.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from ..cache.checks import int_at_least, non_negative_int, number

__all__ = ["Transform", "pad", "jitter", "random_scale", "random_rotate", "random_affine", "compose",
           "default_transforms", "as_transform"]


class Transform:
    """A named random image transformation; ``repr`` is its readable description (and cache key)."""

    def __init__(self, fn: Callable[[torch.Tensor, torch.Generator | None], torch.Tensor], text: str):
        self._fn = fn
        self._text = text

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return self._fn(images, generator)

    def __repr__(self) -> str:
        return self._text


def pad(width: int, value: float = 0.5) -> Transform:
    """Pad every side by ``width`` pixels of constant grey ``value`` (room for jitter and rotation)."""
    width = non_negative_int(width, "width")

    def fn(x, generator):
        return F.pad(x, (width,) * 4, mode="constant", value=value) if width else x

    return Transform(fn, f"pad({width})")


def jitter(d: int) -> Transform:
    """Crop a random (h - d) x (w - d) window per image: shifts of 0..d pixels, d px smaller."""
    d = non_negative_int(d, "d")

    def fn(x, generator):
        if d == 0:
            return x
        n, _, h, w = x.shape
        if d >= min(h, w):
            raise ValueError(f"jitter({d}) needs images larger than {d} px, got {h}x{w}.")
        oy = torch.randint(0, d + 1, (n,), generator=generator).tolist()
        ox = torch.randint(0, d + 1, (n,), generator=generator).tolist()
        # one slice per image, stacked: the same pixels as a gather with per-image indices, but
        # its backward is plain copies, where the gather's was a scatter-add (index_put_ with
        # accumulate) that took ~8% of a batched icon render on CPU
        # (unbind, not x[i]: each x[i]'s backward would make a zero gradient of the whole batch)
        return torch.stack([xi[:, a : a + h - d, b : b + w - d] for xi, a, b in zip(x.unbind(0), oy, ox)])

    return Transform(fn, f"jitter({d})")


def _affine(x: torch.Tensor, theta: torch.Tensor, fill: float | None = None) -> torch.Tensor:
    """Resample ``x`` through per-image affine maps ``theta`` (n, 2, 3), output -> input in the
    -1..1 coordinates of ``affine_grid``. Outside the image: the border pixels, or ``fill``."""
    grid = F.affine_grid(theta.to(x.device, x.dtype), list(x.shape), align_corners=False)
    if fill is None:
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    # sampling (x - fill) with zeros outside puts fill outside, as a constant pad would
    out = F.grid_sample(x - fill, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out + fill


def _choose(values: torch.Tensor, n: int, generator) -> torch.Tensor:
    return values[torch.randint(0, len(values), (n,), generator=generator)]


def _values(name: str, values: Sequence[float], positive: bool = False) -> torch.Tensor:
    try:
        vals = torch.tensor([float(v) for v in values], dtype=torch.float64)
    except (TypeError, ValueError):
        vals = torch.empty(0)
    if vals.numel() == 0 or not torch.isfinite(vals).all() or (positive and (vals <= 0).any()):
        what = "positive numbers" if positive else "finite numbers"
        raise ValueError(f"{name} must be a non-empty list of {what}, got {values!r}.")
    return vals


def random_scale(scales: Sequence[float]) -> Transform:
    """Zoom each image about its centre by a factor drawn from ``scales`` (size unchanged)."""
    vals = _values("scales", scales, positive=True)

    def fn(x, generator):
        s = _choose(vals, x.shape[0], generator)
        theta = torch.zeros(x.shape[0], 2, 3, dtype=torch.float64)
        # the grid maps output to input coordinates, so a zoom by s samples a 1/s window
        theta[:, 0, 0] = 1.0 / s
        theta[:, 1, 1] = 1.0 / s
        return _affine(x, theta)

    lo, hi = float(vals.min()), float(vals.max())
    return Transform(fn, f"random_scale({lo:g}..{hi:g}, {len(vals)} values)")


def random_rotate(degrees: Sequence[float]) -> Transform:
    """Rotate each image about its centre by an angle (degrees) drawn from ``degrees``."""
    vals = _values("degrees", degrees)

    def fn(x, generator):
        a = _choose(vals, x.shape[0], generator) * (math.pi / 180.0)
        theta = torch.zeros(x.shape[0], 2, 3, dtype=torch.float64)
        theta[:, 0, 0] = torch.cos(a)
        theta[:, 0, 1] = -torch.sin(a)
        theta[:, 1, 0] = torch.sin(a)
        theta[:, 1, 1] = torch.cos(a)
        return _affine(x, theta)

    lo, hi = float(vals.min()), float(vals.max())
    return Transform(fn, f"random_rotate({lo:g}..{hi:g} deg, {len(vals)} values)")


def compose(*transforms) -> Transform:
    """Apply transforms left to right; accepts Transforms, plain callables (x, generator) and lists."""
    flat: list = []
    for t in transforms:
        if isinstance(t, (list, tuple)):
            flat.extend(t)
        else:
            flat.append(t)
    for t in flat:
        if not callable(t):
            raise TypeError(f"every transform must be callable (images, generator) -> images, got {t!r}.")

    def fn(x, generator):
        for t in flat:
            x = t(x, generator)
        return x

    return Transform(fn, "compose(" + ", ".join(repr(t) for t in flat) + ")")


def random_affine(shift: int = 0, scales: Sequence[float] = (1.0,), degrees: Sequence[float] = (0.0,),
                  fill: float = 0.5) -> Transform:
    """Shift, zoom, rotate and shift again each image, in one bilinear resampling.

    The same random settings as ``compose(pad(shift, fill), jitter(shift), random_scale(scales),
    random_rotate(degrees), jitter(shift))``, drawn from the generator in the same order, and the
    same size out as in; but the five steps are one affine map, so each step of a render samples
    the image once (one interpolation blurs less than two) and autograd has one op to go back
    through instead of a pad, two crops of every image and two resamplings. Pixels from outside
    the image are ``fill``. With ``scales=[1]`` and ``degrees=[0]`` it equals that composition.
    """
    shift = non_negative_int(shift, "shift")
    zoom = _values("scales", scales, positive=True)
    turn = _values("degrees", degrees)
    number(fill, "fill")

    def fn(x, generator):
        n, _, h, w = x.shape
        if shift >= min(h, w):
            raise ValueError(f"random_affine(shift={shift}) needs images larger than {shift} px, got {h}x{w}.")
        # the composition's draws, in its order: first crop (y, x), zoom, angle, second crop (y, x)
        before = _shifts(n, shift, generator)
        s = _choose(zoom, n, generator)
        a = _choose(turn, n, generator) * (math.pi / 180.0)
        after = _shifts(n, shift, generator)
        # in pixels about the centre, output -> input: p_in = A (p_out + after) + before, with
        # A = rotation / zoom and each crop offset centred (offset - shift / 2)
        cos, sin = torch.cos(a) / s, torch.sin(a) / s
        A = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)
        t = (A @ after[:, :, None])[:, :, 0] + before
        # affine_grid works in coordinates where the image spans -1..1 on each axis
        half = torch.tensor([w / 2.0, h / 2.0], dtype=torch.float64)
        theta = torch.cat([A * half[None, :] / half[:, None], (t / half)[:, :, None]], dim=2)
        return _affine(x, theta, fill)

    text = (f"random_affine(shift {shift}, scale {float(zoom.min()):g}..{float(zoom.max()):g} "
            f"({len(zoom)} values), rotate {float(turn.min()):g}..{float(turn.max()):g} deg "
            f"({len(turn)} values), fill {fill:g})")
    return Transform(fn, text)


def _shifts(n: int, shift: int, generator) -> torch.Tensor:
    """(n, 2) crop offsets (x, y) in 0..shift, centred, as float64: jitter's draws (y first)."""
    oy = torch.randint(0, shift + 1, (n,), generator=generator)
    ox = torch.randint(0, shift + 1, (n,), generator=generator)
    return torch.stack([ox, oy], dim=1).double() - shift / 2.0


def default_transforms(size: int) -> Transform:
    """The usual robustness recipe, scaled to ``size`` px images; output stays ``size`` px.

    At 224 px: pad 12, jitter 12, scale 0.9..1.1, rotate -10..10 degrees (plain angles weighted
    up), jitter 12: the shifts are what the feature-visualisation literature uses for ImageNet
    models. Pixel amounts shrink with the image (3 px at 64 px), because a 12 px shift would be a
    fifth of a kitchen image. The pad and the two jitters cancel, so the model sees the size it
    was given and a "centre" position means the same grid cell every step. All of it is one
    ``random_affine`` resampling.
    """
    size = int_at_least(size, "size", 8)
    p = max(1, round(12 * size / 224))
    scales = [1.0 + (i - 5) / 50.0 for i in range(11)]
    angles = list(range(-10, 11)) + [0] * 5
    return random_affine(p, scales, angles)


def as_transform(transforms, size: int) -> Callable:
    """Normalise render()'s ``transforms`` argument: "default", None / [] (none), a callable, a list."""
    if isinstance(transforms, str):
        if transforms != "default":
            raise ValueError(f'transforms must be "default", None, a callable or a list; got {transforms!r}.')
        return default_transforms(size)
    if transforms is None:
        return Transform(lambda x, g: x, "none")
    if isinstance(transforms, (list, tuple)):
        return compose(*transforms)
    if callable(transforms):
        return transforms
    raise TypeError(f"transforms must be \"default\", None, a callable or a list, got {type(transforms).__name__}.")
