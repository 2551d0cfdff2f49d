"""NeuronViewer: what makes a channel (or any direction) fire, and not only at the very top.

For one unit of a layer the viewer shows the dataset examples that ``topk.unit_samples`` gives
(the top samples, samples from quantile ranges of the unit's distribution, then a plain random
sample, as the neuron-explainer viewer does), each with its activation map when a model is at
hand; the distribution of the unit's per-sample maxima with the quantile ranges marked; the
channels most correlated with it over the cache's rows; the classes it pushes up and down (mean
single-class attribution); and its feature-visualisation icon. Python computes all of it; the page
draws it from binary arrays and a JPEG sprite sheet, and asks for another unit (a click, a key, a
search) by setting ``request``, which Python answers by showing that unit or setting ``error``.

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
``data-class``; ``.aw-neuron-error`` holding the last error of a page action. On a text cache
(``data-mode="text"``) each example holds a ``.aw-neuron-strip`` of ``.aw-neuron-tok`` spans
(``data-value``; the example's own token also ``.aw-neuron-tok-mark``), and ``.aw-neuron-token``
entries list the top tokens (``data-list="top"``) and the tokens written (``"up"``, ``"down"``).

Maps are exact: the model is re-run on what capture fed it. For text, each sample's tokens; for
images, the images given as ``inputs=`` through the capture's preprocessing (``cache.preprocess``,
or ``preprocess=`` for a loaded cache, which does not keep it). Without ``inputs=`` an image model
runs on the uint8 display images, enlarged back to the input size when capture kept them smaller
(``display_size``), which are exact only for full-size copies of inputs that were whole multiples of
1/255; the viewer compares each map with the cached value at the example's position, and when they
differ (``map_error``) says so in its note and warns once, rather than showing wrong maps silently.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Callable

import anywidget
import numpy as np
import torch
import traitlets

from ..cache.cache import ActivationCache
from ..cache.checks import checked_direction, int_at_least, integer, is_int
from ..cache.contexts import is_text
from ..cache.crops import display_images
from ..cache.facts import LayerOutputs, UnitFacts, checked_inputs
from ..cache.topk import UnitSamples
from ..cache.units import unit_maxima, unit_samples
from ._common import Array, RollsBackPageState, bundle, refuses
from .neuron_icon import BackgroundIcon
from .neuron_image import inexact, picture_state
from .neuron_search import check_annotations, class_search, concept_search, what_it_takes
from .neuron_text import check_writes, text_state, token_search

__all__ = ["NeuronViewer"]


def _group_title(name: str) -> str:
    if name == "top":
        return "Top activations"
    if name == "random":
        return "Random sample"
    return f"Quantile range {name}"


class NeuronViewer(BackgroundIcon, RollsBackPageState, anywidget.AnyWidget):
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
        gives cleaner pictures); icons render in the background (the kernel stays free; the
        examples show meanwhile; ``wait_icon()`` blocks until it arrives) and are kept in memory
        per unit
    preprocess : what capture applied to each image batch before the model (e.g. ImageNet
        mean/std), for the activation maps and icons; default ``cache.preprocess`` (kept in
        memory by capture; pass it again for a loaded cache). None for a model that takes [0, 1]
        images or normalises inside: nothing is applied twice
    normalize : the former name of ``preprocess`` (still accepted; not both)
    inputs : the images exactly as given to capture, float (n_samples, C, H, W) before
        preprocessing, indexed by sample id; with them the maps equal the captured activations.
        Without them the maps run on the uint8 display images (see the module doc)
    n_related : how many correlated channels and pushed classes to list
    writes : for a text layer of MLP neurons, ``(W_out, W_U)``: the neurons' output weights
        (n_neurons, d_model) and the unembedding (vocab, d_model), or a dict {layer: (W_out, W_U)};
        default from the model when it has ``neuron_output_weights(i)`` and ``unembed`` (TinyLM),
        or from a Hugging Face model (``cache.tokens.model_writes``)
    annotations : per sample of the cache, the list of its objects as ``{"name", "box"}`` dicts
        (``kitchen.dataset(n).annotations``); with them the search box takes concept words
        ("noodles"): channels whose per-sample maximum tracks images holding that object
    forward : how capture called the model (its ``forward=``), for the re-runs behind the maps and
        heat strips; default ``cache.forward`` (kept in memory by capture; pass it again for a
        loaded cache). Token batches are rebuilt in the form capture saw (ids, or a dict with
        ``attention_mask``), from each sample's tokens alone

    A text cache (captured from token ids) needs no images and no statistics: each example is its
    token context with a heat strip, beside the unit's top tokens by mean activation and, for an
    MLP neuron, the tokens it promotes and suppresses through the unembedding.
    """

    _esm = bundle("neuron")
    _css = Path(__file__).parent / "neuron.css"

    # Unit: what is shown; set from Python (the page asks through `request`)
    layers = traitlets.List(traitlets.Unicode()).tag(sync=True)  # layers with statistics
    layer = traitlets.Unicode("").tag(sync=True)
    channel = traitlets.Int(0).tag(sync=True)
    n_channels = traitlets.Int(0).tag(sync=True)
    unit = traitlets.Dict().tag(sync=True)  # {"kind": "channel", "layer", "channel"} or a direction
    version = traitlets.Int(0).tag(sync=True)  # bumped once per shown unit

    # Examples, all set together; one entry per example
    groups = traitlets.List(traitlets.Dict()).tag(sync=True)  # {"name", "title", "count"} in order
    n_examples = traitlets.Int(0).tag(sync=True)
    sprite = traitlets.Bytes(b"").tag(sync=True)  # JPEG; example i at (i % sprite_cols, i // sprite_cols)
    sprite_cols = traitlets.Int(1).tag(sync=True)
    labels = traitlets.List(traitlets.Unicode()).tag(sync=True)
    values = Array("float32").tag(sync=True)
    sample_ids = Array("uint32").tag(sync=True)
    yx = Array("int32", ndim=2).tag(sync=True)  # y, x of the strongest position
    marking = traitlets.Unicode("box").tag(sync=True)  # "heatmap" (maps) or "box" (boxes)
    maps = Array("float32", ndim=3).tag(sync=True)  # one map per example, empty without a model
    map_hw = traitlets.List(traitlets.Int(), [0, 0]).tag(sync=True)
    map_max = traitlets.Float(1.0).tag(sync=True)  # the colour scale's top, shared by all maps
    boxes = Array("int32", ndim=2).tag(sync=True)  # y0, x0, y1, x1 in thumb px; empty with maps

    map_error = traitlets.Float(-1.0).tag(sync=True)  # max |map - cached value| at the examples; -1 none

    # Text caches: one context per example, its heat strip, and the unit's tokens
    mode = traitlets.Unicode("image").tag(sync=True)  # "image" or "text"
    contexts = traitlets.List(traitlets.Dict()).tag(sync=True)  # {"tokens": [str], "index", "start"}
    heat = Array("float32", ndim=2).tag(sync=True)  # (n_examples, width): value per token, NaN unknown
    top_tokens = traitlets.List(traitlets.Dict()).tag(sync=True)  # {"token", "mean", "count"}
    top_tokens_note = traitlets.Unicode("").tag(sync=True)
    writes_up = traitlets.List(traitlets.Dict()).tag(sync=True)  # {"token", "value"}
    writes_down = traitlets.List(traitlets.Dict()).tag(sync=True)
    writes_note = traitlets.Unicode("").tag(sync=True)

    # Distribution of the unit's per-sample maxima
    hist_edges = Array("float32").tag(sync=True)  # bins + 1 edges
    hist_counts = Array("uint32").tag(sync=True)
    hist_marks = Array("float32").tag(sync=True)  # value at each quantile below
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

    # Requests from the page: {"kind": "channel", "channel": int} | {"kind": "layer", "layer": str}
    # | {"kind": "search", "query": str}, each with an "id" the page counts up (so asking twice is two
    # changes). Python shows the unit or sets `error`, then sets `answered` to the request's id.
    request = traitlets.Dict().tag(sync=True)
    answered = traitlets.Int(0).tag(sync=True)

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
        preprocess: Callable[[torch.Tensor], torch.Tensor] | None = None,
        inputs: torch.Tensor | np.ndarray | None = None,
        writes: Any = None,
        annotations: Any = None,
        forward: Callable[[Any], Any] | None = None,
        **kwargs: Any,
    ):
        if not isinstance(cache, ActivationCache):
            raise TypeError(f"cache must be an ActivationCache, got {type(cache).__name__}.")
        text = is_text(cache)
        if text:  # every token layer: without statistics, the groups come from the cached rows
            with_stats = [name for name, la in cache.layers.items() if la.kind == "tokens"]
            if not with_stats:
                raise ValueError("This text cache has no token layer (output (N, T, D)) to show.")
        else:
            display_images(cache)  # a cache without images fails here, with its own message
            with_stats = [name for name in cache.layers if name in cache.stats]
        if not with_stats:
            raise ValueError("This cache has no per-channel statistics, which the viewer reads; "
                             "capture with stats=True: aw.capture(model, data, layers, stats=True).")
        if model is not None and not isinstance(model, torch.nn.Module):
            raise TypeError(f"model must be a torch.nn.Module or None, got {type(model).__name__}.")
        if normalize is not None and not callable(normalize):
            raise TypeError("normalize must be a callable images -> images, or None.")
        if preprocess is not None and not callable(preprocess):
            raise TypeError("preprocess must be a callable images -> images, or None.")
        if preprocess is not None and normalize is not None:
            raise ValueError("Pass preprocess= or normalize= (its former name), not both.")
        preprocess = preprocess if preprocess is not None else normalize
        if preprocess is None:
            preprocess = getattr(cache, "preprocess", None)
        inputs = checked_inputs(inputs, cache)
        for name, v, lo in (("n", n, 1), ("icon_steps", icon_steps, 1), ("n_related", n_related, 1),
                            ("seed", seed, 0)) + ((("n_top", n_top, 1),) if n_top is not None else ()):
            int_at_least(v, name, lo)
        self._cache, self._model, self._normalize = cache, model, preprocess
        self._text, self._inputs = text, inputs
        self._writes = check_writes(writes, cache, [layer or with_stats[0]]) if text else {}
        if writes is not None and not text:
            raise ValueError("writes= is for text layers (MLP neurons through the unembedding); "
                             "this cache holds images.")
        self._annotations = check_annotations(annotations, cache)
        self._maxima: dict[str, np.ndarray] = {}  # per layer: per-sample maxima, for concept search
        self._token_tables: dict[str, tuple] = {}
        self._warned = False
        self._n, self._n_top, self._seed = int(n), None if n_top is None else int(n_top), int(seed)
        self._icons, self._icon_steps, self._n_related = bool(icons), int(icon_steps), int(n_related)
        self._icon_memo: dict[tuple, tuple[bytes, str]] = {}
        self._facts = UnitFacts(cache)  # histogram, correlated channels, classes pushed
        if forward is None:
            forward = getattr(cache, "forward", None)
        self._outputs = None if model is None else LayerOutputs(
            model, cache.input_hw, preprocess, prefix_tokens=cache.meta.get("prefix_tokens"),
            forward=forward, token_inputs=cache.meta.get("token_inputs"))
        self._direction: np.ndarray | None = None
        self._label = self._short = ""
        self._step: Callable[[int], None] | None = None  # the shown direction's neighbours
        self._samples: UnitSamples | None = None
        self._busy = False  # set while a layer switch moves both traits, so one redraw follows
        layer = with_stats[0] if layer is None else self._check_layer(layer, with_stats)
        super().__init__(layers=with_stats, thumb_size=thumb_size, mode="text" if text else "image",
                         **kwargs)
        self._busy = True
        try:
            self.layer = layer
            self.n_channels = cache[layer].n_channels
            self.channel = channel
        finally:
            self._busy = False
        self._show()

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
            self._direction, self._step = None, None
            self._show()

    def next(self) -> None:
        """The next channel (stays at the last)."""
        self._step_channel(1)

    def previous(self) -> None:
        """The previous channel (stays at 0)."""
        self._step_channel(-1)

    def show_direction(self, vector, label: str = "direction", layer: str | None = None, *,
                       short: str | None = None, step: Callable[[int], None] | None = None) -> None:
        """Show a direction of the layer's activation space, e.g. an atlas cell's mean activation.

        vector : array or tensor, shape (n_channels,), finite and not all zero; its value at a
            position is the dot product with the activation vector there
        label : what to call it on the page (shown as text)
        short : what the toolbar's unit box shows (default ``label``), e.g. "cell 149"
        step : ``step(delta)`` shows the direction ``delta`` (+1 or -1) away in its own kind (the
            Explorer's: the next or previous atlas cell); the page's arrows and keys call it. Without
            it they are disabled while the direction is shown (they step channels)
        """
        for name, v in (("label", label), ("short", "" if short is None else short)):
            if not isinstance(v, str):
                raise TypeError(f"{name} must be a str, got {type(v).__name__}.")
        if step is not None and not callable(step):
            raise TypeError(f"step must be a callable step(delta) or None, got {type(step).__name__}.")
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
            self._label, self._short, self._step = label, label if short is None else short, step
            self._show()

    def search(self, query: str) -> list[dict]:
        """Find a unit: a channel number shows that channel; a class name ranks the channels by
        their mean attribution toward the class (needs that class's attribution on the layer,
        ``cache.add_attribution(aw.attribute(..., cache=cache, store=False))``); a concept word
        ("noodles") ranks them by how their per-sample maximum tracks images holding that object
        (needs ``annotations=``); on a text cache, a token. Shows the best; returns the ranking."""
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
            raise ValueError("Type a channel number or a " + ("token." if self._text else
                             "class name or an annotated object (noodles)."))
        if self._text:
            return self._search_token(text)
        n = max(self._n_related, 10)
        found = class_search(self._facts, self.layer, text, n)
        if found is None and self._annotations is not None:
            found = concept_search(self._cache, self.layer, self._annotations, text, self._maxima, n)
        if found is None:
            raise ValueError(what_it_takes(text, self.n_channels, self._facts, self.layer,
                                           self._annotations))
        results, title = found
        with self.hold_sync():
            self.search_results, self.search_title = results, title
            self.show_channel(results[0]["channel"])
        return results

    def _search_token(self, token: str) -> list[dict]:
        """Channels whose top tokens by mean activation include ``token``; shows the best."""
        results, title = token_search(self._cache, self.layer, token, self._token_tables,
                                      max(self._n_related, 10))
        with self.hold_sync():
            self.search_results, self.search_title = results, title
            self.show_channel(results[0]["channel"])
        return results

    def activation_arrays(self) -> dict[str, np.ndarray]:
        """The synced arrays (what the page reads; maps or boxes None when not sent), for checks
        and tests."""
        return {
            "values": self.values, "sample_ids": self.sample_ids, "yx": self.yx,
            "maps": self.maps if self.maps.size else None,
            "boxes": self.boxes if self.boxes.size else None,
            "hist_edges": self.hist_edges, "hist_counts": self.hist_counts,
            "hist_marks": self.hist_marks,
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

    @traitlets.validate("request")
    @refuses
    def _valid_request(self, proposal):
        # a request that is no request is refused (and rolled back on the page); one that asks for
        # something this viewer cannot show is answered with `error` (see _on_request)
        req = proposal["value"]
        if not req:
            return req
        if req.get("kind") not in ("channel", "layer", "search", "step"):
            raise ValueError(f"request kind must be 'channel', 'layer', 'search' or 'step', got "
                             f"{req.get('kind')!r}.")
        rid = req.get("id")
        if not is_int(rid):  # a TypeError, which the page's rollback reports as one
            raise TypeError(f"request id must be an int, got {rid!r}.")
        return req

    @traitlets.observe("request")
    def _on_request(self, change) -> None:
        content = change["new"]
        if not content:
            return
        kind = content["kind"]
        try:
            if kind == "channel":
                ch = content.get("channel")
                self.show_channel(integer(ch, "channel"))
            elif kind == "step":
                self._step_unit(integer(content.get("delta"), "delta"))
            elif kind == "layer":
                layer = self._check_layer(content.get("layer"), self.layers)
                self.show_channel(min(self.channel, self._cache[layer].n_channels - 1), layer)
            else:
                self.search(str(content.get("query", "")))
        except (ValueError, TypeError, KeyError) as e:
            self.error = str(e.args[0]) if e.args else str(e)
        else:
            self.error = ""
        self.answered = content["id"]

    def _step_unit(self, delta: int) -> None:
        """The page's arrows: the next channel, or the shown direction's neighbour in its kind."""
        if delta not in (-1, 1):
            raise ValueError(f"delta must be -1 or 1, got {delta}.")
        if self._direction is not None and self._step is None:
            raise ValueError(f"{self._short!r} has no next or previous one; type a channel number "
                             "to step through channels.")
        (self._step_channel if self._direction is None else self._step)(delta)

    def _step_channel(self, delta: int) -> None:
        self.show_channel(min(max(self.channel + delta, 0), self.n_channels - 1))

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
        # a direction (or a channel without statistics) is scored over every cached row once,
        # for the samples and the histogram
        has_stats = layer in (getattr(cache, "stats", None) or {})
        maxima = None if d is None and has_stats else unit_maxima(cache, unit, layer)
        samples = unit_samples(cache, unit, layer, n=self._n, n_top=self._n_top, seed=self._seed,
                               source="auto", maxima=maxima)
        ex = samples.all()
        if self._text:
            shown = self._text_state(layer, unit, ex)
        else:
            with self._model_turn():  # the maps re-run the model an icon render may hook
                shown = picture_state(self._cache, la, self.layer, unit, ex, self._outputs,
                                      self._inputs, self.thumb_size)
        err = shown.pop("map_error")
        self._warn_inexact(err, ex)
        edges, counts, quantiles, marks, hist_note = self._facts.distribution(layer, unit, maxima)
        related, up, down, related_note = self._facts.related(layer, unit, self._n_related)
        if self._text and not up and not down:
            related_note = ""  # no classes in a language model's cache: say nothing about them
        if d is None:
            unit_trait = {"kind": "channel", "layer": layer, "channel": int(self.channel)}
        else:
            unit_trait = {"kind": "direction", "layer": layer, "label": self._label,
                          "short": self._short, "steps": self._step is not None,
                          "norm": float(np.linalg.norm(d))}
        with self.hold_sync():
            self.groups = [{"name": k, "title": _group_title(k), "count": len(v)}
                           for k, v in samples.groups.items()]
            self.labels = ([str(t) for t in cache.label_names(ex.sample_id)]
                           if len(ex) and not self._text else [])
            self.values = ex.values
            self.sample_ids = ex.sample_id
            self.yx = ex.yx
            for name, value in shown.items():
                setattr(self, name, value)
            self.map_error = -1.0 if err is None else err
            self.hist_edges = edges
            self.hist_counts = counts
            self.hist_quantiles = quantiles
            self.hist_marks = marks
            self.hist_note = hist_note
            self.related_channels, self.classes_up, self.classes_down = related, up, down
            self.related_note = related_note
            self.unit = unit_trait
            self.n_examples = len(ex)
            self.version += 1
        self._samples = samples
        if self._text:
            return  # no feature visualisation of token inputs
        self._send_icon(unit)

    def _text_state(self, layer, unit, ex) -> dict:
        state = text_state(self._cache, layer, unit, ex, self._outputs, self._model, self._writes)
        if inexact(state["map_error"], ex):
            state["note"] += f"; CAUTION: it differs from the captured activations by up to {state['map_error']:.3g}"
        return state

    def _warn_inexact(self, err, ex) -> None:
        if self._warned or not inexact(err, ex, 1e-2):
            return
        self._warned = True
        hint = ("pass inputs= (the images given to capture) and preprocess= (what capture applied "
                "before the model)" if not self._text else "pass the model the cache was captured from")
        warnings.warn(f"The viewer's activation maps differ from the captured activations by up to "
                      f"{err:.3g} at the examples' positions (the model re-run on the uint8 display "
                      f"images, or with other preprocessing); {hint} for exact maps.",
                      UserWarning, stacklevel=3)
