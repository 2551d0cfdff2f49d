"""Random image transformations applied before every forward pass of a feature visualisation.

An image that excites a unit only at one exact pixel alignment is an adversarial pattern, not a
feature; asking that it keep working under small random shifts, zooms and rotations is what makes
the optimised picture robust and readable. Every transform is a callable
``t(images, generator) -> images`` on a float batch (n, 3, h, w), differentiable, drawing a
*separate* random setting for each image of the batch from ``generator`` (a CPU torch.Generator),
so a batch of icons behaves like icons rendered one at a time, and a seeded run repeats exactly.

Transforms compose with ``compose(...)`` (or a list). ``default_transforms(size)`` scales the
usual recipe (pad, jitter, scale, rotate, jitter) to the image size.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

__all__ = ["Transform", "pad", "jitter", "random_scale", "random_rotate", "compose",
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


def _int_arg(name: str, v, lo: int = 0) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < lo:
        raise ValueError(f"{name} must be an int >= {lo}, got {v!r}.")
    return v


def pad(width: int, value: float = 0.5) -> Transform:
    """Pad every side by ``width`` pixels of constant grey ``value`` (room for jitter and rotation)."""
    _int_arg("width", width)

    def fn(x, generator):
        return F.pad(x, (width,) * 4, mode="constant", value=value) if width else x

    return Transform(fn, f"pad({width})")


def jitter(d: int) -> Transform:
    """Crop a random (h - d) x (w - d) window per image: shifts of 0..d pixels, d px smaller."""
    _int_arg("d", d)

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


def _affine(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    grid = F.affine_grid(theta.to(x.device, x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _choose(values: torch.Tensor, n: int, generator) -> torch.Tensor:
    return values[torch.randint(0, len(values), (n,), generator=generator)]


def random_scale(scales: Sequence[float]) -> Transform:
    """Zoom each image about its centre by a factor drawn from ``scales`` (size unchanged)."""
    vals = torch.tensor([float(s) for s in scales], dtype=torch.float64)
    if vals.numel() == 0 or not torch.isfinite(vals).all() or (vals <= 0).any():
        raise ValueError(f"scales must be a non-empty list of positive numbers, got {list(scales)!r}.")

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
    vals = torch.tensor([float(a) for a in degrees], dtype=torch.float64)
    if vals.numel() == 0 or not torch.isfinite(vals).all():
        raise ValueError(f"degrees must be a non-empty list of finite angles, got {list(degrees)!r}.")

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


def default_transforms(size: int) -> Transform:
    """The usual robustness recipe, scaled to ``size`` px images; output stays ``size`` px.

    At 224 px: pad 12, jitter 12, scale 0.9..1.1, rotate -10..10 degrees (plain angles weighted
    up), jitter 12: the shifts are what the feature-visualisation literature uses for ImageNet
    models. Pixel amounts shrink with the image (3 px at 64 px), because a 12 px shift would be a
    fifth of a kitchen image. The pad and the two jitters cancel, so the model sees the size it
    was given and a "centre" position means the same grid cell every step.
    """
    _int_arg("size", size, lo=8)
    p = max(1, round(12 * size / 224))
    scales = [1.0 + (i - 5) / 50.0 for i in range(11)]
    angles = list(range(-10, 11)) + [0] * 5
    return compose(pad(p), jitter(p), random_scale(scales), random_rotate(angles), jitter(p))


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
