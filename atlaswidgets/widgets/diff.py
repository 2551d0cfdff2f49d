"""DiffWidget: a model-diff atlas (model b's layer, each cell scored by what model a lacks).

It is an ``AtlasWidget`` (same canvas, zoom levels, pan, hover, click, shift-click, shift-drag
lasso, and a ``selected`` trait of visible cell ids, so ``link()`` and ``ExamplePanel`` work with
it unchanged) whose page runs in diff mode: every cell gets a frame coloured on a sequential
grey-to-purple scale by its members' mean novelty over the atlas's scale (grey: model a's layer
explains what b does there; purple: b's activation there has no counterpart in a), and a legend
under the canvas reads "shared with <a>" at the grey end and "only in <b>" at the purple end.

Zoom level k re-bins the same layout and the same per-row novelty into ``n * 2**k`` cells per side
with ``DiffAtlas.regrid`` (no UMAP run); each level's colours are that level's cell means over the
level-0 scale, so a colour means the same novelty at every level.

DOM hooks for tests, besides AtlasWidget's (``.aw-atlas`` with ``data-selected``, ``data-view``,
``data-hover``, ``data-ready``, ``data-level``): the root has ``data-mode="diff"``, ``data-names``
(``a``, tab, ``b``) and ``data-cell-values`` (comma-separated colour values in [0, 1], 3 decimals,
in the order of the cells, which is ascending cell id); ``.aw-atlas-legend.aw-legend-diff`` holds
``.aw-legend-left`` ("shared with <a>"), ``.aw-legend-bar``, three ``.aw-legend-tick`` (0, half
and all of the scale, as novelty) and ``.aw-legend-right`` ("only in <b>"); the tooltip adds
``.aw-atlas-tooltip-novelty`` with the cell's mean novelty.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import traitlets

from ..cache.cache import ActivationCache
from ..cache.checks import positive_int
from ..layout.diff import DiffAtlas, diff_atlas
from ._common import Array
from .atlas import AtlasWidget

__all__ = ["DiffWidget"]


class DiffWidget(AtlasWidget):
    """A model-diff atlas in the notebook: model b's cells framed by novelty against model a.

    Parameters
    ----------
    diff : DiffAtlas from ``diff_atlas`` (or ``experiments.diff``), level 0
    cache : the ActivationCache of model b the diff atlas was built from, optional; needed for
        zoom levels above 0, checked against the atlas
    size : side of the square canvas in CSS pixels
    The other keywords (``model`` of b, ``icons``, ``levels``, ``fv_options``) are AtlasWidget's.

    Scroll to zoom, drag to pan, hover for a tooltip (cell size, top class, mean novelty), click to
    select a cell, shift/ctrl-click to toggle one, shift-drag to draw a lasso; Escape or a click on
    empty space clears. ``select_most_novel(k)`` selects the k most novel cells from Python.
    """

    # Diff: one entry per visible cell, in the order of the atlas traits' cells
    mode = traitlets.Unicode("diff").tag(sync=True)
    cell_value = Array("float32").tag(sync=True)  # mean_novelty / scale in [0, 1]
    cell_novelty = Array("float32").tag(sync=True)  # mean_novelty, unscaled
    novelty_scale = traitlets.Float(1.0).tag(sync=True)  # the level-0 scale: the most novel cell's mean
    names = traitlets.List(traitlets.Unicode()).tag(sync=True)  # [a, b], shown as text

    def __init__(
        self,
        diff: DiffAtlas,
        cache: ActivationCache | None = None,
        size: int = 500,
        **kwargs,
    ):
        if not isinstance(diff, DiffAtlas):
            got = type(diff).__name__
            hints = {
                "ModelDiff": " Pick a layer first: DiffWidget(model_diff.atlas(layer), cache_b).",
                "ComparisonAtlas": " A ComparisonAtlas compares two classes of one model: show it "
                                   "with aw.ComparisonWidget.",
            }
            raise TypeError(
                "DiffWidget needs a DiffAtlas (from diff_models(...).atlas(layer) in "
                "atlaswidgets.experiments.diff, or diff_atlas(cache_b, novelty, names)), got "
                f"{got}; or use DiffWidget.from_cache(cache_b, novelty, names).{hints.get(got, '')}"
            )
        # colours are relative to the level-0 scale at every level, so a zoomed-in cell as novel
        # as the most novel coarse cell is as purple, not rescaled to its own level's maximum
        self._scale = float(diff.scale)
        super().__init__(diff, cache, size=size, **_diff_traits(diff, self._scale), **kwargs)

    @classmethod
    def from_cache(
        cls,
        cache: ActivationCache,
        novelty,
        names=("a", "b"),
        layer: str | None = None,
        size: int = 500,
        model=None,
        icons: str = "examples",
        levels: int = 2,
        fv_options: dict[str, Any] | None = None,
        **diff_kwargs,
    ) -> "DiffWidget":
        """Lay out model b's ``layer`` (``cache``), score its cells by ``novelty`` and show it.

        novelty : array-like, shape (n_rows,), per row of b's layer the share a cannot explain,
            in [0, 1]
        names : (name of a, name of b)
        ``diff_kwargs`` go to ``diff_atlas`` (grid_size, min_count, seed, n_neighbors, min_dist,
        icon_size, xy); ``model`` (model b), ``icons``, ``levels`` and ``fv_options`` are
        AtlasWidget's.
        """
        return cls(diff_atlas(cache, novelty, names, layer, **diff_kwargs), cache, size=size,
                   model=model, icons=icons, levels=levels, fv_options=fv_options)

    @classmethod
    def from_model_diff(
        cls,
        model_diff,
        layer: str | None = None,
        direction: str = "b",
        size: int = 500,
        icons: str = "examples",
        levels: int = 2,
        fv_options: dict[str, Any] | None = None,
        **atlas_kwargs,
    ) -> "DiffWidget":
        """Show a ``ModelDiff`` (``atlaswidgets.experiments.diff.diff_models``) at ``layer``.

        direction : "b" lays out b's layer scored against a, "a" the other way round
        ``atlas_kwargs`` go to ``model_diff.atlas`` (grid_size, min_count, seed, xy, ...). The
        widget gets the laid-out model's cache (zoom levels) and the model itself (feature-vis
        icons on the page's toggle).
        """
        if not all(hasattr(model_diff, n) for n in ("atlas", "cache", "model_a", "model_b")):
            raise TypeError(
                "from_model_diff needs a ModelDiff from aw.diff_models(model_a, model_b, data, "
                f"layers), got {type(model_diff).__name__}; for a DiffAtlas use DiffWidget(diff, cache).")
        diff = model_diff.atlas(layer, direction=direction, **atlas_kwargs)
        model = model_diff.model_b if direction == "b" else model_diff.model_a
        return cls(diff, model_diff.cache(direction), size=size, model=model, icons=icons,
                   levels=levels, fv_options=fv_options)

    @property
    def atlas(self) -> DiffAtlas:
        """The DiffAtlas of the level shown; ``selected`` holds ids of its cells."""
        return self._atlas

    def select_most_novel(self, k: int = 5) -> list[int]:
        """Select the ``k`` cells of the level shown with the highest mean novelty.

        Linked panels follow. Returns the selected cell ids, most novel first (``selected`` itself
        is sorted by id). Fewer than ``k`` when the level has fewer visible cells.
        """
        positive_int(k, "k", "how many cells to select")
        top = [int(i) for i in self._atlas.ranked_cells()[: int(k)]]
        self.selected = top
        return top

    def value_arrays(self) -> dict[str, np.ndarray]:
        """The synced diff arrays (what the page reads), for checks and tests."""
        return {"value": self.cell_value, "novelty": self.cell_novelty}

    # ---- internals -------------------------------------------------------------------------

    def _can_regrid(self, atlas) -> bool:
        return isinstance(atlas, DiffAtlas)

    def _extra_traits(self, atlas: DiffAtlas) -> dict[str, Any]:
        return _diff_traits(atlas, self._scale)


def _diff_traits(diff: DiffAtlas, scale: float) -> dict[str, Any]:
    """The diff-only traits of a DiffAtlas, its cell means drawn over ``scale``."""
    value = np.clip(diff.mean_novelty / scale, 0.0, 1.0)
    return dict(
        mode="diff",
        cell_value=value,
        cell_novelty=diff.mean_novelty,
        novelty_scale=float(scale),
        names=[str(diff.names[0]), str(diff.names[1])],
    )
