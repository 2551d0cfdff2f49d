"""A store's files must be what its manifest says: regular files inside the store, of the size their
safetensors header gives, holding the samples and rows their records list (issue #17, items 2, 6).

Every case is refused with the store's "damaged" ValueError naming the file, never a raw
SafetensorError / RuntimeError / RecursionError, a read of a device or a hang on a FIFO.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat

import pytest
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from atlaswidgets.cache.capture import capture
from atlaswidgets.cache.store import load_cache, read_manifest

from .conftest import assert_caches_equal

DAMAGED = r"Shard 'shard-00001.safetensors' of the store .* is damaged: "
FIX = r"\. Capture again with capture\(\.\.\., store=path\) to rewrite it, or restore the store from a backup"
SHARD = "shard-00001.safetensors"


def manifest_of(path):
    return json.loads((path / "manifest.json").read_text())


def write_manifest(path, manifest):
    (path / "manifest.json").write_text(json.dumps(manifest))


def forge(path, name, data):
    """Replace a shard's bytes and give the manifest its new checksum, as a careful forger would:
    the checksum then matches, and only the structure checks are left to catch it."""
    (path / name).write_bytes(data)
    manifest = manifest_of(path)
    for record in manifest["shards"]:
        if record["file"] == name:
            record["sha256"] = hashlib.sha256(data).hexdigest()
    write_manifest(path, manifest)


def refused(path, problem):
    with pytest.raises(ValueError, match=DAMAGED + problem + ".*" + FIX):
        load_cache(path, device="cpu")


# ----------------------------------------------------------------------------- item 2: regular files


@pytest.mark.parametrize("where", ["inside", "outside"])
def test_a_shard_that_is_a_symlink_is_refused_even_to_a_valid_file(store, tmp_path, where):
    copy = (store / ".kept" if where == "inside" else tmp_path / "elsewhere.safetensors")
    copy.write_bytes((store / SHARD).read_bytes())  # the same bytes: its checksum would match
    (store / SHARD).unlink()
    (store / SHARD).symlink_to(copy)
    refused(store, "it is a symbolic link; a store's files must be regular files inside the store")


def test_a_shard_linked_to_a_device_is_never_read(store):
    (store / SHARD).unlink()
    (store / SHARD).symlink_to("/dev/zero")  # read as it was, this filled memory
    refused(store, "it is a symbolic link")


def test_a_fifo_or_a_device_in_place_of_a_shard_is_refused_without_opening_it(store):
    (store / SHARD).unlink()
    os.mkfifo(store / SHARD)  # opening it for reading would block until a writer comes
    refused(store, r"it is a FIFO \(named pipe\), not a regular file")
    (store / SHARD).unlink()
    try:
        os.mknod(store / SHARD, stat.S_IFCHR | 0o600, os.makedev(1, 5))  # /dev/zero's numbers
    except (PermissionError, AttributeError):
        pytest.skip("making a device node needs root")
    refused(store, "it is a character device, not a regular file")


def test_a_manifest_that_is_a_symlink_is_refused(store, tmp_path):
    outside = tmp_path / "manifest-elsewhere.json"
    outside.write_bytes((store / "manifest.json").read_bytes())
    (store / "manifest.json").unlink()
    (store / "manifest.json").symlink_to(outside)
    with pytest.raises(ValueError, match=r"manifest .* is damaged: it is a symbolic link"):
        load_cache(store, device="cpu")


@pytest.mark.parametrize("change, problem", [
    (lambda b: b + b"\0" * 64, r"it has \d+ bytes, but its header describes \d+ \(truncated or padded\)"),
    (lambda b: b[:-64], r"it has \d+ bytes, but its header describes \d+ \(truncated or padded\)"),
    (lambda b: b[:4], r"it has 4 bytes, too few for a safetensors header"),
    (lambda b: (2**40).to_bytes(8, "little") + b[8:], r"its header claims 1099511627776 bytes but the file has \d+"),
])
def test_the_size_is_checked_against_the_header_before_the_bytes_are_read(store, change, problem):
    forge(store, SHARD, change((store / SHARD).read_bytes()))
    refused(store, problem)


def header_file(header: bytes, data: bytes = b"") -> bytes:
    return len(header).to_bytes(8, "little") + header + data


@pytest.mark.parametrize("forged, problem", [
    (header_file(b"[" * 100_000 + b"]" * 100_000), r"its header is not valid JSON \(RecursionError\)"),
    (header_file(b"{\"a\": "), r"its header is not valid JSON"),
    (header_file(b"\xff\xfe"), r"its header is not valid JSON \(UnicodeDecodeError\)"),
    (header_file(b"[1, 2]"), r"its header is not a JSON object"),
    (header_file(b'{"x": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}}', b"\0" * 4),
     r"its header's entry 'x' has offsets \[0, 4\] that do not fit its shape \[2\] and dtype F32"),
    (header_file(b'{"x": {"dtype": "Q7", "shape": [1], "data_offsets": [0, 1]}}', b"\0"),
     r"its header's entry 'x' is not a tensor description"),
    (header_file(b'{"x": {"dtype": "U8", "shape": [2], "data_offsets": [0, 2]},'
                 b' "y": {"dtype": "U8", "shape": [2], "data_offsets": [1, 3]}}', b"\0" * 3),
     r"its header's tensors overlap or leave gaps"),
    (header_file(b'{"__metadata__": {"samples": 3}}'), r"its header's __metadata__ is not a map of strings"),
])
def test_forged_safetensors_headers_give_the_damaged_store_error(store, forged, problem):
    forge(store, SHARD, forged)
    refused(store, problem)


def test_a_header_safetensors_itself_refuses_gives_the_damaged_store_error(store):
    # valid JSON to Python (the last of two equal keys wins), a duplicate field to safetensors
    forge(store, SHARD, header_file(b'{"__metadata__": {"a": "b"}, "__metadata__": {"a": "c"}}'))
    with pytest.raises(ValueError, match=DAMAGED + r"safetensors cannot read it \(SafetensorError"):
        load_cache(store, device="cpu")


# ----------------------------------------------------------------------------- item 6: structure


def rewrite(path, name, change, metadata=None):
    """A shard re-encoded with some tensors changed (and its checksum updated: see forge)."""
    tensors = dict(st_load((path / name).read_bytes()))
    change(tensors)
    forge(path, name, st_save(tensors, metadata=metadata))


def test_a_shard_listed_twice_is_refused(store):
    manifest = manifest_of(store)
    manifest["shards"][1]["file"] = manifest["shards"][0]["file"]
    manifest["shards"][1]["sha256"] = manifest["shards"][0]["sha256"]
    write_manifest(store, manifest)
    with pytest.raises(ValueError, match=r"manifest .* is damaged: shards\[1\]\['file'\] lists "
                                         r"'shard-00000.safetensors' a second time \(also shards\[0\]\)"):
        load_cache(store, device="cpu")


def test_two_swapped_shard_records_are_refused(store):
    # the files of shards 0 and 1 (16 samples each) traded places in the manifest: every checksum
    # matches, and without a check each image would be paired with another's activations
    manifest = manifest_of(store)
    a, b = manifest["shards"][0], manifest["shards"][1]
    a["file"], b["file"] = b["file"], a["file"]
    a["sha256"], b["sha256"] = b["sha256"], a["sha256"]
    write_manifest(store, manifest)
    with pytest.raises(ValueError, match=r"Shard 'shard-00001.safetensors' .* is damaged: it holds "
                                         r"samples 16..32 but the manifest lists it for samples 0..16 "
                                         r"\(shard records swapped"):
        load_cache(store, device="cpu")


def test_swapped_shards_without_their_sample_range_are_caught_by_their_digests(store):
    for name in ("shard-00000.safetensors", SHARD):  # as a hand-made file without metadata would be
        rewrite(store, name, lambda t: None, metadata=None)
    manifest = manifest_of(store)
    a, b = manifest["shards"][0], manifest["shards"][1]
    a["file"], b["file"], a["sha256"], b["sha256"] = b["file"], a["file"], b["sha256"], a["sha256"]
    write_manifest(store, manifest)
    with pytest.raises(ValueError, match=r"is damaged: its samples' digests are not those the "
                                         r"manifest's data_sha256 records"):
        load_cache(store, device="cpu")


@pytest.mark.parametrize("change, problem", [
    (lambda t: t.__setitem__("conv2/acts", t["conv2/acts"][:40]),
     r"layer 'conv2' has rows that do not pair up \(acts 40, sample_id 64, yx 64\)"),
    (lambda t: [t.__setitem__(k, t[k][:40]) for k in ("conv1/acts", "conv1/sample_id", "conv1/yx")],
     r"layer 'conv1' has 40 rows, but its 16 samples make 64 \(4 per sample\)"),
    (lambda t: t.__setitem__("conv1/sample_id", t["conv1/sample_id"] + 16),
     r"layer 'conv1' has rows of samples 32..47, outside the shard's samples 16..31"),
    (lambda t: t.__setitem__("labels", t["labels"][:10]), r"'labels' has 10 rows for the 16 samples 16..31"),
    (lambda t: t.pop("conv2/yx"), r"it lacks the tensor 'conv2/yx' that the manifest implies"),
    (lambda t: t.__setitem__("conv1/yx", t["conv1/yx"][:, :1].contiguous()),
     r"layer 'conv1' has positions of shape \(64, 1\), not \(rows, 2\)"),
])
def test_rows_that_do_not_match_the_samples_are_refused(store, change, problem):
    rewrite(store, SHARD, change, metadata={"samples": "16:32"})
    refused(store, problem)


def test_a_store_whose_shards_pass_every_check_loads_and_resumes(stored_cache, model, data, store):
    assert_caches_equal(stored_cache, load_cache(store, device="cpu"))
    # a damaged shard found while resuming ends the reused prefix: it is captured again
    (store / SHARD).unlink()
    (store / SHARD).symlink_to("/dev/zero")
    manifest = manifest_of(store)
    manifest["complete"] = False
    write_manifest(store, manifest)
    again = capture(model, data, ["conv1", "conv2"], per_image=4, progress=False, store=store)
    assert_caches_equal(stored_cache, again)
    assert not (store / SHARD).is_symlink()
    assert_caches_equal(stored_cache, load_cache(store, device="cpu"))
    assert [r["file"] for r in read_manifest(store)["shards"]] == [
        "shard-00000.safetensors", SHARD, "shard-00002.safetensors"]
