"""Attribution of a class logit to a layer's spatial positions: activation x gradient.

The Activation Atlases article attributes a logit to a position of a layer by the activation
vector there times the gradient of the logit with respect to it, per channel; summed over channels
that is the first-order share of the logit that flows through that position. ``attribute``
computes it toward targets (``atlaswidgets.cache.targets``):

- a class id (``int``) or a class name (``str``, looked up in ``cache.classes`` or ``classes=``);
- a pair ``(a, b)`` of ids or names: the logit difference ``logit[a] - logit[b]``, the article's
  comparison of two classes (frying pan vs wok);
- a key the kit wrote ("wok-frying pan", "class:3") or a ``Target``.

``attribute(model, data, layer, target)`` returns one ``Attribution``;
``attribute(model, data, layer, [t1, t2, ...])`` (a list) returns a list of them, one per target
in that order, all from one pass over the data (one forward per batch, one gradient per target).
The result's type follows the ``target`` argument only, never other options.

Without ``cache=`` every position is computed: ``per_channel`` has the layer's shape (n_samples,
n_channels, H, W). With ``cache=`` exactly the cache's rows of the layer are: ``per_channel`` is
(n_rows, n_channels), float32, a "mean" row (yx = (-1, -1)) getting the sum over all positions,
and the Attribution names its rows (``layer``, ``sample_id``, ``yx``). Storing it is its own step,
``cache.add_attribution(attr)``; ``cache.save`` writes it and ``cache.attribution(layer,
target)`` reads it back. Keys are the readable spelling of ``cache.targets``: ``"wok"``,
``"wok-frying pan"``, or ``"class:3"`` when there are no class names.

Deprecated: ``attribute(..., cache=cache)`` without ``store=False`` still stores its result into
the cache, as it did, with a FutureWarning; from the next release it only returns it.

The gradient is taken with ``torch.autograd.grad`` on the layer's hooked output, so no ``.grad``
is left on the model's parameters. When a later in-place op (``ReLU(inplace=True)``) has changed
that output, its gradient would be the changed value's; then a tensor hook registered in the
forward hook, which sees the gradient of the value the layer returned, catches it while
``autograd.grad`` differentiates down to the input images. The model runs in eval mode; each module's training flag is restored.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Sequence, Union

import numpy as np
import torch
from torch import nn

from .cache.cache import ActivationCache
from .cache.checks import positive_int
from .cache.data import batches, check_batch, logits_of
from .cache.hooks import eval_mode, hooks, model_dtype, on_device, resolve_layers
from .cache.sampling import LIST_HINT
from .cache.targets import Target, model_classes, n_outputs_of, resolve, target_key

__all__ = ["attribute", "Attribution", "Target", "target_key", "lookup"]

TargetSpec = Union[int, str, tuple, Target]


@dataclass
class Attribution:
    """Activation x gradient toward one target, at every position of a layer or at a cache's rows.

    per_channel : float tensor on the device. Every position: shape (n_samples, n_channels, H, W)
        (or (n_samples, n_channels) for a layer without a spatial grid), in the model's dtype (at
        least float32). A cache's rows: shape (n_rows, n_channels), float32
    key : the readable target key, e.g. "wok-frying pan"
    target : the ``Target`` (kind and class ids)
    layer : the layer's name
    sample_id, yx : with ``cache=``, the rows it covers: int64 tensors (n_rows,) and (n_rows, 2),
        the cache's ``sample_id`` and ``yx`` of the layer; None for every position
    """

    per_channel: torch.Tensor
    key: str
    target: Target
    layer: str | None = None
    sample_id: torch.Tensor | None = None
    yx: torch.Tensor | None = None

    @property
    def total(self) -> torch.Tensor:
        """Summed over channels, shape (n_samples, H, W), or (n_rows,) for a cache's rows."""
        return self.per_channel.sum(1)

    def __repr__(self) -> str:
        rows = "every position" if self.sample_id is None else f"{len(self.sample_id)} cache rows"
        return (f"Attribution({self.key!r}, layer={self.layer!r}, {rows}, "
                f"per_channel={tuple(self.per_channel.shape)})")


def lookup(cache: ActivationCache, layer: str | None, target: Any) -> torch.Tensor:
    """The stored attribution of a layer's rows toward ``target``, shape (n_rows, n_channels);
    the same as ``cache.attribution(layer, target)``."""
    return cache.attribution(layer, target)


# ----------------------------------------------------------------------------- attribute


def attribute(
    model: nn.Module,
    data: Any,
    layer: str,
    target: TargetSpec | list,
    cache: ActivationCache | None = None,
    batch_size: int = 64,
    device: torch.device | str | None = None,
    progress: bool = True,
    classes: Sequence[str] | None = None,
    store: bool | None = None,
) -> Attribution | list[Attribution]:
    """Activation x gradient of the target logit at each position of ``layer``, per channel.

    data : the data forms ``aw.capture`` takes; with ``cache=``, the same data in the same order
        as the cache was captured from
    layer : one ``named_modules()`` name; its output must be (N, C, H, W) ((N, C) only for a
        cache of "mean" rows)
    target : class id, class name, a pair tuple (a, b) meaning logit[a] - logit[b], a stored key
        or a ``Target``; or a **list** of these, computed together in one pass
    cache : when given, compute for exactly its rows of ``layer`` (see module doc)
    store : with ``cache``, False returns the result without storing it (store it with
        ``cache.add_attribution(attr)``). Left out, the result is also stored in the cache as
        before, with a FutureWarning: that one-step form goes in the next release
    classes : class names indexed by label, for name targets; default the cache's, else the
        model's ``model.classes`` when it has them. With ``cache``, keys are spelled with the
        cache's names ("class:3" when it has none)
    device : where to run; default CUDA when available, else where the model's parameters are.
        A model elsewhere is moved there for the call and moved back afterwards (as in
        ``aw.capture``)
    Returns an ``Attribution`` for one target, a list of them (same order) for a list of targets.
    """
    if not isinstance(layer, str):
        raise TypeError(f"layer must be one layer name (str), got {type(layer).__name__}.")
    positive_int(batch_size, "batch_size")
    if store not in (None, True, False):
        raise TypeError(f"store must be True, False or left out, got {store!r}.")
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
    elif store:
        raise ValueError("store=True needs cache=: the rows to store are a cache's rows.")
    if classes is None:
        classes = model_classes(model)
    if classes is not None:
        classes = list(classes)
    n_outputs = n_outputs_of(cache.logits) if cache is not None else None
    many = isinstance(target, list)
    specs = target if many else [target]
    if not specs:
        raise ValueError("target is an empty list; pass at least one target.")
    # fail on a bad target before any work
    targets = [resolve(t, classes, n_outputs) for t in specs]
    # a key that lives in a cache is spelled with the cache's names, so it resolves there again
    keys = [t.key(cache.classes if cache is not None else classes) for t in targets]

    maps = _engine(model, data, name, targets, la, cache.n_samples if cache is not None else None,
                   int(batch_size), device, progress, desc=", ".join(keys))
    out = [Attribution(m, k, t, layer, None if la is None else la.sample_id,
                       None if la is None else la.yx) for m, k, t in zip(maps, keys, targets)]
    if cache is not None and store is not False:
        warnings.warn(
            "aw.attribute(..., cache=cache) stores its result in the cache only until the next "
            "release; storing is its own step now: attr = aw.attribute(model, data, layer, target, "
            "cache=cache, store=False); cache.add_attribution(attr).", FutureWarning, stacklevel=2)
        cache.add_attribution(out)
    return out if many else out[0]


def _engine(model, data, name: str, targets: list[Target], la, n_samples: int | None,
            batch_size: int, device, progress: bool, desc: str) -> list[torch.Tensor]:
    """One pass over ``data``: per batch one forward and one gradient per target.

    Returns per target the attribution of every position (n_samples, C, H, W) when ``la`` is
    None, else of ``la``'s rows, (n_rows, C) float32 on the cache's device.
    """
    dtype = model_dtype(model)
    stream, total = batches(data, batch_size)
    if la is not None and total is not None and total != n_samples:
        raise ValueError(f"data has {total} samples but the cache holds {n_samples}; pass the "
                         "data the cache was captured from, in the same order.")
    # an (N, C) output has no positions; it fits only a cache of "mean" rows
    flat_ok = la is not None and bool((la.yx[:, 0] < 0).all())
    ordered = la is not None and bool((la.sample_id[1:] >= la.sample_id[:-1]).all())
    parts: list[list] = [[] for _ in targets]
    seen = 0
    kept: dict[str, Any] = {}
    from tqdm.auto import tqdm

    bar = tqdm(total=total, unit="img", desc=f"attribute {desc}"[:60], disable=not progress)
    try:
        with on_device(model, device) as dev, eval_mode(model), torch.enable_grad(), \
                hooks(model, name, lambda n, out: _keep(kept, out)):
            for i, (images, labels) in enumerate(stream):
                images, _ = check_batch(images, labels, i)
                x = images.to(dev, dtype or images.dtype)
                n = len(x)
                if la is not None and seen + n > n_samples:
                    raise ValueError(f"data has more than the cache's {n_samples} samples; pass "
                                     "the data the cache was captured from.")
                for j, attr in enumerate(_batch(model, x, kept, name, targets, flat_ok)):
                    if la is None:
                        parts[j].append(attr.detach())
                        continue
                    if seen == 0 and j == 0:
                        _check_same_data(la, kept["act"], name)
                    parts[j].append(_rows(la, attr, seen, n, name, ordered))
                seen += n
                bar.update(n)
    finally:
        kept.clear()  # drop the graph
        bar.close()
    if seen == 0:
        raise ValueError("data is empty: it yielded no images. Pass at least one batch (N, C, H, W).")
    if la is None:
        return [torch.cat(p) for p in parts]
    if seen != n_samples:
        raise ValueError(f"data has {seen} samples but the cache holds {n_samples}; pass the "
                         "data the cache was captured from, in the same order.")
    return [_place(la, p) for p in parts]


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


def _batch(model, x, kept, name, targets: list[Target], flat_ok):
    """act x grad of one batch toward each target, each (n, C, H, W) or (n, C); one forward."""
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
    for t in targets:
        for c in t.ids:
            if c >= limit:
                raise ValueError(f"Class id {c} is out of range; the model has {limit} outputs.")
    if not kept.get("requires_grad"):
        raise ValueError(f"The output of layer {name!r} does not depend on the input through "
                         "autograd (no grad_fn), so it has no gradient; is it computed under "
                         "torch.no_grad() or detached inside the model?")
    for j, t in enumerate(targets):
        # samples are independent in eval mode, so the gradient of the sum is each sample's gradient
        last = j == len(targets) - 1
        grad = _layer_grad(t.score(logits).sum(), kept, x, retain_graph=not last)
        if grad is None:
            raise ValueError(f"The target logit does not depend on layer {name!r}; no gradient "
                             "flows back to it. Pick a layer before the output.")
        if not bool(torch.isfinite(grad).all()):
            raise ValueError(f"The gradient of the target at layer {name!r} has NaN or infinite "
                             "values; check the model's weights and inputs.")
        out = act * grad
        yield out.float() if out.dtype in (torch.float16, torch.bfloat16) else out
    kept.pop("out", None)  # drop the graph


def _layer_grad(score: torch.Tensor, kept: dict, x: torch.Tensor, retain_graph: bool = False):
    """Gradient of the scalar ``score`` at the layer's output as the layer returned it (``kept``
    filled by ``_keep``), or None when the score does not depend on it."""
    if kept["out"]._version == kept["version"]:
        # untouched since the layer returned it: the direct gradient, no backward below the layer
        (grad,) = torch.autograd.grad(score, kept["out"], retain_graph=retain_graph, allow_unused=True)
        return grad
    # changed in place later (ReLU(inplace=True)): the tensor hook holds the gradient of the
    # value the layer returned, reached by differentiating down to the input
    kept.pop("grad", None)  # an earlier target's gradient of the same forward pass
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
