"""The on-disk store: round trip, refusals, atomic files, and resuming an interrupted capture."""

from __future__ import annotations

import json
import os

import pytest
import torch

from atlaswidgets.cache import files as files_mod
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
    assert manifest["layers"]["conv2"] == {"hw": [8, 8], "rf": [5, 5], "channels": 16, "dtype": "float32",
                                         "kind": "grid"}
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

    monkeypatch.setattr(files_mod.os, "replace", crash)
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


# ----------------------------------------------------------------------------- re-saving a store


def crash_on_shard(monkeypatch, which):
    """Make the ``which``-th shard file written from now on fail as a full disk does."""
    real, written = store_mod.atomic_write, []

    def write(path, data):
        if path.name.startswith("shard-"):
            written.append(path.name)
            if len(written) == which:
                raise OSError(28, "No space left on device")
        real(path, data)

    monkeypatch.setattr(store_mod, "atomic_write", write)


def test_a_failed_re_save_keeps_the_complete_store(cache, tmp_path, monkeypatch):
    path = cache.save(tmp_path / "s", shard_samples=16)
    before = {f: (path / f).read_bytes() for f in files(path)}
    loaded = ActivationCache.load(path, device="cpu")
    crash_on_shard(monkeypatch, 2)
    with pytest.raises(OSError, match="No space left on device"):
        loaded.save(path, shard_samples=16)
    monkeypatch.undo()
    assert {f: (path / f).read_bytes() for f in files(path)} == before  # not a byte changed
    assert files(tmp_path) == ["s"]  # the half-written new store beside it is gone
    assert_caches_equal(cache, load_cache(path, device="cpu"))


def test_re_saving_to_the_store_it_was_loaded_from_keeps_what_lives_beside_it(cache, tmp_path):
    path = cache.save(tmp_path / "s", shard_samples=8)
    icons = path / "icons-0123"  # render/icons.py keeps rendered icons inside the store
    icons.mkdir()
    (icons / "icons.png").write_bytes(b"png")
    loaded = ActivationCache.load(path, device="cpu")
    loaded.save(path, shard_samples=20)
    assert files(path) == ["icons-0123", "manifest.json", "shard-00000.safetensors", "shard-00001.safetensors"]
    assert (icons / "icons.png").read_bytes() == b"png"
    assert files(tmp_path) == ["s"]
    assert_caches_equal(cache, load_cache(path, device="cpu"))


def test_re_saving_through_a_symlink_replaces_the_store_where_it_lives(cache, tmp_path):
    real = cache.save(tmp_path / "real", shard_samples=16)
    link = tmp_path / "link"
    link.symlink_to(real, target_is_directory=True)
    cache.save(link, shard_samples=8)
    assert link.is_symlink() and len(read_manifest(real)["shards"]) == 5
    assert files(tmp_path) == ["link", "real"]
    assert_caches_equal(cache, load_cache(link, device="cpu"))


def rename_failing_at(monkeypatch, calls, error):
    """os.rename (used by the store's files module) raising ``error`` at the given call numbers (1-based)."""
    real, count = os.rename, []

    def rename(src, dst):
        count.append(1)
        if len(count) in calls:
            raise error
        real(src, dst)

    monkeypatch.setattr(files_mod.os, "rename", rename)


def test_a_failed_swap_puts_the_old_store_back(cache, tmp_path, monkeypatch):
    path = cache.save(tmp_path / "s", shard_samples=16)
    rename_failing_at(monkeypatch, {2}, KeyboardInterrupt())  # new -> path fails after old -> aside
    with pytest.raises(KeyboardInterrupt):
        cache.save(path, shard_samples=8)
    monkeypatch.undo()
    assert files(tmp_path) == ["s"]
    assert len(read_manifest(path)["shards"]) == 3  # the old store, not the new one of 5 shards
    assert_caches_equal(cache, load_cache(path, device="cpu"))


def test_a_process_killed_between_the_renames_loses_neither_store(cache, tmp_path, monkeypatch):
    path = cache.save(tmp_path / "s", shard_samples=16)
    # the second rename fails and so does putting the old store back: as if killed in between
    rename_failing_at(monkeypatch, {2, 3}, OSError("killed"))
    with pytest.raises(OSError, match="killed"):
        cache.save(path, shard_samples=8)
    monkeypatch.undo()
    assert not path.exists()
    aside = [f for f in files(tmp_path) if f.startswith(".s.old.tmp-")]
    assert len(aside) == 1 and files(tmp_path) == aside  # the old store, whole, aside
    # while its writer (this process) lives, nothing is moved: it may be mid-swap
    with pytest.raises(ValueError, match="A save into it was interrupted; the previous store is at .*rename"):
        load_cache(path)
    monkeypatch.setattr(files_mod, "writer_gone", lambda sibling: True)  # the writer has died
    assert_caches_equal(cache, load_cache(path, device="cpu"))
    assert files(tmp_path) == ["s"] and len(read_manifest(path)["shards"]) == 3


def test_leftovers_of_a_save_killed_after_the_swap_are_tidied(cache, tmp_path, monkeypatch):
    path = cache.save(tmp_path / "s", shard_samples=16)
    old = cache.save(tmp_path / ".s.old.tmp-00000000-1-ab", shard_samples=8)  # killed before removing it
    (old / "icons-0123").mkdir()
    (old / "icons-0123" / "icons.png").write_bytes(b"png")
    half = tmp_path / ".s.new.tmp-00000000-1-cd"  # a half-written store of a killed save
    half.mkdir()
    (half / "shard-00000.safetensors").write_bytes(b"half")
    load_cache(path, device="cpu")
    assert len(files(tmp_path)) == 3  # a live writer's (or another host's) siblings are left alone
    monkeypatch.setattr(files_mod, "writer_gone", lambda sibling: True)
    assert_caches_equal(cache, load_cache(path, device="cpu"))
    assert files(tmp_path) == ["s"]
    assert (path / "icons-0123" / "icons.png").read_bytes() == b"png"  # moved into the store
    assert len(read_manifest(path)["shards"]) == 3


def test_writer_gone_asks_the_os_about_this_host_only(tmp_path):
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = int(done.stdout)
    host = files_mod.owner().split("-")[0]
    assert files_mod.writer_gone(tmp_path / f".s.old.tmp-{host}-{dead}-ab")
    assert not files_mod.writer_gone(tmp_path / f".s.old.tmp-{host}-{os.getpid()}-ab")  # this process
    assert not files_mod.writer_gone(tmp_path / f".s.old.tmp-ffffffff-{dead}-ab")  # another host
    assert not files_mod.writer_gone(tmp_path / ".s.old.tmp-garbage")


# ----------------------------------------------------------------------------- hand-made caches


def hand_made(n):
    la = LayerActs(torch.full((n, 3), 1.0), torch.arange(n), torch.zeros(n, 2, dtype=torch.long), (1, 1), (1, 1))
    return ActivationCache({"l": la}, torch.zeros(n, dtype=torch.long), torch.zeros(n, 2))


def test_a_hand_made_cache_does_not_silently_replace_another(tmp_path):
    a, b = hand_made(4), hand_made(6)
    path = a.save(tmp_path / "s")
    with pytest.raises(ValueError, match="neither it nor this cache was made by capture.*pass overwrite=True"):
        b.save(path)
    assert load_cache(path, device="cpu").n_samples == 4
    # re-saving a hand-made cache, even over the store it was loaded from, needs overwrite=True:
    # nothing tells whether it was changed into other data since
    loaded = load_cache(path, device="cpu")
    with pytest.raises(ValueError, match="neither it nor this cache"):
        loaded.save(path)
    save_cache(loaded, path, overwrite=True)
    b.save(path, overwrite=True)  # the method passes it on
    assert load_cache(path, device="cpu").n_samples == 6
    with pytest.raises(TypeError, match="overwrite must be True or False"):
        save_cache(b, path, overwrite="yes")


def test_overwrite_replaces_a_store_of_another_capture_but_never_other_files(cache, tmp_path):
    path = hand_made(4).save(tmp_path / "s")
    with pytest.raises(ValueError, match="captured with another model.* than this cache.save.*pass overwrite=True"):
        cache.save(path)
    save_cache(cache, path, overwrite=True)
    assert_caches_equal(cache, load_cache(path, device="cpu"))
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "todo.txt").write_text("keep me")
    with pytest.raises(ValueError, match="already holds files and is not an atlaswidgets store"):
        save_cache(cache, notes, overwrite=True)
    assert files(notes) == ["todo.txt"]


# ----------------------------------------------------------------------------- paths and arguments


def test_a_tilde_means_the_home_directory(cache, model, data, tmp_path, monkeypatch):
    home, cwd = tmp_path / "home", tmp_path / "cwd"
    home.mkdir(), cwd.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(cwd)
    path = cache.save("~/aw_store", shard_samples=16)
    assert path == home / "aw_store" and files(path)[0] == "manifest.json"
    assert files(cwd) == []  # no literal "./~"
    assert read_manifest("~/aw_store")["complete"]
    assert_caches_equal(cache, load_cache("~/aw_store", device="cpu"))
    assert_caches_equal(cache, ActivationCache.load("~/aw_store", device="cpu"))
    header = {"fingerprint": {}, "layers": {}, "input_hw": [1, 1], "classes": None, "meta": {}}
    store_mod.StoreWriter("~/w", header)
    assert files(home) == ["aw_store", "w"] and files(cwd) == []
    captured = cap(model, data, store="~/captured")
    assert captured.path == home / "captured" and files(cwd) == []  # icons are kept beside it


def test_a_path_below_a_file_is_refused_clearly(cache, model, data, tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(ValueError, match="afile' is a file, so .*sub' cannot be a directory below it"):
        cache.save(afile / "sub")
    with pytest.raises(ValueError, match="is a file, so .* cannot be a directory below it"):
        cap(model, data, store=afile / "sub" / "deeper")
    assert afile.read_text() == "x"


def test_shard_samples_takes_numpy_ints_but_not_bools(cache, tmp_path):
    import numpy as np

    path = cache.save(tmp_path / "s", shard_samples=np.int64(16))
    assert [s["stop"] for s in read_manifest(path)["shards"]] == [16, 32, 40]
    for bad in (True, np.bool_(True), "16", 16.0):
        with pytest.raises(TypeError, match="shard_samples must be a positive int"):
            cache.save(tmp_path / "t", shard_samples=bad)
    for bad in (0, np.int32(-1)):
        with pytest.raises(ValueError, match="shard_samples must be a positive int"):
            cache.save(tmp_path / "t", shard_samples=bad)
    assert not (tmp_path / "t").exists()


def test_load_refuses_a_model_that_is_not_a_module(cache, tmp_path):
    path = cache.save(tmp_path / "s")
    with pytest.raises(TypeError, match="model must be the torch.nn.Module the store was captured from.*got str"):
        ActivationCache.load(path, model="kitchen")
