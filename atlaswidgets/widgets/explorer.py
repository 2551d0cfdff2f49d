"""Explorer: the atlas, the comparison atlas and the neuron viewer of one cache, linked.

Each atlas drives an ExamplePanel through ``link()`` (so zoom levels and a comparison's pair switch
reach the panel as they do anywhere else). The Explorer adds the links between the atlases and the
NeuronViewer, both ways:

- selecting cells in an atlas (or the comparison atlas) shows, in the viewer, the direction of the
  mean activation of their member rows: its top, quantile-range and random examples, and the
  channels most correlated with it. The viewer's unit box then reads "cell 149" (or "cells 3, 5"),
  and its arrows step to the next or previous cell of that atlas (ids row by row), selected as a
  click would select it;
- choosing a channel in the viewer (its number box, search, related-channel buttons, next/previous)
  highlights, in each atlas, the few cells whose members' mean activation of that channel is
  highest: a dashed outline (the widgets' ``highlighted`` trait), not a selection, so the example
  panels keep showing what the user selected and no update cycle can start. Showing a direction
  again (a new selection) clears the highlight, which always belongs to the viewer's channel.

Layout: the atlases and their panels in a column on the left, the viewer on the right, so that a
click and what it changes are on screen together on a 1400 x 900 laptop (the atlases are 380 px by
default); where the two columns do not fit side by side, the viewer wraps under the atlases.

A zoom carries an atlas's selection and highlight to the finer (or coarser) cells: that is the
same selection at another scale, so the viewer keeps what it shows.

The selection logic lives in two plain functions of ``atlaswidgets.layout.select``,
``selection_direction`` and ``strongest_cells``, which take an Atlas and arrays and need no widget.
"""

from __future__ import annotations

from typing import Any

import ipywidgets as W
import numpy as np
import torch

from ..cache.cache import ActivationCache
from ..cache.checks import int_at_least
from ..layout.atlas import Atlas, build_atlas
from ..layout.compare import ComparisonAtlas, compare_atlas
from ..layout.select import selection_direction, strongest_cells
from .atlas import AtlasWidget
from .compare import ComparisonWidget, available_pairs
from .examples import ExamplePanel
from .link import link
from .neuron import NeuronViewer

__all__ = ["Explorer"]


class Explorer(W.HBox):
    """An atlas, a comparison atlas (when there is one), their example panels and a NeuronViewer,
    all linked (see the module docstring).

    Parameters
    ----------
    cache : ActivationCache captured with ``stats=True`` and ``keep_images=True``
    layer : the layer to explore; None takes the atlas's layer, else the first layer with statistics
    atlas : an Atlas of that layer (``aw.build_atlas``); None builds one (``grid_size``, ``xy``, ``seed``)
    comparison : a ComparisonAtlas of that layer; None builds one when the layer holds attributions
        for a class pair (``pair``, or the first such pair); False for none; True to require one
    model : the captured model, optional: activation maps and icons in the viewer, feature-vis
        icons in the atlases
    pair : (a, b), the classes to compare when the comparison is built here
    grid_size, compare_grid_size : cells per side of the atlases built here
    xy : float array (n_rows, 2), a precomputed atlas layout (skips UMAP)
    y : float array (n_rows,), a precomputed 1-D embedding for the comparison (skips UMAP)
    k : examples per panel; highlight : how many cells a channel highlights in each atlas
    size : side of each atlas canvas in CSS pixels (380: the atlas and the viewer fit side by side
        at 1400 x 900)
    viewer_options : keyword arguments for the NeuronViewer (``n``, ``icons``, ``thumb_size``, ...)

    Attributes: ``atlas_widget``, ``atlas_panel``, ``comparison_widget`` and ``comparison_panel``
    (None without a comparison), ``viewer``; ``direction`` is the direction last sent to the
    viewer (float32, shape (n_channels,)) or None, ``source`` which atlas sent it.
    """

    def __init__(
        self,
        cache: ActivationCache,
        layer: str | None = None,
        atlas: Atlas | None = None,
        comparison: ComparisonAtlas | bool | None = None,
        model: torch.nn.Module | None = None,
        *,
        pair: tuple[Any, Any] | None = None,
        grid_size: int = 20,
        compare_grid_size: int = 10,
        xy=None,
        y=None,
        k: int = 8,
        highlight: int = 4,
        size: int = 380,
        seed: int = 0,
        viewer_options: dict[str, Any] | None = None,
    ):
        if not isinstance(cache, ActivationCache):
            raise TypeError(f"cache must be an ActivationCache, got {type(cache).__name__}.")
        if (atlas is not None and not isinstance(atlas, Atlas)) or isinstance(atlas, ComparisonAtlas):
            raise TypeError(f"atlas must be an Atlas from aw.build_atlas (or None to build one), got "
                            f"{type(atlas).__name__}; a ComparisonAtlas goes in comparison=.")
        if not (comparison is None or isinstance(comparison, (bool, ComparisonAtlas))):
            raise TypeError(f"comparison must be a ComparisonAtlas (aw.compare_atlas), True, False or "
                            f"None, got {type(comparison).__name__}.")
        highlight = int_at_least(highlight, "highlight", 1, "cells a channel selects")
        if viewer_options is not None and not isinstance(viewer_options, dict):
            raise TypeError(f"viewer_options must be a dict of NeuronViewer keywords, got "
                            f"{type(viewer_options).__name__}.")
        layer = _pick_layer(cache, layer, atlas)
        for name, given in (("atlas", atlas), ("comparison", comparison)):
            if isinstance(given, Atlas) and given.layer != layer:
                raise ValueError(f"The {name} shows layer {given.layer!r} but the Explorer explores "
                                 f"{layer!r}; pass layer={given.layer!r} or an {name} of {layer!r}.")
        if atlas is None:
            atlas = build_atlas(cache, layer, grid_size=grid_size, seed=seed, xy=xy)
        comparison = _pick_comparison(cache, layer, comparison, pair, compare_grid_size, seed, y)

        self._cache, self._layer, self._highlight = cache, layer, int(highlight)
        self._zooming: set[int] = set()  # ids of atlas widgets inside a level switch
        self.direction: np.ndarray | None = None
        self.source: str | None = None

        self.viewer = NeuronViewer(cache, layer, model=model, **(viewer_options or {}))
        self.atlas_widget = AtlasWidget(atlas, cache, size=size, model=model)
        self.atlas_panel = ExamplePanel(atlas, cache, k=k)
        self._links = [link(self.atlas_widget, self.atlas_panel)]
        self.comparison_widget: ComparisonWidget | None = None
        self.comparison_panel: ExamplePanel | None = None
        if comparison is not None:
            self.comparison_widget = ComparisonWidget(comparison, cache, size=size, model=model)
            self.comparison_panel = ExamplePanel(comparison, cache, k=k, by="attribution")
            self._links.append(link(self.comparison_widget, self.comparison_panel))
        for w in self._atlas_widgets():
            w.observe(self._selection_handler(w), names="selected")
            w.observe(self._zoom_done_handler(w), names="level")
        self.viewer.observe(self._on_unit, names="unit")

        # Two columns, so that a click in the atlas and the viewer it changes are on screen together
        # (a 1400 x 900 laptop): the atlases and their panels on the left, the viewer on the right.
        # Where the two do not fit side by side the viewer wraps under them. The comparison's
        # legend names its two sides, so its column title needs no class names (a long one would
        # be cut short in a widget label).
        left = [W.Label("Activation atlas"), self.atlas_widget, self.atlas_panel]
        if self.comparison_widget is not None:
            left += [W.Label("Comparison atlas"), self.comparison_widget, self.comparison_panel]
        atlases = W.VBox(left, layout=W.Layout(flex="0 0 auto", margin="0 16px 0 0"))
        viewer = W.VBox([W.Label("Neuron viewer"), self.viewer],
                        layout=W.Layout(flex="1 1 420px", min_width="360px"))
        super().__init__([atlases, viewer],
                         layout=W.Layout(flex_flow="row wrap", align_items="flex-start"))

    def __repr__(self) -> str:
        comp = "" if self.comparison_widget is None else (
            f", comparison={self.comparison_widget.atlas.a!r} vs {self.comparison_widget.atlas.b!r}")
        return f"Explorer(layer={self._layer!r}, atlas={len(self.atlas_widget.atlas.cells.ids)} cells{comp})"

    # ---- public API ------------------------------------------------------------------------

    @property
    def layer(self) -> str:
        """The layer the Explorer shows."""
        return self._layer

    def show_cells(self, cell_ids, which: str = "atlas") -> np.ndarray:
        """Select cells (ids of the level shown) in the atlas or the comparison, as a click does:
        the panel and the viewer follow. Returns the direction sent to the viewer."""
        w = self._widget(which)
        selection_direction(w.atlas, cell_ids)  # bad or empty ids fail here, before anything changes
        before = self.viewer.version
        w.selected = cell_ids
        if self.viewer.version == before:
            # the same cells were selected already (no change event): show their direction again
            self._show_selection(w, list(w.selected))
        if self.viewer.error:
            raise ValueError(self.viewer.error)
        return self.direction

    def highlight_channel(self, channel: int) -> dict[str, list[int]]:
        """Highlight, in each atlas, the cells where ``channel`` is strongest (``strongest_cells``).

        Selections, panels and the viewer stay as they are.
        Returns {"atlas": ids, "comparison": ids (when there is one)}.
        """
        picked = {}
        for which, w in self._named_widgets():
            w.highlighted = strongest_cells(w.atlas, channel, self._highlight)
            picked[which] = list(w.highlighted)
        return picked

    # ---- the links -------------------------------------------------------------------------

    def _atlas_widgets(self) -> list[AtlasWidget]:
        return [w for _, w in self._named_widgets()]

    def _named_widgets(self) -> list[tuple[str, AtlasWidget]]:
        out = [("atlas", self.atlas_widget)]
        if self.comparison_widget is not None:
            out.append(("comparison", self.comparison_widget))
        return out

    def _widget(self, which: str) -> AtlasWidget:
        if which == "atlas":
            return self.atlas_widget
        if which == "comparison":
            if self.comparison_widget is None:
                raise ValueError("This Explorer has no comparison atlas; build it with comparison=True "
                                 "(attributions for a pair in the cache) or pass one.")
            return self.comparison_widget
        raise ValueError(f'which must be "atlas" or "comparison", got {which!r}.')

    def _selection_handler(self, w: AtlasWidget):
        def handler(change: dict[str, Any]) -> None:
            if w.level != w.cells_level:
                # a level switch clears the selection before it carries it to the new cells;
                # the carried selection is the same one, so the viewer keeps what it shows
                self._zooming.add(id(w))
                return
            if id(w) in self._zooming or not change["new"]:
                return  # the carried selection, or a cleared one: nothing new to show
            self._show_selection(w, list(change["new"]))

        return handler

    def _zoom_done_handler(self, w: AtlasWidget):
        def handler(change: dict[str, Any]) -> None:
            # runs after the widget's own level observer, so after the carried selection
            self._zooming.discard(id(w))

        return handler

    def _show_selection(self, w: AtlasWidget, cells: list[int]) -> None:
        which = "comparison" if w is self.comparison_widget else "atlas"
        try:
            direction = selection_direction(w.atlas, cells)
            self.viewer.show_direction(direction, label=_label(which, w, cells), layer=self._layer,
                                       short=_short(cells), step=self._stepper(which, cells))
        except (ValueError, TypeError) as e:
            # a page click must not break the comm: the viewer shows the message instead
            self.viewer.error = str(e.args[0]) if e.args else str(e)
            return
        self.viewer.error = ""
        self.direction, self.source = direction, which
        for other in self._atlas_widgets():
            other.highlighted = []  # the highlight was the channel's; the viewer now shows cells

    def _stepper(self, which: str, cells: list[int]):
        """The viewer's arrows while it shows these cells: the next (or previous) cell of the
        same atlas, in the order of its ids (row by row), selected as a click would."""
        def step(delta: int) -> None:
            w = self._widget(which)
            ids = [int(i) for i in w.atlas.cells.ids]
            if not set(cells) <= set(ids):
                raise ValueError("The atlas shows other cells now (another zoom level or pair); "
                                 "click a cell to show it.")
            at = ids.index(max(cells)) + 1 if delta > 0 else ids.index(min(cells)) - 1
            if not 0 <= at < len(ids):
                end = "last" if delta > 0 else "first"
                raise ValueError(f"cell {ids[at - delta]} is the {end} cell of the {which}.")
            self.show_cells([ids[at]], which)

        return step

    def _on_unit(self, change: dict[str, Any]) -> None:
        unit = change["new"]
        if unit.get("kind") != "channel" or unit.get("layer") != self._layer:
            return  # a direction (ours) or another layer's channel: the atlases have nothing to show
        self.direction, self.source = None, None
        self.highlight_channel(int(unit["channel"]))


def _label(which: str, w: AtlasWidget, cells: list[int]) -> str:
    shown = ", ".join(str(c) for c in cells[:6]) + (f" … (+{len(cells) - 6})" if len(cells) > 6 else "")
    noun = "cell" if len(cells) == 1 else "cells"
    if which == "comparison":
        return f"{w.atlas.a} vs {w.atlas.b}: {noun} {shown} mean"
    return f"{noun} {shown} mean"


def _short(cells: list[int]) -> str:
    """What the viewer's unit box shows for a selection: "cell 149", "cells 3, 5" or "4 cells"."""
    if len(cells) == 1:
        return f"cell {cells[0]}"
    return f"cells {cells[0]}, {cells[1]}" if len(cells) == 2 else f"{len(cells)} cells"


def _pick_layer(cache: ActivationCache, layer: str | None, atlas: Atlas | None) -> str:
    with_stats = [name for name in cache.layers if name in cache.stats]
    if layer is None:
        layer = atlas.layer if atlas is not None else (with_stats[0] if with_stats else None)
    if layer is None:
        raise ValueError("The Explorer's viewer reads per-channel statistics, and this cache has none; "
                         "capture with stats=True: aw.capture(model, data, layers, stats=True).")
    layer = cache.layer_name(layer)
    if layer not in with_stats:
        raise ValueError(f"Layer {layer!r} has no per-channel statistics, which the viewer reads; capture "
                         f"it with stats=True. Layers with statistics: {with_stats}.")
    return layer


def _pick_comparison(cache, layer, comparison, pair, grid_size, seed, y) -> ComparisonAtlas | None:
    if isinstance(comparison, ComparisonAtlas):
        return comparison
    if comparison is False:
        return None
    if pair is None:
        pairs = available_pairs(cache, layer)
        if not pairs:
            if comparison is True:
                raise ValueError(f"No class pair to compare on {layer!r}: attribute one first, "
                                 f"aw.attribute(model, data, {layer!r}, ('wok', 'frying pan'), cache=cache), "
                                 "or pass comparison=False.")
            return None
        pair = pairs[0]
    if not isinstance(pair, (tuple, list)) or len(pair) != 2:
        raise ValueError(f"pair must be two classes (a, b), got {pair!r}.")
    return compare_atlas(cache, pair[0], pair[1], layer, grid_size=grid_size, seed=seed, y=y)
