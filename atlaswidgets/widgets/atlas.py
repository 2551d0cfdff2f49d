"""AtlasWidget: the icons of an atlas on a canvas, with zoom, pan, hover and selection.

The widget is only state. Python fills the data traits once from an ``Atlas``; the page draws the
icons and reports what the person selected through ``selected`` (visible cell ids, synced both ways).

In the page, cell (row, col) covers the canvas rectangle (CSS pixels from its top-left corner)
``x = offsetX + col * scale``, ``y = offsetY + row * scale``, ``scale`` wide and high, where
``scale,offsetX,offsetY`` is the root element's ``data-view`` attribute. A browser test clicks a
cell at ``(offsetX + (col + 0.5) * scale, offsetY + (row + 0.5) * scale)``.

DOM hooks for tests: root ``.aw-atlas`` with ``data-n-cells``, ``data-grid-size``, ``data-selected``
(comma-separated sorted ids, "" when none), ``data-view``, ``data-hover`` (id of the cell under the
pointer, absent otherwise) and ``data-ready="1"`` once the icons have decoded and been drawn;
``canvas.aw-atlas-canvas``, ``.aw-atlas-tooltip``, ``button.aw-atlas-reset``, ``button.aw-atlas-clear``.
Escape clears the selection while the pointer is over the atlas (moving away gives focus back to
JupyterLab, where Escape means command mode).
"""

from __future__ import annotations

from pathlib import Path

import anywidget
import numpy as np
import traitlets

from ..cache.cache import ActivationCache
from ..layout.atlas import Atlas, _class_name, build_atlas
from ..render.crops import sprite_sheet
from ._common import CellIds, esm, from_buffer, to_buffer

__all__ = ["AtlasWidget"]


class AtlasWidget(anywidget.AnyWidget):
    """An activation atlas in the notebook: one icon per visible grid cell.

    Parameters
    ----------
    atlas : Atlas from ``build_atlas``
    cache : the ActivationCache the atlas was built from, optional; used to check that the two
        match and for class names when the atlas has none
    size : side of the square canvas in CSS pixels

    Scroll to zoom, drag to pan, hover for a tooltip, click to select a cell, shift/ctrl-click to
    toggle one, shift-drag to draw a lasso that adds the cells
    whose centres fall inside it; Escape or a click on empty space clears.
    """

    _esm = esm("atlas.js")
    _css = Path(__file__).parent / "atlas.css"

    # Data: one entry per visible cell, in the order of atlas.cells.ids; arrays as little-endian bytes
    layer = traitlets.Unicode("").tag(sync=True)
    grid_size = traitlets.Int(1).tag(sync=True)
    n_cells = traitlets.Int(0).tag(sync=True)
    n_positions = traitlets.Int(0).tag(sync=True)
    cell_ids = traitlets.Bytes(b"").tag(sync=True)  # uint32, shape (n_cells,)
    cell_ij = traitlets.Bytes(b"").tag(sync=True)  # uint32, shape (n_cells, 2): row, col
    cell_count = traitlets.Bytes(b"").tag(sync=True)  # uint32, shape (n_cells,)
    cell_share = traitlets.Bytes(b"").tag(sync=True)  # float32, shape (n_cells,)
    cell_class = traitlets.List(traitlets.Unicode()).tag(sync=True)  # most common class, as text
    sprite = traitlets.Bytes(b"").tag(sync=True)  # PNG; icon i at (i % sprite_cols, i // sprite_cols)
    sprite_cols = traitlets.Int(1).tag(sync=True)
    icon_size = traitlets.Int(48).tag(sync=True)

    # Selection: ids (row * grid_size + col) of visible cells, sorted
    selected = CellIds().tag(sync=True)

    # View
    size = traitlets.Int(500).tag(sync=True)

    def __init__(self, atlas: Atlas, cache: ActivationCache | None = None, size: int = 500, **kwargs):
        if not isinstance(atlas, Atlas):
            raise TypeError(
                f"AtlasWidget needs an Atlas (from aw.build_atlas), got {type(atlas).__name__}; "
                "or use AtlasWidget.from_cache(cache, layer)."
            )
        if cache is not None:
            _check_cache(atlas, cache)
        if isinstance(size, bool) or not isinstance(size, int) or not 120 <= size <= 4000:
            raise ValueError(f"size must be an int of CSS pixels in [120, 4000], got {size!r}.")
        self._atlas = atlas
        classes = atlas.classes if atlas.classes is not None else (cache.classes if cache else None)
        super().__init__(**_atlas_traits(atlas, classes), size=size, **kwargs)

    @classmethod
    def from_cache(
        cls, cache: ActivationCache, layer: str | None = None, size: int = 500, **build_kwargs
    ) -> "AtlasWidget":
        """Build the atlas of ``layer`` (see ``build_atlas`` for the keywords) and show it."""
        return cls(build_atlas(cache, layer, **build_kwargs), cache, size=size)

    @property
    def atlas(self) -> Atlas:
        """The Atlas this widget shows."""
        return self._atlas

    # Python-only: bumped whenever the widget starts showing another atlas (a comparison widget's
    # new pair), so link() can hand the new atlas to linked panels
    atlas_version = traitlets.Int(0)

    def selected_rows(self) -> np.ndarray:
        """Row indices of the layer that fall in the selected cells, int64 shape (k,)."""
        return self._atlas.rows_of(self.selected)

    def cell_arrays(self) -> dict[str, np.ndarray]:
        """The synced buffers decoded back to arrays (what the page reads), for checks and tests."""
        m = self.n_cells
        return {
            "ids": from_buffer(self.cell_ids, "uint32", (m,)),
            "ij": from_buffer(self.cell_ij, "uint32", (m, 2)),
            "count": from_buffer(self.cell_count, "uint32", (m,)),
            "share": from_buffer(self.cell_share, "float32", (m,)),
        }

    @traitlets.validate("selected")
    def _valid_selection(self, proposal):
        value = proposal["value"]
        self._atlas.cells.index(value)  # raises ValueError naming ids that are not visible cells
        return value

    @traitlets.validate("grid_size")
    def _valid_grid_size(self, proposal):
        if proposal["value"] < 1:
            raise ValueError(f"grid_size must be >= 1, got {proposal['value']}.")
        return proposal["value"]


def _atlas_traits(atlas: Atlas, classes) -> dict:
    """The data traits of an atlas, as AtlasWidget sends them (see the trait comments)."""
    cells = atlas.cells
    sprite, cols = sprite_sheet(atlas.icons)
    return dict(
        layer=atlas.layer,
        grid_size=cells.n,
        n_cells=len(cells.ids),
        n_positions=int(cells.count.sum()),
        cell_ids=to_buffer(cells.ids, "uint32"),
        cell_ij=to_buffer(cells.ij, "uint32"),
        cell_count=to_buffer(cells.count, "uint32"),
        cell_share=to_buffer(atlas.top_class_share, "float32"),
        cell_class=[_class_name(int(c), classes) for c in atlas.top_class],
        sprite=sprite,
        sprite_cols=cols,
        icon_size=int(atlas.icons.shape[-1]),
    )


def _check_cache(atlas: Atlas, cache: ActivationCache) -> None:
    if not isinstance(cache, ActivationCache):
        raise TypeError(f"cache must be an ActivationCache, got {type(cache).__name__}.")
    if atlas.layer not in cache.layers:
        raise ValueError(
            f"The atlas shows layer {atlas.layer!r}, which this cache lacks ({list(cache.layers)}); "
            "pass the cache the atlas was built from."
        )
    if cache[atlas.layer].n_rows != len(atlas.xy):
        raise ValueError(
            f"The atlas has {len(atlas.xy)} rows but the cache's layer {atlas.layer!r} has "
            f"{cache[atlas.layer].n_rows}; pass the cache the atlas was built from."
        )

