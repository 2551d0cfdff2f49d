"""Targets: what an attribution or a comparison is taken toward, with one spelling each.

A ``Target`` is structural: a kind and the output ids it reads.

- ``Target("class", (3,))``: the logit of class 3;
- ``Target("pair", (3, 1))``: the logit difference ``logit[3] - logit[1]``, the article's
  comparison of two classes (frying pan vs wok).

Its **key** is its one readable spelling, made by ``Target.key(classes)``: the class name
("wok"), ``"class:3"`` for a class without a name, and ``"a-b"`` for a pair ("wok-frying pan",
"class:3-class:1"). Every part of the kit writes keys with it: attribution keys in a cache,
layouts' and widgets' class names, ``cache.label_names``. A key the kit wrote always resolves
again (``resolve``), with or without class names; ``"?"`` is an unknown label, never a target.

Stored attributions keep their ``Target`` beside the key (``LayerActs.attribution_targets``,
written to the store's manifest), so pairs are known by their ids, never by cutting a key at a
"-" (class names may hold one). ``stored_targets`` gives every stored key's target; keys from
stores written before targets were recorded, or set by hand, are resolved once against the class
names.

A later kind (say a next-token target of a language model: a token id of its vocabulary, or a
pair of them) adds a kind name, its key spelling in ``Target.key`` and its score in
``Target.score``; resolution, keys, stores and lookups keep their shape.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import torch

__all__ = [
    "Target", "KINDS", "class_name", "class_id", "resolve", "target_key", "model_classes",
    "stored_targets", "find_stored", "n_outputs_of",
]

KINDS = {"class": 1, "pair": 2}  # kind -> number of output ids it reads
UNKNOWN = "?"  # the name of an unknown label (-1); never a target
_UNNAMED = re.compile(r"class:(\d+)")


@dataclass(frozen=True)
class Target:
    """A target by its structure.

    kind : "class" (one logit) or "pair" (logit[a] - logit[b])
    ids : tuple of int output ids, (a,) for a class, (a, b) for a pair
    """

    kind: str
    ids: tuple[int, ...]

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"Unknown target kind {self.kind!r}; the kinds are {list(KINDS)}.")
        ids = tuple(self.ids)
        if len(ids) != KINDS[self.kind] or not all(_is_int(i) and i >= 0 for i in ids):
            raise ValueError(f"A {self.kind!r} target needs {KINDS[self.kind]} non-negative int "
                             f"id(s), got {self.ids!r}.")
        if self.kind == "pair" and ids[0] == ids[1]:
            raise ValueError(f"A pair target needs two different classes; got class {ids[0]} "
                             "twice (its logit difference is always 0).")
        object.__setattr__(self, "ids", tuple(int(i) for i in ids))

    def key(self, classes: Sequence[str] | None = None) -> str:
        """The readable key: "wok", "class:3", "wok-frying pan".

        A pair whose readable key would read back as something else (names holding "-": the
        pair ("stir", "fry pan") against the class "stir-fry pan") is spelled by its ids,
        "class:3-class:4", so every key resolves to its own target.
        """
        readable = "-".join(class_name(i, classes) for i in self.ids)
        if self.kind != "pair" or not classes:
            return readable
        limit = max(len(classes), *(i + 1 for i in self.ids))
        try:
            if resolve(readable, classes, limit) == self:
                return readable
        except ValueError:
            pass
        return "-".join(f"class:{i}" for i in self.ids)

    def score(self, logits: torch.Tensor) -> torch.Tensor:
        """The scalar per sample this target reads from logits (N, n_outputs): shape (N,)."""
        if self.kind == "class":
            return logits[:, self.ids[0]]
        return logits[:, self.ids[0]] - logits[:, self.ids[1]]

    def to_json(self) -> dict:
        """A JSON-able record, as the store's manifest keeps it."""
        return {"kind": self.kind, "ids": list(self.ids)}

    @classmethod
    def from_json(cls, value: Any) -> "Target":
        """The Target of a ``to_json`` record; ValueError for anything else."""
        if not (isinstance(value, dict) and set(value) == {"kind", "ids"}
                and isinstance(value["ids"], list)):
            raise ValueError(f"A target record must be {{'kind': str, 'ids': [int, ...]}}, got {value!r}.")
        return cls(value["kind"], tuple(value["ids"]))

    @property
    def classes(self) -> tuple[int, int | None]:
        """(a, b) class ids, b None for a single class."""
        return (self.ids[0], self.ids[1]) if self.kind == "pair" else (self.ids[0], None)


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def class_name(i: int, classes: Sequence[str] | None = None) -> str:
    """The one spelling of class ``i``: its name, "class:i" without one, "?" for a label < 0."""
    i = int(i)
    if i < 0:
        return UNKNOWN
    if classes is not None and i < len(classes):
        return str(classes[i])
    return f"class:{i}"


def n_outputs_of(logits: torch.Tensor | None) -> int | None:
    """The number of outputs of (N, n_outputs) logits, else None."""
    return int(logits.shape[1]) if logits is not None and logits.ndim == 2 else None


def class_id(value: Any, classes: Sequence[str] | None = None, n_outputs: int | None = None) -> int:
    """The class id of an int id, a class name, or the kit's "class:3" spelling."""
    if _is_int(value):
        limit = n_outputs if n_outputs is not None else (len(classes) if classes else None)
        if value < 0 or (limit is not None and value >= limit):
            allowed = f"0..{limit - 1}" if limit is not None else "a non-negative id"
            raise ValueError(f"Class id {int(value)} is out of range; the model has {limit} "
                             f"outputs, so use {allowed}.")
        return int(value)
    if isinstance(value, str):
        if classes and value in classes:
            return list(classes).index(value)
        m = _UNNAMED.fullmatch(value)
        if m:  # the kit's own spelling of a class without a name
            return class_id(int(m.group(1)), classes, n_outputs)
        if not classes:
            raise ValueError(f"Class name {value!r} cannot be looked up: there are no class "
                             "names. Pass classes=[...] (names indexed by label) or a class id.")
        close = difflib.get_close_matches(value, list(classes), n=3, cutoff=0.5)
        hint = f" Did you mean {close}?" if close else ""
        raise ValueError(f"Unknown class name {value!r}.{hint} Known names: {list(classes)}.")
    raise TypeError(f"A target class must be an int id or a str name, got {type(value).__name__}.")


def resolve(target: Any, classes: Sequence[str] | None = None, n_outputs: int | None = None) -> Target:
    """The Target of a class id or name, a pair (a, b) of them, a key the kit wrote, or a Target.

    A str is a class name, "class:3", or a pair key ("wok-frying pan"); a pair key is matched
    against the known spellings of each class, so names holding "-" resolve too.
    Raises ValueError/TypeError that say what was wrong, before any work.
    """
    if isinstance(target, Target):
        for i in target.ids:
            class_id(i, classes, n_outputs)  # range check against this model
        return target
    if isinstance(target, (tuple, list)):
        if len(target) != 2:
            raise ValueError(f"A pair target must have two classes (a, b), got {len(target)}: "
                             f"{target!r}.")
        a, b = (class_id(v, classes, n_outputs) for v in target)
        if a == b:
            raise ValueError(f"A pair target needs two different classes; got {target!r}, which "
                             f"names class {a} twice (its logit difference is always 0).")
        return Target("pair", (a, b))
    if isinstance(target, str) and "-" in target and not (classes and target in classes):
        pair = _pair_of_key(target, classes, n_outputs)
        if pair is not None:
            return pair
    return Target("class", (class_id(target, classes, n_outputs),))


def _pair_of_key(key: str, classes: Sequence[str] | None, n_outputs: int | None) -> Target | None:
    """The pair a key "a-b" spells, tried at the end of each known spelling of a, or None."""
    limit = n_outputs if n_outputs is not None else (len(classes) if classes else None)
    heads = list(classes or [])
    m = re.match(r"class:(\d+)-", key)
    if m:
        heads.append(m.group(0)[:-1])
    for head in heads:
        if not key.startswith(head + "-"):
            continue
        try:
            a = class_id(head, classes, limit)
            b = class_id(key[len(head) + 1:], classes, limit)
        except ValueError:
            continue
        if a != b:
            return Target("pair", (a, b))
    return None


def target_key(target: Any, classes: Sequence[str] | None = None, n_outputs: int | None = None) -> str:
    """The readable key of a target: "wok", "wok-frying pan", or "class:3" without class names."""
    return resolve(target, classes, n_outputs).key(classes)


def model_classes(model: Any) -> list[str] | None:
    """Class names a model carries as ``model.classes`` (the zoo's models do), or None."""
    names = getattr(model, "classes", None)
    if isinstance(names, (list, tuple)) and names and all(isinstance(c, str) for c in names):
        return list(names)
    return None


def stored_targets(la: Any, classes: Sequence[str] | None = None,
                   n_outputs: int | None = None) -> dict[str, Target]:
    """The Target of each attribution key a layer holds, in the order they were stored.

    la : a ``LayerActs``; its ``attribution_targets`` give the recorded targets. A key without a
        record (a store written before targets were kept, or a tensor set by hand) is resolved
        against ``classes``; one that resolves to nothing is left out.
    """
    recorded: Mapping[str, Target] = getattr(la, "attribution_targets", {}) or {}
    out = {}
    for key in la.attributions:
        if key in recorded:
            out[key] = recorded[key]
            continue
        try:
            out[key] = resolve(key, classes, n_outputs)
        except (ValueError, TypeError):
            continue
    return out


def find_stored(la: Any, target: Any, classes: Sequence[str] | None = None,
                n_outputs: int | None = None) -> str | None:
    """The key under which ``la`` holds the attribution toward ``target``, or None.

    target : anything ``resolve`` takes, or a stored key as it is.
    """
    if isinstance(target, str) and target in la.attributions:
        return target
    want = resolve(target, classes, n_outputs)
    for key, t in stored_targets(la, classes, n_outputs).items():
        if t == want:
            return key
    return None
