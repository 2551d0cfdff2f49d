"""Attribution of a logit to a layer's positions (spatial cells, tokens): activation x gradient.

The Activation Atlases article attributes a logit to a position of a layer by the activation
vector there times the gradient of the logit with respect to it, per channel; summed over channels
that is the first-order share of the logit that flows through that position. ``attribute``
computes it toward targets (``atlaswidgets.cache.targets``): a class id or name, a pair ``(a, b)``
(``logit[a] - logit[b]``, frying pan vs wok), a key the kit wrote or a ``Target``; and for a
language model (per-token logits (N, T, V)) a next token, ``"token:wok"``, or a pair
``("token:wok", "token:pan")``. A list of targets is computed in one pass (one forward per batch,
one gradient per target) and gives a list of ``Attribution``; the result's type follows the
``target`` argument only.

Next-token targets. A language model predicts at every position, so a target's score is summed
over positions: by default over every valid (non-padding) position, in one backward per target,
so a token row gets its total first-order contribution to the target over all predictions it
reaches (with causal attention, those at its own position and after); ``positions="last"`` takes
each sample's last valid token only (a prompt ending where the prediction is wanted), and a bool
mask (n_samples, T) over each sample's valid tokens picks any (say the cookware slot of "heat the
oil in the ___"). Batches are those capture takes (token ids, dicts with input_ids and
attention_mask); padding is never a row and its predictions never count. A class target on a
per-token model, or a next-token target on a classifier, is a ValueError that names the fitting kind.

Without ``cache=`` every position is computed: ``per_channel`` has the layer's shape (n_samples,
n_channels, H, W), or for a token layer (n_samples, D, T_max) over each sample's valid tokens
from the left (0 past them). With ``cache=`` exactly the cache's rows of the layer are:
``per_channel`` is (n_rows, n_channels), float32, a "mean" row (yx = (-1, -1)) getting the sum
over all positions, and the Attribution names its rows (``layer``, ``sample_id``, ``yx``).
Storing it is its own step, ``cache.add_attribution(attr)``; ``cache.save`` writes it and
``cache.attribution(layer, target)`` reads it back. Keys are the readable spelling of
``cache.targets``: ``"wok"``, ``"wok-frying pan"``, ``"class:3"`` when there are no class names,
``"token:wok-token:pan"``.

Deprecated: ``attribute(..., cache=cache)`` without ``store=False`` still stores its result into
the cache, as it did, with a FutureWarning; from the next release it only returns it.

The gradient is taken with ``torch.autograd.grad`` on the layer's hooked output, so no ``.grad``
is left on the model's parameters. When a later in-place op (``ReLU(inplace=True)``) has changed
that output, its gradient would be the changed value's; then a tensor hook registered in the
forward hook, which sees the gradient of the value the layer returned, catches it while
``autograd.grad`` differentiates down to the input images (token ids have no gradient: such a
token layer is refused). The model runs in eval mode; each module's training flag is restored.
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
from .cache.data import LABEL_KEYS, batches, check_batch, logits_of
from .cache.hooks import eval_mode, hooks, model_dtype, on_device, resolve_layers
from .cache.inputs import make_batch, model_vocab, read_vocab, select_logits, vocab_size_of
from .cache.progress import checked_progress, progress_bar
from .cache.rows import check_same_data, layer_rows, place_rows
from .cache.sampling import LIST_HINT
from .cache.targets import Target, model_classes, n_outputs_of, resolve, target_key

__all__ = ["attribute", "Attribution", "Target", "target_key", "lookup"]

TargetSpec = Union[int, str, tuple, Target]


@dataclass
class Attribution:
    """Activation x gradient toward one target, at every position of a layer or at a cache's rows.

    per_channel : float tensor on the device. Every position: shape (n_samples, n_channels, H, W)
        (or (n_samples, n_channels) for a layer without a spatial grid; (n_samples, D, T_max) for
        a token layer, over each sample's valid tokens from the left), in the model's dtype (at
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
    vocab: Any = None,
    positions: Any = "all",
) -> Attribution | list[Attribution]:
    """Activation x gradient of the target logit at each position of ``layer``, per channel.

    data : the data forms ``aw.capture`` takes; with ``cache=``, the same data in the same order
        as the cache was captured from
    layer : one ``named_modules()`` name; its output must be (N, C, H, W), or (N, T, D) on token
        inputs ((N, C) only for a cache of "mean" rows)
    target : class id, class name, a pair tuple (a, b) meaning logit[a] - logit[b], a stored key
        or a ``Target``; for a language model "token:wok" or ("token:wok", "token:pan"); or a
        **list** of these, computed together in one pass
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
    vocab : token strings by id (a list or a tokenizer), for next-token targets named by their
        token ("token:wok"); default the cache's ``vocab``, else the model's ``model.vocab``
    positions : for next-token targets, whose predictions are summed (see the module doc):
        "all" (every valid position, the default), "last" (each sample's last valid token), or a
        bool mask (n_samples, T) over each sample's valid tokens from the left (the columns of
        ``cache.tokens``; for right-padded inputs, the inputs' own columns)
    progress : True shows a bar over the samples (as ``aw.capture`` does); False hides it
    Returns an ``Attribution`` for one target, a list of them (same order) for a list of targets.
    """
    if not isinstance(layer, str):
        raise TypeError(f"layer must be one layer name (str), got {type(layer).__name__}.")
    positive_int(batch_size, "batch_size")
    checked_progress(progress)
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
    if vocab is not None:
        vocab = read_vocab(vocab)
    elif cache is not None and cache.vocab is not None:
        vocab = cache.vocab
    else:
        vocab = model_vocab(model)
    n_outputs = n_outputs_of(cache.logits) if cache is not None else None
    many = isinstance(target, list)
    specs = target if many else [target]
    if not specs:
        raise ValueError("target is an empty list; pass at least one target.")
    # fail on a bad target before any work
    targets = [resolve(t, classes, n_outputs, vocab) for t in specs]
    if len({t.per_token for t in targets}) > 1:
        raise ValueError("The targets mix class targets and next-token targets; a model has one "
                         "kind of logits, so pass targets of one kind.")
    weights = _positions(positions, targets[0].per_token,
                         cache.n_samples if cache is not None else None)
    # a key that lives in a cache is spelled with the cache's names, so it resolves there again
    keys = [t.key(cache.classes if cache is not None else classes, vocab) for t in targets]

    maps = _engine(model, data, name, targets, la, cache.n_samples if cache is not None else None,
                   int(batch_size), device, progress, desc=", ".join(keys),
                   vocab_size=vocab_size_of(model, vocab), weights=weights)
    out = [Attribution(m, k, t, layer, None if la is None else la.sample_id,
                       None if la is None else la.yx) for m, k, t in zip(maps, keys, targets)]
    if cache is not None and store is not False:
        warnings.warn(
            "aw.attribute(..., cache=cache) stores its result in the cache only until the next "
            "release; storing is its own step now: attr = aw.attribute(model, data, layer, target, "
            "cache=cache, store=False); cache.add_attribution(attr).", FutureWarning, stacklevel=2)
        cache.add_attribution(out)
    return out if many else out[0]


def _positions(positions: Any, per_token: bool, n_samples: int | None):
    """The ``positions`` option checked: "all", "last", or a bool tensor (n_samples, T) (CPU)."""
    if isinstance(positions, str):
        if positions not in ("all", "last"):
            raise ValueError(f'positions must be "all", "last" or a bool mask (n_samples, T), got '
                             f"{positions!r}.")
        if positions == "last" and not per_token:
            raise ValueError('positions="last" is for next-token targets ("token:wok"); a class '
                             "target reads one logit per sample.")
        return positions
    if not per_token:
        raise ValueError("positions= picks the predictions of next-token targets; a class target "
                         "reads one logit per sample, so leave positions out.")
    mask = torch.as_tensor(np.asarray(positions.cpu() if isinstance(positions, torch.Tensor) else positions))
    if mask.dtype != torch.bool or mask.ndim != 2:
        raise ValueError(f"positions must be a bool mask (n_samples, T), got {mask.dtype} "
                         f"{tuple(mask.shape)}; e.g. data.truth['cue_slot'].")
    if n_samples is not None and len(mask) != n_samples:
        raise ValueError(f"positions has {len(mask)} rows but the cache holds {n_samples} samples; "
                         "pass one row per sample.")
    return mask


def _engine(model, data, name: str, targets: list[Target], la, n_samples: int | None,
            batch_size: int, device, progress: bool, desc: str, vocab_size: int | None = None,
            weights: Any = "all") -> list[torch.Tensor]:
    """One pass over ``data``: per batch one forward and one gradient per target.

    Returns per target the attribution of every position (n_samples, C, H, W), or for text
    (n_samples, D, T_max) over each sample's valid tokens from the left, when ``la`` is None;
    else of ``la``'s rows, (n_rows, C) float32 on the cache's device.
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
    bar = progress_bar(f"attribute {desc}"[:60], total, "sample", progress)
    try:
        with on_device(model, device) as dev, eval_mode(model), torch.enable_grad(), \
                hooks(model, name, lambda n, out: _keep(kept, out)):
            for i, (inputs, labels) in enumerate(stream):
                tokens = _token_batch(inputs, labels, i, vocab_size)
                if tokens is None:
                    images, _ = check_batch(inputs, labels, i)
                    _check_finite_images(images, seen)
                    x, n, pos = images.to(dev, dtype or images.dtype), len(images), None
                    if targets[0].per_token:
                        raise ValueError("Next-token targets need token inputs (input_ids) and a "
                                         "language model's per-token logits; these batches are "
                                         "images, so use a class target.")
                    results = _batch(model, x, kept, name, targets, flat_ok)
                else:
                    n = tokens.n
                    if isinstance(weights, torch.Tensor) and seen + n > len(weights):
                        raise ValueError(f"positions has {len(weights)} rows but data has more "
                                         "samples; pass one row per sample.")
                    pos = _valid_positions(tokens.valid_tokens())
                    w = _weights(weights, tokens.valid_tokens(), pos, seen)
                    results = _token_forward(model, tokens, tokens.model_input(dev, dtype), kept,
                                             name, targets, flat_ok, w.to(dev))
                if la is not None and seen + n > n_samples:
                    raise ValueError(f"data has more than the cache's {n_samples} samples; pass "
                                     "the data the cache was captured from.")
                for j, attr in enumerate(results):
                    if la is None:
                        parts[j].append(_compact(attr, pos).detach() if pos is not None else attr.detach())
                        continue
                    if seen == 0 and j == 0:
                        check_same_data(la, kept["act"], name, pos)
                    parts[j].append(layer_rows(la, attr, seen, n, name, ordered, pos))
                seen += n
                bar.update(n)
    finally:
        kept.clear()  # drop the graph
        bar.close()
    if seen == 0:
        raise ValueError("data is empty: it yielded no samples. Pass at least one batch (N, C, H, W) "
                         "or token ids (N, T).")
    if isinstance(weights, torch.Tensor) and seen != len(weights):
        raise ValueError(f"positions has {len(weights)} rows but data has {seen} samples; pass "
                         "one row per sample.")
    if la is None:
        return [_cat_padded(p) for p in parts]
    if seen != n_samples:
        raise ValueError(f"data has {seen} samples but the cache holds {n_samples}; pass the "
                         "data the cache was captured from, in the same order.")
    return [place_rows(la, p) for p in parts]


# ----------------------------------------------------------------------------- tokens


def _token_batch(inputs, labels, index: int, vocab_size: int | None):
    """A checked token Batch of a text batch (ids (N, T), or a dict with input_ids), else None."""
    x = inputs.detach() if isinstance(inputs, torch.Tensor) else inputs
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if isinstance(x, torch.Tensor) and (x.is_floating_point() or x.ndim != 2 or x.dtype == torch.bool):
        return None
    if not isinstance(x, (torch.Tensor, dict)) and not hasattr(x, "keys"):
        return None
    batch = make_batch(x, labels, index, None, vocab_size, LABEL_KEYS)
    if batch.kind != "tokens":
        raise TypeError(f"Batch {index} is a dict without input_ids; attribute takes image "
                        "batches (N, C, H, W), token ids (N, T) or dicts with input_ids "
                        "(and attention_mask).")
    return batch


def _valid_positions(valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(pos, count): pos (N, W) int64, the input column of each sample's c-th valid token (W = the
    most valid tokens of a sample; entries past a sample's count repeat its last valid column);
    count (N,) int64, each sample's valid tokens."""
    count = valid.sum(1).long()
    order = torch.argsort((~valid).to(torch.int8), dim=1, stable=True)
    w = max(int(count.max()), 1) if len(valid) else 1
    c = torch.arange(w)[None, :].expand(len(valid), w)
    c = torch.minimum(c, (count - 1).clamp(min=0)[:, None])
    return order.gather(1, c), count


def _weights(weights, valid: torch.Tensor, positions, start: int) -> torch.Tensor:
    """(N, T) float: which positions' predictions a next-token target sums in this batch."""
    pos, count = positions
    valid = valid.to(torch.float32)
    if isinstance(weights, str) and weights == "all":
        return valid
    out = torch.zeros_like(valid)
    rows = torch.arange(len(valid))
    if isinstance(weights, str):  # "last": the last valid token of each sample
        out[rows, pos[rows, count - 1]] = 1.0
        return out
    mask = weights[start:start + len(valid)]
    width = min(mask.shape[1], pos.shape[1])
    for c in range(width):  # the c-th valid token of each sample, where the mask says so
        take = mask[:, c] & (c < count)
        out[rows[take], pos[rows[take], c]] = 1.0
    return out


def _token_forward(model, batch, x, kept, name, targets: list[Target], flat_ok, weights):
    """act x grad of one token batch toward each target, each (n, T, D) (or (n, D)); one forward."""
    kept.clear()
    out = batch.call(model, x, None, None)
    logits = select_logits(out, batch.n)
    act = _kept_act(kept, name, 3, flat_ok, "attribution on text needs a layer with one vector "
                    "per token (N, T, D).")
    if logits.ndim != 3:
        if targets[0].per_token:
            raise ValueError(f"Next-token targets need a language model's per-token logits (N, T, "
                             f"V); this model returned {tuple(logits.shape)}, one row per sample, so "
                             "use a class target (a class id or name, or a pair).")
        return _batch_scores(act, kept, name, targets, logits, None)
    if not targets[0].per_token:
        raise ValueError(f"This model's logits are per token {tuple(logits.shape)}; a class target "
                         "does not fit. Use a next-token target: 'token:wok', or a pair "
                         "('token:wok', 'token:pan').")
    return _batch_scores(act, kept, name, targets, logits, weights)


def _batch_scores(act, kept, name, targets, logits, weights):
    limit = logits.shape[-1]
    for t in targets:
        for c in t.ids:
            if c >= limit:
                what = "Token id" if t.per_token else "Class id"
                raise ValueError(f"{what} {c} is out of range; the model has {limit} outputs.")
    if not kept.get("requires_grad"):
        raise ValueError(f"The output of layer {name!r} does not depend on the model's parameters "
                         "or input through autograd (no grad_fn), so it has no gradient; is it "
                         "computed under torch.no_grad() or detached inside the model?")
    if kept["out"]._version != kept["version"]:
        raise ValueError(f"The output of layer {name!r} is changed in place later in the forward "
                         "pass, so its own gradient cannot be read on token inputs; attribute the "
                         "module that follows it.")
    results = []
    for j, t in enumerate(targets):
        score = t.score(logits)
        score = (score * weights).sum() if weights is not None else score.sum()
        last = j == len(targets) - 1
        (grad,) = torch.autograd.grad(score, kept["out"], retain_graph=not last, allow_unused=True)
        results.append(_act_times_grad(act, grad, name))
    kept.pop("out", None)  # drop the graph
    return results


def _compact(attr: torch.Tensor, positions) -> torch.Tensor:
    """(n, T, D) at the input's columns -> (n, D, W) over each sample's valid tokens from the
    left, 0 past a sample's tokens."""
    if attr.ndim == 2:
        return attr
    pos, count = positions
    p = pos.to(attr.device)
    out = attr.gather(1, p[:, :, None].expand(-1, -1, attr.shape[2]))
    keep = torch.arange(p.shape[1], device=p.device)[None, :] < count.to(p.device)[:, None]
    return (out * keep[:, :, None]).transpose(1, 2)


def _cat_padded(parts: list[torch.Tensor]) -> torch.Tensor:
    """Batches of (n, C, ...) joined; text batches (n, D, W) padded with 0 to the widest W."""
    if parts[0].ndim != 3:
        return torch.cat(parts)
    w = max(p.shape[2] for p in parts)
    return torch.cat([torch.nn.functional.pad(p, (0, w - p.shape[2])) for p in parts])


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
    act = _kept_act(kept, name, 4, flat_ok, "attribution needs (N, C, H, W) (or (N, C) for a "
                    "cache of 'mean' rows). Pick a conv layer.")
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
        yield _act_times_grad(act, grad, name)
    kept.pop("out", None)  # drop the graph


def _kept_act(kept: dict, name: str, ndim: int, flat_ok: bool, need: str) -> torch.Tensor:
    """The layer's output that the hook kept in this forward pass, with ``ndim`` dimensions (or
    (N, C) where a cache of "mean" rows allows it); ``need`` ends the error for another shape."""
    if "act" not in kept:
        raise ValueError(f"Layer {name!r} did not run in the model's forward pass. {LIST_HINT}")
    act = kept["act"]
    if act.ndim != ndim and not (act.ndim == 2 and flat_ok):
        raise ValueError(f"Layer {name!r} has output shape {tuple(act.shape)}; {need}")
    return act


def _check_finite_images(images: torch.Tensor, seen: int) -> None:
    if images.is_floating_point() and not bool(torch.isfinite(images).all()):
        first = int((~torch.isfinite(images)).reshape(len(images), -1).any(dim=1).nonzero()[0])
        raise ValueError(f"Image {seen + first} of data has NaN or infinite pixels; attribution "
                         "of it would be NaN. Drop or repair those images (capture refuses them "
                         "too).")


def _act_times_grad(act: torch.Tensor, grad: torch.Tensor | None, name: str) -> torch.Tensor:
    """act x grad of one target, at least float32; a clear error for no or non-finite gradient."""
    if grad is None:
        raise ValueError(f"The target logit does not depend on layer {name!r}; no gradient "
                         "flows back to it. Pick a layer before the output.")
    if not bool(torch.isfinite(grad).all()):
        raise ValueError(f"The gradient of the target at layer {name!r} has NaN or infinite "
                         "values; check the model's weights and inputs.")
    out = act * grad
    if not bool(torch.isfinite(out).all()):
        # finite gradients times non-finite activations: capture refuses such activations, so
        # attribution does too rather than return NaN scores that would blank the atlas
        raise ValueError(f"The activations of layer {name!r} have NaN or infinite values, so "
                         "their attribution would too; check the model's weights and inputs.")
    return out.float() if out.dtype in (torch.float16, torch.bfloat16) else out


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
