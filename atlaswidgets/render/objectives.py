"""What a feature visualisation maximises: objectives over a model's layer activations.

An ``Objective`` maps the recorded layer outputs of one forward pass (a dict layer name -> tensor,
shape (n, C, H, W) for conv layers or (n, C)) to one value per image, shape (n,), to be maximised.
Objectives compose with ``+``, ``-``, unary ``-`` and ``*`` / ``/`` by a number, and their ``repr``
reads like the formula (``channel('block4', 7) - 0.5 * diversity('block4')``).

Objectives are batched: one built from a list of channels or a (n, C) array of directions applies
entry i to image i of the batch, so many icons optimise in one forward and backward pass.

``position`` picks where in a conv layer's grid the objective looks: None averages over all
positions, "center" takes position (H // 2, W // 2) (what an atlas icon needs: the cell's mean
activation was measured at single positions), and (y, x) takes that position.
"""

from __future__ import annotations

from typing import Callable, Sequence, Union

import numpy as np
import torch

from ..cache.checks import is_int, is_number, non_negative_int, number
from ..cache.sampling import vit_grid

__all__ = ["Objective", "channel", "neuron", "direction", "icon", "diversity", "whitening",
           "icon_value", "layer_vectors"]

Position = Union[None, str, Sequence[int]]


class Objective:
    """A per-image value to maximise, computed from recorded layer outputs.

    fn : acts dict -> tensor, shape (n,) (or a scalar, broadcast over the batch)
    layers : the layer names ``fn`` reads (render hooks exactly these)
    description : readable formula
    batch : the number of images the objective is built for, or None when it fits any batch
    """

    def __init__(self, fn: Callable[[dict], torch.Tensor], layers: Sequence[str], description: str,
                 batch: int | None = None):
        self._fn = fn
        self.layers = tuple(dict.fromkeys(layers))
        self.description = description
        self.batch = batch
        self._sum = False  # a sum or difference needs brackets inside a product

    def __call__(self, acts: dict) -> torch.Tensor:
        return self._fn(acts)

    def __repr__(self) -> str:
        return self.description

    # ---- algebra
    def _join(self, other: "Objective", sign: float, op: str) -> "Objective":
        if not isinstance(other, Objective):
            return NotImplemented
        if self.batch is not None and other.batch is not None and self.batch != other.batch:
            raise ValueError(
                f"Cannot combine objectives built for {self.batch} and {other.batch} images; "
                "give both the same number of channels / directions."
            )
        a, b = self._fn, other._fn
        batch = self.batch if self.batch is not None else other.batch
        text = other.description
        if op == "-" and other._sum:  # a - (b + c), not a - b + c
            text = f"({text})"
        out = Objective(lambda acts: a(acts) + sign * b(acts), self.layers + other.layers,
                        f"{self.description} {op} {text}", batch)
        out._sum = True
        return out

    def __add__(self, other):
        return self._join(other, 1.0, "+")

    def __radd__(self, other):
        if isinstance(other, (int, float)) and other == 0:  # lets sum([...]) work
            return self
        return NotImplemented

    def __sub__(self, other):
        return self._join(other, -1.0, "-")

    def __neg__(self):
        f = self._fn
        text = f"({self.description})" if self._sum else self.description
        return Objective(lambda acts: -f(acts), self.layers, f"-{text}", self.batch)

    def __mul__(self, k):
        if not is_number(k) or not np.isfinite(k):
            return NotImplemented
        f = self._fn
        text = f"({self.description})" if self._sum else self.description
        return Objective(lambda acts: k * f(acts), self.layers, f"{k:g} * {text}", self.batch)

    __rmul__ = __mul__

    def __truediv__(self, k):
        if not is_number(k) or k == 0 or not np.isfinite(k):
            return NotImplemented
        return self * (1.0 / k)


# ----------------------------------------------------------------------------- helpers


def _output(acts: dict, layer: str, prefix_tokens: int | None = None) -> torch.Tensor:
    """The layer's output as (n, C, H, W) or (n, C); a ViT block's (n, T, D) becomes its patch
    grid (n, D, h, w), its first ``prefix_tokens`` (CLS, registers) left out, as capture does."""
    out = acts[layer]
    if isinstance(out, (tuple, list)):  # some modules return (tensor, extras)
        out = out[0]
    if isinstance(out, torch.Tensor) and out.ndim == 3:
        return vit_grid(layer, out, prefix_tokens)
    if not isinstance(out, torch.Tensor) or out.ndim not in (2, 4):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(
            f"Layer {layer!r} gives {shape}; objectives need an output of shape (n, C, H, W), "
            "(n, C) or a ViT block's (n, T, D). Pick a conv, linear or ViT block layer."
        )
    return out


def _check_prefix(prefix_tokens: int | None) -> int | None:
    return None if prefix_tokens is None else non_negative_int(prefix_tokens, "prefix_tokens",
                                                                 "leading non-patch tokens")


def _check_position(position: Position) -> Position:
    if position is None or position == "center":
        return position
    if isinstance(position, str):
        raise ValueError(f'position must be None (mean over positions), "center" or (y, x); got {position!r}.')
    try:
        y, x = position
    except (TypeError, ValueError):
        raise TypeError(f'position must be None, "center" or a pair (y, x) of ints, got {position!r}.') from None
    for v in (y, x):
        if not is_int(v):
            raise TypeError(f"position (y, x) must hold ints, got {position!r}.")
    return (int(y), int(x))


def layer_vectors(out: torch.Tensor, position: Position, layer: str = "layer") -> torch.Tensor:
    """The activation vector of each image at ``position``: shape (n, C).

    out : layer output, shape (n, C, H, W) or (n, C)
    position : None (mean over positions), "center" (H // 2, W // 2) or (y, x)
    """
    if out.ndim == 2:
        if position is not None and position != "center":
            raise ValueError(f"Layer {layer!r} has no spatial grid (output {tuple(out.shape)}); use position=None.")
        return out
    _, _, h, w = out.shape
    if position is None:
        return out.mean(dim=(2, 3))
    y, x = (h // 2, w // 2) if position == "center" else position
    if not (0 <= y < h and 0 <= x < w):
        raise ValueError(
            f"position {(y, x)} is outside the {h}x{w} grid of layer {layer!r}; allowed y in "
            f"[0, {h - 1}], x in [0, {w - 1}] (or \"center\")."
        )
    return out[:, :, y, x]


def _check_batch(n_images: int, batch: int | None, what: str) -> None:
    if batch is not None and batch != n_images:
        raise ValueError(
            f"{what} is built for {batch} images but the batch holds {n_images}; render it with "
            f"batch={batch} (one image per entry)."
        )


def _as_directions(directions, name: str = "directions") -> torch.Tensor:
    if isinstance(directions, torch.Tensor):
        d = directions.detach().float().cpu()
    else:
        try:
            d = torch.as_tensor(np.asarray(directions, dtype=np.float32))
        except (TypeError, ValueError):
            raise TypeError(f"{name} must be an array of numbers, shape (C,) or (n, C); got {type(directions).__name__}.") from None
    if d.ndim not in (1, 2) or d.shape[-1] == 0 or (d.ndim == 2 and d.shape[0] == 0):
        raise ValueError(f"{name} must have shape (C,) or (n, C) with n, C >= 1; got {tuple(d.shape)}.")
    if not torch.isfinite(d).all():
        bad = (~torch.isfinite(d)).reshape(len(d) if d.ndim == 2 else 1, -1).any(1).nonzero().flatten().tolist()
        where = f" (rows {bad[:10]})" if d.ndim == 2 else ""
        raise ValueError(f"{name} contains NaN or infinite values{where}; pass finite vectors.")
    return d


def _check_width(v: torch.Tensor, n_channels: int, layer: str, name: str) -> None:
    if v.shape[-1] != n_channels:
        raise ValueError(
            f"{name} has length {v.shape[-1]} but layer {layer!r} has {n_channels} channels; "
            f"pass vectors of length {n_channels}."
        )


def _name(layer) -> str:
    if not isinstance(layer, str):
        raise TypeError(f"layer must be a layer name (str), got {type(layer).__name__}.")
    return layer


def _short(d: torch.Tensor) -> str:
    return f"{tuple(d.shape)} vectors" if d.ndim == 2 else f"({d.shape[0]},) vector"


# ----------------------------------------------------------------------------- objectives


def channel(layer: str, channels: int | Sequence[int], position: Position = None,
            prefix_tokens: int | None = None) -> Objective:
    """Mean activation of a channel (at ``position``, or averaged over the grid).

    channels : one channel for every image, or a list: channel i for image i
    prefix_tokens : for a ViT block, its leading CLS/register tokens (as given to capture); its
        patch tokens are the grid
    """
    layer = _name(layer)
    prefix_tokens = _check_prefix(prefix_tokens)
    position = _check_position(position)
    ch = torch.as_tensor(np.atleast_1d(np.asarray(channels)))
    if ch.ndim != 1 or ch.numel() == 0 or ch.dtype in (torch.bool,) or ch.is_floating_point():
        raise TypeError(f"channels must be an int or a list of ints, got {channels!r}.")
    if (ch < 0).any():
        raise ValueError(f"channels must be >= 0, got {channels!r}.")
    batched = not isinstance(channels, (int, np.integer))
    batch = len(ch) if batched else None

    def fn(acts):
        out = _output(acts, layer, prefix_tokens)
        c = out.shape[1]
        if int(ch.max()) >= c:
            raise ValueError(f"channel {int(ch.max())} is out of range for layer {layer!r}, which has "
                             f"{c} channels (0..{c - 1}).")
        _check_batch(out.shape[0], batch, f"channel({layer!r}, ...)")
        vec = layer_vectors(out, position, layer)
        idx = ch.to(vec.device)
        if batched:
            return vec.gather(1, idx[:, None])[:, 0]
        return vec[:, int(idx[0])]

    where = "" if position is None else f", position={position!r}"
    shown = ch.tolist() if batched else int(ch[0])
    text = f"channel({layer!r}, {shown if not batched or len(ch) <= 4 else f'{len(ch)} channels'}{where})"
    return Objective(fn, [layer], text, batch)


def neuron(layer: str, channels: int | Sequence[int], position: Position = "center",
           prefix_tokens: int | None = None) -> Objective:
    """A channel's activation at one position of the grid (default the centre)."""
    if position is None:
        raise ValueError('A neuron sits at one position: pass "center" or (y, x), or use channel() for the mean.')
    obj = channel(layer, channels, position, prefix_tokens)
    obj.description = obj.description.replace("channel(", "neuron(", 1)
    return obj


def direction(layer: str, directions, position: Position = None,
              prefix_tokens: int | None = None) -> Objective:
    """Dot product of the activation vector (at ``position``) with a direction.

    directions : array, shape (C,) for every image, or (n, C): direction i for image i
    prefix_tokens : for a ViT block, as in ``channel``
    """
    layer = _name(layer)
    prefix_tokens = _check_prefix(prefix_tokens)
    position = _check_position(position)
    d = _as_directions(directions)
    batch = d.shape[0] if d.ndim == 2 else None

    def fn(acts):
        out = _output(acts, layer, prefix_tokens)
        _check_width(d, out.shape[1], layer, "direction")
        _check_batch(out.shape[0], batch, f"direction({layer!r}, ...)")
        vec = layer_vectors(out, position, layer)
        return (vec * d.to(vec.device, vec.dtype)).sum(-1)

    where = "" if position is None else f", position={position!r}"
    return Objective(fn, [layer], f"direction({layer!r}, {_short(d)}{where})", batch)


def whitening(acts, ridge: float = 0.01) -> torch.Tensor:
    """S = (AᵀA / N + ridge * mean eigenvalue * I)^-1, the whitening matrix of a layer's activations.

    acts : array or tensor, shape (N, C): the cached activations of the layer (cache[layer].acts)
    ridge : regularisation relative to the mean variance; keeps directions the data never moves
        along (dead channels) from blowing up
    Returns float32 tensor, shape (C, C), on the CPU.
    """
    a = acts.detach() if isinstance(acts, torch.Tensor) else torch.as_tensor(np.asarray(acts))
    if a.ndim != 2 or a.shape[0] < 1:
        raise ValueError(f"acts must have shape (N, C) with N >= 1, got {tuple(a.shape)}.")
    number(ridge, "ridge", 0, low_open=True)
    a = a.to("cpu", torch.float64)
    if not torch.isfinite(a).all():
        raise ValueError("acts contains NaN or infinite values.")
    cov = a.T @ a / a.shape[0]
    lam = ridge * max(float(cov.diagonal().mean()), 1e-12)
    eye = torch.eye(cov.shape[0], dtype=torch.float64)
    return torch.linalg.inv(cov + lam * eye).float()


def icon_value(h: torch.Tensor, directions: torch.Tensor, whiten: torch.Tensor | None = None,
               power: float = 4.0, floor: float = 0.1) -> torch.Tensor:
    """The icon objective for activation vectors: (h · S v) * max(cos(h, v), floor) ** power.

    h : tensor, shape (n, C), activation vectors (rendered icons or cached dataset rows)
    directions : tensor, shape (C,) or (n, C), the directions v
    whiten : tensor S, shape (C, C), or None for S = I
    Returns tensor, shape (n,).

    The dot with the whitened direction rewards what sets v apart from typical activations (a
    plain dot is won by whatever channels are large everywhere); the cosine with v itself keeps the
    activation pointing where v points. The floor keeps a gradient when the start is orthogonal
    to v, where cos ** 4 is flat.
    """
    v = directions.to(h.device, h.dtype)
    w = v if whiten is None else v @ whiten.to(h.device, h.dtype).T
    dot = (h * w).sum(-1)
    cos = torch.nn.functional.cosine_similarity(h, v.expand_as(h), dim=-1, eps=1e-8)
    return dot * cos.clamp_min(floor) ** power


def icon(layer: str, directions, whiten=None, power: float = 4.0, position: Position = "center",
         floor: float = 0.1) -> Objective:
    """The activation atlas's icon objective (see ``icon_value``) at one position.

    directions : array, shape (C,) or (n, C): e.g. the atlas cells' mean activations
    whiten : S from ``whitening(cache[layer].acts)``, shape (C, C), or None
    """
    layer = _name(layer)
    position = _check_position(position)
    d = _as_directions(directions)
    batch = d.shape[0] if d.ndim == 2 else None
    s = None
    if whiten is not None:
        s = whiten.detach().float().cpu() if isinstance(whiten, torch.Tensor) else torch.as_tensor(np.asarray(whiten, dtype=np.float32))
        if s.shape != (d.shape[-1], d.shape[-1]):
            raise ValueError(f"whiten must have shape ({d.shape[-1]}, {d.shape[-1]}) to match the "
                             f"directions, got {tuple(s.shape)}; build it with whitening(cache[layer].acts).")
        if not torch.isfinite(s).all():
            raise ValueError("whiten contains NaN or infinite values.")
    number(power, "power", 0)

    def fn(acts):
        out = _output(acts, layer)
        _check_width(d, out.shape[1], layer, "direction")
        _check_batch(out.shape[0], batch, f"icon({layer!r}, ...)")
        vec = layer_vectors(out, position, layer)
        return icon_value(vec, d.to(vec.device), s, power, floor)

    where = "" if position is None else f", position={position!r}"
    white = ", whitened" if s is not None else ""
    return Objective(fn, [layer], f"icon({layer!r}, {_short(d)}{white}, cos^{power:g}{where})", batch)


def diversity(layer: str, groups: Sequence[int] | None = None) -> Objective:
    """Minus the mean cosine similarity of an image's Gram matrix to those of its group's others.

    groups : group id of each image (images of one direction share a group); None: one group.
    Add it with a weight (``obj + 0.5 * diversity(...)``) to push the several icons of one direction
    apart in style, not in what they show.
    """
    layer = _name(layer)
    g = None if groups is None else torch.as_tensor(np.asarray(groups, dtype=np.int64))
    if g is not None and g.ndim != 1:
        raise ValueError(f"groups must be a 1-D list of group ids, got shape {tuple(g.shape)}.")
    batch = None if g is None else len(g)

    def fn(acts):
        out = _output(acts, layer)
        n = out.shape[0]
        _check_batch(n, batch, f"diversity({layer!r}, ...)")
        flat = out.reshape(n, out.shape[1], -1)
        gram = flat @ flat.transpose(1, 2) / flat.shape[-1]
        gram = torch.nn.functional.normalize(gram.reshape(n, -1), dim=1)
        sim = gram @ gram.T
        gid = torch.zeros(n, dtype=torch.long) if g is None else g
        same = (gid[:, None] == gid[None, :]).to(sim.device)
        same.fill_diagonal_(False)
        count = same.sum(1).clamp_min(1)
        return -(sim * same).sum(1) / count

    return Objective(fn, [layer], f"diversity({layer!r})", batch)
