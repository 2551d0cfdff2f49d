"""The 1000 ImageNet-1k class names (index = class id) and a lookup by name.

Shipped as ``imagenet_classes.json`` (regenerate with ``make_classes``): short readable names
("frying pan" = 567, "wok" = 909, "tabby cat" = 281, "espresso" = 967), unique, and the WordNet
id of each class ("n03400231").
"""

from __future__ import annotations

import difflib
import json
from functools import lru_cache
from pathlib import Path

__all__ = ["class_names", "wnids", "class_id"]

_FILE = Path(__file__).with_name("imagenet_classes.json")


@lru_cache(maxsize=1)
def _document() -> dict:
    doc = json.loads(_FILE.read_text(encoding="utf-8"))
    if len(doc["names"]) != 1000 or len(doc["wnids"]) != 1000:
        raise ValueError(f"{_FILE} must hold 1000 names and wnids; regenerate it with "
                         "`python -m atlaswidgets.zoo.imagenet.make_classes`.")
    return doc


def class_names() -> list[str]:
    """The 1000 ImageNet class names; ``class_names()[i]`` is class ``i`` (a new list each call)."""
    return list(_document()["names"])


def wnids() -> list[str]:
    """The WordNet ids of the 1000 classes, in class-id order (ImageNet's folder names)."""
    return list(_document()["wnids"])


def class_id(name: str) -> int:
    """Class id of an ImageNet class name ("wok" -> 909) or WordNet id ("n04596742" -> 909).

    Case is ignored. An unknown name raises ValueError suggesting close names.
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a class name (str), got {type(name).__name__}.")
    names, ids = _document()["names"], _document()["wnids"]
    lowered = [n.lower() for n in names]
    key = name.strip().lower()
    if key in lowered:
        return lowered.index(key)
    if key in ids:
        return ids.index(key)
    close = difflib.get_close_matches(key, lowered, n=5, cutoff=0.6)
    close += [n.lower() for n in names if key and key in n.lower() and n.lower() not in close][:5]
    hint = f" Close names: {', '.join(repr(names[lowered.index(c)]) for c in close)}." if close else ""
    raise ValueError(f"{name!r} is not an ImageNet class name.{hint} See "
                     "atlaswidgets.zoo.imagenet.class_names() for all 1000.")
