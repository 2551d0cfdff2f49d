"""The files of an icon store (see ``icons.py``): its JSON manifest, the PNG sheets of rendered
chunks and of the finished icons, and the checksums that decide what is reused. Anything that
fails a check reads as absent, so the icons are rendered again rather than shown wrong."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np
import torch

from ..cache.store import atomic_write

FORMAT = "atlaswidgets.icons"
SCHEMA_VERSION = 2
MANIFEST = "manifest.json"


def _write_json(file: Path, obj: dict) -> None:
    atomic_write(file, json.dumps(obj, indent=1).encode("utf-8"))


def _read_manifest(path: Path, key: str) -> dict | None:
    """The manifest of an icon store at ``path`` made with this key, or None to start afresh."""
    if path.exists() and not path.is_dir():
        raise ValueError(f"{str(path)!r} is a file; render_icons(store=...) needs a directory. "
                         "Pass another store path.")
    file = path / MANIFEST
    if not file.is_file():
        return None
    try:
        manifest = json.loads(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None  # damaged: render again, the atomic writes below replace it
    if (not isinstance(manifest, dict) or manifest.get("format") != FORMAT
            or manifest.get("schema_version") != SCHEMA_VERSION or manifest.get("key") != key):
        return None
    return manifest


def _decode(png: bytes, count: int, cols: int, size: int) -> torch.Tensor | None:
    from PIL import Image

    try:
        sheet = np.asarray(Image.open(io.BytesIO(png)).convert("RGBA"))
    except (OSError, ValueError):
        return None
    rows = -(-count // cols)
    if sheet.shape[:2] != (rows * size, cols * size):
        return None
    tiles = sheet[..., :3].reshape(rows, size, cols, size, 3).transpose(0, 2, 4, 1, 3)
    return torch.from_numpy(np.ascontiguousarray(tiles.reshape(rows * cols, 3, size, size)[:count]))


def _verified_chunks(path: Path, manifest: dict, size: int) -> list[tuple[dict, torch.Tensor]]:
    """The leading chunks whose PNGs match their checksums (a damaged one ends the prefix)."""
    done = []
    for record in manifest.get("chunks", []):
        try:
            data = (path / record["file"]).read_bytes()
        except (OSError, KeyError, TypeError):
            break
        if hashlib.sha256(data).hexdigest() != record.get("sha256"):
            break
        images = _decode(data, int(record["count"]), int(record["cols"]), size)
        if images is None or len(record.get("values", [])) != len(images):
            break
        done.append((record, images))
    return done


def _load_complete(path: Path, manifest: dict, count: int, size: int):
    """(icons, values) of a complete store, or None when its files fail their checksums."""
    sheet = manifest.get("sheet", {})
    try:
        png = (path / "icons.png").read_bytes()
        index_bytes = (path / "index.json").read_bytes()
    except OSError:
        return None
    if (hashlib.sha256(png).hexdigest() != sheet.get("sha256")
            or hashlib.sha256(index_bytes).hexdigest() != sheet.get("index_sha256")):
        return None
    index = json.loads(index_bytes)
    if index.get("count") != count:
        return None
    images = _decode(png, count, int(index["cols"]), size)
    if images is None:
        return None
    values = np.asarray([e["value"] for e in index["icons"]], dtype=np.float32)
    return images, values
