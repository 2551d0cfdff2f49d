"""Structure checks of a store's manifest.json (the reader's contract with the writer in ``store``)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from .checks import is_int
from .targets import Target

__all__ = ["check_structure", "check_coverage"]


# ----------------------------------------------------------------------------- manifest structure
# A manifest can be valid JSON and still not say what the reader needs (edited by hand, say).
# Every field the reader uses is checked here, so such a store fails with one clear message
# instead of a KeyError or TypeError deep in loading.


def _damaged(file: Path, field: str, problem: str) -> ValueError:
    return ValueError(
        f"The manifest {str(file)!r} is damaged: {field} {problem}. Restore the store directory "
        "from a backup, or delete it and capture again."
    )


def _check_pair(info: dict, key: str, where: str, file: Path) -> None:
    value = info.get(key)
    if not (isinstance(value, list) and len(value) == 2 and all(is_int(v) and v >= 0 for v in value)):
        field = f"{where}[{key!r}]" if where else repr(key)
        raise _damaged(file, field, f"must be a list of two non-negative ints, got {value!r}")


def check_structure(manifest: dict, file: Path) -> None:
    """Refuse a manifest whose fields have the wrong shape or type (see the comment above)."""
    layers = manifest.get("layers")
    if not isinstance(layers, dict):
        raise _damaged(file, "'layers'", f"must map each layer name to its facts, got {layers!r}")
    for name, info in layers.items():
        where = f"layers[{name!r}]"
        if not isinstance(info, dict):
            raise _damaged(file, where, f"must be an object, got {info!r}")
        _check_pair(info, "hw", where, file)
        _check_pair(info, "rf", where, file)
        attributions = info.get("attributions", [])
        if not (isinstance(attributions, list) and all(isinstance(a, str) for a in attributions)):
            raise _damaged(file, f"{where}['attributions']", f"must be a list of str, got {attributions!r}")
        if info.get("kind", "grid") not in ("grid", "tokens"):
            raise _damaged(file, f"{where}['kind']", f"must be 'grid' or 'tokens', got {info['kind']!r}")
        targets = info.get("attribution_targets", {})
        try:
            if not isinstance(targets, dict) or not set(targets) <= set(attributions):
                raise ValueError("must map stored attribution keys to targets")
            for value in targets.values():
                Target.from_json(value)
        except ValueError as err:
            raise _damaged(file, f"{where}['attribution_targets']", f"{err}, got {targets!r}") from None
        if not isinstance(info.get("stats", {}), dict):
            raise _damaged(file, f"{where}['stats']", f"must be an object, got {info['stats']!r}")
    _check_pair(manifest, "input_hw", "", file)
    vocab = manifest.get("vocab")
    if not (vocab is None or (isinstance(vocab, list) and all(isinstance(t, str) for t in vocab))):
        raise _damaged(file, "'vocab'", "must be a list of str or null")
    for key, kind, what in (("classes", (list, type(None)), "a list or null"),
                            ("meta", dict, "an object"), ("fingerprint", dict, "an object")):
        if not isinstance(manifest.get(key, {} if kind is dict else None), kind):
            raise _damaged(file, repr(key), f"must be {what}, got {manifest[key]!r}")
    if not isinstance(manifest.get("complete"), bool):
        raise _damaged(file, "'complete'", f"must be true or false, got {manifest.get('complete')!r}")
    if manifest["complete"] and not (is_int(manifest.get("n_samples")) and manifest["n_samples"] > 0):
        raise _damaged(file, "'n_samples'", f"must be a positive int, got {manifest.get('n_samples')!r}")
    shards = manifest.get("shards")
    if not isinstance(shards, list):
        raise _damaged(file, "'shards'", f"must be a list of shard records, got {shards!r}")
    first: dict[str, int] = {}
    for i, record in enumerate(shards):
        _check_record(record, f"shards[{i}]", file)
        if record["file"] in first:  # one file would stand for two ranges of samples
            raise _damaged(file, f"shards[{i}]['file']", f"lists {record['file']!r} a second time "
                                                         f"(also shards[{first[record['file']]}])")
        first[record["file"]] = i


_SHARD_FILE = re.compile(r"shard-\d+\.safetensors")  # a bare name: never a path out of the store


def _check_record(record: Any, where: str, file: Path) -> None:
    if not isinstance(record, dict):
        raise _damaged(file, where, f"must be an object, got {record!r}")
    name = record.get("file")
    if not (isinstance(name, str) and _SHARD_FILE.fullmatch(name)):
        raise _damaged(file, f"{where}['file']", f"must name a shard file like 'shard-00000.safetensors', "
                                                 f"got {name!r}")
    for key in ("start", "stop"):
        if not (is_int(record.get(key)) and record[key] >= 0):
            raise _damaged(file, f"{where}[{key!r}]", f"must be a non-negative int, got {record.get(key)!r}")
    if record["stop"] <= record["start"]:
        raise _damaged(file, where, f"has stop {record['stop']} not after start {record['start']}")
    if not isinstance(record.get("sha256"), str):
        raise _damaged(file, f"{where}['sha256']", f"must be a str, got {record.get('sha256')!r}")
    if not isinstance(record.get("data_sha256"), (str, type(None))):
        raise _damaged(file, f"{where}['data_sha256']", f"must be a str or null, got {record['data_sha256']!r}")


def check_coverage(manifest: dict, file: Path) -> None:
    """A complete store's shards must hold exactly the samples 0..n_samples, in order."""
    expected = 0
    for i, record in enumerate(manifest["shards"]):
        if record["start"] != expected:
            raise _damaged(file, f"shards[{i}] ({record['file']!r})",
                           f"starts at sample {record['start']} where {expected} was expected (a gap "
                           "or overlap in the shard list)")
        expected = record["stop"]
    if expected != manifest["n_samples"]:
        raise _damaged(file, "'shards'", f"cover samples 0..{expected}, but 'n_samples' records "
                                         f"{manifest['n_samples']} (a shard record is missing)")
