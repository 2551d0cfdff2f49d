"""Targets: one spelling of classes and pairs, resolution, stored targets, the store's records."""

from __future__ import annotations

import json

import pytest
import torch

import atlaswidgets as aw
from atlaswidgets.cache.targets import (Target, class_id, class_name, find_stored, model_classes,
                                        resolve, stored_targets, target_key)

NAMES = ["frying pan", "wok", "stir-fry pan", "stir", "fry pan"]


def test_spelling_of_classes_and_pairs():
    assert class_name(1, NAMES) == "wok" and class_name(7, NAMES) == "class:7"
    assert class_name(3) == "class:3" and class_name(-1, NAMES) == "?"
    assert Target("pair", (1, 0)).key(NAMES) == "wok-frying pan"
    assert Target("pair", (1, 0)).key() == "class:1-class:0"
    assert target_key(("wok", "frying pan"), NAMES) == "wok-frying pan"
    assert target_key(2) == "class:2"


@pytest.mark.parametrize("classes", [NAMES, None])
def test_every_key_resolves_again(classes):
    """Every target's key, with or without class names, resolves to the same target, also when
    names hold "-" and one name is the start of another."""
    n = len(NAMES)
    targets = [Target("class", (i,)) for i in range(n)]
    targets += [Target("pair", (a, b)) for a in range(n) for b in range(n) if a != b]
    for t in targets:
        assert resolve(t.key(classes), classes, n) == t, t.key(classes)
        assert resolve(t, classes, n) is t


def test_resolution_of_user_input():
    assert resolve("wok", NAMES) == Target("class", (1,))
    assert resolve(("wok", 0), NAMES) == Target("pair", (1, 0))
    assert resolve(["wok", "frying pan"], NAMES) == Target("pair", (1, 0))
    assert resolve("class:1", NAMES) == Target("class", (1,))  # the kit's spelling works with names too
    # the pair ("stir", "fry pan") would read as the class "stir-fry pan": spelled by its ids
    assert Target("pair", (3, 4)).key(NAMES) == "class:3-class:4"
    assert Target("pair", (2, 1)).key(NAMES) == "stir-fry pan-wok"
    assert class_id("class:4") == 4
    with pytest.raises(ValueError, match=r"Unknown class name 'wook'.*Did you mean \['wok'\]"):
        resolve("wook", NAMES)
    with pytest.raises(ValueError, match="no class names"):
        resolve("wok")
    with pytest.raises(ValueError, match="out of range"):
        resolve("class:9", NAMES, 5)
    with pytest.raises(ValueError, match="two different classes"):
        resolve(("wok", 1), NAMES)
    with pytest.raises(ValueError, match="two classes"):
        resolve((1, 2, 3), NAMES)
    with pytest.raises(TypeError, match="int id or a str name"):
        resolve(True)
    with pytest.raises(ValueError, match="Unknown target kind"):
        Target("neuron", (3,))
    with pytest.raises(ValueError, match="two different classes"):
        Target("pair", (2, 2))
    with pytest.raises(ValueError, match="needs 2"):
        Target("pair", (2,))


def test_json_records_and_scores():
    t = Target("pair", (3, 1))
    assert Target.from_json(json.loads(json.dumps(t.to_json()))) == t
    with pytest.raises(ValueError, match="target record"):
        Target.from_json({"kind": "pair"})
    logits = torch.arange(12.0).reshape(2, 6)
    assert torch.equal(t.score(logits), logits[:, 3] - logits[:, 1])
    assert torch.equal(Target("class", (5,)).score(logits), logits[:, 5])


def test_model_classes():
    class M(torch.nn.Module):
        classes = ("a", "b")

    assert model_classes(M()) == ["a", "b"]
    assert model_classes(torch.nn.Linear(2, 2)) is None


class _Layer:
    def __init__(self, keys, recorded=None):
        self.attributions = {k: torch.zeros(1) for k in keys}
        self.attribution_targets = recorded or {}


def test_stored_targets_structural_and_legacy():
    # recorded targets win over any reading of the key
    la = _Layer(["x", "stir-fry pan", "wok-frying pan", "junk"], {"x": Target("pair", (3, 4))})
    found = stored_targets(la, NAMES, 5)
    assert found == {"x": Target("pair", (3, 4)), "stir-fry pan": Target("class", (2,)),
                     "wok-frying pan": Target("pair", (1, 0))}
    assert find_stored(la, ("stir", "fry pan"), NAMES, 5) == "x"
    assert find_stored(la, (0, 1), NAMES, 5) is None


def _store_without_target_records(path):
    manifest = json.loads((path / "manifest.json").read_text())
    for info in manifest["layers"].values():
        info.pop("attribution_targets", None)
    (path / "manifest.json").write_text(json.dumps(manifest))


def test_store_keeps_targets_and_loads_stores_written_before(model, data, tmp_path):
    cache = aw.capture(model, data, ["conv1"], sample="random", per_image=3, seed=1, progress=False)
    cache.add_attribution(aw.attribute(model, data, "conv1", [(1, 0), 3], cache=cache, store=False,
                                       progress=False))
    cache.save(tmp_path / "s")
    back = aw.ActivationCache.load(tmp_path / "s", device="cpu")
    assert back["conv1"].attribution_targets == {"class:1-class:0": Target("pair", (1, 0)),
                                                 "class:3": Target("class", (3,))}
    _store_without_target_records(tmp_path / "s")
    old = aw.ActivationCache.load(tmp_path / "s", device="cpu")
    assert old["conv1"].attribution_targets == {}
    assert stored_targets(old["conv1"], old.classes, 4) == back["conv1"].attribution_targets
    assert torch.equal(old.attribution("conv1", (1, 0)), cache.attribution("conv1", (1, 0)))


def test_damaged_target_records_are_refused(model, data, tmp_path):
    cache = aw.capture(model, data, ["conv1"], sample="random", per_image=3, seed=1, progress=False)
    cache.add_attribution(aw.attribute(model, data, "conv1", 1, cache=cache, store=False,
                                       progress=False))
    cache.save(tmp_path / "s")
    manifest = json.loads((tmp_path / "s" / "manifest.json").read_text())
    manifest["layers"]["conv1"]["attribution_targets"] = {"class:1": {"kind": "pair", "ids": [1]}}
    (tmp_path / "s" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="attribution_targets"):
        aw.ActivationCache.load(tmp_path / "s", device="cpu")


# ----------------------------------------------------------------------------- next-token targets

VOCAB = ["<pad>", "wok", "pan", "#1", "a-token:b", "x", "-", "token:wok"]


@pytest.mark.parametrize("vocab", [VOCAB, None])
def test_every_token_key_resolves_again(vocab):
    """Token and token-pair keys round-trip with and without a vocabulary, also for token
    strings that look like ids ("#1") or hold the pair separator ("a-token:b")."""
    n = len(VOCAB)
    targets = [Target("token", (i,)) for i in range(n)]
    targets += [Target("token_pair", (a, b)) for a in range(n) for b in range(n) if a != b]
    for t in targets:
        key = t.key(vocab=vocab)
        assert key.startswith("token:")
        assert resolve(key, vocab=vocab) == t, key
        assert resolve(key, NAMES, 0, vocab) == t  # class names never capture a token key
    assert Target("token", (1,)).key(vocab=VOCAB) == "token:wok"
    assert Target("token_pair", (1, 2)).key(vocab=VOCAB) == "token:wok-token:pan"
    assert Target("token", (3,)).key(vocab=VOCAB) == "token:#3"  # "token:#1" would mean id 1
    assert Target("token", (1,)).key() == "token:#1"


def test_token_targets_from_user_input_and_their_errors():
    assert resolve(("token:wok", "token:pan"), vocab=VOCAB) == Target("token_pair", (1, 2))
    assert resolve("token:#5", vocab=VOCAB) == Target("token", (5,))
    assert target_key(("token:wok", "token:#2"), vocab=VOCAB) == "token:wok-token:pan"
    t = Target("token_pair", (1, 2))
    assert Target.from_json(json.loads(json.dumps(t.to_json()))) == t
    assert t.parts() == (Target("token", (1,)), Target("token", (2,)))
    assert Target.pair_of(*t.parts()) == t and t.per_token and t.is_pair
    logits = torch.arange(24.0).reshape(1, 3, 8)  # (N, T, V): one score per position
    assert torch.equal(t.score(logits), logits[..., 1] - logits[..., 2])
    with pytest.raises(ValueError, match=r"Unknown token 'wook'.*token:wok"):
        resolve("token:wook", vocab=VOCAB)
    with pytest.raises(ValueError, match="no vocabulary"):
        resolve("token:wok")
    with pytest.raises(ValueError, match="out of range"):
        resolve("token:#8", vocab=VOCAB)
    with pytest.raises(ValueError, match="two different tokens"):
        resolve("token:wok-token:#1", vocab=VOCAB)
    with pytest.raises(ValueError, match="not one of each"):
        resolve(("token:wok", "pan"), ["pan"], vocab=VOCAB)
    # the family that fits: a class on a per-token model (n_outputs 0), a token on a classifier
    with pytest.raises(ValueError, match="per token.*'token:wok'"):
        resolve("wok", NAMES, 0, VOCAB)
    with pytest.raises(ValueError, match="per token.*next-token target"):
        resolve(3, None, 0)
    with pytest.raises(ValueError, match="spelled 'token:wok'"):
        resolve("wok", None, None, VOCAB)
    with pytest.raises(ValueError, match="one row of 5 per sample.*class target"):
        resolve("token:wok", NAMES, 5, VOCAB)
