"""Regenerate ``imagenet_classes.json`` (the 1000 ImageNet class names) from two PyPI wheels, offline.

There is no network at run time, so the names ship with the package. They come from wheels that
carry them as data, read without installing (or importing) either package::

    pip download --no-deps timm==1.0.31 open_clip_torch==3.3.0 -d /tmp/wheels
    python -m atlaswidgets.zoo.imagenet.make_classes \\
        /tmp/wheels/timm-1.0.31-py3-none-any.whl \\
        /tmp/wheels/open_clip_torch-3.3.0-py3-none-any.whl

- timm's ``timm/data/_info/imagenet_synsets.txt``: the 1000 WordNet ids in class-id order (the
  sorted order every ImageNet-1k model uses), and ``imagenet_synset_to_lemma.txt``: their WordNet
  lemmas ("frying pan, frypan, skillet").
- open_clip's ``IMAGENET_CLASSNAMES`` (the short, hand-edited names of the CLIP paper: "tabby cat",
  "frying pan", "wok", "espresso"), read from its source with ``ast`` as a literal.

The short names are open_clip's. Two of them name two classes each ("missile", "sunglasses"); those
classes take their first WordNet lemma that no other class uses, so every name is unique and
``names.index(name)`` is a class id.
"""

from __future__ import annotations

import ast
import collections
import json
import sys
import zipfile
from pathlib import Path

OUT = Path(__file__).with_name("imagenet_classes.json")
_SYNSETS = "timm/data/_info/imagenet_synsets.txt"
_LEMMAS = "timm/data/_info/imagenet_synset_to_lemma.txt"
_SHORT = "open_clip/zero_shot_metadata.py"


def _read(wheel: Path, member: str) -> str:
    with zipfile.ZipFile(wheel) as z:
        return z.read(member).decode("utf-8")


def _short_names(source: str) -> list[str]:
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "IMAGENET_CLASSNAMES"
                                                for t in node.targets):
            return list(ast.literal_eval(node.value))
    raise ValueError(f"no IMAGENET_CLASSNAMES list in {_SHORT}")


def build(timm_wheel: Path, open_clip_wheel: Path) -> dict:
    """The JSON document: {"names": [1000 str], "wnids": [1000 str], "source": str}."""
    wnids = _read(timm_wheel, _SYNSETS).split()
    lemmas = {}
    for line in _read(timm_wheel, _LEMMAS).splitlines():
        wnid, _, words = line.partition("\t")
        lemmas[wnid] = [w.strip() for w in words.split(",") if w.strip()]
    names = _short_names(_read(open_clip_wheel, _SHORT))
    if len(wnids) != 1000 or len(names) != 1000:
        raise ValueError(f"expected 1000 synsets and names, got {len(wnids)} and {len(names)}")
    counts = collections.Counter(names)
    for i, name in enumerate(names):
        if counts[name] > 1:
            taken = set(names) - {name}
            names[i] = next(w for w in lemmas[wnids[i]] if w not in taken)
    if len(set(names)) != 1000:
        raise ValueError("class names are not unique after disambiguation")
    return {
        "source": f"names: {open_clip_wheel.name} {_SHORT} (IMAGENET_CLASSNAMES); wnids and "
                  f"lemmas for duplicates: {timm_wheel.name} {_SYNSETS}, {_LEMMAS}",
        "names": names,
        "wnids": wnids,
    }


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python -m atlaswidgets.zoo.imagenet.make_classes TIMM_WHEEL OPEN_CLIP_WHEEL")
    doc = build(Path(sys.argv[1]), Path(sys.argv[2]))
    OUT.write_text(json.dumps(doc, indent=0, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {OUT} ({len(doc['names'])} names)")
