"""AtlasWidget: the icons of an atlas on a canvas, with zoom, pan, hover and selection.

The widget is only state. Python fills the data traits from an ``Atlas``; the page draws the icons
and reports what the person selected through ``selected`` (visible cell ids, synced both ways).

In the page, cell (row, col) covers the canvas rectangle (CSS pixels from its top-left corner)
``x = offsetX + col * scale``, ``y = offsetY + row * scale``, ``scale`` wide and high, where
``scale,offsetX,offsetY`` is the root element's ``data-view`` attribute. A browser test clicks a
cell at ``(offsetX + (col + 0.5) * scale, offsetY + (row + 0.5) * scale)``.

Zoom levels (built by ``atlaswidgets.layout.levels``). Level 0 is the atlas as built (n x n
cells); level k bins the same layout (same xy, no new UMAP run, same ``min_count``) into
``n * 2**k`` cells per side, so fine cell (r, c) lies
inside coarse cell (r >> k, c >> k). When the person zooms in far enough (a cell drawn more than
about 1.6 times its size at the home view), the page asks for the next level by setting ``level``;
Python answers with that level's cells and sprite in one message, and the page keeps the same
region of the plane under the pointer (the grid's extent ``n * scale`` and the offsets do not
change). Zooming back out asks for the coarser level. Levels need the cache (the icons of a new
grid are crops of its images); without one the widget has a single level.

Cell ids always belong to the level shown: ``selected`` holds ids ``row * n_k + col`` of
``widget.atlas`` (the Atlas of ``widget.level``; ``widget.atlas_at(k)`` gives any level's). A
level switch carries the selection over: zooming in selects the visible children of the selected
cells, zooming out their parents. ``link()`` hands the level's atlas to linked panels (the
``atlas_version`` bump), so an ExamplePanel shows the examples of fine cells once zoomed in.

Text atlases (a token layer of a text cache: no pictures). Each cell is drawn as text on the
canvas (``fillText``, never HTML): the most frequent token among its members, in a short context
(``layout.tokens.cell_tokens``, which says why that token), with the share of members that are that
token in the tooltip. The widget needs the cache (the tokens and the vocabulary); there are no
feature-vis icons. The root element has ``data-cells-kind="text"`` (``"images"`` otherwise).

Icons. Each level has dataset-example icons (crops of each cell's most typical member) and, with a
``model``, feature-visualisation icons (``render.icons.cell_icons`` of the cells' mean
activations), rendered on first use per level and kept (in memory, and on disk where
``cell_icons`` keeps them; shipped icons are found by key). The page's toggle (or ``use_icons``)
switches between them; ``set_icons(level, icons)`` supplies them precomputed. Rendering never
blocks the kernel: it runs in a background thread (one render at a time per process, as the model
is shared), the page shows its progress (``fv_state``, ``fv_progress``) and a Cancel button, which
asks for "examples" again; until the icons arrive the cells keep their example icons, also at a
newly zoomed level. ``wait_icons()`` blocks until a render finishes (scripts and tests).

DOM hooks for tests: root ``.aw-atlas`` with ``data-n-cells``, ``data-grid-size``, ``data-selected``
(comma-separated sorted ids, "" when none), ``data-view``, ``data-hover`` (id of the cell under the
pointer, absent otherwise), ``data-level`` (level of the cells drawn), ``data-icons`` ("examples"
or "feature-vis": the icons drawn) and ``data-ready="1"`` once the icons have decoded and been
drawn (removed while new ones decode); ``data-busy`` ("level" or "icons") while the page waits for
Python. ``canvas.aw-atlas-canvas``, ``.aw-atlas-tooltip``, ``.aw-atlas-status`` (shows
"Rendering icons…" and "Loading level…"), ``progress.aw-atlas-progress`` and
``button.aw-atlas-cancel`` (shown while feature-vis icons render; root ``data-fv`` holds
``fv_state``), ``button.aw-atlas-reset``,
``button.aw-atlas-clear`` and ``button.aw-atlas-icons`` (the icon toggle, ``aria-pressed="true"``
while feature-vis icons are drawn; hidden when the widget has no feature-vis icons to offer).
Escape clears the selection while the pointer is over the atlas (moving away gives focus back to
JupyterLab, where Escape means command mode).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anywidget
import numpy as np
import torch
import traitlets
from torch import nn

from ..cache.cache import ActivationCache
from ..cache.checks import int_in_range, integer, one_of
from ..cache.crops import sprite_sheet
from ..cache.targets import class_name
from ..layout.atlas import Atlas, build_atlas
from ..layout.levels import AtlasLevels, carry_selection
from ..layout.tokens import cell_tokens
from ._common import Array, CellIds, RollsBackPageState, bundle, refuses
from .atlas_icons import ICON_DEFAULTS, RENDER_LOCK, BackgroundIcons

__all__ = ["AtlasWidget", "ICON_KINDS"]

ICON_KINDS = ("examples", "feature-vis")


class AtlasWidget(BackgroundIcons, RollsBackPageState, anywidget.AnyWidget):
    """An activation atlas in the notebook: one icon per visible grid cell, at several zoom levels.

    Parameters
    ----------
    atlas : Atlas from ``build_atlas`` (level 0)
    cache : the ActivationCache the atlas was built from, optional; checked against the atlas,
        gives class names when the atlas has none, and is needed for zoom levels above 0 and for
        the whitening of feature-vis icons
    size : side of the square canvas in CSS pixels
    model : torch.nn.Module whose ``named_modules()`` hold the atlas's layer, optional; enables
        feature-vis icons (and the page's toggle)
    icons : "examples" (dataset crops) or "feature-vis", the icons shown first
    levels : int >= 1, how many zoom levels (level k has ``n * 2**k`` cells per side)
    fv_options : keyword arguments for ``cell_icons``/``render_icons`` (``steps``, ``store``,
        ``normalize``, ``chunk``, ``seed``, ...); ``size`` defaults to the receptive field of
        the layer's centre position in the cache's input (``render.icons.receptive_side``),
        ``steps`` to 128 (``atlas_icons.ICON_DEFAULTS``)

    Scroll to zoom, drag to pan, hover for a tooltip, click to select a cell, shift/ctrl-click to
    toggle one, shift-drag to draw a lasso that adds the cells
    whose centres fall inside it; Escape or a click on empty space clears.
    """

    # js/src/atlas.js and the modules it imports (scored-cell modes, pointer input), bundled
    _esm = bundle("atlas")
    _css = Path(__file__).parent / "atlas.css"

    # Data: one entry per visible cell of the level shown, in the order of atlas.cells.ids
    layer = traitlets.Unicode("").tag(sync=True)
    grid_size = traitlets.Int(1).tag(sync=True)
    n_cells = traitlets.Int(0).tag(sync=True)
    n_positions = traitlets.Int(0).tag(sync=True)
    cell_ids = Array("uint32").tag(sync=True)
    cell_ij = Array("uint32", ndim=2).tag(sync=True)  # row, col
    cell_count = Array("uint32").tag(sync=True)  # member rows
    cell_share = Array("float32").tag(sync=True)  # share of the most common class
    cell_class = traitlets.List(traitlets.Unicode()).tag(sync=True)  # most common class, as text
    sprite = traitlets.Bytes(b"").tag(sync=True)  # PNG; icon i at (i % sprite_cols, i // sprite_cols)
    sprite_cols = traitlets.Int(1).tag(sync=True)
    icon_size = traitlets.Int(48).tag(sync=True)
    # Text cells (a text atlas): instead of a sprite, per cell its most frequent token, the share of
    # members that are it, and the tokens of context left and right of it, joined by spaces; all as
    # text, drawn with fillText. Empty lists for an image atlas
    text_cells = traitlets.Bool(False).tag(sync=True)
    cell_token = traitlets.List(traitlets.Unicode()).tag(sync=True)
    cell_token_share = Array("float32").tag(sync=True)
    cell_before = traitlets.List(traitlets.Unicode()).tag(sync=True)
    cell_after = traitlets.List(traitlets.Unicode()).tag(sync=True)

    # Levels: `level` is the one asked for (the page sets it on zoom); `cells_level` the one whose
    # cells the data traits hold now
    level = traitlets.Int(0).tag(sync=True)
    cells_level = traitlets.Int(0).tag(sync=True)
    n_levels = traitlets.Int(1).tag(sync=True)

    # Icons: `icons` is the set asked for (the page's toggle sets it); `sprite_icons` the set in
    # `sprite` now; `can_feature_vis` shows the toggle
    icons = traitlets.Unicode("examples").tag(sync=True)
    sprite_icons = traitlets.Unicode("examples").tag(sync=True)
    can_feature_vis = traitlets.Bool(False).tag(sync=True)
    # Feature-vis rendering in the background: "" (none), "rendering", "cancelled" or "failed"
    # (``fv_message`` says why); ``fv_progress`` in [0, 1] while rendering
    fv_state = traitlets.Unicode("").tag(sync=True)
    fv_progress = traitlets.Float(0.0).tag(sync=True)
    fv_message = traitlets.Unicode("").tag(sync=True)

    # Selection: ids (row * grid_size + col) of visible cells of the level shown, sorted
    selected = CellIds().tag(sync=True)
    # Highlight: cells marked without being selected (the Explorer's "where this channel is
    # strongest"), drawn as a dashed outline; same ids as `selected`, and no panel follows it
    highlighted = CellIds().tag(sync=True)

    # View
    size = traitlets.Int(500).tag(sync=True)

    # Python-only: bumped whenever the widget starts showing another atlas (a zoom level, a
    # comparison widget's new pair), so link() can hand the new atlas to linked panels
    atlas_version = traitlets.Int(0)
    # Python-only: True while a zoom level replaces the cells (the selection is cleared, then
    # carried over); link() has linked panels keep what they show until it is False again, so a
    # panel never goes blank between the old examples and the carried selection's
    switching = traitlets.Bool(False)

    def __init__(
        self,
        atlas: Atlas,
        cache: ActivationCache | None = None,
        size: int = 500,
        model: nn.Module | None = None,
        icons: str = "examples",
        levels: int = 2,
        fv_options: dict[str, Any] | None = None,
        **kwargs,
    ):
        if not isinstance(atlas, Atlas):
            raise TypeError(
                f"AtlasWidget needs an Atlas (from aw.build_atlas), got {type(atlas).__name__}; "
                "or use AtlasWidget.from_cache(cache, layer)."
            )
        if cache is not None:
            _check_cache(atlas, cache)
        size = int_in_range(size, "size", 120, 4000, "CSS pixels")
        if model is not None and not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module (or None), got {type(model).__name__}.")
        _check_kind(icons)
        text = _is_text(atlas)
        if text and cache is None:
            raise ValueError("This is a text atlas: its cells are drawn as tokens, which come from the "
                             "cache's tokens and vocabulary; pass it: AtlasWidget(atlas, cache).")
        if text and icons != "examples":
            raise ValueError(_TEXT_NO_FV)
        if icons == "feature-vis" and model is None:
            raise ValueError(_NO_MODEL.format(level=0))
        levels = int_in_range(levels, "levels", 1, 6, "level k has n * 2**k cells per side")
        if fv_options is not None and not isinstance(fv_options, dict):
            raise TypeError(f"fv_options must be a dict of cell_icons keywords, got "
                            f"{type(fv_options).__name__}.")
        self._atlas = atlas
        self._cache = cache
        self._model = model
        self._text = text
        self._fv_options = dict(fv_options or {})
        self._levels = AtlasLevels(atlas, self._regrid)
        self._levels_asked = levels
        self._icon_sets: dict[tuple[int, str], torch.Tensor] = {}
        self._job = None  # the background feature-vis render (atlas_icons._Job), if any
        self._jobs: list = []  # renders started and not yet applied, cancelled ones too
        self._quiet = True  # the observers below ignore the traits __init__ sets
        self._classes = atlas.classes if atlas.classes is not None else (cache.classes if cache else None)
        # feature-vis icons asked for at the start render in the background, like a toggle's
        first = atlas.icons
        traits = {**_atlas_traits(atlas, self._classes, first, cache if text else None), **kwargs}
        super().__init__(
            size=size, level=0, cells_level=0, n_levels=self._max_levels(levels), icons=icons,
            sprite_icons="examples", can_feature_vis=model is not None and not text,
            text_cells=text, **traits,
        )
        self._quiet = False
        if icons == "feature-vis":
            self._switch(lambda: self._show_icons("feature-vis"), "icons", "examples")

    @classmethod
    def from_cache(
        cls, cache: ActivationCache, layer: str | None = None, size: int = 500,
        model: nn.Module | None = None, icons: str = "examples", levels: int = 2,
        fv_options: dict[str, Any] | None = None, **build_kwargs,
    ) -> "AtlasWidget":
        """Build the atlas of ``layer`` (see ``build_atlas`` for the keywords) and show it."""
        return cls(build_atlas(cache, layer, **build_kwargs), cache, size=size, model=model,
                   icons=icons, levels=levels, fv_options=fv_options)

    @property
    def atlas(self) -> Atlas:
        """The Atlas of the level shown; ``selected`` holds ids of its cells."""
        return self._atlas

    def atlas_at(self, level: int) -> Atlas:
        """The Atlas of zoom ``level`` (built on first use: the level-0 layout re-binned into
        ``n * 2**level`` cells per side, no new UMAP run)."""
        level = self._checked_level(level)
        try:
            return self._levels[level]
        except ValueError:
            # too fine for this data: stop the page from asking for it again
            self.n_levels = min(self.n_levels, level)
            raise

    def use_icons(self, kind: str, wait: bool = False) -> None:
        """Show "examples" (dataset crops) or "feature-vis" icons, at this level and the others.

        Feature-vis icons of a level are rendered on first use, in the background (the widget
        shows the progress and a Cancel button), and kept; they need the ``model`` given to the
        widget, or ``set_icons`` for that level. ``wait=True`` returns once they are shown. A text
        atlas has only its text cells ("examples").
        """
        _check_kind(kind)
        if self._text and kind != "examples":
            raise ValueError(_TEXT_NO_FV)
        self.icons = kind
        if wait:
            self.wait_icons()

    def cancel_icons(self) -> None:
        """Stop the background feature-vis render (what the page's Cancel does): the cells keep
        their example icons, and finished chunks stay in the icon store for next time."""
        self.icons = "examples"

    def set_icons(self, level: int, icons) -> None:
        """Use precomputed feature-vis icons for ``level``.

        icons : uint8 tensor or array, shape (m, 3, s, s), one icon per visible cell of that level
            in the order of ``atlas_at(level).cells.ids`` (``cell_icons(...).icons`` is made so)
        """
        if self._text:
            raise ValueError(_TEXT_NO_FV)
        atlas = self.atlas_at(level)
        if isinstance(icons, np.ndarray):
            icons = torch.from_numpy(icons)
        if not isinstance(icons, torch.Tensor):
            raise TypeError(f"icons must be a uint8 tensor or array of shape (m, 3, s, s), got "
                            f"{type(icons).__name__}.")
        m = len(atlas.cells.ids)
        if icons.ndim != 4 or icons.shape[0] != m or icons.shape[1] != 3 or icons.shape[2] != icons.shape[3]:
            raise ValueError(
                f"icons for level {level} must have shape ({m}, 3, s, s): one square RGB icon per "
                f"visible cell of its {atlas.cells.n}x{atlas.cells.n} grid; got {tuple(icons.shape)}."
            )
        if icons.dtype != torch.uint8:
            raise TypeError(f"icons must be uint8 (0..255), got {icons.dtype}; scale and cast first.")
        if icons.shape[-1] < 4:
            raise ValueError(f"icons must be at least 4 pixels wide, got {icons.shape[-1]}.")
        self._icon_sets[(int(level), "feature-vis")] = icons.detach().cpu().contiguous()
        self.can_feature_vis = True
        if self.cells_level == level and self.sprite_icons == "feature-vis":
            self._send_icons(self._atlas, level, "feature-vis")

    def icons_at(self, level: int | None = None, kind: str | None = None) -> torch.Tensor:
        """The icons of ``level`` (default: the one shown) of ``kind`` (default: the one asked for):
        uint8 tensor, shape (m, 3, s, s), in the order of ``atlas_at(level).cells.ids``. Renders
        feature-vis icons when they are not there yet. None for a text atlas (see ``cell_tokens``)."""
        level = self.cells_level if level is None else level
        kind = self.icons if kind is None else kind
        _check_kind(kind)
        return self._icons_of(self.atlas_at(level), level, kind)

    def cell_tokens(self, level: int | None = None):
        """The token drawn in each cell of ``level`` (default: the one shown) of a text atlas:
        ``layout.tokens.CellTokens``, in the order of ``atlas_at(level).cells.ids``."""
        if not self._text:
            raise ValueError("This atlas shows images; cell tokens belong to a text atlas (a token "
                             "layer of a cache captured from token ids).")
        level = self.cells_level if level is None else level
        return cell_tokens(self.atlas_at(level), self._cache)

    def selected_rows(self) -> np.ndarray:
        """Row indices of the layer that fall in the selected cells, int64 shape (k,)."""
        return self._atlas.rows_of(self.selected)

    def cell_arrays(self) -> dict[str, np.ndarray]:
        """The synced cell arrays (what the page reads), for checks and tests."""
        return {"ids": self.cell_ids, "ij": self.cell_ij, "count": self.cell_count,
                "share": self.cell_share}

    # ---- validation and observers ------------------------------------------------------------
    # validators raise through @refuses: a refused message from the page is rolled back whole
    # (and the page told what holds), not left half-applied for linked widgets to copy

    @traitlets.validate("selected", "highlighted")
    @refuses
    def _valid_selection(self, proposal):
        value = proposal["value"]
        self._atlas.cells.index(value)  # raises ValueError naming ids that are not visible cells
        return value

    @traitlets.validate("size")
    @refuses
    def _valid_size(self, proposal):
        # the constructor's bounds hold for a size set later from Python or the page too
        return int_in_range(proposal["value"], "size", 120, 4000, "CSS pixels")

    @traitlets.validate("grid_size")
    @refuses
    def _valid_grid_size(self, proposal):
        if proposal["value"] < 1:
            raise ValueError(f"grid_size must be >= 1, got {proposal['value']}.")
        return proposal["value"]

    @traitlets.validate("icons")
    @refuses
    def _valid_icons(self, proposal):
        _check_kind(proposal["value"])
        if getattr(self, "_text", False) and proposal["value"] != "examples":
            raise ValueError(_TEXT_NO_FV)
        return proposal["value"]

    @traitlets.validate("level")
    @refuses
    def _valid_level(self, proposal):
        if not getattr(self, "_quiet", True):
            self._checked_level(proposal["value"])
        return proposal["value"]

    @traitlets.observe("level")
    def _on_level(self, change):
        if self._quiet or change["new"] == self.cells_level:
            return
        self._switch(lambda: self._show_level(change["new"]), "level", change["old"])

    @traitlets.observe("icons")
    def _on_icons(self, change):
        if self._quiet:
            return
        if change["new"] == "examples":
            self._cancel_job()
        if change["new"] == self.sprite_icons:
            return
        self._switch(lambda: self._show_icons(change["new"]), "icons", change["old"])

    def _switch(self, do, name: str, old) -> None:
        """Run a switch the page or Python asked for; on failure tell the page what it still
        shows (so its toggle and status recover), then report the error."""
        try:
            do()
        except (ValueError, TypeError, RuntimeError):
            self._quiet = True
            try:
                setattr(self, name, old)
            finally:
                self._quiet = False
            raise

    # ---- internals -----------------------------------------------------------------------------

    def _checked_level(self, level) -> int:
        level = integer(level, "level")
        if not 0 <= level < self.n_levels:
            why = ("" if self._cache is not None else
                   "; zoom levels need the cache: AtlasWidget(atlas, cache)")
            raise ValueError(f"level must be in [0, {self.n_levels - 1}], got {level}{why}.")
        return int(level)

    def _max_levels(self, levels: int) -> int:
        """Levels this widget can show: 1 without a cache or for an atlas it cannot re-bin."""
        return levels if self._cache is not None and self._can_regrid(self._atlas) else 1

    def _can_regrid(self, atlas: Atlas) -> bool:
        return type(atlas) is Atlas

    def _regrid(self, base: Atlas, grid_size: int) -> Atlas:
        return base.regrid(self._cache, grid_size)

    def _extra_traits(self, atlas: Atlas) -> dict[str, Any]:
        """Traits a subclass sends with every atlas (the comparison's cell values)."""
        return {}

    def _icons_of(self, atlas: Atlas, level: int, kind: str) -> torch.Tensor:
        """Icons of ``atlas`` (the atlas of ``level``); feature-vis ones rendered and kept on first use."""
        if kind == "examples":
            return atlas.icons
        key = (int(level), kind)
        if key not in self._icon_sets:
            self._icon_sets[key] = self._render(atlas, level)
        return self._icon_sets[key]

    def _render_options(self, level: int) -> dict[str, Any]:
        """cell_icons keywords for a render of ``level``; raises what stops it before any work."""
        if self._text:
            raise ValueError(_TEXT_NO_FV)
        if self._model is None:
            raise ValueError(_NO_MODEL.format(level=level))
        options = {**ICON_DEFAULTS, **self._fv_options}
        if "size" not in options:
            h, w = self._cache.input_hw if self._cache is not None else (0, 0)
            if h < 8 or h != w:
                raise ValueError(
                    "Feature-vis icons need the model's input size; pass "
                    "fv_options={'size': <pixels>} (the cache gives no square input size).")
            options["size"] = ("receptive", int(h))  # made a side in _render, off the main thread
        return options

    def _render(self, atlas: Atlas, level: int, progress=None) -> torch.Tensor:
        """Feature-vis icons of ``atlas``'s cells, uint8 (m, 3, s, s); ``progress`` as in
        ``render_icons`` (default: its tqdm bar, or the fv_options' ``progress``)."""
        from ..render.icons import cell_icons, receptive_side

        options = self._render_options(level)
        if progress is not None:
            options["progress"] = progress
        with RENDER_LOCK:  # one render at a time: renders hook the same model
            if isinstance(options["size"], tuple):
                options["size"] = receptive_side(self._model, atlas.layer, options["size"][1],
                                                 options.get("normalize"))
            result = cell_icons(self._model, atlas, self._cache, **options)
        # one icon per cell: the first variant when several were asked for
        return result.icons[:: result.per_direction].contiguous()

    def _show_level(self, level: int) -> None:
        atlas = self.atlas_at(level)
        kind = self.icons
        render = kind == "feature-vis" and (level, kind) not in self._icon_sets
        if render:  # example icons until the level's own render arrives, in the background
            self._render_options(level)  # refuse now (no model), before anything changes
            kind = "examples"
        icons = self._icons_of(atlas, level, kind)
        carried = carry_selection(self._atlas, atlas, self.selected)
        lit = carry_selection(self._atlas, atlas, self.highlighted)
        self.switching = True
        try:
            with self.hold_sync():
                self.selected = []  # checked against the old cells, so it must go before them
                self.highlighted = []
                self._atlas = atlas
                self._set_traits(atlas, level, kind, icons)
                self.highlighted = lit
            self.atlas_version += 1  # linked panels switch to this level's atlas (see link())
            self.selected = carried
        finally:
            self.switching = False
        if render:
            self._start_job(level, atlas)

    def _send_icons(self, atlas: Atlas, level: int, kind: str) -> None:
        """Send ``kind`` icons of the level shown (a toggle: the cells stay)."""
        icons = self._icons_of(atlas, level, kind)
        sheet, cols = sprite_sheet(icons)
        with self.hold_sync():
            self.sprite = sheet
            self.sprite_cols = cols
            self.icon_size = int(icons.shape[-1])
            self.sprite_icons = kind

    def _set_traits(self, atlas: Atlas, level: int, kind: str, icons: torch.Tensor) -> None:
        values = {**_atlas_traits(atlas, self._classes, icons, self._cache if self._text else None),
                  **self._extra_traits(atlas),
                  "cells_level": level, "sprite_icons": kind}
        self._quiet = True
        try:
            for name, value in values.items():
                setattr(self, name, value)
            self.level = level
        finally:
            self._quiet = False

    def _replace_base(self, new: Atlas) -> None:
        """Show another level-0 atlas (a comparison's new pair): levels and icons start afresh."""
        render = self.icons == "feature-vis"
        if render:
            self._render_options(0)
        self._cancel_job()
        with self.hold_sync():
            self.selected = []  # checked against the old cells, so it must go before them
            self.highlighted = []
            self._atlas = new
            self._levels = AtlasLevels(new, self._regrid)
            self._icon_sets = {}
            self.n_levels = self._max_levels(self._levels_asked)
            self._set_traits(new, 0, "examples", new.icons)  # feature-vis ones follow
        self.atlas_version += 1  # linked panels switch to the new atlas (see link())
        if render:
            self._start_job(0, new)


_TEXT_NO_FV = (
    "A text atlas draws its cells as tokens; it has no feature-vis icons (those are pictures that "
    "excite an image model). Use icons=\"examples\"."
)

_NO_MODEL = (
    "Feature-vis icons of level {level} need a model: AtlasWidget(atlas, cache, model=model), or "
    "give them precomputed with widget.set_icons({level}, icons)."
)


def _check_kind(kind) -> None:
    one_of(kind, "icons", ICON_KINDS)


def _is_text(atlas: Atlas) -> bool:
    """Whether ``atlas`` lays out a token layer (its cells are drawn as tokens, not pictures)."""
    return atlas.acts is not None and atlas.acts.kind == "tokens"


def _text_traits(atlas: Atlas, cache: ActivationCache | None) -> dict:
    """The text-cell traits: filled from ``cell_tokens`` with the cache of a text atlas, empty
    otherwise (so an image atlas's page never keeps a text atlas's tokens)."""
    if cache is None:
        return {"cell_token": [], "cell_token_share": np.zeros(0, np.float32), "cell_before": [],
                "cell_after": []}
    ct = cell_tokens(atlas, cache)
    return {
        "cell_token": list(ct.token),
        "cell_token_share": ct.share,
        "cell_before": [" ".join(c.tokens[: c.index]) for c in ct.contexts],
        "cell_after": [" ".join(c.tokens[c.index + 1:]) for c in ct.contexts],
    }


def _atlas_traits(atlas: Atlas, classes, icons: torch.Tensor | None = None,
                  text_cache: ActivationCache | None = None) -> dict:
    """The data traits of an atlas, as AtlasWidget sends them (see the trait comments).

    icons : uint8 tensor (m, 3, s, s) to draw; default the atlas's own dataset-example icons
    text_cache : for a text atlas, the cache of its tokens; its cells go as text, with no sprite
    """
    cells = atlas.cells
    icons = atlas.icons if icons is None else icons
    if text_cache is not None:
        sprite, cols, icon_size = b"", 1, 0
    else:
        sprite, cols = sprite_sheet(icons)
        icon_size = int(icons.shape[-1])
    return dict(
        layer=atlas.layer,
        grid_size=cells.n,
        n_cells=len(cells.ids),
        n_positions=int(cells.count.sum()),
        cell_ids=cells.ids,
        cell_ij=cells.ij,
        cell_count=cells.count,
        cell_share=atlas.top_class_share,
        cell_class=[class_name(int(c), classes) for c in atlas.top_class],
        sprite=sprite,
        sprite_cols=cols,
        icon_size=icon_size,
        **_text_traits(atlas, text_cache),
    )


def _check_cache(atlas: Atlas, cache: ActivationCache) -> None:
    """Refuse a cache that is not the one ``atlas`` was built from (see ``Atlas.check_cache``)."""
    if not isinstance(cache, ActivationCache):
        raise TypeError(f"cache must be an ActivationCache, got {type(cache).__name__}.")
    atlas.check_cache(cache)
