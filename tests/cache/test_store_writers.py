"""Writers and readers of one store at once, and writers that die (issue #17, items 1, 3, 4, 5).

Kill points are injected, not timed: the writer subprocess stops at a named step (holding the
store mid-capture until told to go on, then ``os._exit`` where the final manifest would be
written). Only the concurrent-reader test runs two processes freely, for a few seconds.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import save_file

from atlaswidgets.cache import lock as lock_mod
from atlaswidgets.cache import store as store_mod
from atlaswidgets.cache.capture import capture
from atlaswidgets.cache.lock import LOCK
from atlaswidgets.cache.store import load_cache, read_manifest

from .conftest import assert_caches_equal

ROOT = Path(__file__).resolve().parents[2]

# a capture into argv[1] of the data in argv[2] (shards of 8) that stops after its second shard
# until a line comes on stdin, then dies where the final manifest would be written
WRITER = """
import os, sys
from safetensors.torch import load_file
from atlaswidgets.cache import store
from atlaswidgets.cache.capture import capture
from tests.cache.conftest import TinyCNN

store.StoreWriter.finish = lambda self, **kw: os._exit(9)  # killed before the final manifest
d = load_file(sys.argv[2])
def batches():
    for i in range(0, 40, 8):
        if i == 16:
            print("writing", flush=True)
            sys.stdin.readline()
        yield d["images"][i:i + 8], d["labels"][i:i + 8]
capture(TinyCNN(0).eval(), batches(), ["conv1", "conv2"], per_image=4, progress=False,
        store=sys.argv[1], shard_samples=8)
"""

# re-saves the store at argv[1] over itself for argv[2] seconds, alternating its shard size
RESAVER = """
import sys, time
from atlaswidgets.cache.store import load_cache
cache = load_cache(sys.argv[1], device="cpu")
print("ready", flush=True)
end, n = time.monotonic() + float(sys.argv[2]), 0
while time.monotonic() < end:
    cache.save(sys.argv[1], shard_samples=(8, 16)[n % 2])
    n += 1
print(n, flush=True)
"""


def spawn(script, *args):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    return subprocess.Popen([sys.executable, "-c", script, *map(str, args)], cwd=ROOT, env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def cap(model, data, **kw):
    return capture(model, data, ["conv1", "conv2"], per_image=4, progress=False, **kw)


@pytest.fixture(scope="module")
def reference(model, data):
    return cap(model, data)


# ----------------------------------------------------------------------------- items 1 and 3


def test_one_writer_at_a_time_and_a_dead_writers_store_finishes(model, data, reference, tmp_path):
    path, file = tmp_path / "s", tmp_path / "data.safetensors"
    save_file({"images": data[0].contiguous(), "labels": data[1].contiguous()}, file)
    writer = spawn(WRITER, path, file)
    try:
        assert writer.stdout.readline().strip() == "writing"  # holds the store, two shards in
        holder = rf"being written by process {writer.pid} on host '{socket.gethostname()}', since "
        with pytest.raises(ValueError, match=holder + r".*one writer at a time\. Wait until it "
                                             r"finishes, or use another path for capture\(\.\.\., store=path\)"):
            cap(model, data, store=path, shard_samples=8)
        with pytest.raises(ValueError, match=holder + r".*or use another path for cache\.save\(path\)"):
            reference.save(path, overwrite=True)
        assert json.loads((path / LOCK).read_text())["pid"] == writer.pid
        writer.stdin.write("go\n")
        writer.stdin.flush()
        assert writer.wait(timeout=120) == 9  # died at the kill point, its lock file left behind
    finally:
        writer.kill()
        writer.wait()
    # every shard written, the final manifest not: the store was stuck "incomplete" for good
    manifest = read_manifest(path)
    assert [r["stop"] for r in manifest["shards"]] == [8, 16, 24, 32, 40] and not manifest["complete"]
    assert (path / LOCK).exists()
    with pytest.raises(ValueError, match="is incomplete: its capture was interrupted"):
        load_cache(path, device="cpu")
    resumed = cap(model, data, store=path)  # the dead writer's lock is taken over
    assert_caches_equal(reference, resumed)
    assert read_manifest(path)["complete"]
    assert_caches_equal(reference, load_cache(path, model=model, device="cpu"))
    assert not (path / LOCK).exists()


@pytest.mark.parametrize("at", ["final manifest", "last short shard"])
def test_a_store_stuck_incomplete_finishes_on_the_next_capture(model, data, reference, tmp_path,
                                                             monkeypatch, at):
    # 40 samples in shards of 16: the last shard is short, so a resume treats it as the end of
    # the data; the disk filling at the final manifest write (or just after the short shard was
    # listed) left a store no later capture completed
    path = tmp_path / "s"
    write = store_mod.StoreWriter._write_manifest

    def full_disk(self):
        if at == "final manifest" and self.manifest["complete"]:
            raise OSError(28, "No space left on device")
        write(self)
        shards = self.manifest["shards"]
        if at == "last short shard" and shards and shards[-1]["stop"] == 40:
            raise OSError(28, "No space left on device")  # the short shard is listed, then no more

    monkeypatch.setattr(store_mod.StoreWriter, "_write_manifest", full_disk)
    with pytest.raises(OSError, match="No space left"):
        cap(model, data, store=path, shard_samples=16)
    monkeypatch.undo()
    assert [r["stop"] for r in read_manifest(path)["shards"]] == [16, 32, 40]
    assert not read_manifest(path)["complete"]
    again = cap(model, data, store=path)
    assert_caches_equal(reference, again)
    assert read_manifest(path)["complete"]
    assert_caches_equal(reference, load_cache(path, device="cpu"))


def test_a_dead_writers_lock_is_recovered_without_flock(model, data, tmp_path, monkeypatch):
    # where fcntl is missing (Windows) the lock file's pid says whether its writer lives
    monkeypatch.setattr(lock_mod, "fcntl", None)
    path = tmp_path / "s"
    path.mkdir()
    gone = subprocess.Popen(["true"])  # a pid that has ended
    gone.wait()
    host = socket.gethostname()
    (path / LOCK).write_text(json.dumps({"pid": gone.pid, "host": host, "started": "then"}))
    cap(model, data, store=path)
    assert not (path / LOCK).exists()
    (path / LOCK).write_text(json.dumps({"pid": os.getppid(), "host": host, "started": "now"}))
    with pytest.raises(ValueError, match=rf"being written by process {os.getppid()} on host"):
        cap(model, data, store=path)
    (path / LOCK).write_text(json.dumps({"pid": gone.pid, "host": "elsewhere", "started": "then"}))
    with pytest.raises(ValueError, match=r"host 'elsewhere'.*If that process has ended on another "
                                         rf"machine, delete '{path / LOCK}'"):
        cap(model, data, store=path)


def test_a_failed_capture_leaves_no_lock_and_no_empty_store(model, tmp_path):
    path = tmp_path / "new"
    with pytest.raises(ValueError, match="data is empty"):
        cap(model, iter([]), store=path)
    assert not path.exists()


# ----------------------------------------------------------------------------- item 4


def test_a_reader_during_re_saves_sees_the_old_or_the_new_store(reference, tmp_path):
    path = reference.save(tmp_path / "s", shard_samples=16)
    saver = spawn(RESAVER, path, 2.5)
    loads, shard_counts, errors = 0, set(), []
    try:
        assert saver.stdout.readline().strip() == "ready"
        while saver.poll() is None:
            try:
                got = load_cache(path, device="cpu")
            except ValueError as e:  # the store was fine: any error here is the bug
                errors.append(str(e))
                continue
            loads += 1
            assert_caches_equal(reference, got)
            shard_counts.add(len(read_manifest(path)["shards"]))
        saves = int(saver.stdout.readline())
    finally:
        saver.kill()
        saver.wait()
    assert errors == []
    assert saves >= 3 and loads >= 3, (saves, loads)
    assert not [f for f in os.listdir(tmp_path) if f != "s"]  # no aside or half-written copy left
    assert_caches_equal(reference, load_cache(path, device="cpu"))


def test_a_store_swapped_between_the_manifest_and_the_shards_is_read_again(reference, tmp_path,
                                                                           monkeypatch):
    # the deterministic form of the test above: a re-save lands just after the reader has read
    # the manifest (3 shards of 16) and before its first shard (the new store has 5 shards of 8)
    path = reference.save(tmp_path / "s", shard_samples=16)
    read = store_mod.read_shard
    swapped = []

    def re_saved_meanwhile(*args, **kw):
        if not swapped:
            swapped.append(reference.save(path, shard_samples=8))
        return read(*args, **kw)

    monkeypatch.setattr(store_mod, "read_shard", re_saved_meanwhile)
    assert_caches_equal(reference, load_cache(path, device="cpu"))
    assert swapped and len(read_manifest(path)["shards"]) == 5


# ----------------------------------------------------------------------------- item 5


def tree(path):
    return {name: (path / name).read_bytes() for name in sorted(os.listdir(path))}


def test_two_identical_captures_write_byte_identical_stores(model, data, reference, tmp_path):
    a = tmp_path / "a"
    cap(model, data, store=a, shard_samples=8)
    time.sleep(1.1)  # a timestamp at second resolution would differ
    b = tmp_path / "b"
    cap(model, data, store=b, shard_samples=8)
    first, second = tree(a), tree(b)
    assert list(first) == ["manifest.json"] + [f"shard-{i:05d}.safetensors" for i in range(5)]
    assert first == second
    # saving writes the same bytes too, and a re-save over the store changes none of them
    saved = reference.save(tmp_path / "c", shard_samples=8)
    reference.save(saved, shard_samples=8)
    assert tree(saved) == tree(reference.save(tmp_path / "d", shard_samples=8))


def test_a_store_this_process_cannot_write_is_reused_without_a_lock(model, data, reference, tmp_path,
                                                                  monkeypatch):
    # a shared, read-only copy of a complete store: reusing it whole writes nothing, so the lock
    # it cannot take is not needed (as root the permission itself cannot be taken away here)
    path = reference.save(tmp_path / "s", shard_samples=16)
    before = tree(path)

    def read_only(file, exclusive):
        raise OSError(errno.EROFS, "Read-only file system", str(file))

    monkeypatch.setattr(lock_mod, "_open", read_only)
    assert_caches_equal(reference, cap(model, data, store=path))
    assert tree(path) == before


def test_a_store_put_back_after_a_killed_re_save_has_no_stale_lock(reference, tmp_path, monkeypatch):
    from atlaswidgets.cache import files as files_mod

    path = reference.save(tmp_path / "s", shard_samples=16)
    real_rename = os.rename
    calls = []

    def killed_between_renames(src, dst):  # the old store goes aside, then the process "dies"
        calls.append(src)
        if len(calls) >= 2:
            raise OSError("killed")
        real_rename(src, dst)

    monkeypatch.setattr(files_mod.os, "rename", killed_between_renames)
    with pytest.raises(OSError, match="killed"):
        reference.save(path, shard_samples=8)
    monkeypatch.undo()
    aside = [n for n in os.listdir(tmp_path) if n.startswith(".s.old.tmp-")]
    assert not path.exists() and LOCK in os.listdir(tmp_path / aside[0])  # its writer's lock, aside
    monkeypatch.setattr(files_mod, "writer_gone", lambda sibling: True)  # the writer has died
    assert_caches_equal(reference, load_cache(path, device="cpu"))
    assert LOCK not in os.listdir(path)
