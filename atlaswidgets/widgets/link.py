"""link(): one shared selection across widgets, synced both ways."""

from __future__ import annotations

from typing import Any

import traitlets

__all__ = ["link", "Link"]


class Link:
    """A live sync of one trait among widgets; ``unlink()`` stops it.

    A change of the trait on any widget is copied to the others. While it copies, changes that the
    copy itself causes are ignored, so A -> B -> A cannot loop, even when a widget's validator
    rewrites the value (sorting, dropping repeats).
    """

    def __init__(self, widgets: tuple[traitlets.HasTraits, ...], trait: str):
        self.widgets = widgets
        self.trait = trait
        self._syncing = False
        self._handlers = []
        for w in widgets:
            handler = self._handler_for(w)
            w.observe(handler, names=trait)
            self._handlers.append((w, handler, trait))
        # start in agreement: the first widget's value wins, as in traitlets.link
        self._handlers[0][1]({"new": getattr(widgets[0], trait)})
        # a widget that starts showing another atlas (a comparison's new pair) hands it to the
        # linked widgets that take one (ExamplePanel), so their cell ids keep their meaning
        for w in widgets:
            if w.has_trait("atlas_version"):
                handler = self._atlas_handler_for(w)
                w.observe(handler, names="atlas_version")
                self._handlers.append((w, handler, "atlas_version"))
            # while a widget switches zoom level (its selection cleared, then carried over), the
            # linked widgets that can hold their page (ExamplePanel) keep showing the old one
            if w.has_trait("switching"):
                handler = self._switching_handler_for(w)
                w.observe(handler, names="switching")
                self._handlers.append((w, handler, "switching"))

    def __repr__(self) -> str:
        names = ", ".join(type(w).__name__ for w in self.widgets)
        state = "linked" if self._handlers else "unlinked"
        return f"Link({names}; trait={self.trait!r}, {state})"

    def _handler_for(self, source):
        def handler(change: dict[str, Any]) -> None:
            if self._syncing:
                return
            self._syncing = True
            try:
                value = change["new"]
                for other in self.widgets:
                    if other is source:
                        continue
                    if getattr(other, self.trait) != value:
                        setattr(other, self.trait, list(value) if isinstance(value, list) else value)
            finally:
                self._syncing = False

        return handler

    def _atlas_handler_for(self, source):
        def handler(change: dict[str, Any]) -> None:
            for other in self.widgets:
                if other is not source and _takes_atlas(other) and other.atlas is not source.atlas:
                    other.atlas = source.atlas

        return handler

    def _switching_handler_for(self, source):
        def handler(change: dict[str, Any]) -> None:
            for other in self.widgets:
                if other is not source and hasattr(other, "hold_page"):
                    other.hold_page(bool(change["new"]))

        return handler

    def unlink(self) -> None:
        """Stop syncing; the widgets keep their current values."""
        for w, handler, name in self._handlers:
            w.unobserve(handler, names=name)
        self._handlers = []


def _takes_atlas(widget) -> bool:
    prop = getattr(type(widget), "atlas", None)
    return isinstance(prop, property) and prop.fset is not None


def link(*widgets: traitlets.HasTraits, trait: str = "selected") -> Link:
    """Keep ``trait`` equal on all ``widgets``: set it on one (from Python or a click) and the rest follow.

    On linking, the first widget's current value is copied to the others.
    Returns a Link; call ``.unlink()`` to stop.
    """
    if len(widgets) < 2:
        raise ValueError(f"link() needs at least two widgets, got {len(widgets)}.")
    if not isinstance(trait, str):
        raise TypeError(f"trait must be a trait name (str), got {type(trait).__name__}.")
    for w in widgets:
        if not isinstance(w, traitlets.HasTraits) or not w.has_trait(trait):
            raise ValueError(
                f"{type(w).__name__} has no trait {trait!r}; every linked widget needs one "
                "(AtlasWidget and ExamplePanel have 'selected')."
            )
    if len({id(w) for w in widgets}) != len(widgets):
        raise ValueError("link() got the same widget twice; pass each widget once.")
    return Link(tuple(widgets), trait)
