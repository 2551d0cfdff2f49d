"""Attribution of a class logit to a layer's spatial positions: activation x gradient.

The Activation Atlases article attributes a logit to a position of a layer by the activation
vector there times the gradient of the logit with respect to it, per channel; summed over channels
that is the first-order share of the logit that flows through that position. ``attribute``
computes it for one target:

- a class id (``int``) or a class name (``str``, looked up in ``cache.classes`` or ``classes=``);
- a pair ``(a, b)`` of ids or names: the logit difference ``logit[a] - logit[b]``, the article's
  comparison of two classes (frying pan vs wok).

With ``cache=`` the attribution is computed for exactly the cache's rows of the layer and stored
beside the activations in ``cache[layer].attributions[key]``, shape (n_rows, n_channels); a
"mean" row (yx = (-1, -1)) gets the sum over all positions. Keys are readable
(``target_key``): ``"wok"``, ``"wok-frying pan"``, or ``"class:3"`` when the cache has no
class names. ``cache.save`` writes them and ``ActivationCache.load`` reads them back.

Without ``cache=`` every position is returned, as an ``Attribution`` whose ``per_channel`` has
the layer's shape (n_samples, n_channels, H, W).

The gradient is taken with ``torch.autograd.grad`` on the layer's hooked output, so no ``.grad``
is left on the model's parameters. When a later in-place op (``ReLU(inplace=True)``) has changed
that output, its gradient would be the changed value's; then a tensor hook registered in the
forward hook, which sees the gradient of the value the layer returned, catches it while
``autograd.grad`` differentiates down to the input images. The model runs in eval mode; each module's training flag is restored.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any, Sequence, Union

import numpy as np
import torch
from torch import nn

from .cache.cache import ActivationCache
from .cache.capture import _model_classes
from .cache.data import batches, check_batch, logits_of
from .cache.hooks import eval_mode, hooks, model_dtype, on_device, resolve_layers
from .cache.sampling import LIST_HINT

__all__ = ["attribute", "Attribution", "target_key", "lookup"]

Target = Union[int, str, tuple]


@dataclass
class Attribution:
    """Activation x gradient at every position of a layer, for one target.

    per_channel : float tensor, shape (n_samples, n_channels, H, W) (or (n_samples, n_channels)
        for a layer without a spatial grid), in the model's dtype (at least float32), on the device
    key : the readable target key, e.g. "wok-frying pan"
    target : (a, b) class ids, b = None for a single class
    """

    per_channel: torch.Tensor
    key: str
    target: tuple[int, int | None]

    @property
    def total(self) -> torch.Tensor:
        """Summed over channels, shape (n_samples, H, W)."""
        return self.per_channel.sum(1)


# ----------------------------------------------------------------------------- targets


def _class_id(value: Any, classes: Sequence[str] | None, n_outputs: int | None) -> int:
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"A target class must be an int id or a str name, got {value!r}.")
    if isinstance(value, (int, np.integer)):
        limit = n_outputs if n_outputs is not None else (len(classes) if classes else None)
        if value < 0 or (limit is not None and value >= limit):
            allowed = f"0..{limit - 1}" if limit is not None else "a non-negative id"
            raise ValueError(f"Class id {int(value)} is out of range; the model has {limit} "
                             f"outputs, so use {allowed}.")
        return int(value)
    if isinstance(value, str):
        if not classes:
            raise ValueError(f"Class name {value!r} cannot be looked up: the cache has no class "
                             "names. Pass classes=[...] (names indexed by label) or a class id.")
        if value not in classes:
            close = difflib.get_close_matches(value, list(classes), n=3, cutoff=0.5)
            hint = f" Did you mean {close}?" if close else ""
            raise ValueError(f"Unknown class name {value!r}.{hint} Known names: {list(classes)}.")
        return list(classes).index(value)
    raise TypeError(f"A target class must be an int id or a str name, got {type(value).__name__}.")


def _resolve(target: Any, classes: Sequence[str] | None, n_outputs: int | None) -> tuple[int, int | None]:
    """(a, b) class ids of a target; b is None for a single class."""
    if isinstance(target, (tuple, list)):
        if len(target) != 2:
            raise ValueError(f"A pair target must have two classes (a, b), got {len(target)}: "
                             f"{target!r}.")
        a, b = (_class_id(v, classes, n_outputs) for v in target)
        if a == b:
            raise ValueError(f"A pair target needs two different classes; got {target!r}, which "
                             f"names class {a} twice (its logit difference is always 0).")
        return a, b
    return _class_id(target, classes, n_outputs), None


def _name(i: int, classes: Sequence[str] | None) -> str:
    return classes[i] if classes and i < len(classes) else f"class:{i}"


def target_key(target: Any, classes: Sequence[str] | None = None, n_outputs: int | None = None) -> str:
    """The readable key of a target: "wok", "wok-frying pan", or "class:3" without class names."""
    a, b = _resolve(target, classes, n_outputs)
    return _name(a, classes) if b is None else f"{_name(a, classes)}-{_name(b, classes)}"


def lookup(cache: ActivationCache, layer: str | None, target: Any) -> torch.Tensor:
    """The stored attribution of a layer's rows toward ``target``, shape (n_rows, n_channels)."""
    la = cache.layer(layer)
    stored = la.attributions
    if isinstance(target, str) and target in stored:  # a key as stored, e.g. "wok-frying pan"
        return stored[target]
    n_outputs = int(cache.logits.shape[1]) if cache.logits.ndim == 2 else None
    key = target_key(target, cache.classes, n_outputs)
    if key not in stored:
        have = list(stored) or "none yet"
        raise KeyError(f"No attribution toward {key!r} for this layer; it has {have}. Compute it "
                       "with aw.attribute(model, data, layer, target, cache=cache).")
    return stored[key]


# ----------------------------------------------------------------------------- attribute


def attribute(
    model: nn.Module,
    data: Any,
    layer: str,
    target: Target,
    cache: ActivationCache | None = None,
    batch_size: int = 64,
    device: torch.device | str | None = None,
    progress: bool = True,
    classes: Sequence[str] | None = None,
) -> Attribution | torch.Tensor:
    """Activation x gradient of the target logit at each position of ``layer``, per channel.

    data : the data forms ``aw.capture`` takes; with ``cache=``, the same data in the same order
        as the cache was captured from
    layer : one ``named_modules()`` name; its output must be (N, C, H, W) ((N, C) only for a
        cache of "mean" rows)
    target : class id, class name, or a pair (a, b) meaning logit[a] - logit[b]
    cache : when given, compute for exactly its rows of ``layer`` and store the result in
        ``cache[layer].attributions[key]`` (see module doc)
    classes : class names indexed by label, for name targets; default the cache's, else the
        model's ``model.classes`` when it has them
    device : where to run; default CUDA when available, else where the model's parameters are.
        A model elsewhere is moved there for the call and moved back afterwards (as in
        ``aw.capture``)
    Returns with ``cache``: the stored tensor, shape (n_rows, n_channels), float32; its
    ``.sum(1)`` is the per-row total. Without: an ``Attribution`` of every position.
    """
    if not isinstance(layer, str):
        raise TypeError(f"layer must be one layer name (str), got {type(layer).__name__}.")
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}.")
    (name,) = resolve_layers(model, layer)
    la = None
    if cache is not None:
        if not isinstance(cache, ActivationCache):
            raise TypeError(f"cache must be an ActivationCache, got {type(cache).__name__}.")
        if layer not in cache.layers:
            raise ValueError(f"Layer {layer!r} is not in the cache; it has {list(cache.layers)}. "
                             "Capture that layer first, or pass one of those.")
        la = cache.layers[layer]
        if classes is None:
            classes = cache.classes
    if classes is None:
        classes = _model_classes(model)
    if classes is not None:
        classes = list(classes)
    n_outputs = int(cache.logits.shape[1]) if cache is not None and cache.logits.ndim == 2 else None
    a, b = _resolve(target, classes, n_outputs)  # fail on a bad target before any work
    key = target_key(target, classes, n_outputs)

    dtype = model_dtype(model)
    stream, total = batches(data, int(batch_size))
    if cache is not None and total is not None and total != cache.n_samples:
        raise ValueError(f"data has {total} samples but the cache holds {cache.n_samples}; pass the "
                         "data the cache was captured from, in the same order.")
    # an (N, C) output has no positions; it fits only a cache of "mean" rows
    flat_ok = la is not None and bool((la.yx[:, 0] < 0).all())
    ordered = la is not None and bool((la.sample_id[1:] >= la.sample_id[:-1]).all())
    out_rows: list[tuple[torch.Tensor, torch.Tensor]] = []
    maps: list[torch.Tensor] = []
    seen = 0
    kept: dict[str, Any] = {}
    from tqdm.auto import tqdm

    bar = tqdm(total=total, unit="img", desc=f"attribute {key}", disable=not progress)
    try:
        with on_device(model, device) as dev, eval_mode(model), torch.enable_grad(), \
                hooks(model, name, lambda n, out: _keep(kept, out)):
            for i, (images, labels) in enumerate(stream):
                images, _ = check_batch(images, labels, i)
                x = images.to(dev, dtype or images.dtype)
                attr = _batch(model, x, kept, name, a, b, flat_ok)
                n = len(x)
                if la is None:
                    maps.append(attr.detach())
                else:
                    if seen + n > cache.n_samples:
                        raise ValueError(f"data has more than the cache's {cache.n_samples} "
                                         "samples; pass the data the cache was captured from.")
                    if seen == 0:
                        _check_same_data(la, kept["act"], layer)
                    out_rows.append(_rows(la, attr, seen, n, layer, ordered))
                seen += n
                bar.update(n)
    finally:
        bar.close()
    if seen == 0:
        raise ValueError("data is empty: it yielded no images. Pass at least one batch (N, C, H, W).")
    if la is None:
        return Attribution(torch.cat(maps), key, (a, b))
    if seen != cache.n_samples:
        raise ValueError(f"data has {seen} samples but the cache holds {cache.n_samples}; pass the "
                         "data the cache was captured from, in the same order.")
    result = _place(la, out_rows)
    la.attributions[key] = result
    return result


def _keep(kept: dict, out: Any) -> None:
    """Forward-hook body: copy the activation, and catch its gradient with a tensor hook."""
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"The layer's output is a {type(out).__name__}, not a tensor; attribute a "
                        "layer that returns one tensor (N, C, H, W).")
    kept["act"] = out.detach().clone()  # before any later in-place op changes it
    kept["out"], kept["version"] = out, out._version
    kept.pop("grad", None)
    if out.requires_grad:
        # registered before a later in-place op, the hook gets the gradient of this value
        out.register_hook(lambda g: kept.__setitem__("grad", g))
    kept["requires_grad"] = out.requires_grad


def _batch(model, x, kept, name, a, b, flat_ok) -> torch.Tensor:
    """act x grad of one batch, shape (n, C, H, W) or (n, C)."""
    kept.clear()
    x = x.detach().requires_grad_(True)
    logits = _logits(model(x), len(x))
    if "act" not in kept:
        raise ValueError(f"Layer {name!r} did not run in the model's forward pass. {LIST_HINT}")
    act = kept["act"]
    if act.ndim != 4 and not (act.ndim == 2 and flat_ok):
        raise ValueError(f"Layer {name!r} has output shape {tuple(act.shape)}; attribution needs "
                         "(N, C, H, W) (or (N, C) for a cache of 'mean' rows). Pick a conv layer.")
    limit = logits.shape[1]
    for c in (a, b):
        if c is not None and c >= limit:
            raise ValueError(f"Class id {c} is out of range; the model has {limit} outputs.")
    if not kept.get("requires_grad"):
        raise ValueError(f"The output of layer {name!r} does not depend on the input through "
                         "autograd (no grad_fn), so it has no gradient; is it computed under "
                         "torch.no_grad() or detached inside the model?")
    score = logits[:, a] if b is None else logits[:, a] - logits[:, b]
    # samples are independent in eval mode, so the gradient of the sum is each sample's gradient
    grad = layer_grad(score.sum(), kept, x)
    kept.pop("out", None)  # drop the graph
    if grad is None:
        raise ValueError(f"The target logit does not depend on layer {name!r}; no gradient flows "
                         "back to it. Pick a layer before the output.")
    if not bool(torch.isfinite(grad).all()):
        raise ValueError(f"The gradient of the target at layer {name!r} has NaN or infinite values; "
                         "check the model's weights and inputs.")
    out = act * grad
    return out.float() if out.dtype in (torch.float16, torch.bfloat16) else out


def layer_grad(score: torch.Tensor, kept: dict, x: torch.Tensor, retain_graph: bool = False):
    """Gradient of the scalar ``score`` at the layer's output as the layer returned it (``kept``
    filled by ``_keep``), or None when the score does not depend on it."""
    if kept["out"]._version == kept["version"]:
        # untouched since the layer returned it: the direct gradient, no backward below the layer
        (grad,) = torch.autograd.grad(score, kept["out"], retain_graph=retain_graph, allow_unused=True)
        return grad
    # changed in place later (ReLU(inplace=True)): the tensor hook holds the gradient of the
    # value the layer returned, reached by differentiating down to the input
    torch.autograd.grad(score, x, retain_graph=retain_graph, allow_unused=True)
    return kept.get("grad")


def _logits(out: Any, n: int) -> torch.Tensor:
    """The logits (N, n_outputs) keeping their graph (``logits_of`` detaches, for capture)."""
    logits_of(out, n)  # validates the form and shape
    if isinstance(out, (tuple, list)):
        out = out[0]
    elif isinstance(out, dict):
        out = out["logits"]
    elif not isinstance(out, torch.Tensor):
        out = out.logits
    return out.reshape(n, -1)


def _check_same_data(la, act: torch.Tensor, layer: str) -> None:
    """The first batch's activations must match the cache's rows of those samples."""
    n = len(act)
    sel = (la.sample_id < n).nonzero().squeeze(1)
    if sel.numel() == 0:
        return
    sid = la.sample_id[sel].to(act.device)
    yx = la.yx[sel].to(act.device)
    if act.ndim == 2:
        fresh = act[sid]
    elif bool((yx[:, 0] < 0).all()):
        fresh = act.mean((2, 3))[sid]
    else:
        fresh = act[sid, :, yx[:, 0], yx[:, 1]]
    cached = la.acts[sel].to(act.device, torch.float32)
    fresh = fresh.float()
    scale = float(cached.abs().max()) if cached.numel() else 0.0
    if float((fresh - cached).abs().max()) > 1e-2 * scale + 1e-3:
        raise ValueError(f"The activations of layer {layer!r} on this data do not match the cache: "
                         "pass the same data, in the same order, that the cache was captured from.")


def _rows(la, attr: torch.Tensor, start: int, n: int, layer: str, ordered: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The attribution of the cache's rows of samples [start, start + n), in cache row order."""
    # the rows are found where the cache is and only they move to the model's device: moving the
    # whole columns cost a copy of every row per batch when the two devices differ
    sid = la.sample_id
    if ordered:  # rows sorted by sample (as capture makes them): a slice, no pass over all rows
        bounds = torch.tensor([start, start + n], device=sid.device, dtype=sid.dtype)
        lo, hi = torch.searchsorted(sid, bounds).tolist()
        sel = torch.arange(lo, hi, device=sid.device)
    else:
        sel = ((sid >= start) & (sid < start + n)).nonzero().squeeze(1)
    local = (sid[sel] - start).to(attr.device)
    yx = la.yx[sel].to(attr.device)
    mean_rows = yx[:, 0] < 0
    if attr.ndim == 2:
        if not bool(mean_rows.all()):
            raise ValueError(f"Layer {layer!r} has no spatial grid (output (N, C)) but the cache "
                             "has spatial rows for it.")
        vals = attr[local]
    else:
        h, w = attr.shape[2:]
        if tuple(la.hw) != (h, w):
            raise ValueError(f"Layer {layer!r} has a {h}x{w} grid here but {la.hw[0]}x{la.hw[1]} in "
                             "the cache; pass the data the cache was captured from.")
        y = yx[:, 0].clamp(min=0)
        x = yx[:, 1].clamp(min=0)
        vals = attr[local, :, y, x]
        if bool(mean_rows.any()):  # "mean" rows: the sum over all positions
            vals[mean_rows] = attr.sum((2, 3))[local[mean_rows]]
    return sel, vals.detach()


def _place(la, parts: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """(n_rows, C) float32 on the cache's device, each row at its index."""
    out = torch.zeros((la.n_rows, la.n_channels), dtype=torch.float32, device=la.acts.device)
    for sel, vals in parts:
        out[sel.to(out.device)] = vals.to(out.device, torch.float32)
    return out
