"""The on-disk store of an activation cache: a directory of checksummed safetensors shards.

Layout::

    store/
      manifest.json            schema version, fingerprints, layer facts, the list of shards
      shard-00000.safetensors  samples [0, shard_samples)
      shard-00001.safetensors  samples [shard_samples, 2 * shard_samples)
      ...

A shard holds, for its range of samples, per layer ``{layer}/acts``, ``{layer}/sample_id`` and
``{layer}/yx`` (rows ordered by sample), ``{layer}/attr/{key}`` for each attribution target the
manifest lists under ``layers[layer]["attributions"]``, with each key's target (kind and class
ids) under ``layers[layer]["attribution_targets"]`` (both optional: stores without them load as
before, so they need no new schema version), ``{layer}/stats/...`` when the manifest lists a
``layers[layer]["stats"]`` config (optional likewise: the streamed statistics of the shard's
samples, see ``topk.py``; the cache's statistics are the exact merge of every shard's), and per
sample ``labels``, ``logits``, ``images`` (when kept), ``tokens`` (text captures: each sample's
valid token ids from the left, -1 after; shards may differ in width, joined padded with -1) and
``sample_digest`` (XXH3-128 of each
input sample, see ``data.sample_digests``); the manifest's record of a shard has ``data_sha256``,
the sha256 of its samples' digests. Every file is written to a temporary file in the same
directory, fsynced, then renamed over its final name, so a crash leaves either the old file or the new one.
The manifest is rewritten the same way after each shard. A shard counts only when the manifest
lists it with a sha256 that matches the file's bytes: "the file exists" proves nothing. A shard's
safetensors metadata is one key, ``{"samples": "start:stop"}`` (safetensors writes a map's keys
in random order; two identical captures must write byte-identical stores). Reading checks every
file (``shards.py``: regular files in the store, sized as their header says, holding the samples
and rows their record lists) and reads again when a re-save swapped the store meanwhile. One
writer at a time holds ``.atlaswidgets.lock`` in the store (``lock.py``).

Saving over an existing store writes the new store into a sibling directory
``.<name>.new.tmp-<host>-<pid>-<random>`` and swaps it in with two renames (the old store goes
aside to ``.<name>.old.tmp-...``, the new one takes its name, then the old one is removed), so the
old store stays loadable until the new one is complete. Should the process die between the two
renames, the next read or write of the path (by a process on the same host) renames the aside
copy back; a dead writer's half-written ``.new`` directory is removed.

No pickle anywhere: tensors go through safetensors, everything else through JSON.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Iterable

import torch
from safetensors.torch import save as _st_save

from .cache import ActivationCache
from .checks import positive_int
from .files import (MANIFEST, atomic_write, check_parents, is_ours_tmp, is_shard, recover, replace_dir,
                    sha256_bytes, shard_name, siblings, swap_in_progress, user_path, wait_for_swap)
from .fingerprint import config_differences, data_sha256, describe_differences, model_fingerprint
from .hooks import check_device, env_device
from .lock import LOCK, StoreLock, lock_store
from .manifest import check_coverage, check_structure
# a cache cut into shard pieces and pieces joined back (pieces.py); join is used from here by run.py
from .pieces import assemble, shard_of
from .pieces import join as join
from .shards import StoreDir, check_shard, read_shard

__all__ = ["SCHEMA_VERSION", "FORMAT", "save_cache", "load_cache", "read_manifest", "model_fingerprint"]

# 2: per-sample digests are XXH3-128 ("sample_digest", 16 bytes) instead of sha256
# ("sample_sha256", 32 bytes). A version 1 store is refused: resuming into it would compare
# digests of two different hashes and report different data.
# 3: text and ViT captures: each layer's "kind" ("grid" or "tokens"), the manifest's "vocab",
# per-sample "tokens" in the shards of text captures, and input digests that go through
# ``inputs.Batch``. Older stores are refused (their layers would be read as grids of unknown kind).
SCHEMA_VERSION = 3
FORMAT = "atlaswidgets.store"

# ----------------------------------------------------------------------------- reading


def read_manifest(path: str | Path) -> dict[str, Any]:
    """The manifest of a store, checked for format, schema version and structure (not for
    completeness)."""
    path = user_path(path, "read_manifest(path)")
    held, manifest, _ = open_store(path)
    held.close()
    return manifest


def open_store(path: Path, limit_s: float = 5.0) -> tuple[StoreDir, dict[str, Any], bytes]:
    """The store directory held open, its checked manifest and the manifest's bytes."""
    recover(path)
    deadline = time.monotonic() + limit_s
    while True:
        wait_for_swap(path)  # a re-save between its two renames: the name is back in a moment
        try:
            return _open_once(path)
        except (OSError, ValueError):
            # the name was checked, then another process set the store aside to put its new one
            # in place: that swap ends in a moment, and then the name holds a whole store again
            if not swap_in_progress(path) or time.monotonic() > deadline:
                raise
            time.sleep(0.005)


def _open_once(path: Path) -> tuple[StoreDir, dict[str, Any], bytes]:
    if not path.is_dir():
        raise ValueError(f"No store at {str(path)!r}: it is not a directory. Pass the directory "
                         "that cache.save(...) or capture(..., store=...) wrote." + _aside_hint(path))
    held = StoreDir(path)
    try:
        raw = _manifest_bytes(held, path)
        return held, parse_manifest(raw, path), raw
    except BaseException:
        held.close()
        raise


def _manifest_bytes(held: StoreDir, path: Path) -> bytes:
    if not os.path.lexists(path / MANIFEST):
        raise ValueError(
            f"{str(path)!r} has no {MANIFEST}, so it is not an atlaswidgets store (or a capture "
            "into it stopped before its first shard). Pass a store directory, or capture again "
            "with capture(..., store=path)."
        )
    return held.read_manifest_bytes()  # a regular file only, like the shards


def parse_manifest(raw: bytes, path: Path) -> dict[str, Any]:
    file = path / MANIFEST
    try:
        manifest = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise ValueError(f"{str(file)!r} is not valid JSON ({e}); the store is damaged. "
                         "Delete the directory and capture again.") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ValueError(f"{str(file)!r} is not an atlaswidgets store manifest "
                         f"(its format is {manifest.get('format') if isinstance(manifest, dict) else None!r}, "
                         f"expected {FORMAT!r}).")
    version = manifest.get("schema_version")
    if version != SCHEMA_VERSION:
        raise ValueError(
            f"The store at {str(path)!r} has schema version {version!r}, but this atlaswidgets "
            f"reads schema version {SCHEMA_VERSION}. Open it with the atlaswidgets version that "
            "wrote it, or capture the data again into a new directory."
        )
    check_structure(manifest, file)
    return manifest


def _aside_hint(path: Path) -> str:
    # a save killed between its renames, whose aside copy could not be renamed back here
    asides = siblings(Path(os.path.realpath(path)), "old")
    if not asides:
        return ""
    return (f" A save into it was interrupted; the previous store is at {str(asides[-1])!r}: "
            f"rename that directory to {str(path)!r} to get it back.")


def checked_shard(store: StoreDir | Path, record: dict, manifest: dict) -> dict[str, torch.Tensor]:
    """One shard's tensors, its file, checksum and structure checked (see ``shards``)."""
    tensors = read_shard(store, record)
    path = store.path if isinstance(store, StoreDir) else Path(store)
    check_shard(path, record, tensors, manifest["layers"], manifest.get("meta", {}).get("rows_per_sample"))
    return tensors


def verified_prefix(path: Path, manifest: dict) -> list[tuple[dict, dict[str, torch.Tensor]]]:
    """The leading shards whose files match their checksums, with their tensors (for resuming).

    A shard that is missing, damaged or out of order ends the prefix: it and everything after it
    is captured again.
    """
    path = user_path(path, "verified_prefix(path)")
    done = []
    expected_start = 0
    seen = set()
    with StoreDir(path) as held:
        for record in manifest.get("shards", []):
            if record.get("start") != expected_start or record["file"] in seen:
                break
            try:
                tensors = checked_shard(held, record, manifest)
            except ValueError:
                break
            done.append((record, tensors))
            seen.add(record["file"])
            expected_start = record["stop"]
    return done


# how often a load starts again when the store was replaced under it (each re-save is a swap of
# whole directories, so one retry normally suffices; several cover a loop of re-saves)
_LOAD_TRIES = 8


def load_cache(
    path: str | Path,
    model: torch.nn.Module | None = None,
    device: torch.device | str | None = None,
) -> ActivationCache:
    """Read a complete store into an ActivationCache.

    model : when given, refuse a store that was captured from a model with other weights
    device : where the activations go; default the ATLASWIDGETS_DEVICE environment variable when
        set, else CUDA when available, else CPU (images stay on CPU)
    A store re-saved by another process while it is read is read again: the result is the old
    store or the new one, never a mix (nor a "damaged" error).
    """
    if model is not None and not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be the torch.nn.Module the store was captured from (its "
                        f"weights are checked against the store), got {type(model).__name__}. "
                        "Pass the model, or leave model out to load without the check.")
    path = user_path(path, "ActivationCache.load(path)")
    for attempt in range(_LOAD_TRIES):
        held, manifest, raw = open_store(path)
        with held:
            try:
                pieces = _read_complete(held, manifest, model)
            except ValueError:
                if attempt + 1 < _LOAD_TRIES and _changed(held, raw):
                    continue  # replaced while read: read the store that is there now
                raise
        break
    dev = _default_device(device)
    cache = assemble(pieces, manifest, dev)
    if any("stats" in info for info in manifest["layers"].values()):
        from .stats_capture import stats_from_shards

        cache.stats = stats_from_shards(pieces, manifest["layers"], dev)
    cache.path = path
    return cache


def _changed(held: StoreDir, raw: bytes) -> bool:
    """Whether the store was replaced (renamed away) or rewritten since its manifest was read."""
    if held.moved():
        return True
    try:
        return held.read_manifest_bytes() != raw
    except ValueError:
        return True


def _read_complete(held: StoreDir, manifest: dict, model: torch.nn.Module | None) -> list[dict]:
    path = held.path
    if not manifest["complete"]:
        raise ValueError(
            f"The store at {str(path)!r} is incomplete: its capture was interrupted; call "
            "capture(..., store=path) again to resume it from its last complete shard."
        )
    check_coverage(manifest, path / MANIFEST)
    if model is not None:
        want = manifest.get("fingerprint", {}).get("model")
        if want is None:
            raise ValueError(f"The store at {str(path)!r} has no model fingerprint (it was saved "
                             "from a cache not made by capture()), so it cannot be checked "
                             "against a model; load it without model=.")
        if want != model_fingerprint(model):
            raise ValueError(
                f"The store at {str(path)!r} was captured from a different model "
                f"({manifest['fingerprint'].get('model_class')}, other weights) than the one "
                "passed. Capture this model's activations into a new directory."
            )
    return [checked_shard(held, r, manifest) for r in manifest["shards"]]


def _default_device(device: torch.device | str | None) -> torch.device:
    if device is not None:
        return check_device(device)
    return env_device() or torch.device("cuda" if torch.cuda.is_available() else "cpu")


# ----------------------------------------------------------------------------- writing


def _holds_store(path: Path, action: str) -> bool:
    """Whether ``path`` holds a store; False when it is absent or empty (only our temporaries).
    A file, a path below a file, or a directory holding other files is refused."""
    check_parents(path, action)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{str(path)!r} is a file, not a directory; {action} needs a directory. "
                         "Pass another path.")
    if not path.exists():
        return False
    entries = [e for e in os.listdir(path) if not is_ours_tmp(e) and e != LOCK]
    if not entries:
        return False
    if MANIFEST not in entries:
        raise ValueError(
            f"{str(path)!r} already holds files and is not an atlaswidgets store; refusing to "
            f"write into it. Pass a new or empty directory for {action}."
        )
    return True


def check_target(path: str | Path, fingerprint: dict, action: str, overwrite_hint: str = "") -> dict | None:
    """Make sure writing a store at ``path`` clobbers nothing; return its manifest if it is one.

    An absent or empty directory is fine, and so is a store captured the same way (same model,
    layers and policy). A file, a directory holding other files, or a store of another model,
    layer set or policy is refused.
    overwrite_hint : how the caller lets a store be replaced anyway, added to the refusal
    """
    path = user_path(path, action)
    recover(path)
    if not _holds_store(path, action):
        return None
    manifest = read_manifest(path)
    diff = config_differences(manifest.get("fingerprint", {}), fingerprint)
    if diff:
        raise ValueError(
            f"The store at {str(path)!r} was captured with {describe_differences(diff)} "
            f"than this {action}. Use another path, {overwrite_hint}or delete the directory "
            f"{str(path)!r} to replace it."
        )
    return manifest


def lock_for_writing(path: str | Path, action: str) -> StoreLock:
    """Take the write lock of the store at ``path`` (see ``lock.py``); release it when done.

    Refuses a path that is a file or below one, and a store another live process writes.
    """
    path = user_path(path, action)
    check_parents(path, action)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{str(path)!r} is a file, not a directory; {action} needs a directory. "
                         "Pass another path.")
    recover(path)
    wait_for_swap(path)
    _holds_store(path, action)  # a directory of other files is refused before a lock is put in it
    return lock_store(path, action)


class StoreWriter:
    """Writes a store shard by shard; the manifest is rewritten atomically after every shard.

    header : the manifest without "shards" and "complete": fingerprint, layers, input_hw,
        classes, meta
    done : records of shards already in the store that stay (a verified prefix when resuming)
    """

    def __init__(self, path: str | Path, header: dict, done: Iterable[dict] = ()):
        self.path = user_path(path, "StoreWriter(path)")
        self.path.mkdir(parents=True, exist_ok=True)
        # temporaries left by a process killed mid-write are garbage by construction
        for name in os.listdir(self.path):
            if is_ours_tmp(name):
                (self.path / name).unlink(missing_ok=True)
        self.manifest = {
            "schema_version": SCHEMA_VERSION,
            "format": FORMAT,
            **header,
            "shards": [dict(r) for r in done],
            "complete": False,
        }
        self._write_manifest()

    def _write_manifest(self) -> None:
        text = json.dumps(self.manifest, indent=1)
        atomic_write(self.path / MANIFEST, text.encode("utf-8"))

    def write_shard(self, tensors: dict[str, torch.Tensor], start: int, stop: int, data_sha: str | None) -> None:
        """Write the shard of samples [start, stop) and list it in the manifest."""
        index = len(self.manifest["shards"])
        cpu = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
        # one metadata key: safetensors writes a map's keys in a random order, and two identical
        # captures must give byte-identical files
        data = _st_save(cpu, metadata={"samples": f"{start}:{stop}"})
        name = shard_name(index)
        atomic_write(self.path / name, data)
        self.manifest["shards"].append(
            {"file": name, "sha256": sha256_bytes(data), "start": start, "stop": stop,
             "data_sha256": data_sha}
        )
        self._write_manifest()

    def finish(self, **updates: Any) -> None:
        """Mark the store complete (with final header updates) and drop stale shard files."""
        self.manifest.update(updates)
        self.manifest["complete"] = True
        self._write_manifest()
        listed = {r["file"] for r in self.manifest["shards"]}
        for name in os.listdir(self.path):
            if is_shard(name) and name not in listed:
                (self.path / name).unlink(missing_ok=True)


def layer_header(cache: ActivationCache) -> dict[str, dict]:
    """The manifest's per-layer facts of a cache."""
    out = {}
    for name, la in cache.layers.items():
        out[name] = {
            "hw": [int(v) for v in la.hw],
            "rf": [int(v) for v in la.rf],
            "channels": la.n_channels,
            "dtype": str(la.acts.dtype).removeprefix("torch."),
            "kind": la.kind,
        }
        if la.attributions:  # absent otherwise, so stores without attributions stay as they were
            out[name]["attributions"] = list(la.attributions)
            recorded = {k: la.attribution_targets[k].to_json()
                        for k in la.attributions if k in la.attribution_targets}
            if recorded:  # the ids of each key (a pair's two classes), never read from its spelling
                out[name]["attribution_targets"] = recorded
        if name in cache.stats:  # likewise: streamed statistics, stored whole in the first shard
            out[name]["stats"] = cache.stats[name].config
    return out


def save_cache(cache: ActivationCache, path: str | Path, shard_samples: int = 1024, *,
               overwrite: bool = False) -> Path:
    """Write ``cache`` as a store directory at ``path`` and return the path.

    shard_samples : samples per shard file. Rows must be ordered by sample (as capture() makes
        them) to be split into shards; otherwise the cache is written as one shard, keeping its
        row order.
    overwrite : replace whatever store is at ``path``, without checking that it holds this
        cache's capture. Needed to save a hand-made cache (one not made by capture(), so without
        a fingerprint) over an existing store, even the one it was loaded from.
    Refuses to write into a directory that holds other files, or (without ``overwrite``) over a
    store of another model, layer set, policy or data; a store of the same capture is rewritten.
    An existing store stays whole until the new one is complete (see the module docstring).
    """
    step = positive_int(shard_samples, "shard_samples")
    if not isinstance(overwrite, bool):
        raise TypeError(f"overwrite must be True or False, got {overwrite!r}.")
    if cache.n_samples == 0:
        raise ValueError("This cache holds no samples; there is nothing to save.")
    action = "cache.save(path)"
    path = user_path(path, action)
    lock = lock_for_writing(path, action)
    try:
        _save_locked(cache, path, step, overwrite, lock, action)
    finally:
        lock.release()
    cache.path = path  # its icons can be kept beside it from now on
    return path


def _save_locked(cache: ActivationCache, path: Path, step: int, overwrite: bool, lock: StoreLock,
                 action: str) -> None:
    fingerprint = dict(cache.meta.get("fingerprint", {}))
    replacing = _holds_store(path, action)
    if replacing and not overwrite:
        _check_replaceable(path, fingerprint, cache, action)
    n = cache.n_samples
    ordered = all(
        la.n_rows == 0 or bool((la.sample_id[1:] >= la.sample_id[:-1]).all())
        for la in cache.layers.values()
    )
    header = {
        "fingerprint": fingerprint,
        "layers": layer_header(cache),
        "input_hw": [int(v) for v in cache.input_hw],
        "classes": list(cache.classes) if cache.classes is not None else None,
        "vocab": list(cache.vocab) if cache.vocab is not None else None,
        "meta": cache.meta,
    }

    def write(directory: Path) -> None:
        if replacing:  # the new store carries the lock through the swap
            directory.mkdir()
            lock.take(directory)
        _write_store(cache, directory, header, step if ordered else n)

    if replacing:
        replace_dir(path, write)
    else:
        write(path)  # nothing there to lose: straight into place


def _check_replaceable(path: Path, fingerprint: dict, cache: ActivationCache, action: str) -> None:
    """Refuse to replace a store that may hold something else than this cache's data."""
    existing = check_target(path, fingerprint, action, overwrite_hint="pass overwrite=True, ")
    if existing.get("fingerprint", {}).get("data") is None and fingerprint.get("data") is None:
        # neither side was made by capture(): nothing tells whether they hold the same data,
        # and "both unknown" must not pass as "equal"
        raise ValueError(
            f"{str(path)!r} already holds a store, and neither it nor this cache was made by "
            "capture(), so there is no fingerprint telling whether they hold the same data; "
            "saving would replace it. Use another path, or pass overwrite=True to replace it."
        )
    if not _same_data(existing, fingerprint, cache):
        raise ValueError(
            f"The store at {str(path)!r} holds activations of other data, captured with the same "
            "model, layers and policy; saving would replace them. Use another path, pass "
            f"overwrite=True, or delete the directory {str(path)!r} to replace it."
        )


def _write_store(cache: ActivationCache, directory: Path, header: dict, step: int) -> None:
    writer = StoreWriter(directory, header)
    n = cache.n_samples
    for start in range(0, n, step):
        stop = min(n, start + step)
        tensors = shard_of(cache, start, stop)
        digest = data_sha256(cache.sample_digest, start, stop) if cache.sample_digest is not None else None
        writer.write_shard(tensors, start, stop, digest)
    writer.finish(n_samples=n)


def _same_data(manifest: dict, fingerprint: dict, cache: ActivationCache) -> bool:
    """Whether a store at the target holds this cache's data: then saving over it (say, with new
    attributions) loses nothing. An interrupted store is compared shard by shard."""
    if manifest.get("complete"):
        return manifest.get("fingerprint", {}).get("data") == fingerprint.get("data")
    digests = cache.sample_digest
    for record in manifest.get("shards", []):
        if digests is None or record.get("stop", 0) > cache.n_samples:
            return False
        if record.get("data_sha256") != data_sha256(digests, record["start"], record["stop"]):
            return False
    return True
