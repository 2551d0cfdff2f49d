"""ComparisonWidget: a class-comparison atlas (class b on the left, a on the right) in the notebook.

It is an ``AtlasWidget`` (same canvas, zoom, pan, hover, click, shift-click, shift-drag lasso, and a
``selected`` trait of visible cell ids, so ``link()`` and ``ExamplePanel`` work with it unchanged)
whose page runs in comparison mode: every cell gets a frame coloured on a diverging scale by its
mean attribution difference a - b over the atlas's scale, from b's colour through grey (neither) to
a's colour, and a legend under the canvas names the two classes at the two ends. A class's colour
is its own (``class_color``: by its index in the cache's classes), not its side's, so wok has one
colour in every comparison and notebook; frying pan blue and wok orange in the kitchen.

Picking another pair is one call, ``widget.show_pair(a, b)``, or the page's pair menu when the
cache's layer holds attributions for more than one pair; either recomputes the comparison on the
same 1-D embedding (no new UMAP run), sends every trait again and clears the selection.

Zoom levels and icon sets are AtlasWidget's (``model=``, ``icons=``, ``levels=``, ``use_icons``,
``set_icons``): level k re-bins the same x and y into ``n * 2**k`` cells per side with
``compare_atlas(..., y=atlas.y, grid_size=...)``; a new pair starts again at level 0 with the
icon set asked for.

DOM hooks for tests, besides AtlasWidget's (``.aw-atlas`` with ``data-selected``, ``data-view``,
``data-hover``, ``data-ready``): the root has ``data-mode="compare"``, ``data-pair`` (``a``, tab,
``b``) and ``data-cell-values`` (comma-separated colour values in [-1, 1], 3 decimals, in the order
of the cells, which is ascending cell id); ``.aw-atlas-legend`` holds ``.aw-legend-left`` (b's
name), ``.aw-legend-bar`` and ``.aw-legend-right`` (a's name); ``select.aw-atlas-pair`` (one
``option`` per pair, ``value`` its index in ``pairs``; hidden when there is only one pair) and
``button.aw-atlas-swap`` (shown when the widget has its cache) sit in the top bar; the tooltip adds
``.aw-atlas-tooltip-diff`` and, when the cache holds each class's own attribution,
``.aw-atlas-tooltip-attr``. ``data-ready`` is removed while a new pair's icons decode.
"""

from __future__ import annotations

import hashlib

from typing import Any

import numpy as np
import traitlets

from ..cache.cache import ActivationCache
from ..cache.targets import Target, n_outputs_of, stored_targets
from ..layout.atlas import icon_size_of
from ..layout.compare import ComparisonAtlas, compare_atlas
from ._common import Array, refuses
from .atlas import AtlasWidget, _check_cache

__all__ = ["ComparisonWidget"]


class ComparisonWidget(AtlasWidget):
    """A class-comparison atlas in the notebook: b's side on the left, a's side on the right.

    Parameters
    ----------
    comparison : ComparisonAtlas from ``aw.compare_atlas``
    cache : the ActivationCache the comparison was built from, optional; needed by ``show_pair``
        and the page's pair menu, and checked against the comparison
    size : side of the square canvas in CSS pixels

    Scroll to zoom, drag to pan, hover for a tooltip (cell size, top class, mean difference),
    click to select a cell, shift/ctrl-click to toggle one, shift-drag to draw a lasso that adds
    the cells whose centres fall inside it; Escape or a click on empty space clears.
    """

    # Comparison: one entry per visible cell, in the order of the atlas traits' cells
    mode = traitlets.Unicode("compare").tag(sync=True)
    cell_value = Array("float32").tag(sync=True)  # mean_diff / scale in [-1, 1]
    cell_diff = Array("float32").tag(sync=True)  # mean_diff, unscaled
    cell_attr_a = Array("float32").tag(sync=True)  # empty when not stored
    cell_attr_b = Array("float32").tag(sync=True)  # empty when not stored
    diff_scale = traitlets.Float(1.0).tag(sync=True)  # the 99th percentile that x was divided by
    left_label = traitlets.Unicode("").tag(sync=True)  # b's name, shown as text
    right_label = traitlets.Unicode("").tag(sync=True)  # a's name, shown as text
    # [b's colour, a's colour] as [r, g, b]: each class's own (``class_color``), whichever side
    side_colors = traitlets.List(traitlets.List(traitlets.Int())).tag(sync=True)

    # Pair: [a, b] shown now (the page sets it to switch), and every pair the cache can show
    pair = traitlets.List(traitlets.Unicode()).tag(sync=True)
    pairs = traitlets.List(traitlets.List(traitlets.Unicode())).tag(sync=True)

    def __init__(
        self,
        comparison: ComparisonAtlas,
        cache: ActivationCache | None = None,
        size: int = 500,
        **kwargs,
    ):
        if not isinstance(comparison, ComparisonAtlas):
            raise TypeError(
                "ComparisonWidget needs a ComparisonAtlas (from aw.compare_atlas(cache, a, b)), got "
                f"{type(comparison).__name__}; or use ComparisonWidget.from_cache(cache, a, b)."
            )
        if cache is not None:
            _check_cache(comparison, cache)
        self._cache = cache
        self._switching = False
        # settings show_pair reuses, so a new pair is binned and drawn like the first
        self._compare_kwargs: dict[str, Any] = {
            "grid_size": int(comparison.cells.n),
            "icon_size": icon_size_of(comparison.icons),
        }
        super().__init__(comparison, cache, size=size, **_comparison_traits(comparison, cache), **kwargs)

    @classmethod
    def from_cache(
        cls,
        cache: ActivationCache,
        a,
        b,
        layer: str | None = None,
        size: int = 500,
        model=None,
        icons: str = "examples",
        levels: int = 2,
        fv_options: dict[str, Any] | None = None,
        **compare_kwargs,
    ) -> "ComparisonWidget":
        """Compare class ``a`` (right) with ``b`` (left) on ``layer`` and show it.

        ``compare_kwargs`` go to ``compare_atlas`` (grid_size, min_count, seed, n_neighbors,
        icon_size, y) and are kept for ``show_pair``, except ``y``, which is the embedding itself.
        ``model``, ``icons``, ``levels`` and ``fv_options`` are AtlasWidget's.
        """
        widget = cls(compare_atlas(cache, a, b, layer, **compare_kwargs), cache, size=size,
                     model=model, icons=icons, levels=levels, fv_options=fv_options)
        widget._compare_kwargs.update({k: v for k, v in compare_kwargs.items() if k != "y"})
        return widget

    @property
    def atlas(self) -> ComparisonAtlas:
        """The ComparisonAtlas this widget shows now (a new one after ``show_pair``)."""
        return self._atlas

    def show_pair(self, a, b, **compare_kwargs) -> ComparisonAtlas:
        """Switch to class ``a`` (right) against ``b`` (left), keeping the layer and 1-D embedding.

        Recomputes with ``compare_atlas(cache, a, b, layer, y=<this atlas's y>, ...)``, so no UMAP
        runs, with the grid size, icon size and other settings this widget was built with unless
        ``compare_kwargs`` overrides them. The selection is cleared first (linked widgets follow),
        then every trait is sent to the page in one message.

        a, b : class names or ids; ``show_pair(b, a)`` of the current pair swaps the sides
        Returns the new ComparisonAtlas (also ``widget.atlas``). Raises compare_atlas's ValueError
        for an unknown class, a == b or a pair whose attributions the cache lacks; nothing changes
        then.
        """
        if self._cache is None:
            raise ValueError(
                "show_pair needs the cache the comparison was built from; create the widget with "
                "ComparisonWidget(comparison, cache) or ComparisonWidget.from_cache(cache, a, b)."
            )
        settings = {**self._compare_kwargs, **compare_kwargs}
        y = settings.pop("y", self._atlas.y)
        settings.pop("layer", None)  # the layer stays: the embedding belongs to it
        new = compare_atlas(self._cache, a, b, self._atlas.layer, y=y, **settings)
        self._show(new)
        return new

    def value_arrays(self) -> dict[str, np.ndarray | None]:
        """The synced comparison arrays (what the page reads), None where not stored, for checks
        and tests."""

        def read(values):
            return values if len(values) else None

        return {
            "value": read(self.cell_value),
            "diff": read(self.cell_diff),
            "attr_a": read(self.cell_attr_a),
            "attr_b": read(self.cell_attr_b),
        }

    # ---- internals -------------------------------------------------------------------------

    def _show(self, new: ComparisonAtlas) -> None:
        self._switching = True  # the pair trait changes with the rest: not a request from the page
        try:
            self._replace_base(new)  # level 0 of the new pair, selection cleared, panels follow
        finally:
            self._switching = False

    def _can_regrid(self, atlas) -> bool:
        return isinstance(atlas, ComparisonAtlas)

    def _regrid(self, base: ComparisonAtlas, grid_size: int) -> ComparisonAtlas:
        # a zoom level: the same x and 1-D embedding y, binned finer (no UMAP run)
        settings = {**self._compare_kwargs, "grid_size": grid_size, "min_count": base.min_count}
        settings.pop("y", None)
        settings.pop("layer", None)
        return compare_atlas(self._cache, base.a, base.b, base.layer, y=base.y, **settings)

    def _extra_traits(self, atlas: ComparisonAtlas) -> dict[str, Any]:
        return _comparison_traits(atlas, self._cache)

    @traitlets.validate("pair")
    @refuses
    def _valid_pair(self, proposal):
        value = list(proposal["value"])
        if len(value) != 2:
            raise ValueError(f"pair must be two class names [a, b], got {value!r}.")
        return value

    @traitlets.observe("pair")
    def _on_pair(self, change):
        if self._switching or list(change["new"]) == [self._atlas.a, self._atlas.b]:
            return
        try:
            self.show_pair(*change["new"])  # names as the kit spells them resolve again
        except (ValueError, TypeError):
            # tell the page which pair it still shows, then report the refusal
            self._switching = True
            try:
                self.pair = [self._atlas.a, self._atlas.b]
            finally:
                self._switching = False
            raise


def _comparison_traits(comp: ComparisonAtlas, cache: ActivationCache | None) -> dict[str, Any]:
    """The comparison-only traits of a ComparisonAtlas."""
    value = np.clip(comp.mean_diff / comp.scale, -1.0, 1.0)

    def opt(values):
        return np.zeros(0, np.float32) if values is None else values

    return dict(
        mode="compare",
        cell_value=value,
        cell_diff=comp.mean_diff,
        cell_attr_a=opt(comp.mean_attr_a),
        cell_attr_b=opt(comp.mean_attr_b),
        diff_scale=float(comp.scale),
        left_label=str(comp.b),
        right_label=str(comp.a),
        side_colors=pair_colors(comp.a, comp.b, None if cache is None else cache.classes),
        pair=[str(comp.a), str(comp.b)],
        pairs=[] if cache is None else available_pairs(cache, comp.layer, (comp.a, comp.b)),
    )


# Colours of the classes in comparisons, by class index: dark enough to stand apart from the grey
# middle of the scale, none near the magenta selection outline; blue and orange first (the kitchen's
# frying pan and wok), which stay apart for the common colour-vision deficiencies
PALETTE = [(33, 102, 172), (230, 97, 1), (27, 120, 55), (118, 42, 131), (140, 81, 10),
           (1, 133, 113), (178, 24, 43), (102, 102, 0)]


def class_color(name: str, classes=None) -> tuple[int, int, int]:
    """The colour of class ``name`` in every comparison (its index in ``classes``, else a stable
    hash of the name), so one class keeps one colour across widgets and notebooks."""
    names = [str(c) for c in classes] if classes is not None else []
    if str(name) in names:
        k = names.index(str(name))
    else:
        k = int.from_bytes(hashlib.sha256(str(name).encode()).digest()[:4], "little")
    return PALETTE[k % len(PALETTE)]


def pair_colors(a: str, b: str, classes=None) -> list[list[int]]:
    """[b's colour, a's colour] (left, right); when the two share one, b takes the next."""
    ca, cb = class_color(a, classes), class_color(b, classes)
    if cb == ca:
        cb = PALETTE[(PALETTE.index(ca) + 1) % len(PALETTE)]
    return [list(cb), list(ca)]


def available_pairs(cache: ActivationCache, layer: str, current=None) -> list[list[str]]:
    """The class pairs [a, b] a comparison of ``layer`` can show, from its stored attributions.

    A stored pair target gives that pair; any two single-class targets give their pair too (the
    difference of the two). Targets are read by their structure (``cache.targets.stored_targets``),
    never by cutting keys. Names are spelled by ``Target.key`` ("class:3" without class names,
    "token:wok" for next-token targets; a class never pairs with a token), so each resolves again
    in ``compare_atlas``. Each unordered pair is listed once,
    in the order and orientation stored, except ``current`` (a, b): it comes first, as it is, and
    is always listed.
    """
    classes, vocab = cache.classes, cache.vocab
    singles: dict[str, list[Target]] = {}  # by family: a class never pairs with a token
    found: list[tuple[Target, Target]] = []
    for target in stored_targets(cache[layer], classes, n_outputs_of(cache.logits), vocab).values():
        if target.is_pair:
            found.append(target.parts())
        else:
            # listed in the order the keys were stored: each new single pairs with the earlier ones
            earlier = singles.setdefault(target.kind, [])
            found.extend((e, target) for e in earlier if e != target)
            earlier.append(target)

    pairs: list[list[str]] = []
    seen: set[frozenset] = set()
    cur = [str(current[0]), str(current[1])] if current is not None else None
    for ta, tb in found:
        names = [ta.key(classes, vocab), tb.key(classes, vocab)]
        unordered = frozenset(names)
        if unordered in seen:
            continue
        seen.add(unordered)
        if cur is None or frozenset(cur) != unordered:
            pairs.append(names)
    return pairs if cur is None else [cur] + pairs
