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

On a text atlas (a token layer of a cache captured from token ids) each example is its token
context instead of a picture: ``context`` tokens left and right of the row's token (marked), each
coloured by its activation along the selection's mean activation (``layout.tokens.
selection_contexts``; a token the cache holds no row for is left uncoloured), with the sample id
and the value. Tokens go to the page as a list of strings and are set as text, never parsed as
HTML. DOM hooks: the root has ``data-kind="text"`` (``"images"`` otherwise); each ``.aw-example``
holds ``.aw-tokens`` with one ``.aw-token`` per token (``data-value``, "" where unknown), the row's
token also ``.aw-token-marked``.
"""

from __future__ import annotations

from pathlib import Path

import anywidget
import numpy as np
import traitlets

from ..cache.cache import ActivationCache
from ..cache.contexts import is_text
from ..cache.crops import boxed_images, sprite_sheet
from ..layout.atlas import Atlas
from ..layout.tokens import selection_contexts
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
    context : (before, after), tokens shown left and right of each example's token on a text
        atlas (ignored for images)
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
    # Text (kind "text"): example i's window is context_tokens[context_offsets[i]:context_offsets[i+1]],
    # its own token at context_marked[i] within it, each token's value in context_values (NaN: none)
    kind = traitlets.Unicode("images").tag(sync=True)
    context_tokens = traitlets.List(traitlets.Unicode()).tag(sync=True)
    context_offsets = Array("uint32").tag(sync=True)
    context_marked = Array("uint32").tag(sync=True)
    context_values = Array("float32").tag(sync=True)

    # Selection: ids of visible cells of the atlas
    selected = CellIds().tag(sync=True)

    # View
    k = traitlets.Int(12).tag(sync=True)
    thumb_size = traitlets.Int(96).tag(sync=True)

    def __init__(
        self, atlas: Atlas, cache: ActivationCache, k: int = 12, thumb_size: int = 96,
        by: str | None = None, context: tuple[int, int] = (8, 4), **kwargs
    ):
        if not isinstance(cache, ActivationCache):
            raise TypeError(f"cache must be an ActivationCache, got {type(cache).__name__}.")
        if (not isinstance(context, (tuple, list)) or len(context) != 2
                or any(isinstance(c, bool) or not isinstance(c, (int, np.integer)) or not 0 <= c <= 64
                       for c in context)):
            raise ValueError(f"context must be (before, after): two ints in [0, 64], the tokens shown "
                             f"left and right of each example's token; got {context!r}.")
        self._context = (int(context[0]), int(context[1]))
        self._held, self._stale = 0, False  # see hold_page
        text = isinstance(atlas, Atlas) and is_text(cache) and atlas.layer in cache.layers and \
            cache[atlas.layer].kind == "tokens"
        if cache.images is None and not text:
            raise ValueError(
                "The panel shows the dataset images, but this cache has none; capture it with "
                "keep_images=True."
            )
        self._cache = cache
        self._check_atlas(atlas)
        self._atlas = atlas
        self._by = "alignment" if by is None else by
        atlas.examples([], by=self._by)  # a ranking this atlas does not know fails here, not later
        super().__init__(k=k, thumb_size=thumb_size, kind="text" if text else "images", **kwargs)
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
        return {"values": self.values, "sample_ids": self.sample_ids, "rows": self.rows, "yx": self.yx,
                "context_offsets": self.context_offsets, "context_marked": self.context_marked,
                "context_values": self.context_values}

    def contexts(self) -> list[tuple[list[str], int, np.ndarray]]:
        """Each shown example's token context as the page gets it: (tokens, index of the example's
        token, float32 values with NaN where unknown); empty for an image atlas."""
        off = self.context_offsets
        return [(list(self.context_tokens[off[i]:off[i + 1]]), int(self.context_marked[i]),
                 np.asarray(self.context_values[off[i]:off[i + 1]]))
                for i in range(max(len(off) - 1, 0))]

    def hold_page(self, hold: bool) -> None:
        """Keep the examples on the page as they are (``hold=True``) until ``hold_page(False)``,
        which shows the selection of that moment, once. ``link()`` holds a panel while its atlas
        switches zoom level, so the old examples stay until the carried selection's arrive
        instead of the panel going blank in between."""
        self._held += 1 if hold else -1 if self._held else 0
        if not self._held and self._stale:
            self._stale = False
            self._refresh()

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
        if self._held:
            self._stale = True  # shown when the hold ends
            return
        cells = list(self.selected)
        ex = self._atlas.examples(cells, k=self.k, by=self._by)
        n_positions = len(self._atlas.rows_of(cells)) if cells else 0
        text = self.kind == "text"
        contexts = []
        if len(ex) and text:
            contexts = selection_contexts(self._atlas, self._cache, cells, ex.rows, *self._context)
            sprite, cols, labels = b"", 1, [c.token for c in contexts]
        elif len(ex):
            pics = boxed_images(self._cache, self._atlas.layer, ex.rows, size=self.thumb_size)
            sprite, cols = sprite_sheet(pics, fmt="jpeg")
            labels = self._cache.label_names(ex.sample_id)
        else:
            sprite, cols, labels = b"", 1, []
        lengths = [len(c.tokens) for c in contexts]
        # one message: the page never sees examples of one selection with the header of another
        with self.hold_sync():
            self.sprite = sprite
            self.sprite_cols = cols
            self.labels = [str(s) for s in labels]
            self.values = ex.values
            self.sample_ids = ex.sample_id
            self.rows = ex.rows
            self.yx = ex.yx
            self.context_tokens = [t for c in contexts for t in c.tokens]
            self.context_offsets = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)])
            self.context_marked = np.array([c.index for c in contexts], np.int64)
            self.context_values = (np.concatenate([c.values for c in contexts]) if contexts
                                   else np.zeros(0, np.float32))
            self.n_examples = len(ex)
            self.n_positions = n_positions
            self.shown_cells = cells
