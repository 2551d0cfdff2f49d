"""Read-only folders of shipped feature-vis icon stores, registered by the worlds that ship them
(the zoo), read by the renderer: here, below both.

A light module (no torch) so that importing a world registers its folder without importing the
renderer; ``render.icons`` looks stores up here by key before rendering.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["register", "sources"]

_SOURCES: list[Path] = []


def register(path: str | Path) -> None:
    """Look up icon stores (``icons-<key>/`` folders) in ``path`` before rendering; a missing
    folder is allowed (a world may ship none yet)."""
    path = Path(path)
    if path not in _SOURCES:
        _SOURCES.append(path)


def sources() -> list[Path]:
    """The registered folders, in the order they were registered."""
    return list(_SOURCES)
