"""Hand-edited or damaged manifests: valid JSON of the wrong structure is refused as damaged."""

from __future__ import annotations

import json

import pytest

from atlaswidgets.cache.capture import capture
from atlaswidgets.cache.store import load_cache, read_manifest

FIX = "Restore the store directory from a backup, or delete it and capture again"


def edit(path, change):
    manifest = json.loads((path / "manifest.json").read_text())
    change(manifest)
    (path / "manifest.json").write_text(json.dumps(manifest))


def set_(key, value):
    return lambda m: m.__setitem__(key, value)


def set_in(outer, inner, key, value):
    return lambda m: m[outer][inner].__setitem__(key, value)


@pytest.mark.parametrize("change, field", [
    (lambda m: m.pop("layers"), r"'layers' must map each layer name"),
    (set_("layers", ["conv1"]), r"'layers' must map each layer name"),
    (lambda m: m.pop("input_hw"), r"'input_hw' must be a list of two non-negative ints, got None"),
    (set_("input_hw", [16]), r"'input_hw' must be a list of two"),
    (lambda m: m["shards"][0].pop("file"), r"shards\[0\]\['file'\] must name a shard file"),
    (set_in("shards", 1, "file", "../../etc/passwd"), r"shards\[1\]\['file'\] must name a shard file"),
    (set_in("shards", 0, "stop", "16"), r"shards\[0\]\['stop'\] must be a non-negative int, got '16'"),
    (set_in("shards", 0, "start", True), r"shards\[0\]\['start'\] must be a non-negative int"),
    (set_in("shards", 2, "stop", 32), r"shards\[2\] has stop 32 not after start 32"),
    (lambda m: m["shards"][0].pop("sha256"), r"shards\[0\]\['sha256'\] must be a str"),
    (set_("shards", None), r"'shards' must be a list of shard records, got None"),
    (lambda m: m["shards"].__setitem__(1, "shard-00001.safetensors"), r"shards\[1\] must be an object"),
    (set_in("layers", "conv1", "hw", None), r"layers\['conv1'\]\['hw'\] must be a list of two"),
    (lambda m: m["layers"]["conv2"].pop("rf"), r"layers\['conv2'\]\['rf'\] must be a list of two"),
    (set_in("layers", "conv1", "attributions", "wok"), r"layers\['conv1'\]\['attributions'\] must be a list of str"),
    (set_("layers", {"conv1": [8, 8]}), r"layers\['conv1'\] must be an object"),
    (set_("classes", "pan"), r"'classes' must be a list or null"),
    (set_("meta", []), r"'meta' must be an object"),
    (set_("fingerprint", None), r"'fingerprint' must be an object"),
    (set_("complete", "yes"), r"'complete' must be true or false"),
    (lambda m: m.pop("n_samples"), r"'n_samples' must be a positive int, got None"),
])
def test_a_manifest_of_the_wrong_structure_is_refused_as_damaged(store, change, field):
    edit(store, change)
    with pytest.raises(ValueError, match=f"manifest .* is damaged: {field}.*{FIX}"):
        load_cache(store, device="cpu")
    with pytest.raises(ValueError, match="is damaged"):
        read_manifest(store)


def test_a_complete_store_must_hold_exactly_its_samples(store):
    edit(store, lambda m: m["shards"].pop())  # the last shard record deleted: 32 of 40 samples
    with pytest.raises(ValueError, match=rf"damaged: 'shards' cover samples 0..32, but 'n_samples' "
                                         rf"records 40 \(a shard record is missing\).*{FIX}"):
        load_cache(store, device="cpu")
    edit(store, lambda m: m["shards"].pop(0))  # a gap at the start
    with pytest.raises(ValueError, match=r"shards\[0\] \('shard-00001.safetensors'\) starts at sample 16 "
                                         r"where 0 was expected \(a gap or overlap"):
        load_cache(store, device="cpu")
    edit(store, set_("shards", []))
    with pytest.raises(ValueError, match="cover samples 0..0, but 'n_samples' records 40"):
        load_cache(store, device="cpu")


def test_capture_into_a_damaged_store_says_so(store, model, data):
    edit(store, set_in("shards", 0, "stop", "16"))
    with pytest.raises(ValueError, match=rf"is damaged: shards\[0\]\['stop'\].*{FIX}"):
        capture(model, data, ["conv1", "conv2"], per_image=4, progress=False, store=store)
