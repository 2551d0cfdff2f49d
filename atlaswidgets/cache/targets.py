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

Next-token targets of a language model, whose logits are (N, T, V), one row per token:

- ``Target("token", (17,))``: the logit of vocabulary id 17 as the next token;
- ``Target("token_pair", (17, 4))``: the difference ``logit[17] - logit[4]`` (say "wok" vs "pan").

Their keys start with ``"token:"`` so that they are never read as class names: ``"token:wok"``
with a vocabulary (``cache.vocab``, the model's ``vocab``), ``"token:#17"`` by id without one (or
when the token's string would read back as another key), and ``"token:wok-token:pan"`` for a
pair. Users write the same spellings, or a pair ``("token:wok", "token:pan")``.

Which family fits is told by ``n_outputs`` where resolution knows it: a positive count is a
classifier's (N, n_outputs) logits, where only class targets fit; 0 is a cache of a per-token
model (``cache.logits`` is (N, 0)), where only token targets fit; None is unknown (both are
accepted, and ``attribute`` checks the model's logits). A target of the wrong family is a
ValueError that names the family that fits.

Adding a kind: its name and id count in ``KINDS`` (and ``TOKEN_KINDS`` for a per-token one), its
key spelling in ``Target.key``, its parse in ``resolve`` and its score in ``Target.score``; stores
and lookups keep their shape.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import torch

__all__ = [
    "Target", "KINDS", "TOKEN_KINDS", "class_name", "class_id", "token_name", "token_id",
    "resolve", "target_key", "model_classes", "stored_targets", "find_stored", "n_outputs_of",
]

KINDS = {"class": 1, "pair": 2, "token": 1, "token_pair": 2}  # kind -> number of output ids it reads
TOKEN_KINDS = ("token", "token_pair")  # next-token targets, read from (N, T, V) logits
UNKNOWN = "?"  # the name of an unknown label (-1); never a target
_UNNAMED = re.compile(r"class:(\d+)")
TOKEN_PREFIX = "token:"
_TOKEN_ID = re.compile(r"token:#(\d+)")


@dataclass(frozen=True)
class Target:
    """A target by its structure.

    kind : "class" (one logit), "pair" (logit[a] - logit[b]), "token" (one next-token logit,
        a vocabulary id) or "token_pair" (next-token logit[a] - logit[b])
    ids : tuple of int output ids, (a,) for a class or token, (a, b) for a pair
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
        if len(ids) == 2 and ids[0] == ids[1]:
            what = "tokens" if self.kind == "token_pair" else "classes"
            raise ValueError(f"A pair target needs two different {what}; got {ids[0]} "
                             "twice (its logit difference is always 0).")
        object.__setattr__(self, "ids", tuple(int(i) for i in ids))

    @property
    def per_token(self) -> bool:
        """Whether this is a next-token target (read from per-token logits (N, T, V))."""
        return self.kind in TOKEN_KINDS

    @property
    def is_pair(self) -> bool:
        """Whether this target is a difference of two logits."""
        return len(self.ids) == 2

    def parts(self) -> tuple["Target", ...]:
        """The single targets of a pair, (a, b); (self,) for a single target."""
        single = "token" if self.per_token else "class"
        return tuple(Target(single, (i,)) for i in self.ids) if self.is_pair else (self,)

    @staticmethod
    def pair_of(a: "Target", b: "Target") -> "Target":
        """The pair a - b of two single targets of one family (two classes, or two tokens)."""
        if a.is_pair or b.is_pair or a.per_token != b.per_token:
            raise ValueError(f"A pair is made of two classes or two tokens; got {a} and {b}.")
        return Target("token_pair" if a.per_token else "pair", (a.ids[0], b.ids[0]))

    def key(self, classes: Sequence[str] | None = None, vocab: Sequence[str] | None = None) -> str:
        """The readable key: "wok", "class:3", "wok-frying pan"; "token:wok", "token:#17",
        "token:wok-token:pan" for next-token targets (``vocab``: token strings by id).

        A key that would read back as something else (names holding "-": the pair ("stir",
        "fry pan") against the class "stir-fry pan"; a token string such as "#5") is spelled by
        its ids, "class:3-class:4" or "token:#9", so every key resolves to its own target.
        """
        if self.per_token:
            readable = "-".join(token_name(i, vocab) for i in self.ids)
            if vocab:
                try:
                    if resolve(readable, vocab=vocab) == self:
                        return readable
                except ValueError:
                    pass
            return "-".join(f"{TOKEN_PREFIX}#{i}" for i in self.ids)
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
        """What this target reads from logits, along their last dimension: (N, n_outputs) -> (N,)
        for a class or pair; (N, T, V) -> (N, T), one score per position, for a token target."""
        if not self.is_pair:
            return logits[..., self.ids[0]]
        return logits[..., self.ids[0]] - logits[..., self.ids[1]]

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
        """(a, b) output ids, b None for a single target."""
        return (self.ids[0], self.ids[1]) if self.is_pair else (self.ids[0], None)


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


def token_name(i: int, vocab: Sequence[str] | None = None) -> str:
    """The readable spelling of vocabulary id ``i`` as a target: "token:wok", or "token:#17"
    without a vocabulary (``Target.key`` falls back to the id form when this would not read back)."""
    i = int(i)
    if vocab is not None and 0 <= i < len(vocab):
        return TOKEN_PREFIX + str(vocab[i])
    return f"{TOKEN_PREFIX}#{i}"


def token_id(value: str, vocab: Sequence[str] | None = None, limit: int | None = None) -> int:
    """The vocabulary id of "token:#17" (the id, whatever ``vocab`` holds) or "token:wok"
    (looked up in ``vocab``); ``limit`` (default len(vocab)) bounds the ids."""
    if not isinstance(value, str) or not value.startswith(TOKEN_PREFIX):
        raise ValueError(f"A next-token target is spelled 'token:<token>' or 'token:#<id>', got {value!r}.")
    if limit is None and vocab:
        limit = len(vocab)
    token = value[len(TOKEN_PREFIX):]
    m = _TOKEN_ID.fullmatch(value)
    if m:  # the id form first, so "token:#5" means id 5 whatever the vocabulary holds
        i = int(m.group(1))
        if limit is not None and i >= limit:
            raise ValueError(f"Token id {i} is out of range; the vocabulary has {limit} tokens, so "
                             f"use 0..{limit - 1}.")
        return i
    if vocab and token in vocab:
        return list(vocab).index(token)
    if not vocab:
        raise ValueError(f"Token {token!r} cannot be looked up: there is no vocabulary. Pass "
                         "vocab=[...] (token strings by id, or a tokenizer) or spell the token by "
                         f"its id, 'token:#17'.")
    close = difflib.get_close_matches(token, [str(v) for v in vocab], n=3, cutoff=0.6)
    hint = f" Did you mean {[TOKEN_PREFIX + c for c in close]}?" if close else ""
    raise ValueError(f"Unknown token {token!r}: it is not in the vocabulary of {len(vocab)} "
                     f"tokens.{hint}")


def _check_family(t: Target, n_outputs: int | None) -> Target:
    """A target of the family the logits fit (see the module doc), or a ValueError saying which."""
    if n_outputs == 0 and not t.per_token:
        raise ValueError(
            "This model's logits are per token (N, T, V), so a class target does not fit; use a "
            "next-token target: 'token:wok', or a pair ('token:wok', 'token:pan') for the logit "
            "difference.")
    if n_outputs is not None and n_outputs > 0 and t.per_token:
        raise ValueError(
            f"A next-token target ({t.kind}) needs a language model's per-token logits (N, T, V); "
            f"this model's logits are one row of {n_outputs} per sample, so use a class target "
            "(a class id or name, or a pair (a, b)).")
    return t


def n_outputs_of(logits: torch.Tensor | None) -> int | None:
    """The number of outputs of (N, n_outputs) logits, else None; 0 for a cache of a per-token
    model, whose logits are not kept (``cache.logits`` is (N, 0))."""
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


def resolve(target: Any, classes: Sequence[str] | None = None, n_outputs: int | None = None,
            vocab: Sequence[str] | None = None) -> Target:
    """The Target of a class id or name, a pair (a, b) of them, a next-token target
    ("token:wok", "token:#17", "token:wok-token:pan", a pair ("token:wok", "token:pan")), a key
    the kit wrote, or a Target.

    A str is a class name, "class:3", a pair key ("wok-frying pan"), or a token key; a pair key is
    matched against the known spellings of each part, so names holding "-" resolve too.
    n_outputs : a classifier's number of outputs, 0 for a per-token model, None unknown (see the
        module doc: a target of the other family is refused)
    vocab : token strings by id, for "token:wok"
    Raises ValueError/TypeError that say what was wrong, before any work.
    """
    try:
        t = _resolve(target, classes, n_outputs, vocab)
    except ValueError:
        tokens = _is_token_spec(target) or (isinstance(target, (tuple, list))
                                            and any(map(_is_token_spec, target)))
        if n_outputs == 0 and not tokens and not (isinstance(target, str) and vocab and target in vocab):
            _check_family(Target("class", (0,)), 0)  # a class target on a per-token model
        raise
    return _check_family(t, n_outputs)


def _is_token_spec(v: Any) -> bool:
    return (isinstance(v, Target) and v.per_token) or (isinstance(v, str) and v.startswith(TOKEN_PREFIX))


def _resolve(target, classes, n_outputs, vocab) -> Target:
    if isinstance(target, Target):
        if target.per_token:
            limit = (len(vocab) if vocab else None)
            for i in target.ids:
                token_id(f"{TOKEN_PREFIX}#{i}", None, limit)  # range check against the vocabulary
        else:
            for i in target.ids:
                class_id(i, classes, n_outputs or None)  # range check against this model
        return target
    if isinstance(target, (tuple, list)):
        if len(target) != 2:
            raise ValueError(f"A pair target must have two classes (a, b) or two tokens, got "
                             f"{len(target)}: {target!r}.")
        tokens = [_is_token_spec(v) for v in target]
        if any(tokens) and not all(tokens):
            raise ValueError(f"A pair target is two classes or two tokens, not one of each: "
                             f"{target!r}. Spell both tokens as 'token:...'.")
        if all(tokens):
            a, b = (_resolve(v, classes, n_outputs, vocab) for v in target)
            return Target.pair_of(a, b)
        a, b = (class_id(v, classes, n_outputs or None) for v in target)
        if a == b:
            raise ValueError(f"A pair target needs two different classes; got {target!r}, which "
                             f"names class {a} twice (its logit difference is always 0).")
        return Target("pair", (a, b))
    if isinstance(target, str) and target.startswith(TOKEN_PREFIX) and not (classes and target in classes):
        return _token_of_key(target, vocab, (len(vocab) if vocab else None))
    if isinstance(target, str) and "-" in target and not (classes and target in classes):
        pair = _pair_of_key(target, classes, n_outputs or None)
        if pair is not None:
            return pair
    try:
        return Target("class", (class_id(target, classes, n_outputs or None),))
    except ValueError:
        if isinstance(target, str) and vocab and target in vocab:
            raise ValueError(f"{target!r} is not a class but a token of the vocabulary; a "
                             f"next-token target is spelled {TOKEN_PREFIX + target!r}.") from None
        raise


def _token_of_key(key: str, vocab: Sequence[str] | None, limit: int | None) -> Target:
    """The token or token pair a key spells: "token:wok", "token:#17", "token:wok-token:pan"."""
    try:
        return Target("token", (token_id(key, vocab, limit),))
    except ValueError as single_error:
        error = single_error
    # a pair: cut at each "-token:" in turn (a token string may itself hold one)
    start = key.find("-" + TOKEN_PREFIX)
    while start > 0:
        try:
            a = token_id(key[:start], vocab, limit)
            b = token_id(key[start + 1:], vocab, limit)
            if a != b:
                return Target("token_pair", (a, b))
            error = ValueError(f"A pair target needs two different tokens; {key!r} names "
                               f"token {a} twice (its logit difference is always 0).")
        except ValueError as e:
            error = e
        start = key.find("-" + TOKEN_PREFIX, start + 1)
    raise error


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


def target_key(target: Any, classes: Sequence[str] | None = None, n_outputs: int | None = None,
               vocab: Sequence[str] | None = None) -> str:
    """The readable key of a target: "wok", "wok-frying pan", "class:3" without class names,
    "token:wok" or "token:wok-token:pan"."""
    return resolve(target, classes, n_outputs, vocab).key(classes, vocab)


def model_classes(model: Any) -> list[str] | None:
    """Class names a model carries as ``model.classes`` (the zoo's models do), or None."""
    names = getattr(model, "classes", None)
    if isinstance(names, (list, tuple)) and names and all(isinstance(c, str) for c in names):
        return list(names)
    return None


def stored_targets(la: Any, classes: Sequence[str] | None = None,
                   n_outputs: int | None = None, vocab: Sequence[str] | None = None) -> dict[str, Target]:
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
            out[key] = resolve(key, classes, n_outputs, vocab)
        except (ValueError, TypeError):
            continue
    return out


def find_stored(la: Any, target: Any, classes: Sequence[str] | None = None,
                n_outputs: int | None = None, vocab: Sequence[str] | None = None) -> str | None:
    """The key under which ``la`` holds the attribution toward ``target``, or None.

    target : anything ``resolve`` takes, or a stored key as it is.
    """
    if isinstance(target, str) and target in la.attributions:
        return target
    want = resolve(target, classes, n_outputs, vocab)
    for key, t in stored_targets(la, classes, n_outputs, vocab).items():
        if t == want:
            return key
    return None
