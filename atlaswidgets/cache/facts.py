"""What a neuron viewer shows about a unit besides its examples: the distribution of its
per-sample maxima, the channels most correlated with it, the classes it pushes up and down, and its
activation maps on given images. Plain computations on a cache (and a model); the NeuronViewer
only holds their results and draws them.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import numpy as np
import torch

from .cache import ActivationCache
from .hooks import as_model_input, eval_mode, forward_layers
from .sampling import vit_grid
from .topk import DEFAULT_RANGES
from .units import unit_maxima
from .targets import target_key

__all__ = ["LayerOutputs", "UnitFacts", "activation_maps", "checked_inputs", "map_error"]


class UnitFacts:
    """Per-cache facts about units of its layers; the layer moments and class means they need
    are computed once per layer (the cached activations do not change)."""

    def __init__(self, cache: ActivationCache):
        self._cache = cache
        self._moments: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # layer -> (mean, second moment)
        self._pushes: dict[tuple, tuple[list[str], torch.Tensor]] = {}

    def distribution(self, layer: str, unit, maxima=None):
        """Histogram of the unit's per-sample maxima, and the value at each quantile bound."""
        qs = sorted({q for r in DEFAULT_RANGES for q in r} - {0.0, 1.0})
        stats = (getattr(self._cache, "stats", None) or {}).get(layer)
        if isinstance(unit, int) and stats is not None:
            edges, counts = stats.histogram(unit, of="maxima")
            marks = [stats.quantile(unit, q, of="maxima") for q in qs]
            return (edges, counts, qs, np.asarray(marks),
                    "per-sample maximum over every position (streamed during capture)")
        if maxima is None:
            maxima = unit_maxima(self._cache, unit, layer)
        best = maxima.values.astype(np.float64)
        bins = stats.bins if stats is not None else 64
        counts, edges = np.histogram(best, bins=bins)
        return edges, counts, qs, np.quantile(best, qs), "per-sample maximum over the cached positions"

    def related(self, layer: str, unit, n: int):
        """Correlated channels over the cached rows; classes pushed most (channels only)."""
        mean, second = self._moment(layer)
        # the unit's value at a row is acts @ v, so its covariance with every channel and its
        # variance follow from the layer's mean and second moment: (C, C) work, not a pass over rows
        if isinstance(unit, int):
            v = torch.zeros_like(mean)
            v[unit] = 1.0
        else:
            v = torch.as_tensor(np.asarray(unit), dtype=torch.float64, device=mean.device)
        s_mean = mean @ v
        cov = second @ v - mean * s_mean
        s_power = v @ second @ v
        s_std = (s_power - s_mean * s_mean).clamp_min(0).sqrt()
        power = torch.diagonal(second)
        std = (power - mean * mean).clamp_min(0).sqrt()
        # a constant channel's variance comes out as rounding noise, not 0: call it constant
        live = (std > 1e-6 * power.sqrt()) & (s_std > 1e-6 * s_power.sqrt())
        corr = torch.where(live, cov / (std * s_std).clamp_min(1e-12), torch.zeros_like(cov))
        corr = corr.float()
        if isinstance(unit, int):
            corr[unit] = -math.inf  # itself
        order = torch.argsort(corr, descending=True)[:n]
        related = [{"channel": int(c), "corr": float(corr[c])} for c in order if math.isfinite(corr[c])]
        names, means = self.class_means(layer)
        if not isinstance(unit, int):
            return related, [], [], "class attributions are per channel; pick a channel to see them"
        if not names:
            return related, [], [], (f"no single-class attributions for {layer!r}: compute them "
                                     f"with aw.attribute(model, data, {layer!r}, 'class', cache=cache)")
        col = means[:, unit]
        # a raw mean attribution (logit per position, ~1e-4) says little alone: each class's value
        # also goes as a share of the strongest channel for that class, and the channel's rank
        top = means.abs().amax(1).clamp_min(1e-30)
        rank_up = (means > col[:, None]).sum(1) + 1  # 1 = pushes this class most of all channels
        rank_down = (means < col[:, None]).sum(1) + 1

        def item(i, rank):
            return {"name": names[i], "value": float(col[i]), "share": float(col[i] / top[i]),
                    "rank": int(rank[i]), "of": int(means.shape[1])}

        up = [item(i, rank_up) for i in torch.argsort(col, descending=True) if col[i] > 0][:n]
        down = [item(i, rank_down) for i in torch.argsort(col) if col[i] < 0][:n]
        return related, up, down, ("% of the strongest channel's push on that class (mean "
                                   "attribution: activation × gradient of the class logit)")

    def _moment(self, layer: str) -> tuple[torch.Tensor, torch.Tensor]:
        """The layer's channel means (C,) and second moments E[x x^T] (C, C), float64."""
        if layer not in self._moments:  # the activations do not change; computed once per layer
            acts = self._cache[layer].acts.double()
            self._moments[layer] = (acts.mean(0), acts.T @ acts / len(acts))
        return self._moments[layer]

    def class_means(self, layer: str) -> tuple[list[str], torch.Tensor]:
        """Class names with a single-class attribution, and each one's mean per channel, shape
        (n_classes_found, n_channels)."""
        la = self._cache[layer]
        cache = self._cache
        n_out = int(cache.logits.shape[1]) if cache.logits.ndim == 2 else 0
        keys = {}
        for k in range(n_out):
            key = target_key(k, cache.classes, n_out)
            if key in la.attributions:
                keys[key] = key
        memo_key = (layer, tuple(keys))
        if memo_key not in self._pushes:
            rows = [la.attributions[k].float().mean(0) for k in keys]
            means = torch.stack(rows) if rows else torch.zeros(0, la.n_channels)
            self._pushes[memo_key] = (list(keys), means.cpu())
        return self._pushes[memo_key]


class LayerOutputs:
    """A model's output at a layer for some samples, re-run from what capture fed it, the most
    recent ones remembered.

    What the model is run on (``inputs`` of ``__call__``), so that the outputs are the captured ones:

    - token ids, int (n_samples, T_max), ``cache.tokens`` (left-aligned, -1 after): each sample's
      valid tokens alone, samples of one length batched together, so no padding is involved;
    - float images (n_samples, C, H, W): the images exactly as given to capture (before its
      ``preprocess``), then ``preprocess``; exact;
    - uint8 display images, ``cache.images``: divided by 255, resized to the model's input, then
      ``preprocess``. Exact only where the capture's images were whole multiples of 1/255 in [0, 1]
      and kept at full size (``display_size=None``); otherwise close (``map_error`` tells by how
      much).

    prefix_tokens : a ViT capture's leading CLS/register tokens (``cache.meta["prefix_tokens"]``):
        a block's (N, T, D) output becomes its patch grid, as capture kept it
    preprocess : what capture applied to each image batch before the model (``cache.preprocess``),
        or None when the model takes [0, 1] images (a model that normalises inside gets nothing
        more: applying a normalisation twice is what made the maps wrong).
    forward : capture's ``forward=`` (``cache.forward``): the model is called as ``forward(batch)``
        on batches of the form capture gave it; None calls ``model(batch)``, or ``model(**batch)``
        for a dict
    token_inputs : the form of capture's token batches (``cache.meta["token_inputs"]``): "ids" (a
        tensor of token ids) or the keys of its dict batches. A dict is rebuilt for each group of
        samples from their valid tokens alone: ``input_ids``, ``attention_mask`` all ones (no
        padding), ``token_type_ids`` zeros (one segment); other keys cannot be rebuilt (ValueError)

    Running the model on a click's examples is most of what a click costs in Python when the
    viewer has a model, and clicking around an atlas shows many samples again: over 25 random
    clicks on a 10k-row kitchen cache, about half of each click's samples had been shown before.
    The least recently used outputs go first once they exceed ``budget_mb``.
    """

    def __init__(self, model, input_hw, preprocess, budget_mb: float = 64, prefix_tokens: int | None = None,
                 forward=None, token_inputs=None):
        if forward is not None and not callable(forward):
            raise TypeError(f"forward must be a function batch -> output (capture's forward=), got "
                            f"{type(forward).__name__}.")
        self._model, self._input_hw, self._preprocess = model, tuple(input_hw), preprocess
        self._forward, self._token_keys = forward, _token_keys(token_inputs)
        self.prefix_tokens = prefix_tokens  # a ViT capture's CLS/register tokens (cache.meta)
        self._budget = int(budget_mb * 2**20)
        self._kept: OrderedDict[tuple[str, int], torch.Tensor] = OrderedDict()
        self._bytes = 0

    def __call__(self, inputs, layer: str, hw, ids: np.ndarray) -> torch.Tensor:
        """Outputs for samples ``ids`` (distinct), shape (len(ids), channels, grid_h, grid_w); a
        token layer's are (len(ids), channels, 1, T_max), NaN after each sample's last token."""
        missing = [int(i) for i in ids if (layer, int(i)) not in self._kept]
        if missing:
            out = self._run(inputs, layer, hw, missing)
            for i, o in zip(missing, out):
                o = o.clone()  # not a view: it would keep the whole batch alive
                self._kept[(layer, i)] = o
                self._bytes += o.numel() * o.element_size()
        got = []
        for i in ids:
            self._kept.move_to_end((layer, int(i)))
            got.append(self._kept[(layer, int(i))])
        result = torch.stack(got)
        while self._bytes > self._budget and len(self._kept) > len(ids):
            _, old = self._kept.popitem(last=False)
            self._bytes -= old.numel() * old.element_size()
        return result

    def _run(self, inputs, layer: str, hw, ids: list[int]) -> torch.Tensor:
        if not inputs.is_floating_point() and inputs.dtype != torch.uint8:
            return self._run_tokens(inputs, layer, hw, ids)
        x = inputs[torch.as_tensor(ids)]
        x = x.float() / 255 if x.dtype == torch.uint8 else x
        if self._input_hw[0] > 0 and tuple(x.shape[-2:]) != self._input_hw:
            x = torch.nn.functional.interpolate(x.float(), size=self._input_hw, mode="bilinear",
                                                align_corners=False)
        x = as_model_input(self._model, x)  # its device, and half precision for a half model
        if self._preprocess is not None:  # as capture: on the device, after the cast
            x = self._preprocess(x)
        with eval_mode(self._model), torch.no_grad():
            out = self._layer_output(layer, x, self._forward).float()
        if out.ndim == 2:
            out = out[:, :, None, None]
        elif out.ndim == 3:  # a ViT block: its patch tokens as the grid, as capture kept them
            out = vit_grid(layer, out, self.prefix_tokens)
        if tuple(out.shape[-2:]) != tuple(hw):
            raise ValueError(f"The model's {layer!r} output has grid {tuple(out.shape[-2:])}, but the cache "
                             f"says {tuple(hw)}; pass the model the cache was captured from.")
        return out

    def _run_tokens(self, tokens, layer: str, hw, ids: list[int]) -> torch.Tensor:
        rows = tokens[torch.as_tensor(ids)].long()
        lengths = (rows >= 0).sum(1)
        out = None
        with eval_mode(self._model), torch.no_grad():
            for n in torch.unique(lengths).tolist():
                if n == 0:
                    continue
                pick = (lengths == n).nonzero().flatten()
                o = self._layer_output(layer, *self._token_batch(rows[pick, :n]))
                if o.ndim != 3 or o.shape[:2] != (len(pick), n):
                    raise ValueError(f"The model's {layer!r} output on {len(pick)} samples of {n} tokens "
                                     f"has shape {tuple(o.shape)}, not ({len(pick)}, {n}, channels); "
                                     "pass the model the cache was captured from.")
                if out is None:
                    out = torch.full((len(ids), o.shape[2], 1, int(hw[1])), float("nan"), device=o.device)
                if n > out.shape[-1]:
                    raise ValueError(f"Sample has {n} tokens but the cache's layer holds {out.shape[-1]}.")
                out[pick.to(o.device), :, 0, :n] = o.float().transpose(1, 2)
        if out is None:
            raise ValueError("These samples have no tokens to run the model on.")
        return out


    def _layer_output(self, layer: str, x, call) -> torch.Tensor:
        try:
            return forward_layers(self._model, (layer,), x, call)[layer]
        except (TypeError, RuntimeError) as e:
            if self._forward is not None:
                raise
            raise type(e)(f"The model failed when re-run on the cached samples: {e}. If capture "
                          "called it through forward=, pass that same forward= here (a cache "
                          "loaded from a store does not keep the function).") from e

    def _token_batch(self, ids: torch.Tensor) -> tuple:
        """(batch, call) for ``forward_layers``: token ids (n, L) without padding, in the form
        capture gave the model (see ``token_inputs``), and how capture called it."""
        ids = as_model_input(self._model, ids)
        if self._token_keys is None:
            return ids, self._forward
        fill = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids)}
        batch = {k: fill[k] for k in self._token_keys}
        return batch, self._forward if self._forward is not None else (lambda b: self._model(**b))


_REBUILT = ("input_ids", "attention_mask", "token_type_ids")


def _token_keys(token_inputs) -> tuple[str, ...] | None:
    """``token_inputs`` (see ``LayerOutputs``) as the dict keys to rebuild, or None for plain ids."""
    if token_inputs is None or token_inputs == "ids":
        return None
    if isinstance(token_inputs, str) or not all(isinstance(k, str) for k in token_inputs):
        raise TypeError(f"token_inputs must be 'ids' or a list of the dict batches' keys, got {token_inputs!r}.")
    keys = tuple(token_inputs)
    other = [k for k in keys if k not in _REBUILT]
    if "input_ids" not in keys or other:
        raise ValueError(f"The capture's token batches held the keys {list(keys)}; a re-run can rebuild "
                         f"only {list(_REBUILT)} from a sample's tokens (not {other or ['without input_ids']}). "
                         "Pass model=None to show the cached values, or capture from batches of those keys.")
    return keys


def map_error(maps: np.ndarray, yx: np.ndarray, values: np.ndarray) -> float:
    """How far re-run maps are from the captured activations: the largest |map at an example's
    position - its captured value|, over examples with a finite value there (0.0 for none).

    maps : (k, h, w); yx : int (k, 2); values : (k,), the cached (or streamed) values at yx
    """
    if len(values) == 0:
        return 0.0
    yx = np.asarray(yx).reshape(-1, 2)
    at = maps[np.arange(len(values)), yx[:, 0], yx[:, 1]]
    diff = np.abs(at.astype(np.float64) - np.asarray(values, np.float64))
    diff = diff[np.isfinite(diff)]
    return float(diff.max()) if diff.size else 0.0


def activation_maps(outputs: LayerOutputs, images, sample_id, layer, unit, hw) -> np.ndarray:
    """The unit's activation at every position of ``layer`` for some samples.

    outputs : the model's remembered layer outputs; images : what to run it on (see
        ``LayerOutputs``: raw float images, uint8 display images, or ``cache.tokens``)
    sample_id : int array (k,); unit : channel or direction
    Returns float32 (k, grid_h, grid_w); for tokens (k, 1, T_max), NaN after each sample's last
    token. The model runs once per distinct sample not yet seen.
    """
    ids, inverse = np.unique(np.asarray(sample_id, dtype=np.int64), return_inverse=True)
    out = outputs(images, layer, hw, ids)
    if isinstance(unit, int):
        maps = out[:, unit]
    else:
        maps = torch.einsum("nchw,c->nhw", out, torch.as_tensor(unit, device=out.device, dtype=out.dtype))
    return maps.cpu().numpy().astype(np.float32)[inverse]


def checked_inputs(inputs, cache: ActivationCache) -> torch.Tensor | None:
    """``inputs`` (the images given to capture, to re-run the model on) as a float tensor
    (n_samples, C, H, W), or None; a clear error for anything else."""
    if inputs is None:
        return None
    if getattr(cache, "tokens", None) is not None:
        raise ValueError("inputs= is for image caches; a text cache re-runs the model on cache.tokens.")
    if not isinstance(inputs, (torch.Tensor, np.ndarray)):
        raise TypeError(f"inputs must be a float tensor (n_samples, C, H, W), the images given to "
                        f"capture, got {type(inputs).__name__}.")
    x = torch.as_tensor(inputs)
    if x.ndim != 4 or not x.is_floating_point() or len(x) != cache.n_samples:
        raise ValueError(f"inputs must be the images given to capture: float, shape "
                         f"({cache.n_samples}, C, H, W), got {x.dtype} {tuple(x.shape)}.")
    return x
