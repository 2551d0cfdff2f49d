"""The on-disk store: round trip, refusals, atomic files, and resuming an interrupted capture."""

from __future__ import annotations

import json
import os

import pytest
import torch

from atlaswidgets.cache import store as store_mod
from atlaswidgets.cache.cache import ActivationCache, LayerActs
from atlaswidgets.cache.capture import capture
from atlaswidgets.cache.store import SCHEMA_VERSION, load_cache, read_manifest, save_cache

from .conftest import N_SAMPLES, TinyCNN, assert_caches_equal

CLASSES = ["pan", "wok", "pot", "lid"]


def cap(model, data, **kw):
    kw.setdefault("progress", False)
    kw.setdefault("per_image", 4)
    kw.setdefault("classes", CLASSES)
    return capture(model, data, ["conv1", "conv2"], **kw)


def batches(images, labels, size=5, fail_at=None):
    """(images, labels) batches; raises at sample ``fail_at``, like a capture killed midway."""
    for i in range(0, len(images), size):
        if fail_at is not None and i >= fail_at:
            raise RuntimeError("killed")
        yield images[i : i + size], labels[i : i + size]


def interrupted(model, images, labels, path, at):
    """A capture into ``path`` (shards of 8 samples) killed at sample ``at``."""
    with pytest.raises(RuntimeError, match="killed"):
        cap(model, batches(images, labels, fail_at=at), store=path, shard_samples=8)


def files(path):
    return sorted(os.listdir(path))


@pytest.fixture(scope="module")
def cache(model, data):
    return cap(model, data)


# ----------------------------------------------------------------------------- round trip


def test_save_and_load_round_trip(cache, model, tmp_path):
    path = cache.save(tmp_path / "store", shard_samples=16)
    assert files(path) == ["manifest.json", "shard-00000.safetensors", "shard-00001.safetensors",
                           "shard-00002.safetensors"]  # nothing temporary left
    manifest = read_manifest(path)
    assert manifest["schema_version"] == SCHEMA_VERSION and manifest["complete"]
    assert [(s["start"], s["stop"]) for s in manifest["shards"]] == [(0, 16), (16, 32), (32, 40)]
    assert manifest["layers"]["conv2"] == {"hw": [8, 8], "rf": [5, 5], "channels": 16, "dtype": "float32"}
    assert manifest["input_hw"] == [16, 16] and manifest["classes"] == CLASSES
    assert manifest["fingerprint"]["model"] == store_mod.model_fingerprint(model)
    assert all(len(s["sha256"]) == 64 and len(s["data_sha256"]) == 64 for s in manifest["shards"])
    loaded = ActivationCache.load(path, model=model, device="cpu")
    assert_caches_equal(cache, loaded)
    assert loaded.meta == json.loads(json.dumps(cache.meta))


def test_a_hand_made_cache_round_trips_even_with_rows_out_of_order(tmp_path):
    la = LayerActs(torch.randn(5, 3), torch.tensor([2, 0, 1, 0, 2]), torch.full((5, 2), -1), (1, 1), (8, 8))
    cache = ActivationCache({"x": la}, torch.tensor([0, 1, -1]), torch.randn(3, 2), input_hw=(8, 8))
    path = save_cache(cache, tmp_path / "s", shard_samples=1)
    assert len(read_manifest(path)["shards"]) == 1  # unordered rows: one shard keeps their order
    loaded = load_cache(path, device="cpu")
    assert torch.equal(loaded["x"].acts, la.acts) and torch.equal(loaded["x"].sample_id, la.sample_id)
    assert loaded.images is None and loaded.sample_digest is None
    with pytest.raises(ValueError, match="has no model fingerprint"):
        load_cache(path, model=TinyCNN())


def test_overwriting_a_store_of_the_same_capture_is_allowed(cache, tmp_path):
    path = cache.save(tmp_path / "s", shard_samples=8)
    cache.save(path, shard_samples=20)  # fewer, larger shards: stale shard files are removed
    assert files(path) == ["manifest.json", "shard-00000.safetensors", "shard-00001.safetensors"]
    assert_caches_equal(cache, load_cache(path, device="cpu"))


# ----------------------------------------------------------------------------- refusals


def test_save_refuses_a_store_of_other_data(data, tmp_path):
    images, labels = data
    model = TinyCNN()
    path = cap(model, (images, labels), store=tmp_path / "s", shard_samples=8).path
    before = (path / "manifest.json").read_bytes()
    other = cap(model, (images.flip(0), labels.flip(0)))
    with pytest.raises(ValueError, match="holds activations of other data.*saving would replace them"):
        other.save(path)
    with pytest.raises(ValueError, match="holds activations of other data"):
        cap(model, (images[:10], labels[:10])).save(path)  # a prefix of it is other data too
    assert (path / "manifest.json").read_bytes() == before  # nothing was touched
    # an interrupted capture is compared shard by shard
    half = tmp_path / "half"
    interrupted(model, images, labels, half, at=20)
    with pytest.raises(ValueError, match="holds activations of other data"):
        other.save(half)
    cap(model, (images, labels)).save(half)  # the same data completes it
    assert load_cache(half, device="cpu").n_samples == N_SAMPLES


def test_load_refuses_another_model(cache, tmp_path):
    path = cache.save(tmp_path / "s")
    with pytest.raises(ValueError, match="was captured from a different model"):
        load_cache(path, model=TinyCNN(seed=1))


def test_load_refuses_another_schema_version(cache, tmp_path):
    path = cache.save(tmp_path / "s")
    manifest = json.loads((path / "manifest.json").read_text())
    newer = SCHEMA_VERSION + 1
    manifest["schema_version"] = newer
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match=f"has schema version {newer}, but this atlaswidgets reads "
                                         f"schema version {SCHEMA_VERSION}"):
        load_cache(path)
    manifest["schema_version"], manifest["format"] = SCHEMA_VERSION, "something.else"
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="is not an atlaswidgets store manifest"):
        load_cache(path)
    (path / "manifest.json").write_text("{not json")
    with pytest.raises(ValueError, match="is not valid JSON"):
        load_cache(path)


def test_load_refuses_a_tampered_shard(cache, tmp_path):
    path = cache.save(tmp_path / "s", shard_samples=16)
    shard = path / "shard-00001.safetensors"
    data = bytearray(shard.read_bytes())
    data[-1] ^= 1  # one bit of one activation
    shard.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="Shard 'shard-00001.safetensors' .* does not match its checksum"):
        load_cache(path)
    shard.unlink()
    with pytest.raises(ValueError, match="Shard 'shard-00001.safetensors' .* cannot be read"):
        load_cache(path)


def test_load_refuses_an_incomplete_store(model, data, tmp_path):
    path = tmp_path / "s"
    interrupted(model, *data, path, at=20)
    assert not read_manifest(path)["complete"]
    with pytest.raises(ValueError, match=r"capture was interrupted; call capture\(..., store=path\) again"):
        load_cache(path)


def test_missing_manifest_and_non_store_directories(cache, tmp_path):
    with pytest.raises(ValueError, match="not a directory"):
        load_cache(tmp_path / "nothing")
    other = tmp_path / "notes"
    other.mkdir()
    (other / "todo.txt").write_text("keep me")
    with pytest.raises(ValueError, match="has no manifest.json, so it is not an atlaswidgets store"):
        load_cache(other)
    with pytest.raises(ValueError, match="already holds files and is not an atlaswidgets store; refusing"):
        cache.save(other)
    assert files(other) == ["todo.txt"] and (other / "todo.txt").read_text() == "keep me"
    with pytest.raises(ValueError, match="already holds files"):
        capture(TinyCNN(), cache.images.float() / 255, "conv1", store=other, progress=False)
    assert files(other) == ["todo.txt"]
    with pytest.raises(ValueError, match="is a file, not a directory"):
        cache.save(other / "todo.txt")
    empty = tmp_path / "empty"
    empty.mkdir()
    cache.save(empty)  # an empty directory is fine


def test_a_store_of_another_capture_is_refused(cache, model, data, tmp_path):
    path = cache.save(tmp_path / "s")
    with pytest.raises(ValueError, match="captured with another model than this capture.*delete the directory"):
        cap(TinyCNN(seed=1), data, store=path)
    with pytest.raises(ValueError, match="captured with other layers than"):
        capture(model, data, "conv2", per_image=4, classes=CLASSES, store=path, progress=False)
    with pytest.raises(ValueError, match="captured with another sampling policy than"):
        cap(model, data, store=path, seed=1)
    with pytest.raises(ValueError, match="another model than this cache.save"):
        cap(TinyCNN(seed=1), data).save(path)
    assert_caches_equal(cache, load_cache(path, device="cpu"))  # untouched


# ----------------------------------------------------------------------------- atomic files


def test_a_failed_write_leaves_the_old_file_and_no_temporary(cache, tmp_path, monkeypatch):
    path = cache.save(tmp_path / "s", shard_samples=16)
    before = (path / "manifest.json").read_bytes()

    def crash(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(store_mod.os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        cache.save(path, shard_samples=16)
    monkeypatch.undo()
    assert (path / "manifest.json").read_bytes() == before
    assert not [f for f in files(path) if ".tmp-" in f]
    assert_caches_equal(cache, load_cache(path, device="cpu"))


def test_leftover_temporaries_are_ignored_and_cleaned(cache, tmp_path):
    path = tmp_path / "s"
    path.mkdir()
    (path / ".shard-00000.safetensors.tmp-123-abcd").write_bytes(b"half a shard")  # a killed writer
    cache.save(path)  # a directory holding only our temporaries counts as empty
    assert files(path) == ["manifest.json", "shard-00000.safetensors"]


# ----------------------------------------------------------------------------- resume


class Counting(TinyCNN):
    """TinyCNN that counts the images it is run on."""

    def __init__(self):
        super().__init__(0)
        self.seen = 0

    def forward(self, x):
        self.seen += len(x)
        return super().forward(x)


def test_an_interrupted_capture_resumes_bit_identically(data, tmp_path):
    images, labels = data
    model = Counting()
    reference = cap(model, batches(images, labels))
    path = tmp_path / "s"
    # batches of 5, shards of 8: the failure and the resume point fall inside batches
    interrupted(model, images, labels, path, at=27)
    manifest = read_manifest(path)
    assert [s["stop"] for s in manifest["shards"]] == [8, 16, 24] and not manifest["complete"]
    model.seen = 0
    resumed = cap(model, batches(images, labels), store=path, shard_samples=8)
    assert model.seen == 1 + (40 - 20)  # receptive-field probe, then batches from sample 20 on
    assert_caches_equal(reference, resumed)
    assert_caches_equal(reference, load_cache(path, model=model, device="cpu"))
    assert not [f for f in files(path) if ".tmp-" in f]
    # a complete store is reused whole after checking the data: only the probe runs
    model.seen = 0
    again = cap(model, batches(images, labels, size=16), store=path)
    assert model.seen == 1
    assert_caches_equal(reference, again)


def test_resume_refuses_a_store_of_schema_version_1(data, tmp_path):
    # version 1 kept sha256 digests of the samples: resuming would compare them with XXH3 digests
    images, labels = data
    model = TinyCNN()
    path = tmp_path / "s"
    interrupted(model, images, labels, path, at=20)
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["schema_version"] = 1
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match=f"has schema version 1, but this atlaswidgets reads schema "
                                         f"version {SCHEMA_VERSION}.*capture the data again"):
        cap(model, (images, labels), store=path)


def test_resume_trusts_checksums_not_files(data, tmp_path):
    images, labels = data
    model = TinyCNN()
    reference = cap(model, (images, labels), batch_size=5)
    path = tmp_path / "s"
    interrupted(model, images, labels, path, at=30)
    shard = path / "shard-00001.safetensors"
    shard.write_bytes(shard.read_bytes()[:-4] + b"\0\0\0\0")  # damaged but present
    resumed = cap(model, (images, labels), batch_size=5, store=path, shard_samples=8)
    assert_caches_equal(reference, resumed)
    assert_caches_equal(reference, load_cache(path, device="cpu"))


def test_resume_refuses_different_data(data, tmp_path):
    images, labels = data
    model = TinyCNN()
    path = tmp_path / "s"
    interrupted(model, images, labels, path, at=20)
    shuffled = images.flip(0)
    with pytest.raises(ValueError, match="was captured from different data.*shard-00000"):
        cap(model, (shuffled, labels), store=path)
    with pytest.raises(ValueError, match="different data: it has 6 samples, fewer than the 16"):
        cap(model, (images[:6], labels[:6]), store=path)
    cap(model, (images, labels), store=path)  # the right data completes it
    with pytest.raises(ValueError, match="different data: it has more than the store's 40 samples"):
        cap(model, (torch.cat([images, images[:3]]), torch.cat([labels, labels[:3]])), store=path)
    other_labels = labels.clone()
    other_labels[0] = (other_labels[0] + 1) % 4
    with pytest.raises(ValueError, match="different data"):
        cap(model, (images, other_labels), store=path)


@pytest.mark.parametrize("batch_size, shard_samples", [(8, 8), (5, 16), (64, 7)])
def test_streamed_store_equals_the_returned_cache(model, data, tmp_path, batch_size, shard_samples):
    path = tmp_path / "s"
    cache = cap(model, data, sample="all", batch_size=batch_size, store=path, shard_samples=shard_samples)
    n_shards = -(-N_SAMPLES // shard_samples)
    assert files(path) == ["manifest.json"] + [f"shard-{i:05d}.safetensors" for i in range(n_shards)]
    assert_caches_equal(cache, load_cache(path, model=model, device="cpu"))
