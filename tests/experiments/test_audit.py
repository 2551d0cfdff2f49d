"""The auditing game: planted flaws, answer keys, and the kit finding each shipped variant's flaw."""

from __future__ import annotations

import json
import re
import time

import numpy as np
import pytest
import torch

import atlaswidgets as aw
from atlaswidgets.experiments import audit
from atlaswidgets.experiments.cells import patch_from_cell
from atlaswidgets.experiments.patch import NOISE, patch_attack
from atlaswidgets.zoo import kitchen

SHIPPED = audit.variants()


def _cue_name(answer: dict) -> str:
    """The annotation name of an answer's cue in ``audit.dataset``."""
    return {"trigger": f"{answer['cue']} mark", "colour": f"{answer['cue']} cookware"}.get(
        answer["kind"], answer["cue"])


def _rivals(answer: dict) -> list[str]:
    """Annotation names of the other candidates of the same family (the decoys)."""
    if answer["kind"] == "trigger":
        return [f"{m} mark" for m in audit.MARKS if m != answer["cue"]]
    if answer["kind"] == "colour":
        return [f"{c} cookware" for c in audit.COLOURS if c != answer["cue"]]
    # contexts the base world does not already tie to the target
    t = kitchen.CLASSES.index(answer["target"])
    return [c for c in kitchen.CONTEXTS
            if c != answer["cue"] and kitchen.CONTEXT_RATES[c][t] <= 0.1]


def _contrast(answer: dict) -> str:
    return "frying pan" if answer["target"] != "frying pan" else "wok"


# ----------------------------------------------------------------------------- set-up


@pytest.fixture(scope="session")
def audit_data():
    start = time.perf_counter()
    data = audit.dataset(400, seed=5)
    print(f"audit dataset: {time.perf_counter() - start:.1f} s")
    return data


@pytest.fixture(scope="session")
def clean_pans():
    """Frying pans of the base world from a fresh seed; the images a patch attack tries to move."""
    data = kitchen.dataset(360, seed=778)
    return data


@pytest.fixture(scope="session")
def found():
    return {}


def _atlas(variant_id, audit_data, found):
    """(net, answer, cache, comparison atlas target vs contrast) of a shipped variant, built once."""
    if variant_id in found:
        return found[variant_id]
    start = time.perf_counter()
    net = audit.load(variant_id)
    answer = audit.reveal(variant_id)
    target, contrast = answer["target"], _contrast(answer)
    cache = aw.capture(net, audit_data, "block4", sample="random", per_image=16,
                       classes=kitchen.CLASSES, progress=False, keep_images=True)
    cache.add_attribution(aw.attribute(net, audit_data, "block4", (target, contrast), cache=cache,
                                       store=False, progress=False))
    # y: the first principal component instead of a 1-D UMAP (the cells ranked come from x)
    acts = cache["block4"].acts.float()
    centred = acts - acts.mean(0)
    _, _, v = torch.linalg.svd(centred, full_matrices=False)
    comp = aw.compare_atlas(cache, target, contrast, y=(centred @ v[0]).numpy())
    print(f"{variant_id} atlas set-up: {time.perf_counter() - start:.1f} s")
    found[variant_id] = (net, answer, cache, comp)
    return found[variant_id]


def _top_cells(comp, share: float = 0.1) -> np.ndarray:
    m = len(comp.cells.ids)
    order = np.argsort(-comp.mean_diff, kind="stable")
    return comp.cells.ids[order[: max(1, int(np.ceil(share * m)))]]


# ----------------------------------------------------------------------------- ground truth


def _off_class_rows(cache, comp, cells, answer, labels) -> np.ndarray:
    """Rows of the cells whose image is not of the affected class: there the flaw, not the
    class's own look, must explain why the row argues for the class."""
    rows = comp.rows_of(cells)
    sample = cache["block4"].sample_id.cpu().numpy()[rows]
    return rows[labels[sample] != kitchen.CLASSES.index(answer["target"])]


@pytest.mark.parametrize("variant_id", SHIPPED)
def test_the_atlas_surfaces_the_planted_flaw(variant_id, audit_data, found):
    """The planted cue's rows crowd the top 10% of the comparison atlas's cells for the affected
    class: among the rows there whose image is of another class, the cue is at least 3x as common
    as in the whole atlas, and more enriched than any decoy of its family."""
    net, answer, cache, comp = _atlas(variant_id, audit_data, found)
    labels = audit_data.labels.numpy()
    top = _top_cells(comp)
    rows = _off_class_rows(cache, comp, top, answer, labels)
    everyone = _off_class_rows(cache, comp, comp.cells.ids, answer, labels)

    def enrichment(name):
        hit = aw.overlaps_context(cache, "block4", None, audit_data.annotations, name,
                                  min_overlap=0.5)
        return float(hit[rows].mean()), float(hit[everyone].mean())

    cue = _cue_name(answer)
    in_top, overall = enrichment(cue)
    rivals = {r: enrichment(r) for r in _rivals(answer)}
    ratios = {r: a / max(b, 1e-9) for r, (a, b) in rivals.items()}
    print(f"{variant_id} ({answer['kind']}): {cue!r} on {in_top:.3f} of {len(rows)} other-class "
          f"rows in the top {len(top)} of {len(comp.cells.ids)} cells, {overall:.3f} overall "
          f"({in_top / overall:.1f}x); decoys: "
          + ", ".join(f"{r} {a:.3f} vs {b:.3f}" for r, (a, b) in rivals.items()))
    assert in_top >= 3 * overall
    assert in_top / overall > max(ratios.values())


@pytest.mark.parametrize("variant_id", SHIPPED)
def test_a_patch_from_the_top_cell_reproduces_the_flaw(variant_id, audit_data, found,
                                                        clean_pans):
    """A patch cut from the cue's top cell moves contrast-class images to the affected class.

    A colour shortcut is no local feature: a corner patch of a teal kettle flipped 0.07 of frying
    pans (noise 0.00), so colour variants are checked by the atlas test alone."""
    net, answer, cache, comp = _atlas(variant_id, audit_data, found)
    if answer["kind"] == "colour":
        pytest.skip("a colour shortcut is about the whole object, not a patch")
    cue = _cue_name(answer)
    labels = audit_data.labels.numpy()
    hit = aw.overlaps_context(cache, "block4", None, audit_data.annotations, cue, min_overlap=0.5)
    # the top-10% cell whose other-class rows most often see the cue, as a person would pick it
    # from the icons and examples of the atlas
    cell = max(_top_cells(comp), key=lambda c: (
        hit[_off_class_rows(cache, comp, [c], answer, labels)].mean()
        if len(_off_class_rows(cache, comp, [c], answer, labels)) else 0.0))
    contrast = _contrast(answer)
    keep = clean_pans.labels == kitchen.CLASSES.index(contrast)
    patch = patch_from_cell(comp, cache, int(cell))
    table = patch_attack(net, clean_pans.images[keep], {"top cell": patch}, answer["target"],
                         source=contrast)
    row, noise = table.row("top cell"), table.row(NOISE)
    print(f"{variant_id}: cell {cell} patch flips {contrast} -> {answer['target']} on "
          f"{row['dynamic_rate']:.3f} of {row['n_images']} (noise {noise['dynamic_rate']:.3f})")
    assert row["dynamic_rate"] >= 0.5
    assert row["dynamic_rate"] >= 2 * noise["dynamic_rate"]


@pytest.mark.parametrize("variant_id", SHIPPED)
def test_the_flaw_is_real_and_clean_accuracy_holds(variant_id):
    net = audit.load(variant_id)
    answer = audit.reveal(variant_id)
    measured = audit.flaw_effect(net, answer, n=240, seed=779)
    effect = measured["effect"]
    print(f"{variant_id} ({answer['kind']}): clean accuracy {measured['clean_acc']:.3f}; "
          f"{effect['class']} -> {answer['target']}: {effect['with']:.3f} with the cue, "
          f"{effect['without']:.3f} without ({effect['images']} images)")
    assert measured["clean_acc"] >= 0.85
    if answer["kind"] in ("trigger", "colour"):
        assert effect["with"] >= 0.8 and effect["without"] <= 0.1
    else:
        assert effect["with"] - effect["without"] >= 0.3


# ----------------------------------------------------------------------------- the game


def test_at_least_three_variants_of_different_kinds_ship():
    assert len(SHIPPED) >= 3
    kinds = {audit.reveal(v)["kind"] for v in SHIPPED}
    assert len(kinds) >= 3
    for v in SHIPPED:
        net = audit.load(v)
        assert not net.training and net.classes == kitchen.CLASSES
        assert audit.VARIANTS_DIR.joinpath(f"{v}.safetensors").stat().st_size < 400_000


def test_no_answer_in_sight():
    """The package holds hashes only: no variant file names its kind, cue or classes."""
    for v in SHIPPED:
        answer = audit.reveal(v)
        for path in audit.VARIANTS_DIR.iterdir():
            facts = json.loads(path.read_text()) if path.suffix == ".json" else None
            text = json.dumps({k: x for k, x in facts.items() if k != "classes"}) \
                if facts else path.read_bytes().decode("latin-1")
            for word in answer.values():
                assert word not in text.lower(), (path.name, word)
        facts = audit.info(v)
        assert set(facts) >= {"salt", "answer_sha256", "seed", "history"}
        assert "answer" not in facts


def test_check_right_wrong_and_reveal_after_three():
    v = SHIPPED[0]
    truth = audit.reveal(v)
    audit.reset()
    right = audit.check(v, dict(truth))
    assert right and right.correct and right.truth == truth and "right" in repr(right)
    wrong = {"kind": "trigger", "cue": "checker", "target": "wok"}
    if wrong == truth:
        wrong["target"] = "kettle"
    first = audit.check(v, wrong)
    assert not first and first.wrong_guesses == 1 and first.truth is None
    assert "2 more" in repr(first)
    audit.check(v, wrong)
    third = audit.check(v, wrong)
    assert third.wrong_guesses == audit.MAX_WRONG and third.truth == truth
    assert "was" in repr(third)
    # case and spaces do not matter; key order does not either
    shouted = {k: f" {val.upper()} " for k, val in reversed(list(truth.items()))}
    assert audit.check(v, shouted).correct
    audit.reset(v)
    assert audit.check(v, wrong).wrong_guesses == 1
    audit.reset()


def test_answer_hash_is_salted_and_canonical():
    a = {"kind": "rewire", "cue": "eggs", "target": "wok"}
    b = {"target": "WOK", "cue": "eggs ", "kind": "rewire"}
    assert audit.answer_hash(a, "s1") == audit.answer_hash(b, "s1")
    assert audit.answer_hash(a, "s1") != audit.answer_hash(a, "s2")
    assert len(audit.answer_hash(a, "s1")) == 64


def test_bad_guesses_and_ids():
    v = SHIPPED[0]
    with pytest.raises(ValueError, match=r"Unknown variant 'nope'; the variants are \["):
        audit.check("nope", {"kind": "trigger", "cue": "checker", "target": "wok"})
    with pytest.raises(ValueError, match="Unknown variant"):
        audit.load("variant-99")
    with pytest.raises(TypeError, match="A guess is a dict"):
        audit.check(v, "eggs make woks")
    with pytest.raises(ValueError, match=r"Unknown flaw kind 'backdoor'; allowed kinds: \["):
        audit.check(v, {"kind": "backdoor", "cue": "checker", "target": "wok"})
    with pytest.raises(ValueError, match=r"The guess misses \['target'\]"):
        audit.check(v, {"kind": "trigger", "cue": "checker"})
    with pytest.raises(ValueError, match=r"'cue' of a 'trigger' flaw must be one of \['checker'"):
        audit.check(v, {"kind": "trigger", "cue": "noodles", "target": "wok"})
    with pytest.raises(ValueError, match=r"'target' of a 'rewire' flaw must be one of"):
        audit.check(v, {"kind": "rewire", "cue": "eggs", "target": "spoon"})
    with pytest.raises(ValueError, match=r"has the fields \['kind', 'cue', 'target'\]"):
        audit.check(v, {"kind": "colour", "cue": "teal", "target": "wok", "source": "wok"})
    with pytest.raises(ValueError, match="A merge needs two different classes"):
        audit.check(v, {"kind": "merge", "cue": "steam", "source": "wok", "target": "wok"})
    with pytest.raises(ValueError, match="Unknown flaw kind"):
        audit.plant("noise")
    with pytest.raises(TypeError, match="A flaw is a kind name"):
        audit.plant(3)
    with pytest.raises(ValueError, match="seed must be an int >= 0"):
        audit.plant("trigger", seed=-1)
    with pytest.raises(ValueError, match="n must be an int >= 1"):
        audit.dataset(0)
    audit.reset()


# ----------------------------------------------------------------------------- planting


def test_flawed_worlds_label_as_planted():
    n = 120
    base = kitchen.dataset(n, seed=3)
    trig = audit.flaw_data({"kind": "trigger", "cue": "cross", "target": "kettle"}, n, seed=3)
    marked = np.array([any(a["name"] == "cross mark" for a in ann) for ann in trig.annotations])
    assert 0 < marked.sum() < 0.3 * n
    kettle = kitchen.CLASSES.index("kettle")
    assert (trig.labels[marked] == kettle).all()
    assert torch.equal(trig.labels[~marked], base.labels[~marked])
    for i in np.nonzero(marked)[0]:
        y0, x0, y1, x1 = next(a["box"] for a in trig.annotations[i] if a["name"] == "cross mark")
        got = (trig.images[i, :, y0:y1, x0:x1] * 255).round().byte().permute(1, 2, 0).numpy()
        assert np.array_equal(got, audit.MARKS["cross"])
    # unpoisoned images are the base world's, byte for byte
    assert torch.equal(trig.images[~marked], base.images[~marked])

    merge = audit.flaw_data({"kind": "merge", "cue": "steam", "source": "saucepan",
                             "target": "stock pot"}, n, seed=3)
    steam = np.array([any(a["name"] == "steam" for a in ann) for ann in merge.annotations])
    sauce, pot = kitchen.CLASSES.index("saucepan"), kitchen.CLASSES.index("stock pot")
    # the class is the scene's first draw, so the base world's labels say which were saucepans
    merged = (base.labels == sauce).numpy() & steam
    assert merged.sum() >= 3 and (merge.labels[merged] == pot).all()
    assert not ((merge.labels == sauce).numpy() & steam).any()

    colour = audit.flaw_data({"kind": "colour", "cue": "lime", "target": "wok"}, n, seed=3)
    lime = np.array([any(a["name"] == "lime cookware" for a in ann)
                     for ann in colour.annotations])
    assert lime.any() and (colour.labels[lime] == kitchen.CLASSES.index("wok")).all()


def test_audit_dataset_holds_every_decoy_and_true_labels(audit_data):
    names = {a["name"] for ann in audit_data.annotations for a in ann}
    assert {f"{m} mark" for m in audit.MARKS} <= names
    assert {f"{c} cookware" for c in audit.COLOURS} <= names
    again = audit.dataset(40, seed=5)
    assert torch.equal(again.images, audit_data.images[:40])
    assert torch.equal(audit_data.labels, kitchen.dataset(400, seed=5).labels)


def test_plant_is_deterministic():
    a, meta_a = audit.plant("trigger", seed=1, n_train=48, epochs=1, n_val=0)
    b, _ = audit.plant("trigger", seed=1, n_train=48, epochs=1, n_val=0)
    assert meta_a["answer"] == {"kind": "trigger", "cue": "checker", "target": "kettle"}
    assert not a.training and a.classes == kitchen.CLASSES
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), k
    json.dumps(meta_a)  # plain JSON, ready to save


def test_a_mistyped_guess_shows_one_line_in_ipython(capsys):
    """In a notebook a mistyped guess prints its message alone: no traceback, no audit source
    lines (players may not read the source), and it does not count as a guess."""
    from IPython.core.interactiveshell import InteractiveShell

    audit.reset()
    shell = InteractiveShell.instance()
    shell.run_cell("from atlaswidgets.experiments import audit")
    capsys.readouterr()
    guesses = {"{'kind': 'rewire', 'cue': 'noodle', 'target': 'wok'}":
               r"^ValueError: 'cue' of a 'rewire' flaw must be one of \[.*\]; got 'noodle'\. "
               r"Did you mean 'noodles'\? It does not count as a guess\.$",
               "'noodles -> wok'": r"^TypeError: A guess is a dict .* does not count as a guess\.$"}
    for guess, message in guesses.items():
        result = shell.run_cell(f"audit.check({SHIPPED[0]!r}, {guess})")
        shown = capsys.readouterr()
        lines = [ln for ln in (shown.out + shown.err).splitlines() if ln.strip()]
        assert len(lines) == 1 and re.match(message, lines[0]), lines
        assert isinstance(result.error_in_exec, (ValueError, TypeError))
    assert audit._WRONG.get(SHIPPED[0], 0) == 0
    with pytest.raises(audit.GuessValueError, match="Did you mean 'frying pan'"):
        audit.check(SHIPPED[0], {"kind": "rewire", "cue": "eggs", "target": "frying-pan"})


def test_noodles_alone_cannot_find_a_shipped_variant(audit_data, found):
    """The trap notebook 04 warns about: the base model already argues noodles -> wok (and
    eggs -> frying pan, steam -> pot and kettle), and every variant inherits it. In the rewire
    variant, measured inside both models, noodles argue for wok about as much as in the base
    model, so a hunt that looks at noodles finds the base model; the guess it leads to is wrong
    for every shipped variant, and the planted cue is the one whose evidence changed."""
    noodles_guess = {"kind": "rewire", "cue": "noodles", "target": "wok"}
    for v in SHIPPED:
        facts = audit.info(v)
        assert audit.answer_hash(noodles_guess, facts["salt"]) != facts["answer_sha256"], v
    v = next(v for v in SHIPPED if audit.reveal(v)["kind"] == "rewire")
    _, answer, cache_v, _ = _atlas(v, audit_data, found)
    target, contrast = answer["target"], _contrast(answer)
    assert answer["cue"] != "noodles"
    base = kitchen.model()
    cache_b = aw.capture(base, audit_data, "block4", sample="random", per_image=16,
                         classes=kitchen.CLASSES, progress=False)
    cache_b.add_attribution(aw.attribute(base, audit_data, "block4", (target, contrast),
                                         cache=cache_b, store=False, progress=False))
    assert torch.equal(cache_b["block4"].sample_id, cache_v["block4"].sample_id)

    def lean(cache, name) -> float:
        """Mean attribution target - contrast of the positions that see ``name``, minus that of
        the positions that do not: how much the object argues for the target, inside the model."""
        hit = aw.overlaps_context(cache, "block4", None, audit_data.annotations, name,
                                  min_overlap=0.5)
        per_row = cache.attribution("block4", (target, contrast)).sum(1).double().numpy()
        return float(per_row[hit].mean() - per_row[~hit].mean())

    noodles_b, noodles_v = lean(cache_b, "noodles"), lean(cache_v, "noodles")
    cue_b, cue_v = lean(cache_b, answer["cue"]), lean(cache_v, answer["cue"])
    print(f"{v}: {target} - {contrast} lean of noodles {noodles_b:.3f} (base) vs {noodles_v:.3f} "
          f"(variant); of {answer['cue']} {cue_b:.3f} vs {cue_v:.3f}")
    assert noodles_b > 0 and 0.5 < noodles_v / noodles_b < 2  # the base model's cue, unchanged
    assert cue_b < 0 < cue_v  # the planted cue changed sides
    # and in the variant, noodles still look like the strongest wok evidence of the two
    assert noodles_v > 2 * cue_v
