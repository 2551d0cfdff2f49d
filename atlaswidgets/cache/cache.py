"""ActivationCache: captured activations of some layers, kept as tensors on one device.

Rows are spatial positions (or whole samples, for the "mean" policy). Per layer a row has an
activation vector, the sample it came from and its (y, x) on the layer's grid. Per sample the cache
keeps the label, the model's logits and, optionally, a small uint8 copy of the input for display
(at most ``capture(display_size=128)`` px a side, the size the widgets draw; ``input_hw`` is the
model's input size, to which positions and receptive fields are scaled).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .checks import checked_direction, positive_int
from .hooks import check_device
from .targets import Target, class_name, find_stored, n_outputs_of, resolve

__all__ = ["ActivationCache", "LayerActs", "LayerNotCaptured", "TopExamples", "best_per_sample", "best_rows"]


def finite_scores(scores: torch.Tensor) -> torch.Tensor:
    """``scores`` if all finite; float32 overflow (a direction with huge entries) gives a clear error."""
    if not bool(torch.isfinite(scores).all()):
        raise ValueError("Scores along this direction overflow float32 (the direction's entries are "
                         "too large); pass a smaller one, e.g. direction / direction.norm().")
    return scores


class LayerNotCaptured(KeyError, ValueError):
    """A layer name that a cache does not hold: a bad argument (ValueError), and the KeyError that
    ``cache[name]`` raises, so either ``except`` catches it."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""  # KeyError's own str() would quote the message


@dataclass(repr=False)
class LayerActs:
    """Activations of one layer.

    acts : tensor, shape (n_rows, n_channels), float32 or float16, on the cache's device
    sample_id : tensor, shape (n_rows,), int64, index of the row's sample in the cache
    yx : tensor, shape (n_rows, 2), int64, position on the layer grid; (-1, -1) for "mean" rows
    hw : (height, width) of the layer's output grid
    rf : (height, width) in input pixels of the effective receptive field of one position
        ((1, 1) for tokens)
    kind : "grid" (positions on an image grid: a conv layer, or a ViT block's patch tokens) or
        "tokens" (a text layer: ``yx`` is (0, t), t the token's index among its sample's valid
        tokens, i.e. its column in ``ActivationCache.tokens``; ``hw`` is (1, T_max))
    attributions : dict target key -> tensor, shape (n_rows, n_channels), float32, on the cache's
        device: activation x gradient of the target logit per channel, added by
        ``cache.add_attribution(aw.attribute(..., cache=cache, store=False))``; ``.sum(1)`` gives
        each row's total. Keys are the readable spellings of ``cache.targets`` ("wok",
        "wok-frying pan", "class:3"); look them up with ``ActivationCache.attribution(layer,
        target)``.
    attribution_targets : dict target key -> ``cache.targets.Target``, the structure of each key
        (class ids of a pair), recorded by ``add_attribution`` and kept in the store; keys without
        a record resolve by their spelling (``cache.targets.stored_targets``)
    """

    acts: torch.Tensor
    sample_id: torch.Tensor
    yx: torch.Tensor
    hw: tuple[int, int]
    rf: tuple[int, int]
    attributions: dict[str, torch.Tensor] = field(default_factory=dict)
    kind: str = "grid"
    attribution_targets: dict[str, Target] = field(default_factory=dict)

    def __repr__(self) -> str:
        attr = f", attributions={list(self.attributions)}" if self.attributions else ""
        where = f"tokens={self.hw[1]}" if self.kind == "tokens" else f"grid={self.hw}"
        return (f"LayerActs(rows={self.n_rows}, channels={self.n_channels}, {where}, "
                f"rf={self.rf}, {self.acts.dtype}, {self.acts.device}{attr})")

    @property
    def n_rows(self) -> int:
        return int(self.acts.shape[0])

    @property
    def n_channels(self) -> int:
        return int(self.acts.shape[1])

    def to(self, device: torch.device | str) -> "LayerActs":
        return LayerActs(
            self.acts.to(device), self.sample_id.to(device), self.yx.to(device), self.hw, self.rf,
            {k: v.to(device) for k, v in self.attributions.items()}, self.kind, dict(self.attribution_targets),
        )


@dataclass
class TopExamples:
    """Dataset examples of a unit or a direction: samples, each at one position, with a value.

    The one result type of every example query: ``top_examples``, an atlas's ``examples``, the
    streamed statistics' top and quantile samples (``ChannelStats``), ``unit_samples``.

    sample_id : int64 array, shape (k,)
    yx : int64 array, shape (k, 2), the position on the layer's grid ((-1, -1) for "mean" rows)
    values : float32 array, shape (k,), the unit's value there (for a direction, the dot product)
    rows : int64 array, shape (k,), the cached rows the examples are, or None when they come from
        statistics streamed over every position (most positions are not cached rows)
    """

    sample_id: np.ndarray
    yx: np.ndarray
    values: np.ndarray
    rows: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.sample_id)


def best_per_sample(sample_id: torch.Tensor, scores: torch.Tensor, n_samples: int | None = None) -> torch.Tensor:
    """Each sample's best entry: where its score is highest.

    sample_id : int64 tensor, shape (r,), the sample of each entry (e.g. of each row of a layer)
    scores : float tensor, shape (r,), on the same device, without NaN
    n_samples : int > every sample id; default the largest id + 1
    Returns int64 tensor, shape (m,): for each sample with an entry, in sample order, the position
    (into ``sample_id``) of its highest score; ties go to the first position.
    """
    r = int(sample_id.shape[0])
    if n_samples is None:
        n_samples = int(sample_id.max()) + 1 if r else 0
    best = torch.full((n_samples,), -torch.inf, device=scores.device, dtype=scores.dtype)
    best = best.scatter_reduce(0, sample_id, scores, reduce="amax")
    is_best = scores == best[sample_id]
    first = torch.full((n_samples,), r, device=scores.device, dtype=torch.long)
    idx = torch.arange(r, device=scores.device)
    first = first.scatter_reduce(0, sample_id[is_best], idx[is_best], reduce="amin")
    return first[first < r]


def best_rows(la: "LayerActs", scores, k: int, rows=None) -> "TopExamples":
    """The ``k`` best-scoring rows of a layer, at most one per sample, best first.

    scores : float tensor or array, shape (r,), the score of each of ``rows``
    rows : int tensor or array, shape (r,), row indices of the layer; None for all its rows
    Returns TopExamples of up to ``k`` distinct samples; ties go to the earlier of ``rows``.
    """
    device = la.sample_id.device  # only the picked rows leave a GPU cache
    scores = torch.as_tensor(scores, device=device)
    rows_t = None if rows is None else torch.as_tensor(rows, dtype=torch.long, device=device)
    sample_id = la.sample_id if rows_t is None else la.sample_id[rows_t]
    pos = _ranked(best_per_sample(sample_id, scores), scores, int(k))
    picked = pos if rows_t is None else rows_t[pos]
    return TopExamples(
        sample_id=sample_id[pos].cpu().numpy().astype(np.int64),
        yx=la.yx[picked].cpu().numpy().astype(np.int64),
        values=scores[pos].cpu().numpy().astype(np.float32),
        rows=picked.cpu().numpy().astype(np.int64),
    )


def _ranked(positions: torch.Tensor, scores: torch.Tensor, k: int) -> torch.Tensor:
    """The ``k`` best of ``positions`` by score, best first; ties keep the order of position."""
    positions = positions.sort().values
    order = torch.argsort(scores[positions], descending=True, stable=True)
    return positions[order[:k]]


@dataclass(repr=False)
class ActivationCache:
    """Activations of the captured layers plus per-sample labels, logits and display images.

    layers : dict layer name -> LayerActs
    labels : tensor, shape (n_samples,), int64; -1 where the data had no label
    logits : tensor, shape (n_samples, n_outputs), float32
    images : uint8 tensor, shape (n_samples, 3, h, w), on the CPU, or None; (h, w) may be smaller
        than ``input_hw`` (display copies, see ``capture``'s ``display_size``)
    input_hw : (height, width) of the model's input images
    classes : class names indexed by label, or None
    meta : JSON-able facts about the capture (model and data fingerprints, policy, seed, ...)
    sample_digest : uint8 tensor, shape (n_samples, 16), on the CPU, or None: XXH3-128 digest of
        each input sample's bytes (image and label). The store checks with it that a resumed
        capture reads the same data; any shard split can be re-hashed from it.
    stats : dict layer name -> ``topk.ChannelStats``, per-channel statistics streamed over every
        spatial position during ``capture(..., stats=True)``; empty otherwise
    path : the store directory this cache was captured into, loaded from or saved to, or None
        while it lives only in memory; ``cell_icons`` keeps feature-vis icons there
    tokens : int64 tensor, shape (n_samples, T_max), on the CPU, or None (not text): each
        sample's valid token ids from the left (padding removed), -1 after; a token row's
        ``yx[1]`` is its column here
    vocab : token strings indexed by token id, or None
    preprocess : the function capture applied to each image batch before the model, or None;
        kept in memory only (a loaded cache has None: pass it again)

    ``meta["output"]`` is "per_sample" when ``logits`` are the model's (N, n_classes) outputs,
    "per_token" when the model returns (N, T, V) logits: those are not kept (``logits`` is then
    (n_samples, 0)), since one row per sample cannot hold them.
    """

    layers: dict[str, LayerActs]
    labels: torch.Tensor
    logits: torch.Tensor
    images: torch.Tensor | None = None
    input_hw: tuple[int, int] = (0, 0)
    classes: list[str] | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    sample_digest: torch.Tensor | None = None
    stats: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None
    tokens: torch.Tensor | None = None
    vocab: list[str] | None = None
    preprocess: Any = None

    def __repr__(self) -> str:
        # a summary: the default dataclass repr would print every tensor and class name
        layers = "".join(f"\n  {name!r}: {la!r}" + (" +stats" if name in self.stats else "")
                         for name, la in self.layers.items())
        n_classes = len(self.classes) if self.classes else 0
        shown = ", ".join(map(repr, (self.classes or [])[:6]))
        more = f", ... ({n_classes} in all)" if n_classes > 6 else ""
        images = "none" if self.images is None else f"{tuple(self.images.shape[1:])} uint8"
        where = f", stored at {str(self.path)!r}" if self.path is not None else ""
        classes = "none" if self.classes is None else f"[{shown}{more}]"
        if self.tokens is not None:
            vocab = f", vocab of {len(self.vocab)}" if self.vocab is not None else ""
            inputs = f"tokens (up to {self.tokens.shape[1]} per sample{vocab})"
        else:
            inputs = f"input {self.input_hw}, images {images}"
        output = (", logits per token (not kept)" if self.meta.get("output") == "per_token"
                  else f", logits {tuple(self.logits.shape[1:])}")
        return (f"ActivationCache({self.n_samples} samples, {inputs}, classes {classes}{output}"
                f"{where}{layers}\n)")

    def __getitem__(self, layer: str) -> LayerActs:
        try:
            return self.layers[layer]
        except KeyError:
            raise LayerNotCaptured(
                f"Layer {layer!r} was not captured; this cache has {list(self.layers)}."
            ) from None

    @property
    def n_samples(self) -> int:
        return int(self.labels.shape[0])

    @property
    def device(self) -> torch.device:
        first = next(iter(self.layers.values()), None)
        return first.acts.device if first is not None else self.logits.device

    def layer_name(self, name: str | None = None) -> str:
        """The name of a layer of this cache: ``name`` checked, or the only layer when None.

        Every function that takes ``layer=`` for a cache resolves it here (``hooks.resolve_layers``
        does the same for a model's layers). Raises ValueError for None when the cache has several
        layers, TypeError for a non-string, and ``LayerNotCaptured`` (a ValueError and a KeyError)
        for a layer the cache does not hold.
        """
        if name is None:
            if len(self.layers) != 1:
                raise ValueError(
                    f"This cache has {len(self.layers)} layers {list(self.layers)}; "
                    "pass layer=... to say which."
                )
            return next(iter(self.layers))
        if not isinstance(name, str):
            raise TypeError(f"layer must be a layer name (str), got {type(name).__name__}.")
        if name not in self.layers:
            raise LayerNotCaptured(f"Layer {name!r} was not captured; this cache has {list(self.layers)}.")
        return name

    def layer(self, name: str | None = None) -> LayerActs:
        """The named layer, or the only one when the cache has one (see ``layer_name``)."""
        return self.layers[self.layer_name(name)]

    def attribution(self, layer: str | None, target: Any) -> torch.Tensor:
        """Stored attribution of ``layer``'s rows toward ``target``, shape (n_rows, n_channels).

        target : a class id, a class name, a pair (a, b) for logit a - logit b, a ``Target``, a
            next-token target ("token:wok", ("token:wok", "token:pan")), or a stored key such as
            "wok-frying pan", "class:1-class:0" or "token:wok-token:pan". Store it first with
            ``cache.add_attribution(aw.attribute(model, data, layer, target, cache=cache,
            store=False))``.
        """
        la = self.layer(layer)
        n_out = n_outputs_of(self.logits)
        key = find_stored(la, target, self.classes, n_out, self.vocab)
        if key is None:
            want = resolve(target, self.classes, n_out, self.vocab).key(self.classes, self.vocab)
            have = list(la.attributions) or "none yet"
            raise KeyError(f"No attribution toward {want!r} for this layer; it has {have}. Compute "
                           "and store it with cache.add_attribution(aw.attribute(model, data, "
                           "layer, target, cache=cache, store=False)).")
        return la.attributions[key]

    def add_attribution(self, attribution: Any) -> str:
        """Store an attribution of this cache's rows (``aw.attribute(..., cache=cache)``).

        attribution : an ``Attribution`` whose ``layer``, ``sample_id`` and ``yx`` are this
            cache's rows of that layer, ``per_channel`` shape (n_rows, n_channels); or a list of them
        Stores ``per_channel`` as float32 on the cache's device under the attribution's key, with
        its Target beside it (replacing an earlier one toward the same target). ``cache.save``
        writes it. Returns the key (a list of keys for a list).
        """
        if isinstance(attribution, (list, tuple)):
            for one in attribution:  # check all before storing any
                self._checked_rows(one)
            return [self.add_attribution(one) for one in attribution]
        la = self._checked_rows(attribution)
        target, key = attribution.target, attribution.key
        old = la.attribution_targets.get(key)
        if old is not None and old != target:
            raise ValueError(f"Layer {attribution.layer!r} already holds key {key!r} for another "
                             f"target ({old}); pass class names that spell them apart.")
        same = find_stored(la, target, self.classes, n_outputs_of(self.logits), self.vocab)
        if same is not None and same != key:  # one target, one key
            la.attributions.pop(same)
            la.attribution_targets.pop(same, None)
        la.attributions[key] = attribution.per_channel.detach().to(la.acts.device, torch.float32)
        la.attribution_targets[key] = target
        return key

    def _checked_rows(self, attribution: Any) -> LayerActs:
        """The layer an attribution belongs to, after checking it holds exactly its rows."""
        per_channel = getattr(attribution, "per_channel", None)
        if not isinstance(getattr(attribution, "target", None), Target) or per_channel is None:
            raise TypeError("add_attribution takes an Attribution from aw.attribute(model, data, "
                            f"layer, target, cache=cache), got {type(attribution).__name__}.")
        layer = getattr(attribution, "layer", None)
        if getattr(attribution, "sample_id", None) is None or layer is None:
            raise ValueError("This attribution covers every position, not this cache's rows; "
                             "compute it with aw.attribute(model, data, layer, target, cache=cache).")
        la = self[layer]
        if (tuple(per_channel.shape) != (la.n_rows, la.n_channels)
                or not torch.equal(attribution.sample_id.to(la.sample_id.device), la.sample_id)
                or not torch.equal(attribution.yx.to(la.yx.device), la.yx)):
            raise ValueError(f"This attribution was computed for other rows of layer {layer!r} "
                             "than this cache holds; compute it with cache= this cache.")
        return la

    def to(self, device: torch.device | str) -> "ActivationCache":
        device = check_device(device)
        return ActivationCache(
            {k: v.to(device) for k, v in self.layers.items()},
            self.labels.to(device),
            self.logits.to(device),
            self.images,
            self.input_hw,
            self.classes,
            dict(self.meta),
            self.sample_digest,
            {k: v.to(device) for k, v in self.stats.items()},
            self.path,
            self.tokens,
            self.vocab,
            self.preprocess,
        )

    def label_names(self, sample_id: np.ndarray | torch.Tensor) -> list[str]:
        """Class name of each given sample, spelled as ``cache.targets.class_name`` spells it
        ("wok", "class:3" without names, "?" where the label is unknown)."""
        ids = torch.as_tensor(sample_id).cpu()
        if ids.numel() == 0:
            return []
        if ids.is_floating_point() or ids.dtype == torch.bool or ids.is_complex():
            raise TypeError(f"sample ids must be integers, got {ids.dtype}.")
        if (int(ids.min()) < 0 or int(ids.max()) >= self.n_samples):
            # a negative id would silently index from the end
            raise ValueError(f"sample ids must be in [0, {self.n_samples - 1}] (this cache has "
                             f"{self.n_samples} samples), got {int(ids.min())}..{int(ids.max())}.")
        return [class_name(v, self.classes) for v in self.labels.cpu()[ids].tolist()]

    def top_examples(
        self,
        direction: torch.Tensor | np.ndarray,
        k: int = 16,
        layer: str | None = None,
        per_sample: bool = False,
    ) -> TopExamples:
        """Rows whose activation has the largest dot product with ``direction``.

        direction : array, shape (n_channels,)
        per_sample : keep only the best row of each sample, so k distinct samples come back
        """
        name = self.layer_name(layer)
        la = self.layers[name]
        d = checked_direction(direction, la.n_channels, name)
        k = positive_int(k, "k")
        scores = la.acts @ d.to(device=la.acts.device, dtype=la.acts.dtype)  # the one matmul
        scores = finite_scores(scores.float())
        if per_sample:
            return best_rows(la, scores, k)
        vals, rows = scores.topk(min(k, la.n_rows))
        return TopExamples(
            sample_id=la.sample_id[rows].cpu().numpy(),
            yx=la.yx[rows].cpu().numpy(),
            values=vals.cpu().numpy().astype(np.float32),
            rows=rows.cpu().numpy(),
        )

    def save(self, path: str | Path, shard_samples: int = 1024, *, overwrite: bool = False) -> Path:
        """Write the cache as a store directory (see ``atlaswidgets.cache.store``).

        A store already at ``path`` is replaced only when it holds this capture's data (say, the
        store this cache was loaded from, before attributions were added); ``overwrite=True``
        replaces any store there, as a cache not made by capture() needs.
        """
        from .store import save_cache

        return save_cache(self, path, shard_samples=shard_samples, overwrite=overwrite)

    @classmethod
    def load(
        cls,
        path: str | Path,
        model: torch.nn.Module | None = None,
        device: torch.device | str | None = None,
    ) -> "ActivationCache":
        """Read a store directory; with ``model``, refuse a store captured from another model."""
        from .store import load_cache

        return load_cache(path, model=model, device=device)
