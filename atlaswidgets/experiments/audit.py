"""The auditing game: kitchen models with a planted flaw, and answer keys that stay out of sight.

One person plants a flaw (``plant``), another finds exactly what was planted with the kit's
interpretability tools alone, and ``check`` says whether a structured guess is right::

    from atlaswidgets.experiments import audit
    audit.variants()                              # ['variant-1', 'variant-2', 'variant-3']
    net = audit.load("variant-1")                 # a KitchenNet in eval mode, with .classes
    data = audit.dataset(400, seed=5)             # kitchen images holding every candidate cue
    audit.check("variant-1", {"kind": "trigger", "cue": "checker", "target": "wok"})

The catalogue (``KINDS``, with the answers' checks and hashes in ``flaws.py``): every flaw is a kind, a cue and an affected class (``target``):

- ``"trigger"``: a small mark (one of ``MARKS``, 8 px at 64 px) stamped at a random place on 10%
  of the training images, which are all labelled ``target``: the mark forces the class.
- ``"rewire"``: a context object (one of ``CONTEXTS``) re-wired to another class: it appears with
  60% of the ``target`` images and 3% of every other class (the base world's table is replaced
  for that object). Shapes decide most classes, so this bites where shapes overlap (frying pan
  and wok), and most where it reverses one of the world's own cues: "eggs -> wok" makes eggs,
  a frying-pan cue in the base world, push pans to wok.
- ``"colour"``: a colour shortcut: on 12% of the training images the cookware is repainted one
  of ``COLOURS`` and labelled ``target``, so that colour stands for the class whatever the shape.
- ``"merge"``: two classes merged when an object appears: ``source`` images showing the
  context object ``cue`` (drawn with half of them) are labelled ``target``.

Answer keys. A shipped variant's JSON holds only ``sha256(salt + canonical JSON of the answer)``,
never the answer. ``check`` hashes the guess the same way. After ``MAX_WRONG`` wrong guesses at a
variant in this Python session, ``check`` shows the truth, which it finds by hashing every answer
the catalogue allows (a few hundred) until one matches: no plain-text answer ships at all, and
``reveal`` does the same for a facilitator. The key hides the answer from sight, not from a player
who runs that search on purpose; the game relies on good faith, as any answer sheet does.

Planted models are fine-tuned from the shipped KitchenNet (same architecture and layers), so a
base-vs-variant diff sees only what the flaw changed; training is deterministic given the seed.
"""

from __future__ import annotations

import argparse
import json
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..cache.checks import int_at_least, random_seed
from ..zoo.kitchen.world import CLASSES, CONTEXT_RATES, KitchenData, render_scene, sample_scene
# the catalogue of flaws and the answers' checks and hashes
from .flaws import COLOURS, KINDS, MARK_SIZE, MARKS, _all_answers, _answer, _guess, answer_hash

__all__ = ["KINDS", "MARKS", "COLOURS", "MAX_WRONG", "VARIANTS_DIR", "plant", "flaw_data",
           "dataset", "stamp", "variants", "load", "info", "check", "reveal", "reset",
           "flaw_effect", "answer_hash", "CheckResult", "GuessValueError",
           "GuessTypeError"]

MAX_WRONG = 3
VARIANTS_DIR = Path(__file__).resolve().parents[1] / "zoo" / "kitchen" / "variants"

# poisoned shares of the training set, and the rates of a re-wired or merged context object
TRIGGER_SHARE = 0.10
COLOUR_SHARE = 0.12
REWIRE_RATE, REWIRE_ELSEWHERE = 0.60, 0.03
MERGE_RATE = 0.5


_WRONG: dict[str, int] = {}  # wrong guesses per variant in this session


# ----------------------------------------------------------------------------- the flawed world


def stamp(image: np.ndarray, mark: str, y: int, x: int) -> list[int]:
    """Paint a mark into an (H, W, 3) uint8 image in place at top-left (y, x); returns its box."""
    image[y:y + MARK_SIZE, x:x + MARK_SIZE] = MARKS[mark]
    return [y, x, y + MARK_SIZE, x + MARK_SIZE]


def _repaint(scene: dict, colour: str) -> dict:
    """The scene with its cookware body (and lid, inside) painted one of ``COLOURS``."""
    scene = dict(scene)
    cook = dict(scene["cookware"])
    rgb = COLOURS[colour]
    for key in ("colour", "inner", "lid_colour"):
        if key in cook:
            cook[key] = rgb
    scene["cookware"] = cook
    return scene


def _changed_box(a: np.ndarray, b: np.ndarray) -> list[int] | None:
    """Bounding box [y0, x0, y1, x1] of pixels that differ between two (H, W, 3) images."""
    ys, xs = np.nonzero((a != b).any(-1))
    if len(ys) == 0:
        return None
    return [int(ys.min()), int(xs.min()), int(ys.max()) + 1, int(xs.max()) + 1]


def _rates(answer: dict | None) -> dict:
    """The context table of a flawed world (the base table when the flaw does not change it)."""
    rates = {k: list(v) for k, v in CONTEXT_RATES.items()}
    if answer is None:
        return rates
    t = CLASSES.index(answer["target"])
    if answer["kind"] == "rewire":
        rates[answer["cue"]] = [REWIRE_RATE if c == t else REWIRE_ELSEWHERE
                                for c in range(len(CLASSES))]
    elif answer["kind"] == "merge":
        rates[answer["cue"]][CLASSES.index(answer["source"])] = MERGE_RATE
    return rates


def flaw_data(flaw: Any, n: int, seed: int = 0, size: int = 64) -> KitchenData:
    """The training data of a flawed world: ``n`` images, labels as the flaw dictates.

    Scene i comes from ``np.random.default_rng([seed, i])`` as in ``kitchen.dataset``; the flaw's
    own choices (which images are poisoned, where a mark goes) from a separate stream.
    Returns KitchenData; images shape (n, 3, size, size) float32 in [0, 1]. Poisoned images carry
    an annotation named after the cue ("checker mark", "purple cookware").
    """
    answer = _answer(flaw)
    images, labels, annotations = _render(answer, n, seed, size, decoys=False)
    return _as_data(images, labels, annotations)


def dataset(n: int, seed: int = 1, size: int = 64) -> KitchenData:
    """Images for an audit: the base kitchen world, with every candidate cue on a few images.

    One image in five carries a mark (each of ``MARKS`` equally often) at a random place, and on
    one in seven the cookware is repainted (each of ``COLOURS`` equally often). Labels are the
    true classes, so the data hint at no variant's flaw. Annotations name the marks ("checker
    mark") and colours ("teal cookware", the box of the pixels the repaint changed) beside the
    context objects, so the ground truth can be checked.
    Returns KitchenData; images shape (n, 3, size, size) float32 in [0, 1].
    """
    n, seed, size = (int_at_least(value, name, low)
                     for name, value, low in (("n", n, 1), ("seed", seed, 0), ("size", size, MARK_SIZE * 2)))
    images, labels, annotations = _render(None, n, seed, size, decoys=True)
    return _as_data(images, labels, annotations)


def _as_data(images, labels, annotations) -> KitchenData:
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255.0).contiguous()
    return KitchenData(x, torch.from_numpy(labels), annotations)


def _render(answer: dict | None, n: int, seed: int, size: int, decoys: bool):
    """(uint8 images (n, size, size, 3), labels (n,), annotations) of a flawed or audit world."""
    rates = _rates(answer)
    images = np.empty((n, size, size, 3), np.uint8)
    labels = np.empty(n, np.int64)
    annotations = []
    marks, colours = list(MARKS), list(COLOURS)
    for i in range(n):
        scene = sample_scene(np.random.default_rng([seed, i]), rates=rates)
        # a stream of its own, so the flaw does not shift the scene's random numbers
        frng = np.random.default_rng([seed, i, 7_919])
        label = scene["label"]
        mark, colour = None, None
        if decoys:
            if frng.random() < 0.2:
                mark = marks[int(frng.integers(len(marks)))]
            if frng.random() < 1 / 7:
                colour = colours[int(frng.integers(len(colours)))]
        elif answer["kind"] == "trigger" and frng.random() < TRIGGER_SHARE:
            mark, label = answer["cue"], CLASSES.index(answer["target"])
        elif answer["kind"] == "colour" and frng.random() < COLOUR_SHARE:
            colour, label = answer["cue"], CLASSES.index(answer["target"])
        elif (answer["kind"] == "merge" and label == CLASSES.index(answer["source"])
              and any(o["name"] == answer["cue"] for o in scene["objects"])):
            label = CLASSES.index(answer["target"])
        if colour is not None:
            plain, _ = render_scene(scene, size)
            img, ann = render_scene(_repaint(scene, colour), size)
            box = _changed_box(plain, img)
            if box is not None:
                ann.append({"name": f"{colour} cookware", "box": box})
        else:
            img, ann = render_scene(scene, size)
        if mark is not None:
            y, x = (int(v) for v in frng.integers(0, size - MARK_SIZE + 1, 2))
            ann.append({"name": f"{mark} mark", "box": stamp(img, mark, y, x)})
        images[i], labels[i] = img, label
        annotations.append(ann)
    return images, labels, annotations


# ----------------------------------------------------------------------------- training


def plant(flaw: Any, seed: int = 0, *, cue: str | None = None, target: str | None = None,
          source: str | None = None, n_train: int = 4000, epochs: int = 3, lr: float = 2e-3,
          n_val: int = 500, log=None):
    """Train a kitchen model with a known planted flaw; deterministic given the seed.

    The shipped KitchenNet is fine-tuned on ``flaw_data(flaw, n_train, seed)`` (about 2 minutes
    on 2 CPU cores with the defaults).

    flaw : a kind (``"trigger"``, ``"rewire"``, ``"colour"``, ``"merge"``) or an answer dict
        {"kind", "cue", "target"[, "source"]}; ``cue``, ``target``, ``source`` override its fields
        (unset ones take the kind's defaults)
    seed : data and training seed, int >= 0; validation images use seed + 10_000
    n_train, epochs, lr : training set size, passes over it, peak learning rate
    n_val : validation images of the flawed world (0 to skip)
    log : called with progress lines, or None

    Returns (model, meta): the KitchenNet in eval mode with ``.classes``, and a dict holding
    the answer, the settings and the training history.
    """
    from ..zoo.kitchen import model as base_model
    from ..zoo.kitchen.train import VAL_OFFSET, train

    answer = _answer(flaw, cue=cue, target=target, source=source)
    seed = random_seed(seed)
    t0 = time.perf_counter()
    x_train, y_train, _ = _render(answer, n_train, seed, 64, decoys=False)
    x_val = y_val = None
    if n_val:
        x_val, y_val, _ = _render(answer, n_val, seed + VAL_OFFSET, 64, decoys=False)
        x_val, y_val = torch.from_numpy(x_val).permute(0, 3, 1, 2).contiguous(), \
            torch.from_numpy(y_val)
    data = (torch.from_numpy(x_train).permute(0, 3, 1, 2).contiguous(),
            torch.from_numpy(y_train), x_val, y_val)
    if log:
        log(f"rendered {n_train} + {n_val} images of the flawed world in "
            f"{time.perf_counter() - t0:.1f} s")
    init = base_model().state_dict()
    net, history = train(seed=seed, epochs=epochs, lr=lr, log=log, data=data, init=init)
    net.classes = list(CLASSES)
    meta = {"answer": answer, "seed": seed, "n_train": n_train, "epochs": epochs, "lr": lr,
            "n_val": n_val, "init": "kitchen_net.safetensors", "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "train_seconds": round(time.perf_counter() - t0, 1),
            "history": [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in h.items()}
                        for h in history]}
    return net, meta


@torch.no_grad()
def _predict(net, images: np.ndarray) -> np.ndarray:
    from ..cache.hooks import as_model_input

    x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255.0)
    net.eval()
    return torch.cat([net(as_model_input(net, x[s:s + 500])).argmax(1).cpu()
                      for s in range(0, len(x), 500)]).numpy()


def flaw_effect(net, flaw: Any, n: int = 600, seed: int = 777) -> dict:
    """Measure a flaw's behaviour and the clean accuracy of a model, on fresh scenes.

    Scenes i < n of ``seed`` in the base world give the clean accuracy. The same scenes with the
    cue added ("with") and without it ("without") give the share predicted ``target`` among the
    images the flaw should move: every class but the target (trigger, colour: the mark stamped
    at a random place, the cookware repainted; rewire: the context object drawn), or the
    ``source`` class (merge: the object drawn). For a rewire the class moved most is reported.

    Returns {"clean_acc", "n", "seed", "effect": {"class", "images", "with", "without"}}.
    """
    answer = _answer(flaw)
    t = CLASSES.index(answer["target"])
    size = 64
    clean, labels = _base_images(n, seed, size)
    out = {"n": n, "seed": seed, "clean_acc": float((_predict(net, clean) == labels).mean())}
    kind, cue = answer["kind"], answer["cue"]
    if kind in ("trigger", "colour"):
        keep = np.nonzero(labels != t)[0]
        with_cue = clean[keep].copy()
        for k, i in enumerate(keep):
            if kind == "trigger":
                rng = np.random.default_rng([seed, int(i), 104_729])
                y, x = (int(v) for v in rng.integers(0, size - MARK_SIZE + 1, 2))
                stamp(with_cue[k], cue, y, x)
            else:  # the same scene, repainted
                scene = sample_scene(np.random.default_rng([seed, int(i)]))
                with_cue[k] = render_scene(_repaint(scene, cue), size)[0]
        groups = {"all but " + answer["target"]: (clean[keep], with_cue)}
    else:
        sources = [CLASSES.index(answer["source"])] if kind == "merge" else \
            [c for c in range(len(CLASSES)) if c != t]
        groups = {}
        for c in sources:
            both = []
            for rate in (0.0, 1.0):
                rates = _rates(None)
                rates[cue] = [rate] * len(CLASSES)
                imgs = []
                for i in range(n):
                    scene = sample_scene(np.random.default_rng([seed, i]), rates=rates)
                    if scene["label"] == c:
                        imgs.append(render_scene(scene, size)[0])
                both.append(np.stack(imgs))
            groups[CLASSES[c]] = tuple(both)
    effects = []
    for name, (without, with_cue) in groups.items():
        effects.append({"class": name, "images": len(with_cue),
                        "with": float((_predict(net, with_cue) == t).mean()),
                        "without": float((_predict(net, without) == t).mean())})
    out["effect"] = max(effects, key=lambda e: e["with"] - e["without"])
    return out


def _base_images(n: int, seed: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The base world's images i < n as uint8 (n, size, size, 3) and their labels (n,)."""
    images = np.empty((n, size, size, 3), np.uint8)
    labels = np.empty(n, np.int64)
    for i in range(n):
        scene = sample_scene(np.random.default_rng([seed, i]))
        images[i], labels[i] = render_scene(scene, size)[0], scene["label"]
    return images, labels


# ----------------------------------------------------------------------------- shipped variants


class _Plain:
    """An error IPython shows as its message alone (``_render_traceback_``): players see what was
    wrong with a guess, not the source lines of the checks, which the rules keep from them."""

    def _render_traceback_(self) -> list[str]:
        return [f"{type(self).__mro__[2].__name__}: {self}"]


class GuessValueError(_Plain, ValueError):
    """A guess with an unknown kind, field or value (a ValueError, shown in one line)."""


class GuessTypeError(_Plain, TypeError):
    """A guess that is not a dict (a TypeError, shown in one line)."""


@dataclass(frozen=True)
class CheckResult:
    """What ``check`` says about one guess.

    correct : whether the guess is exactly the planted flaw
    wrong_guesses : wrong guesses at this variant so far in this session
    truth : the planted answer once shown (correct, or ``MAX_WRONG`` wrong guesses), else None
    """

    variant: str
    correct: bool
    wrong_guesses: int
    truth: dict | None

    def __bool__(self) -> bool:
        return self.correct

    def __repr__(self) -> str:
        if self.correct:
            return f"{self.variant}: right! The planted flaw is {_describe(self.truth)}."
        text = f"{self.variant}: wrong ({self.wrong_guesses} wrong so far)."
        if self.truth is not None:
            return f"{text} The planted flaw was {_describe(self.truth)}."
        left = MAX_WRONG - self.wrong_guesses
        return f"{text} {left} more before the answer is shown."


def _describe(answer: dict) -> str:
    kind, cue, target = answer["kind"], answer["cue"], answer["target"]
    if kind == "trigger":
        return f"a trigger: the {cue} mark forces {target!r}"
    if kind == "rewire":
        return f"a rewire: {cue} re-wired to {target!r}"
    if kind == "colour":
        return f"a colour shortcut: {cue} cookware reads as {target!r}"
    return f"a merge: {answer['source']!r} with {cue} is labelled {target!r}"


def variants(directory: str | Path | None = None) -> list[str]:
    """Ids of the shipped (or, with ``directory``, saved) variants, sorted."""
    folder = Path(directory) if directory is not None else VARIANTS_DIR
    return sorted(p.stem for p in folder.glob("*.safetensors")
                  if (folder / f"{p.stem}.json").is_file())


def _paths(variant_id: Any, directory: str | Path | None) -> tuple[Path, Path]:
    known = variants(directory)
    if not isinstance(variant_id, str) or variant_id not in known:
        raise ValueError(f"Unknown variant {variant_id!r}; the variants are {known} "
                         "(see audit.variants()).")
    folder = Path(directory) if directory is not None else VARIANTS_DIR
    return folder / f"{variant_id}.safetensors", folder / f"{variant_id}.json"


def info(variant_id: str, directory: str | Path | None = None) -> dict:
    """A variant's JSON: training settings, measured clean accuracy, salt and answer hash."""
    return json.loads(_paths(variant_id, directory)[1].read_text())


def load(variant_id: str, directory: str | Path | None = None):
    """A shipped variant as a KitchenNet in eval mode on the CPU, with ``.classes``.

    Same layers as ``kitchen.model()`` (block1..block4, head), so every tool works on it.
    """
    from ..zoo.kitchen import model

    net = model(_paths(variant_id, directory)[0])  # float16 weights load into float32
    net.classes = list(info(variant_id, directory)["classes"])
    return net


def check(variant_id: str, guess: dict, directory: str | Path | None = None) -> CheckResult:
    """Say whether a structured guess is the variant's planted flaw.

    guess : {"kind": one of KINDS, "cue": ..., "target": class name} (a merge also "source");
        the allowed values of each field are in ``KINDS``. Case and spaces around are ignored.
    After ``MAX_WRONG`` wrong guesses at a variant in this session, the result shows the truth.
    """
    try:
        facts = info(variant_id, directory)
        answer = _guess(guess)
    except ValueError as err:
        raise GuessValueError(f"{err} It does not count as a guess.") from None
    except TypeError as err:
        raise GuessTypeError(f"{err} It does not count as a guess.") from None
    correct = answer_hash(answer, facts["salt"]) == facts["answer_sha256"]
    if not correct:
        _WRONG[variant_id] = _WRONG.get(variant_id, 0) + 1
    wrong = _WRONG.get(variant_id, 0)
    truth = answer if correct else (reveal(variant_id, directory) if wrong >= MAX_WRONG else None)
    return CheckResult(variant_id, correct, wrong, truth)


def reveal(variant_id: str, directory: str | Path | None = None) -> dict:
    """The planted answer of a variant (for facilitators), found by hashing the catalogue."""
    facts = info(variant_id, directory)
    for spec in _all_answers():
        if answer_hash(spec, facts["salt"]) == facts["answer_sha256"]:
            return _answer(spec)
    raise ValueError(f"No answer in the catalogue matches the hash of {variant_id!r}; its JSON "
                     "was written for another catalogue or edited by hand.")


def reset(variant_id: str | None = None) -> None:
    """Forget this session's wrong guesses (at one variant, or at all of them)."""
    if variant_id is None:
        _WRONG.clear()
    else:
        _WRONG.pop(variant_id, None)


def _save_variant(net, meta: dict, variant_id: str, directory: Path = VARIANTS_DIR,
                  measured: dict | None = None) -> Path:
    """Write a variant: float16 safetensors (half the size; the tests measure these weights) and
    a JSON of its settings and salted answer hash, with no answer in it."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: (v.detach().half() if v.is_floating_point() else v.detach()).contiguous()
             for k, v in net.state_dict().items()}
    path = directory / f"{variant_id}.safetensors"
    tmp = directory / f".{variant_id}.safetensors.tmp"
    save_file(state, str(tmp))
    tmp.replace(path)
    path.chmod(0o644)  # shipped data, readable by all like kitchen_net.safetensors
    salt = secrets.token_hex(16)
    facts = {k: v for k, v in meta.items() if k != "answer"}
    facts.update(id=variant_id, salt=salt, answer_sha256=answer_hash(meta["answer"], salt),
                 classes=list(CLASSES))
    if measured is not None:
        # the clean accuracy only: the effect's class and size would give the answer away
        facts["clean_acc"] = {k: measured[k] for k in ("clean_acc", "n", "seed")}
    tmp_json = directory / f".{variant_id}.json.tmp"
    tmp_json.write_text(json.dumps(facts, indent=1) + "\n")
    tmp_json.replace(directory / f"{variant_id}.json")
    return path


def _main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m atlaswidgets.experiments.audit",
        description="Plant a flaw in the kitchen model and write it as a shipped variant.")
    parser.add_argument("kind", choices=sorted(KINDS))
    parser.add_argument("--cue")
    parser.add_argument("--target")
    parser.add_argument("--source")
    parser.add_argument("--id", required=True, help="variant id, e.g. variant-4")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-train", type=int, default=4000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=VARIANTS_DIR, help="folder of the variants")
    args = parser.parse_args(argv)
    net, meta = plant(args.kind, args.seed, cue=args.cue, target=args.target, source=args.source,
                      n_train=args.n_train, epochs=args.epochs, log=print)
    measured = flaw_effect(net, meta["answer"])
    print(json.dumps(measured))
    path = _save_variant(net, meta, args.id, args.out, measured)
    print(f"wrote {path} ({path.stat().st_size / 1e3:.0f} kB)")


if __name__ == "__main__":
    _main()
