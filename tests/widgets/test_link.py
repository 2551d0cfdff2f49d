"""link(): selections sync both ways, with no update cycles, until unlinked."""

from __future__ import annotations

import pytest
import traitlets

from atlaswidgets.widgets.atlas import AtlasWidget
from atlaswidgets.widgets.examples import ExamplePanel
from atlaswidgets.widgets.link import link


class Counter(traitlets.HasTraits):
    """A stand-in widget whose validator rewrites values (sorted), the case that could ping-pong."""

    selected = traitlets.List(traitlets.Int())

    def __init__(self):
        super().__init__()
        self.changes = 0
        self.observe(self._count, names="selected")

    @traitlets.validate("selected")
    def _sorted(self, proposal):
        return sorted(proposal["value"])

    def _count(self, change):
        self.changes += 1


def test_atlas_and_panel_follow_each_other(small):
    cache, atlas = small
    w, p = AtlasWidget(atlas, cache), ExamplePanel(atlas, cache)
    ids = [int(i) for i in atlas.cells.ids]
    w.selected = [ids[0]]
    lk = link(w, p)
    assert p.selected == [ids[0]] and p.shown_cells == [ids[0]]  # linking copies the first widget's value
    w.set_state({"selected": [ids[1], ids[2]]})  # a click in the page
    assert p.selected == [ids[1], ids[2]] and p.n_examples > 0
    p.selected = [ids[3]]
    assert w.selected == [ids[3]]
    lk.unlink()
    w.selected = [ids[4]]
    assert p.selected == [ids[3]]


def test_no_update_cycles_even_when_validators_rewrite():
    a, b, c = Counter(), Counter(), Counter()
    link(a, b, c)
    a.selected = [5, 3, 1]
    assert a.selected == b.selected == c.selected == [1, 3, 5]
    assert (a.changes, b.changes, c.changes) == (1, 1, 1)
    b.selected = [2]
    assert a.selected == c.selected == [2]
    assert (a.changes, b.changes, c.changes) == (2, 2, 2)


def test_a_refused_value_does_not_jam_the_link(small):
    cache, atlas = small
    w, p = AtlasWidget(atlas, cache), ExamplePanel(atlas, cache)
    link(w, p)
    other = Counter()
    lk = link(other, w)
    with pytest.raises(ValueError, match="not visible cells"):
        other.selected = [10_000]
    ok = int(atlas.cells.ids[0])
    other.selected = [ok]
    assert w.selected == p.selected == [ok]
    lk.unlink()


def test_bad_input(small):
    cache, atlas = small
    w = AtlasWidget(atlas, cache)
    with pytest.raises(ValueError, match="at least two"):
        link(w)
    with pytest.raises(ValueError, match="has no trait 'nope'"):
        link(w, Counter(), trait="nope")
    with pytest.raises(ValueError, match="same widget twice"):
        link(w, w)
    with pytest.raises(ValueError, match="has no trait"):
        link(w, object())
