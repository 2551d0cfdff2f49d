"""Image parameterisations for feature visualisation: what the optimiser actually changes.

Each builder returns ``(params, image_fn)``: a list of leaf tensors for the optimiser and a function
that maps them to a batch of images, float tensor shape (n, 3, h, w) in [0, 1].

- ``fft_image``: the image is the inverse real FFT of a learned spectrum whose amplitudes are
  scaled by 1 / frequency, so every frequency band starts with (and is stepped with) roughly equal
  energy in the image. Plain pixels let the optimiser pile up high-frequency patterns that excite a
  network without looking like anything; the 1/f scaling is the natural-image prior that avoids it.
- ``pixel_image``: one parameter per pixel, the baseline.

Both optionally decorrelate colour: the three channels the optimiser sees are the principal
components of natural-image colour, mapped back to RGB with a fixed matrix, so a step changes
brightness and hue independently, as natural images do. A sigmoid puts pixels into [0, 1].
"""

from __future__ import annotations

from typing import Callable

import torch

from ..cache.checks import int_at_least

__all__ = ["fft_image", "pixel_image", "make_image", "PARAMS"]

PARAMS = ("fft", "pixel")

# Square root of the RGB colour covariance of ImageNet photos (from its eigen-decomposition):
# column k is the RGB change of one unit along principal colour component k (the first is
# brightness, the other two are opponent hues). A fact about natural-image statistics.
_COLOR_SQRT = torch.tensor(
    [[0.26, 0.09, 0.02],
     [0.27, 0.00, -0.05],
     [0.27, -0.09, 0.03]],
    dtype=torch.float64,
)
# scaled so that the largest column has unit length: decorrelated channels keep unit scale
_COLOR = (_COLOR_SQRT / _COLOR_SQRT.norm(dim=0).max()).float()

ImageFn = Callable[[], torch.Tensor]


def _check_shape(n: int, h: int, w: int) -> None:
    for name, v in (("n", n), ("h", h), ("w", w)):
        int_at_least(v, name, 1)


def _decorrelate(t: torch.Tensor) -> torch.Tensor:
    """Map decorrelated colour channels (n, 3, h, w) to RGB logits with the fixed colour matrix."""
    return torch.einsum("rc,nchw->nrhw", _COLOR.to(t.device, t.dtype), t)


def _randn(shape, sd: float, generator: torch.Generator | None, device) -> torch.Tensor:
    # drawn on the CPU from the caller's generator, so the start is the same on every device
    x = torch.randn(shape, generator=generator, dtype=torch.float32) * sd
    return x.to(device).requires_grad_(True)


def _frequency_scale(h: int, w: int, decay_power: float) -> torch.Tensor:
    """Amplitude of each rfft2 coefficient, shape (h, w // 2 + 1): 1 / |f|^decay_power.

    |f| is in cycles per pixel. The constant term and the lowest frequencies are capped at the
    lowest frequency the image can hold (1 / max(h, w)), so nothing is infinite.
    """
    fy = torch.fft.fftfreq(h)[:, None]
    fx = torch.fft.rfftfreq(w)[None, :]
    freq = torch.sqrt(fx * fx + fy * fy)
    return 1.0 / freq.clamp_min(1.0 / max(h, w)) ** decay_power


def fft_image(
    n: int,
    h: int,
    w: int | None = None,
    *,
    sd: float = 0.01,
    decay_power: float = 1.0,
    decorrelate: bool = True,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> tuple[list[torch.Tensor], ImageFn]:
    """A batch of images parameterised by their Fourier spectrum, 1/f scaled.

    n, h, w : batch size, height and width (w defaults to h)
    sd : standard deviation of the random start of each spectrum coefficient
    decay_power : the exponent of the 1/f amplitude scaling (0 = white noise, like pixels)
    decorrelate : optimise decorrelated colour components instead of RGB
    generator : CPU torch.Generator for the random start (seeded for reproducible images)
    Returns (params, image_fn): params is ``[spectrum]``, float tensor shape (n, 3, h, w//2+1, 2);
    image_fn() gives float tensor shape (n, 3, h, w) in [0, 1].
    """
    w = h if w is None else w
    _check_shape(n, h, w)
    spectrum = _randn((n, 3, h, w // 2 + 1, 2), sd, generator, device)
    scale = _frequency_scale(h, w, decay_power).to(spectrum.device)

    def image_fn() -> torch.Tensor:
        coeffs = torch.view_as_complex(spectrum) * scale
        # "ortho" keeps a coefficient's effect on pixels independent of the image size, so the
        # same learning rate suits 64 px and 224 px images
        t = torch.fft.irfft2(coeffs, s=(h, w), norm="ortho")
        # the 1/f scale makes the raw image about 4x too contrasty for a sigmoid's useful range
        t = t / 4.0
        if decorrelate:
            t = _decorrelate(t)
        return torch.sigmoid(t)

    return [spectrum], image_fn


def pixel_image(
    n: int,
    h: int,
    w: int | None = None,
    *,
    sd: float = 0.01,
    decorrelate: bool = True,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> tuple[list[torch.Tensor], ImageFn]:
    """A batch of images with one parameter per pixel and channel (the unregularised baseline).

    Returns (params, image_fn): params is ``[pixels]``, float tensor shape (n, 3, h, w);
    image_fn() gives float tensor shape (n, 3, h, w) in [0, 1].
    """
    w = h if w is None else w
    _check_shape(n, h, w)
    pixels = _randn((n, 3, h, w), sd, generator, device)

    def image_fn() -> torch.Tensor:
        t = _decorrelate(pixels) if decorrelate else pixels
        return torch.sigmoid(t)

    return [pixels], image_fn


def make_image(
    param: str | Callable[..., tuple[list[torch.Tensor], ImageFn]],
    n: int,
    h: int,
    w: int | None = None,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> tuple[list[torch.Tensor], ImageFn]:
    """Build a parameterisation by name ("fft", "pixel") or from a builder with fft_image's signature."""
    if isinstance(param, str):
        builders = {"fft": fft_image, "pixel": pixel_image}
        if param not in builders:
            raise ValueError(
                f"Unknown parameterisation {param!r}; use one of {list(PARAMS)}, or pass a "
                "function (n, h, w, generator=, device=) -> (params, image_fn)."
            )
        return builders[param](n, h, w, generator=generator, device=device)
    if callable(param):
        out = param(n, h, w, generator=generator, device=device)
        if not (isinstance(out, tuple) and len(out) == 2 and callable(out[1])):
            raise TypeError("A custom parameterisation must return (params, image_fn).")
        return out
    raise TypeError(f"param must be one of {list(PARAMS)} or a callable, got {type(param).__name__}.")
