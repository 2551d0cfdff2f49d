"""Feature visualisation: optimise a batch of images so that an objective on a model's layers grows.

``render(model, objective, size=...)`` is the one verb. The pieces it joins are plain and
replaceable: a parameterisation (``param``: how pixels are made from parameters), random
``transforms`` (robustness), an ``objective`` (what to maximise) and Adam. Hooks exist only inside
the cache's ``hooks()`` context manager, so a failure mid-run leaves the user's model clean; the
model's own parameters get no gradients, and its train/eval mode is restored afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn

from ..cache.checks import int_at_least, int_in_range, number, one_of, random_seed
from ..cache.hooks import eval_mode, forward_layers, model_device, model_dtype, on_device, resolve_layers
from .objectives import Objective
from .param import make_image
from .transforms import as_transform

__all__ = ["Rendered", "render"]


@dataclass(repr=False)
class Rendered:
    """Result of ``render``.

    images : tensor, shape (n, 3, size, size): uint8, or float in [0, 1] with ``output="float"``
    values : float32 array, shape (n,), the objective of each final image as shown (quantised to
        uint8, no transforms), which is what the picture actually does to the model
    objective : the objective's description
    """

    images: torch.Tensor
    values: np.ndarray
    objective: str

    def __repr__(self) -> str:
        return (f"Rendered({len(self.images)} images {tuple(self.images.shape[1:])} "
                f"{self.images.dtype}, objective {self.objective}, values "
                f"{np.array2string(self.values[:4], precision=3)}{'...' if len(self.values) > 4 else ''})")


def model_input(model: nn.Module, images: torch.Tensor, normalize: Callable | None) -> torch.Tensor:
    """Images in [0, 1] as the model takes them: on its device, normalised, in its dtype (a half
    model gets half images). Differentiable, so the gradient reaches float32 parameters."""
    # device, then normalize (it may hold tensors on the model's device), then dtype: one lookup each
    x = images.to(model_device(model))
    x = normalize(x) if normalize is not None else x
    dtype = model_dtype(model)
    return x.to(dtype) if dtype is not None else x


MAX_SIZE = 2048


def render(
    model: nn.Module,
    objective: Objective,
    *,
    size: int,
    param: str | Callable = "fft",
    steps: int = 256,
    lr: float = 0.05,
    transforms="default",
    seed: int = 0,
    device: torch.device | str | None = None,
    batch: int | None = None,
    normalize: Callable[[torch.Tensor], torch.Tensor] | None = None,
    output: str = "uint8",
    callback: Callable[[int], None] | None = None,
) -> Rendered:
    """Optimise ``batch`` images of ``size`` x ``size`` px so that ``objective`` grows.

    Parameters
    ----------
    model : torch.nn.Module taking images (n, 3, size, size) (after ``normalize``)
    objective : an Objective (``atlaswidgets.render.objectives``); one built for n entries (n
        channels or directions) renders n images, image i for entry i
    size : side of the images in pixels, 8 to 2048
    param : "fft" (decorrelated 1/f Fourier image), "pixel", or a builder (see ``param.make_image``)
    steps, lr : Adam steps and learning rate
    transforms : "default" (``default_transforms(size)``), None, a callable (images, generator)
        -> images, or a list of them
    seed : seeds the random start and the transforms; the same seed gives identical images on CPU
    device : where to run: "cuda", "cpu", or None for CUDA when available, else where the model
        is. A model elsewhere is moved there for the call and back afterwards, as ``capture`` does
    batch : number of images when the objective fits any batch (default 1)
    normalize : maps [0, 1] images to what the model expects (e.g. ImageNet mean/std), or None
    output : "uint8" or "float"
    callback : called with the number of steps done after every step (a progress bar's update);
        an exception it raises stops the run there (how a widget cancels a render)

    Returns
    -------
    Rendered with images and the objective value each final image reaches.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}.")
    if not isinstance(objective, Objective):
        raise TypeError(f"objective must be an Objective (see atlaswidgets.render.objectives), got "
                        f"{type(objective).__name__}.")
    # memory grows with size**2 through every layer up to the objective's: 2048 px already takes
    # gigabytes per image on a ResNet, and an unbounded size would try to allocate terabytes
    size = int_in_range(size, "size", 8, MAX_SIZE, "pixels; feature vis is usually 64-512 px")
    steps = int_at_least(steps, "steps", 1)
    seed = random_seed(seed)
    number(lr, "lr", 0, low_open=True)
    one_of(output, "output", ("uint8", "float"))
    if normalize is not None and not callable(normalize):
        raise TypeError("normalize must be a callable images -> images, or None.")
    if callback is not None and not callable(callback):
        raise TypeError("callback must be a callable (steps done) -> None, or None.")
    n = _batch_size(objective, batch)
    layers = tuple(resolve_layers(model, list(objective.layers)))
    transform = as_transform(transforms, size)
    generator = torch.Generator().manual_seed(seed)

    def values_of(images: torch.Tensor) -> torch.Tensor:
        vals = objective(forward_layers(model, layers, model_input(model, images, normalize)))
        if vals.ndim == 0:
            vals = vals.expand(n)
        if vals.shape != (n,):
            raise ValueError(f"The objective gave shape {tuple(vals.shape)}; it must give one value "
                             f"per image, shape ({n},).")
        return vals

    # eval: batch statistics would couple the images of a batch; the model's place and each
    # submodule's mode come back after
    with on_device(model, device) as dev, eval_mode(model):
        params, image_fn = make_image(param, n, size, generator=generator, device=dev)
        optimizer = torch.optim.Adam(params, lr=lr)
        with torch.enable_grad():
            for step in range(steps):
                optimizer.zero_grad(set_to_none=True)
                vals = values_of(transform(image_fn(), generator))
                if step == 0:
                    _check_differentiable(vals, objective)
                if not torch.isfinite(vals).all():
                    raise ValueError(f"The objective became NaN or infinite at step {step}; lower lr "
                                     f"(now {lr}) or check the model for unstable operations.")
                grads = torch.autograd.grad(-vals.sum(), params)
                for p, g in zip(params, grads):
                    p.grad = g
                optimizer.step()
                if callback is not None:
                    callback(step + 1)
        with torch.no_grad():
            final = image_fn()
            shown = (final * 255).round().clamp(0, 255).to(torch.uint8)
            values = values_of(shown.float() / 255)
    images = shown.cpu() if output == "uint8" else final.detach().cpu()
    return Rendered(images, values.float().cpu().numpy(), objective.description)


def _batch_size(objective: Objective, batch) -> int:
    if batch is not None:
        batch = int_at_least(batch, "batch", 1)
    if objective.batch is not None:
        if batch is not None and batch != objective.batch:
            raise ValueError(f"batch={batch} but the objective is built for {objective.batch} images "
                             "(one per channel / direction); leave batch out or make them agree.")
        return objective.batch
    return batch or 1


def _check_differentiable(vals: torch.Tensor, objective: Objective) -> None:
    if not vals.requires_grad:
        raise ValueError(
            f"The objective {objective.description} does not depend differentiably on the image: "
            "the model's output at that layer carries no gradient (a detach(), no_grad or "
            "integer step inside the model). Pick a layer that autograd can reach."
        )
