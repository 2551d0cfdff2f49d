"""NeuronViewer: what makes a channel (or any direction) fire, and not only at the very top.

For one unit of a layer the viewer shows the dataset examples that ``topk.unit_samples`` gives
(the top samples, samples from quantile ranges of the unit's distribution, then a plain random
sample, as the neuron-explainer viewer does), each with its activation map when a model is at
hand; the distribution of the unit's per-sample maxima with the quantile ranges marked; the
channels most correlated with it over the cache's rows; the classes it pushes up and down (mean
single-class attribution); and its feature-visualisation icon. Python computes all of it; the page
draws it from binary buffers and a JPEG sprite sheet and reports clicks and key presses.

The histogram is drawn by the page on a canvas from the counts Python sends, not with a plotly
FigureWidget: one widget keeps ``link()``/``show()`` layouts simple, a unit switch stays one
message (the page never shows one unit's histogram beside another's examples), and no copy of
plotly.js loads per view. ``NeuronViewer.histogram_figure()`` gives the same plot as a plotly
Figure for a notebook or a paper.

DOM hooks for tests: root ``.aw-neuron`` with ``data-unit`` ("channel:84" or "direction"),
``data-layer``, ``data-version`` (the drawn state) and ``data-n-examples``; one
``.aw-neuron-group`` per group with ``data-group`` and ``data-count``, its title in
``.aw-neuron-group-title``; one ``.aw-neuron-example`` per example with ``data-sample-id``;
``.aw-neuron-related-channel`` buttons with ``data-channel``; ``.aw-neuron-class`` buttons with
``data-class``; ``.aw-neuron-error`` holding the last error of a page action.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Callable

import anywidget
import numpy as np
import torch
import traitlets

from ..cache.cache import ActivationCache
from ..cache.checks import checked_direction, int_at_least
from ..cache.crops import display_images, resize_images, sprite_sheet, thumb_boxes
from ..cache.facts import LayerOutputs, UnitFacts, activation_maps
from ..cache.topk import UnitSamples
from ..cache.units import unit_maxima, unit_samples
from ._common import RollsBackPageState, esm, from_buffer, refuses, to_buffer
from .display import to_png

__all__ = ["NeuronViewer"]


def _group_title(name: str) -> str:
    if name == "top":
        return "Top activations"
    if name == "random":
        return "Random sample"
    return f"Quantile range {name}"


class NeuronViewer(RollsBackPageState, anywidget.AnyWidget):
    """Dataset examples, distribution, related units and icon of one channel or direction.

    Parameters
    ----------
    cache : ActivationCache captured with ``stats=True`` (and ``keep_images=True``)
    layer : a layer with statistics; None picks the first one
    channel : the channel shown first
    model : the captured model; with it each example gets its activation map (the model runs on
        those few images) and the unit its feature-visualisation icon. Without it an example's
        strongest position is outlined with its receptive field instead
    n : examples per quantile range and in the random sample; n_top : top examples (default n)
    seed : seeds the quantile and random samples
    thumb_size : side of each example picture in pixels
    icons : render the feature-vis icon when a model is given (False to skip: it costs seconds
        of CPU per new unit); icon_steps : its optimisation steps (fewer is faster, 64 or more
        gives cleaner pictures); icons are kept in memory per unit
    normalize : maps images in [0, 1] to what the model expects (e.g. ImageNet mean/std), for
        the activation maps and icons; None when the model takes [0, 1] images
    n_related : how many correlated channels and pushed classes to list
    """

    _esm = esm("neuron.js")
    _css = Path(__file__).parent / "neuron.css"

    # Unit: what is shown; set from Python (the page asks through messages)
    layers = traitlets.List(traitlets.Unicode()).tag(sync=True)  # layers with statistics
    layer = traitlets.Unicode("").tag(sync=True)
    channel = traitlets.Int(0).tag(sync=True)
    n_channels = traitlets.Int(0).tag(sync=True)
    unit = traitlets.Dict().tag(sync=True)  # {"kind": "channel", "layer", "channel"} or a direction
    version = traitlets.Int(0).tag(sync=True)  # bumped once per shown unit

    # Examples, all set together; arrays as little-endian bytes
    groups = traitlets.List(traitlets.Dict()).tag(sync=True)  # {"name", "title", "count"} in order
    n_examples = traitlets.Int(0).tag(sync=True)
    sprite = traitlets.Bytes(b"").tag(sync=True)  # JPEG; example i at (i % sprite_cols, i // sprite_cols)
    sprite_cols = traitlets.Int(1).tag(sync=True)
    labels = traitlets.List(traitlets.Unicode()).tag(sync=True)
    values = traitlets.Bytes(b"").tag(sync=True)  # float32 (n_examples,)
    sample_ids = traitlets.Bytes(b"").tag(sync=True)  # uint32 (n_examples,)
    yx = traitlets.Bytes(b"").tag(sync=True)  # int32 (n_examples, 2)
    marking = traitlets.Unicode("box").tag(sync=True)  # "heatmap" (maps) or "box" (boxes)
    maps = traitlets.Bytes(b"").tag(sync=True)  # float32 (n_examples, grid_h, grid_w)
    map_hw = traitlets.List(traitlets.Int(), [0, 0]).tag(sync=True)
    map_max = traitlets.Float(1.0).tag(sync=True)  # the colour scale's top, shared by all maps
    boxes = traitlets.Bytes(b"").tag(sync=True)  # int32 (n_examples, 4): y0, x0, y1, x1 in thumb px

    # Distribution of the unit's per-sample maxima
    hist_edges = traitlets.Bytes(b"").tag(sync=True)  # float32 (bins + 1,)
    hist_counts = traitlets.Bytes(b"").tag(sync=True)  # uint32 (bins,)
    hist_marks = traitlets.Bytes(b"").tag(sync=True)  # float32: value at each quantile below
    hist_quantiles = traitlets.List(traitlets.Float()).tag(sync=True)
    hist_note = traitlets.Unicode("").tag(sync=True)

    # Related units
    related_channels = traitlets.List(traitlets.Dict()).tag(sync=True)  # {"channel", "corr"}
    classes_up = traitlets.List(traitlets.Dict()).tag(sync=True)  # {"name", "value"}
    classes_down = traitlets.List(traitlets.Dict()).tag(sync=True)
    related_note = traitlets.Unicode("").tag(sync=True)
    search_results = traitlets.List(traitlets.Dict()).tag(sync=True)  # {"channel", "score"}
    search_title = traitlets.Unicode("").tag(sync=True)

    # Icon, sent after the examples (it takes a second): PNG bytes of the unit named by icon_unit
    icon = traitlets.Bytes(b"").tag(sync=True)
    icon_unit = traitlets.Unicode("").tag(sync=True)
    icon_note = traitlets.Unicode("").tag(sync=True)

    # Messages and view
    error = traitlets.Unicode("").tag(sync=True)  # what went wrong with the page's last request
    note = traitlets.Unicode("").tag(sync=True)  # how the examples are marked
    thumb_size = traitlets.Int(80).tag(sync=True)

    def __init__(
        self,
        cache: ActivationCache,
        layer: str | None = None,
        channel: int = 0,
        model: torch.nn.Module | None = None,
        n: int = 8,
        n_top: int | None = None,
        seed: int = 0,
        thumb_size: int = 80,
        icons: bool = True,
        icon_steps: int = 24,
        normalize: Callable[[torch.Tensor], torch.Tensor] | None = None,
        n_related: int = 6,
        **kwargs: Any,
    ):
        if not isinstance(cache, ActivationCache):
            raise TypeError(f"cache must be an ActivationCache, got {type(cache).__name__}.")
        display_images(cache)  # a cache without images fails here, with its own message
        with_stats = [name for name in cache.layers if name in cache.stats]
        if not with_stats:
            raise ValueError("This cache has no per-channel statistics, which the viewer reads; "
                             "capture with stats=True: aw.capture(model, data, layers, stats=True).")
        if model is not None and not isinstance(model, torch.nn.Module):
            raise TypeError(f"model must be a torch.nn.Module or None, got {type(model).__name__}.")
        if normalize is not None and not callable(normalize):
            raise TypeError("normalize must be a callable images -> images, or None.")
        for name, v, lo in (("n", n, 1), ("icon_steps", icon_steps, 1), ("n_related", n_related, 1),
                            ("seed", seed, 0)) + ((("n_top", n_top, 1),) if n_top is not None else ()):
            int_at_least(v, name, lo)
        self._cache, self._model, self._normalize = cache, model, normalize
        self._n, self._n_top, self._seed = int(n), None if n_top is None else int(n_top), int(seed)
        self._icons, self._icon_steps, self._n_related = bool(icons), int(icon_steps), int(n_related)
        self._icon_memo: dict[tuple, tuple[bytes, str]] = {}
        self._facts = UnitFacts(cache)  # histogram, correlated channels, classes pushed
        self._outputs = None if model is None else LayerOutputs(model, cache.input_hw, normalize)
        self._direction: np.ndarray | None = None
        self._label = ""
        self._samples: UnitSamples | None = None
        self._busy = False  # set while a layer switch moves both traits, so one redraw follows
        layer = with_stats[0] if layer is None else self._check_layer(layer, with_stats)
        super().__init__(layers=with_stats, thumb_size=thumb_size, **kwargs)
        self._busy = True
        try:
            self.layer = layer
            self.n_channels = cache[layer].n_channels
            self.channel = channel
        finally:
            self._busy = False
        self._show()
        self.on_msg(self._on_page_msg)

    # ---- public API ------------------------------------------------------------------------

    @property
    def samples(self) -> UnitSamples | None:
        """The UnitSamples shown now (groups in display order)."""
        return self._samples

    def show_channel(self, channel: int, layer: str | None = None) -> None:
        """Show a channel (of ``layer``, default the current one)."""
        with self.hold_sync():
            self._busy = True
            try:
                if layer is not None and layer != self.layer:
                    layer = self._check_layer(layer, self.layers)
                    self.n_channels = self._cache[layer].n_channels
                    self.layer = layer
                self.channel = channel
            finally:
                self._busy = False
            self._direction = None
            self._show()

    def next(self) -> None:
        """The next channel (stays at the last)."""
        self.show_channel(min(self.channel + 1, self.n_channels - 1))

    def previous(self) -> None:
        """The previous channel (stays at 0)."""
        self.show_channel(max(self.channel - 1, 0))

    def show_direction(self, vector, label: str = "direction", layer: str | None = None) -> None:
        """Show a direction of the layer's activation space, e.g. an atlas cell's mean activation.

        vector : array or tensor, shape (n_channels,), finite and not all zero; its value at a
            position is the dot product with the activation vector there
        label : what to call it on the page (shown as text)
        """
        if not isinstance(label, str):
            raise TypeError(f"label must be a str, got {type(label).__name__}.")
        name = self.layer if layer is None else self._check_layer(layer, self.layers)
        c = self._cache[name].n_channels
        d = checked_direction(vector, c, name).cpu().numpy()
        with self.hold_sync():
            if name != self.layer:
                self._busy = True
                try:
                    self.n_channels = c
                    self.layer = name
                    self.channel = min(self.channel, c - 1)
                finally:
                    self._busy = False
            self._direction = d
            self._label = label
            self._show()

    def search(self, query: str) -> list[dict]:
        """Find a unit: a channel number shows that channel; a class name ranks the channels by
        their mean attribution toward the class (needs that class's attribution on the layer,
        ``cache.add_attribution(aw.attribute(..., cache=cache, store=False))``) and shows the best. Returns the ranked ``{"channel", "score"}``."""
        if not isinstance(query, str):
            raise TypeError(f"query must be a str, got {type(query).__name__}.")
        text = query.strip()
        number = text.lstrip("#").removeprefix("channel").strip()
        if number.lstrip("-").isdigit():
            ch = int(number)
            if not 0 <= ch < self.n_channels:
                raise ValueError(f"channel {ch} is out of range: layer {self.layer!r} has channels "
                                 f"0..{self.n_channels - 1}.")
            self.search_results, self.search_title = [], ""
            self.show_channel(ch)
            return []
        if not text:
            raise ValueError("Type a channel number or a class name.")
        names, means = self._facts.class_means(self.layer)
        if not names:
            raise ValueError(f"No single-class attributions for layer {self.layer!r}, so channels "
                             f"cannot be ranked by class; compute them with cache.add_attribution("
                             f"aw.attribute(model, data, {self.layer!r}, ['class name', ...], "
                             f"cache=cache, store=False)), or type a channel number.")
        lowered = [n.lower() for n in names]
        if text not in names and text.lower() not in lowered:
            raise ValueError(f"No attribution toward a class named {text!r} for layer "
                             f"{self.layer!r}; it has {names}.")
        k = names.index(text) if text in names else lowered.index(text.lower())
        order = torch.argsort(means[k], descending=True)[: max(self._n_related, 10)]
        results = [{"channel": int(c), "score": float(means[k, c])} for c in order]
        with self.hold_sync():
            self.search_results = results
            self.search_title = f"channels pushing {names[k]} most (mean attribution)"
            self.show_channel(results[0]["channel"])
        return results

    def activation_arrays(self) -> dict[str, np.ndarray]:
        """The synced buffers decoded back to arrays (what the page reads), for checks and tests."""
        n = self.n_examples
        gh, gw = self.map_hw
        return {
            "values": from_buffer(self.values, "float32", (n,)),
            "sample_ids": from_buffer(self.sample_ids, "uint32", (n,)),
            "yx": from_buffer(self.yx, "int32", (n, 2)),
            "maps": from_buffer(self.maps, "float32", (n, gh, gw)) if self.maps else None,
            "boxes": from_buffer(self.boxes, "int32", (n, 4)) if self.boxes else None,
            "hist_edges": from_buffer(self.hist_edges, "float32"),
            "hist_counts": from_buffer(self.hist_counts, "uint32"),
            "hist_marks": from_buffer(self.hist_marks, "float32"),
        }

    def histogram_figure(self):
        """The unit's distribution of per-sample maxima as a plotly Figure, quantiles marked."""
        import plotly.graph_objects as go

        a = self.activation_arrays()
        edges, counts = a["hist_edges"], a["hist_counts"]
        fig = go.Figure(go.Bar(x=(edges[:-1] + edges[1:]) / 2, y=counts, width=np.diff(edges),
                               marker_color="#4c72b0", name="samples"))
        for q, v in zip(self.hist_quantiles, a["hist_marks"]):
            fig.add_vline(x=float(v), line_dash="dash", line_color="#dd8452",
                          annotation_text=f"{q:g}", annotation_position="top")
        fig.update_layout(title=self._title(), xaxis_title="per-sample maximum", yaxis_title="samples",
                          yaxis_type="log", bargap=0, template="plotly_white", height=320)
        return fig

    # ---- traits from Python -------------------------------------------------------------------

    @traitlets.validate("layer")
    @refuses
    def _valid_layer(self, proposal):
        return self._check_layer(proposal["value"], self.layers)

    @traitlets.validate("channel")
    @refuses
    def _valid_channel(self, proposal):
        ch = proposal["value"]
        if not 0 <= ch < self.n_channels:
            raise ValueError(f"channel {ch} is out of range: layer {self.layer!r} has channels "
                             f"0..{self.n_channels - 1}.")
        return ch

    @traitlets.validate("thumb_size")
    @refuses
    def _valid_thumb_size(self, proposal):
        if not 16 <= proposal["value"] <= 512:
            raise ValueError(f"thumb_size must be between 16 and 512 pixels, got {proposal['value']}.")
        return proposal["value"]

    @traitlets.observe("layer")
    def _on_layer(self, change):
        if self._busy:
            return
        # a layer set from Python: keep the channel number when the new layer has it
        self._busy = True
        try:
            self.n_channels = self._cache[change["new"]].n_channels
            self.channel = min(self.channel, self.n_channels - 1)
        finally:
            self._busy = False
        self._direction = None
        self._show()

    @traitlets.observe("channel")
    def _on_channel(self, change):
        if not self._busy:
            self._direction = None
            self._show()

    @traitlets.observe("thumb_size")
    def _on_thumb(self, change):
        if self.layer:
            self._show()

    def _check_layer(self, layer, allowed) -> str:
        layer = self._cache.layer_name(layer)
        if layer not in allowed:
            raise ValueError(f"Layer {layer!r} has no per-channel statistics; capture it with "
                             f"stats=True (aw.capture(model, data, {layer!r}, stats=True)). "
                             f"Layers with statistics: {list(allowed)}.")
        return layer

    # ---- the page's requests -------------------------------------------------------------------

    def _on_page_msg(self, widget, content, buffers) -> None:
        kind = content.get("kind") if isinstance(content, dict) else None
        try:
            if kind == "channel":
                ch = content.get("channel")
                if isinstance(ch, bool) or not isinstance(ch, int):
                    raise ValueError(f"channel must be a whole number, got {ch!r}.")
                self.show_channel(ch)
            elif kind == "layer":
                layer = self._check_layer(content.get("layer"), self.layers)
                self.show_channel(min(self.channel, self._cache[layer].n_channels - 1), layer)
            elif kind == "search":
                self.search(str(content.get("query", "")))
            else:
                return
        except (ValueError, TypeError, KeyError) as e:
            self.error = str(e.args[0]) if e.args else str(e)
            return
        self.error = ""

    # ---- computing what is shown ---------------------------------------------------------------

    def _title(self) -> str:
        if self._direction is not None:
            return f"{self.layer} · {self._label}"
        return f"{self.layer} · channel {self.channel}"

    def _show(self) -> None:
        cache, layer = self._cache, self.layer
        la = cache[layer]
        d = self._direction
        unit = self.channel if d is None else d
        # a direction is scored over every cached row once, for the samples and the histogram
        maxima = None if d is None else unit_maxima(cache, d, layer)
        samples = unit_samples(cache, unit, layer, n=self._n, n_top=self._n_top, seed=self._seed,
                               source="auto", maxima=maxima)
        ex = samples.all()
        s = self.thumb_size
        images = display_images(cache)
        pics = resize_images(images[torch.as_tensor(ex.sample_id, dtype=torch.long)], s) if len(ex) else None
        sprite, cols = sprite_sheet(pics, fmt="jpeg") if pics is not None else (b"", 1)
        maps, boxes = None, None
        if self._outputs is not None and len(ex):
            maps = activation_maps(self._outputs, images, ex.sample_id, layer, unit, la.hw)
        elif len(ex):
            boxes = thumb_boxes(cache, la, images.shape[-2:], ex.yx, s).numpy()
        edges, counts, quantiles, marks, hist_note = self._facts.distribution(layer, unit, maxima)
        related, up, down, related_note = self._facts.related(layer, unit, self._n_related)
        if d is None:
            unit_trait = {"kind": "channel", "layer": layer, "channel": int(self.channel)}
        else:
            unit_trait = {"kind": "direction", "layer": layer, "label": self._label,
                          "norm": float(np.linalg.norm(d))}
        top_value = float(ex.values.max()) if len(ex) else 1.0
        with self.hold_sync():
            self.groups = [{"name": k, "title": _group_title(k), "count": len(v)}
                           for k, v in samples.groups.items()]
            self.sprite, self.sprite_cols = sprite, cols
            self.labels = [str(t) for t in cache.label_names(ex.sample_id)] if len(ex) else []
            self.values = to_buffer(ex.values, "float32")
            self.sample_ids = to_buffer(ex.sample_id, "uint32")
            self.yx = to_buffer(ex.yx, "int32")
            self.marking = "heatmap" if maps is not None else "box"
            self.maps = to_buffer(maps, "float32") if maps is not None else b""
            self.map_hw = [int(la.hw[0]), int(la.hw[1])]
            map_top = float(maps.max()) if maps is not None and maps.size else top_value
            self.map_max = max(top_value, map_top, 1e-6)
            self.boxes = to_buffer(boxes, "int32") if boxes is not None else b""
            self.note = ("heatmap: the unit's activation at each position (model run on these images)"
                         if maps is not None else "outline: what the strongest position sees (no "
                         "model given, so no activation maps)")
            self.hist_edges = to_buffer(edges, "float32")
            self.hist_counts = to_buffer(counts, "uint32")
            self.hist_quantiles = quantiles
            self.hist_marks = to_buffer(marks, "float32")
            self.hist_note = hist_note
            self.related_channels, self.classes_up, self.classes_down = related, up, down
            self.related_note = related_note
            self.unit = unit_trait
            self.n_examples = len(ex)
            self.version += 1
        self._samples = samples
        self._send_icon(unit)

    def _send_icon(self, unit) -> None:
        """The unit's feature-vis icon, after the examples: it takes about a second of CPU."""
        if isinstance(unit, int):
            key = (self.layer, "channel", unit)
            name = f"{self.layer}:channel:{unit}"
        else:
            digest = hashlib.sha256(np.asarray(unit, dtype="<f4").tobytes()).hexdigest()[:16]
            key = (self.layer, "direction", digest)
            name = f"{self.layer}:direction:{digest}"
        if self._model is None or not self._icons:
            why = "no model given" if self._model is None else "icons=False"
            with self.hold_sync():
                self.icon, self.icon_unit, self.icon_note = b"", name, f"no feature-vis icon ({why})"
            return
        if key not in self._icon_memo:
            try:
                from ..render.icons import unit_icon  # feature vis imports its own modules lazily

                icon = unit_icon(self._model, self.layer, unit, self._cache.input_hw, self._icon_steps,
                                 self._normalize)
                self._icon_memo[key] = (to_png(icon), "feature visualisation")
            except (ValueError, TypeError, RuntimeError) as e:
                self._icon_memo[key] = (b"", f"no icon: {e}")
        png, note = self._icon_memo[key]
        with self.hold_sync():
            self.icon, self.icon_unit, self.icon_note = png, name, note
