"""Reading a store's files safely: regular files inside the store only, sizes checked against
the safetensors header before the bytes are read, and a shard's structure checked once its
checksum matches (see ``store``'s docstring for the layout).

Every problem is the store's usual "damaged" ValueError, naming the file and what is wrong;
never a raw SafetensorError, RuntimeError or RecursionError, a read of ``/dev/zero`` or a FIFO
that never answers.

Files are opened relative to a descriptor of the store directory (``StoreDir``) where the
platform allows: a reader then keeps reading the store it opened even when a re-save swaps
another directory in under the same name (``load_cache`` retries when that happened).
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path

import torch
from safetensors.torch import load as _st_load

from .files import MANIFEST, sha256_bytes

__all__ = ["StoreDir", "damaged_shard", "read_shard", "check_shard"]

_DIR_FD = os.open in os.supports_dir_fd and os.stat in os.supports_dir_fd
_FLAGS = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
_MAX_HEADER = 100 * 2**20  # safetensors' own limit on a header's size
# bytes per element of the dtypes safetensors writes
_ITEMSIZE = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2,
             "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}


def damaged_shard(path: Path, name: str, problem: str) -> ValueError:
    return ValueError(
        f"Shard {name!r} of the store {str(path)!r} is damaged: {problem}. Capture again with "
        "capture(..., store=path) to rewrite it, or restore the store from a backup."
    )


class StoreDir:
    """A store directory held open, so that every file comes from the same directory.

    ``fd`` is None where the platform cannot open files relative to a directory (Windows): then
    names are joined to the path, and a swap during a read is caught by the caller's checks.
    """

    def __init__(self, path: Path):
        self.path = path
        self.fd: int | None = None
        if _DIR_FD:
            self.fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0))

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> StoreDir:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def moved(self) -> bool:
        """Whether the store's name now leads to another directory than the one held open."""
        if self.fd is None:
            return True  # cannot tell: assume it may have, a retry costs one more read
        try:
            now = os.stat(self.path)
        except OSError:
            return True
        mine = os.fstat(self.fd)
        return (mine.st_dev, mine.st_ino) != (now.st_dev, now.st_ino)

    def _lstat(self, name: str) -> os.stat_result:
        if self.fd is not None:
            return os.stat(name, dir_fd=self.fd, follow_symlinks=False)
        return os.lstat(self.path / name)

    def _open(self, name: str) -> int:
        if self.fd is not None:
            return os.open(name, _FLAGS, dir_fd=self.fd)
        return os.open(self.path / name, _FLAGS | getattr(os, "O_BINARY", 0))

    def open_regular(self, name: str, what: str) -> tuple[int, int]:
        """(fd, size) of the regular file ``name`` in the store; refuses links, FIFOs, devices,
        sockets and directories before opening (a FIFO would block, /dev/zero never ends)."""
        try:
            st = self._lstat(name)
        except OSError as e:
            raise self._error(name, what, f"it cannot be read ({e.strerror})") from None
        if stat.S_ISLNK(st.st_mode):
            raise self._error(name, what, "it is a symbolic link; a store's files must be regular "
                                          "files inside the store")
        if not stat.S_ISREG(st.st_mode):
            raise self._error(name, what, f"it is {_kind(st.st_mode)}, not a regular file")
        try:
            fd = self._open(name)  # O_NOFOLLOW: a link swapped in after the check is refused here
        except OSError as e:
            raise self._error(name, what, f"it cannot be read ({e.strerror})") from None
        now = os.fstat(fd)
        if not stat.S_ISREG(now.st_mode) or (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
            os.close(fd)
            raise self._error(name, what, "it was replaced while being opened")
        return fd, now.st_size

    def read_manifest_bytes(self) -> bytes:
        fd, size = self.open_regular(MANIFEST, "manifest")
        with os.fdopen(fd, "rb") as f:
            return f.read(size)

    def _error(self, name: str, what: str, problem: str) -> ValueError:
        if what == "manifest":
            return ValueError(f"The manifest {str(self.path / name)!r} is damaged: {problem}. Restore the "
                              "store directory from a backup, or delete it and capture again.")
        return damaged_shard(self.path, name, problem)


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISDIR, "a directory")):
        if test(mode):
            return name
    return "not a regular file"


# ----------------------------------------------------------------------------- one shard


def read_shard(store: StoreDir | Path, record: dict) -> dict[str, torch.Tensor]:
    """Tensors of one shard, after checking the file (regular, inside the store), its size
    against its header, its bytes against the manifest's sha256, and its structure against the
    record (samples, rows; see ``check_shard``)."""
    if not isinstance(store, StoreDir):
        with StoreDir(Path(store)) as held:
            return read_shard(held, record)
    path, name = store.path, record["file"]
    fd, size = store.open_regular(name, "shard")
    with os.fdopen(fd, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise damaged_shard(path, name, f"it has {size} bytes, too few for a safetensors header")
        n = int.from_bytes(head, "little")
        if n > min(size - 8, _MAX_HEADER):
            raise damaged_shard(path, name, f"its header claims {n} bytes but the file has {size} "
                                            "(truncated, or not a safetensors file)")
        header_bytes = f.read(n)
        header, expected = _parse_header(path, name, header_bytes)
        if 8 + n + expected != size:
            raise damaged_shard(path, name, f"it has {size} bytes, but its header describes "
                                            f"{8 + n + expected} (truncated or padded)")
        data = head + header_bytes + f.read(expected)
    if len(data) != size:
        raise damaged_shard(path, name, "it changed size while being read")
    if sha256_bytes(data) != record.get("sha256"):
        raise ValueError(
            f"Shard {name!r} of the store {str(path)!r} does not match its checksum in "
            f"{MANIFEST}: the file was changed or damaged. Capture again with "
            "capture(..., store=path) to rewrite it, or delete the directory."
        )
    try:
        tensors = _st_load(data)
    except Exception as e:  # safetensors' own error types vary with its version
        raise damaged_shard(path, name, f"safetensors cannot read it ({type(e).__name__}: {e})") from None
    _check_metadata(path, name, header.get("__metadata__"), record)
    return tensors


def _parse_header(path: Path, name: str, raw: bytes) -> tuple[dict, int]:
    """The header and the number of data bytes it describes, checked entry by entry."""
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise damaged_shard(path, name, f"its header is not valid JSON ({type(e).__name__})") from None
    if not isinstance(header, dict):
        raise damaged_shard(path, name, "its header is not a JSON object")
    spans = []
    for key, info in header.items():
        if key == "__metadata__":
            if not (info is None or (isinstance(info, dict) and all(isinstance(v, str) for v in info.values()))):
                raise damaged_shard(path, name, "its header's __metadata__ is not a map of strings")
            continue
        ok = isinstance(info, dict) and info.get("dtype") in _ITEMSIZE
        shape, offsets = (info.get("shape"), info.get("data_offsets")) if ok else (None, None)
        ok = ok and isinstance(shape, list) and all(type(d) is int and 0 <= d < 2**48 for d in shape)
        ok = ok and isinstance(offsets, list) and len(offsets) == 2 and all(type(o) is int for o in offsets)
        if not ok:
            raise damaged_shard(path, name, f"its header's entry {key!r} is not a tensor description")
        count = 1
        for d in shape:
            count *= d
        if not 0 <= offsets[0] <= offsets[1] or offsets[1] - offsets[0] != count * _ITEMSIZE[info["dtype"]]:
            raise damaged_shard(path, name, f"its header's entry {key!r} has offsets {offsets} that do "
                                            f"not fit its shape {shape} and dtype {info['dtype']}")
        spans.append(tuple(offsets))
    end = 0
    for lo, hi in sorted(spans):  # the tensors must tile the data: no overlap, no gap
        if lo != end:
            raise damaged_shard(path, name, "its header's tensors overlap or leave gaps in the data")
        end = hi
    return header, end


def _check_metadata(path: Path, name: str, meta: dict | None, record: dict) -> None:
    """The samples a shard says it holds must be the ones its manifest record lists (written
    as {"samples": "start:stop"}; stores of earlier versions wrote "start" and "stop")."""
    meta = meta or {}
    if "samples" in meta:
        held = meta["samples"]
    elif "start" in meta and "stop" in meta:
        held = f"{meta['start']}:{meta['stop']}"
    else:
        return  # written without the facts (a hand-made file): the rows are still checked
    listed = f"{record['start']}:{record['stop']}"
    if held != listed:
        raise damaged_shard(path, name, f"it holds samples {held.replace(':', '..')} but the manifest "
                                        f"lists it for samples {listed.replace(':', '..')} (shard "
                                        "records swapped, duplicated or edited)")


_PER_SAMPLE = ("labels", "logits", "images", "sample_digest", "tokens")


def check_shard(path: Path, record: dict, tensors: dict[str, torch.Tensor], layers: dict,
                rows_per_sample: dict | None = None) -> None:
    """Refuse a shard whose tensors disagree with its record or with each other: per-sample
    tensors of another length, a layer's acts / sample ids / positions / attributions of
    different row counts (or not ``rows_per_sample[layer]`` rows per sample, when the capture
    recorded it), sample ids outside the shard's samples, digests that are not the samples the
    record's data_sha256 names."""
    name, start, stop = record["file"], record["start"], record["stop"]
    n = stop - start
    for key in _PER_SAMPLE:
        t = tensors.get(key)
        if t is not None and (t.ndim == 0 or t.shape[0] != n):
            raise damaged_shard(path, name, f"{key!r} has {t.shape[0] if t.ndim else 0} rows for the "
                                            f"{n} samples {start}..{stop - 1}")
    digest = tensors.get("sample_digest")
    want = record.get("data_sha256")
    if digest is not None and want is not None:
        if hashlib.sha256(digest.contiguous().numpy().tobytes()).hexdigest() != want:
            raise damaged_shard(path, name, "its samples' digests are not those the manifest's "
                                            "data_sha256 records (shard records swapped or edited)")
    for layer, info in layers.items():
        keys = [f"{layer}/acts", f"{layer}/sample_id", f"{layer}/yx"]
        keys += [f"{layer}/attr/{k}" for k in info.get("attributions", [])]
        present = {k: tensors[k] for k in keys if k in tensors}
        if len(present) < len(keys):
            missing = next(k for k in keys if k not in tensors)
            raise damaged_shard(path, name, f"it lacks the tensor {missing!r} that the manifest implies")
        rows = {k: (int(t.shape[0]) if t.ndim else 0) for k, t in present.items()}
        if len(set(rows.values())) > 1:
            listed = ", ".join(f"{k.removeprefix(layer + '/')} {r}" for k, r in rows.items())
            raise damaged_shard(path, name, f"layer {layer!r} has rows that do not pair up ({listed})")
        k = (rows_per_sample or {}).get(layer) if isinstance(rows_per_sample, dict) else None
        got = next(iter(rows.values()))
        if type(k) is int and got != n * k:
            raise damaged_shard(path, name, f"layer {layer!r} has {got} rows, but its {n} samples "
                                            f"make {n * k} ({k} per sample)")
        sid = present.get(f"{layer}/sample_id")
        if sid is not None and sid.numel():
            lo, hi = int(sid.min()), int(sid.max())
            if lo < start or hi >= stop:
                raise damaged_shard(path, name, f"layer {layer!r} has rows of samples {lo}..{hi}, "
                                                f"outside the shard's samples {start}..{stop - 1}")
        yx = present.get(f"{layer}/yx")
        if yx is not None and (yx.ndim != 2 or yx.shape[1] != 2):
            raise damaged_shard(path, name, f"layer {layer!r} has positions of shape {tuple(yx.shape)}, "
                                            "not (rows, 2)")
