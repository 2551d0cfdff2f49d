"""ExamplePanel: the top dataset examples of the selected atlas cells.

Set ``selected`` (or ``link`` the panel to an AtlasWidget) and Python ranks the members of those
cells by alignment with their mean activation (``Atlas.examples``), draws each example's whole image
with the receptive field of its best position outlined, and sends the pictures as one JPEG sprite
sheet plus text captions.

DOM hooks for tests: root ``.aw-examples`` with ``data-n-examples``; ``.aw-examples-header`` with
``data-cells`` (the comma-separated cell ids whose examples are shown, "" when none); one
``.aw-example`` per example, best first, with ``data-sample-id``, ``data-row`` and ``data-rank``,
holding ``.aw-example-label`` (class name) and ``.aw-example-value``. Header and examples are swapped
in together once the pictures have decoded, so they always describe the same selection.
"""

from __future__ import annotations

from pathlib import Path

import anywidget
import numpy as np
import traitlets

from ..cache.cache import ActivationCache
from ..cache.crops import boxed_images, sprite_sheet
from ..layout.atlas import Atlas
from ._common import Array, CellIds, RollsBackPageState, bundle, refuses

__all__ = ["ExamplePanel"]


class ExamplePanel(RollsBackPageState, anywidget.AnyWidget):
    """Dataset examples of a selection of atlas cells, best first.

    Parameters
    ----------
    atlas : Atlas whose cells ``selected`` names
    cache : the ActivationCache the atlas was built from (images and labels)
    k : how many examples (distinct samples) to show
    thumb_size : side of each example picture in pixels
    by : how to rank the selection's members, passed to ``atlas.examples``; None or "alignment"
        for alignment with the selection's mean. A comparison atlas also takes "attribution":
        the strongest arguments for the side the selection leans to
    """

    _esm = bundle("examples")
    _css = Path(__file__).parent / "examples.css"

    # Data: what is shown now, all set together; one entry per example
    shown_cells = traitlets.List(traitlets.Int()).tag(sync=True)  # the selection these examples are of
    n_positions = traitlets.Int(0).tag(sync=True)  # member rows of the shown cells
    n_examples = traitlets.Int(0).tag(sync=True)
    sprite = traitlets.Bytes(b"").tag(sync=True)  # JPEG; example i at (i % sprite_cols, i // sprite_cols)
    sprite_cols = traitlets.Int(1).tag(sync=True)
    labels = traitlets.List(traitlets.Unicode()).tag(sync=True)  # class name of each example, as text
    values = Array("float32").tag(sync=True)
    sample_ids = Array("uint32").tag(sync=True)
    rows = Array("uint32").tag(sync=True)
    yx = Array("int32", ndim=2).tag(sync=True)  # y, x of the position; -1 for "mean" rows

    # Selection: ids of visible cells of the atlas
    selected = CellIds().tag(sync=True)

    # View
    k = traitlets.Int(12).tag(sync=True)
    thumb_size = traitlets.Int(96).tag(sync=True)

    def __init__(
        self, atlas: Atlas, cache: ActivationCache, k: int = 12, thumb_size: int = 96,
        by: str | None = None, **kwargs
    ):
        if not isinstance(cache, ActivationCache):
            raise TypeError(f"cache must be an ActivationCache, got {type(cache).__name__}.")
        if cache.images is None:
            raise ValueError(
                "The panel shows the dataset images, but this cache has none; capture it with "
                "keep_images=True."
            )
        self._cache = cache
        self._check_atlas(atlas)
        self._atlas = atlas
        self._by = "alignment" if by is None else by
        atlas.examples([], by=self._by)  # a ranking this atlas does not know fails here, not later
        super().__init__(k=k, thumb_size=thumb_size, **kwargs)
        self._refresh()

    @property
    def atlas(self) -> Atlas:
        """The atlas whose cells ``selected`` names. Setting another one (of the same cache)
        clears the selection; ``link()`` does it when a linked comparison widget changes pair."""
        return self._atlas

    @atlas.setter
    def atlas(self, atlas: Atlas) -> None:
        self._check_atlas(atlas)
        atlas.examples([], by=self._by)
        with self.hold_sync():
            self.selected = []  # ids of the old atlas's cells mean nothing in the new one
            self._atlas = atlas
            self._refresh()

    def _check_atlas(self, atlas) -> None:
        if not isinstance(atlas, Atlas):
            raise TypeError(f"ExamplePanel needs an Atlas (from aw.build_atlas), got {type(atlas).__name__}.")
        atlas.check_cache(self._cache)  # layer, rows and capture fingerprint

    def example_arrays(self) -> dict[str, np.ndarray]:
        """The synced example arrays (what the page reads), for checks and tests."""
        return {"values": self.values, "sample_ids": self.sample_ids, "rows": self.rows, "yx": self.yx}

    @traitlets.validate("selected")
    @refuses
    def _valid_selection(self, proposal):
        self._atlas.cells.index(proposal["value"])  # ValueError naming ids that are not visible cells
        return proposal["value"]

    @traitlets.validate("k")
    @refuses
    def _valid_k(self, proposal):
        if not 1 <= proposal["value"] <= 200:
            raise ValueError(f"k must be between 1 and 200 examples, got {proposal['value']}.")
        return proposal["value"]

    @traitlets.validate("thumb_size")
    @refuses
    def _valid_thumb_size(self, proposal):
        if not 16 <= proposal["value"] <= 512:
            raise ValueError(f"thumb_size must be between 16 and 512 pixels, got {proposal['value']}.")
        return proposal["value"]

    @traitlets.observe("selected", "k", "thumb_size")
    def _on_change(self, change):
        self._refresh()

    def _refresh(self) -> None:
        cells = list(self.selected)
        ex = self._atlas.examples(cells, k=self.k, by=self._by)
        n_positions = len(self._atlas.rows_of(cells)) if cells else 0
        if len(ex):
            pics = boxed_images(self._cache, self._atlas.layer, ex.rows, size=self.thumb_size)
            sprite, cols = sprite_sheet(pics, fmt="jpeg")
            labels = self._cache.label_names(ex.sample_id)
        else:
            sprite, cols, labels = b"", 1, []
        # one message: the page never sees examples of one selection with the header of another
        with self.hold_sync():
            self.sprite = sprite
            self.sprite_cols = cols
            self.labels = [str(s) for s in labels]
            self.values = ex.values
            self.sample_ids = ex.sample_id
            self.rows = ex.rows
            self.yx = ex.yx
            self.n_examples = len(ex)
            self.n_positions = n_positions
            self.shown_cells = cells
