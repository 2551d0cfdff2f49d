"""Feature-visualisation icons for many directions at once, batched, seeded and cached on disk.

``render_icons(model, layer, directions, size=...)`` renders the icon objective of each direction
(an atlas cell's mean activation, say) in chunks of ``chunk`` directions: one forward and backward
pass per step for a whole chunk. With a ``store`` directory, results are kept under a key that
hashes everything that decides the pixels (model weights, layer, directions, whitening, settings),
in this layout::

    store/icons-<key>/
      manifest.json     format, key, settings, the chunks done (file, sha256, icon values)
      chunk-00000.png   sprite sheet of chunk 0's icons, while the run is unfinished
      ...
      icons.png         sprite sheet of all icons once complete (icon i at divmod(i, cols))
      index.json        per icon: direction index, variant, objective value; size, cols
      directions.npy    the directions, float32 (m, C), so the key can be checked against them

The key is the sha256 of its parts, which the manifest keeps (``parts``): the model's weights
fingerprint, the sha256 of the directions and of the whitening, and the settings. Besides the
``store`` directory, read-only icon sources (``add_icon_source``: the kitchen world ships the
icons of its notebooks' atlases) are looked up by the same key before anything renders.

Every file is written to a temporary name and renamed (the cache store's atomic writes), and a
chunk counts only when the manifest lists it with a matching sha256, so a run stopped at any
point resumes with the next chunk and gives the same icons as an uninterrupted run; a complete
store is read back without touching the model.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from ..cache.icon_sources import register, sources
from ..cache.progress import StepsBar, checked_progress
from ..cache.cache import ActivationCache
from ..cache.checks import int_at_least, int_in_range, number, random_seed
from ..cache.crops import sprite_sheet
from ..cache.hooks import eval_mode, forward_layers, on_device, resolve_layers
from ..cache.store import atomic_write, is_ours_tmp, model_fingerprint
from .fv import model_input, render
from .icon_files import (FORMAT, MANIFEST, SCHEMA_VERSION, _load_complete, _read_manifest,
                         _verified_chunks, _write_json)
from .objectives import _as_directions, diversity as _diversity, icon, whitening

__all__ = ["Icons", "IconSettings", "render_icons", "cell_icons", "unit_icon", "FORMAT",
           "add_icon_source", "icon_cache_dir", "CELL_ICON_DEFAULTS", "key_parts", "key_of", "receptive_side"]

# Settings for an atlas's cell icons (AtlasWidget's defaults, and the icons shipped for the
# notebooks). 128 steps: at 64 the kitchen icons were still mostly their shared start. With them,
# the icon side should be ``receptive_side``: the picture then fills the icon instead of sitting
# in a grey frame of pixels the unit never sees, which made every cell's icon look alike at the
# ~30 px a cell gets on screen.
CELL_ICON_DEFAULTS: dict[str, Any] = {"steps": 128}


def add_icon_source(path: str | Path) -> None:
    """Look up icons in ``path`` (a directory of ``icons-<key>/`` stores, read only) before
    rendering; a package that ships icons for its models registers its folder on import."""
    path = Path(path)
    if not path.is_dir():
        raise ValueError(f"{str(path)!r} is not a directory of icon stores.")
    register(path)


def icon_cache_dir() -> Path:
    """Where ``cell_icons`` keeps icons of a cache that has no store of its own:
    ``$ATLASWIDGETS_CACHE_DIR/icons``, else ``$XDG_CACHE_HOME/atlaswidgets/icons``, else
    ``~/.cache/atlaswidgets/icons``. Icons are built once there and read back in later sessions."""
    root = os.environ.get("ATLASWIDGETS_CACHE_DIR")
    if root:
        return Path(root) / "icons"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "atlaswidgets" / "icons"


@dataclass(repr=False)
class Icons:
    """Icons of a set of directions.

    icons : uint8 tensor, shape (m * per_direction, 3, size, size); the icons of direction i are
        rows ``i * per_direction`` .. ``(i + 1) * per_direction - 1``
    values : float32 array, shape (m * per_direction,), the icon objective each icon reaches
    direction : int64 array, shape (m * per_direction,), the direction index of each icon
    per_direction : icons per direction
    path : the store directory holding them, or None
    """

    icons: torch.Tensor
    values: np.ndarray
    direction: np.ndarray
    per_direction: int
    path: Path | None = None

    def __len__(self) -> int:
        return len(self.icons)

    def __repr__(self) -> str:
        where = f", stored at {str(self.path)!r}" if self.path is not None else ""
        return (f"Icons({len(self.icons) // max(self.per_direction, 1)} directions x "
                f"{self.per_direction}, size {self.icons.shape[-1]}{where})")

    def of(self, i: int) -> torch.Tensor:
        """The icons of direction ``i``: uint8 tensor, shape (per_direction, 3, size, size)."""
        m = len(self.icons) // self.per_direction
        i = int_in_range(i, "direction index", 0, m - 1)
        return self.icons[i * self.per_direction:(i + 1) * self.per_direction]


@dataclass(frozen=True)
class IconSettings:
    """How icons are rendered: everything besides the model, layer, directions and whitening that
    decides their pixels. Checked when made; ``replace(**changes)`` gives a changed copy.

    size : input image side in pixels (>= 8)
    steps, lr, param, transforms, seed, normalize : as in ``render`` (``aw.feature_vis``)
    power, position : of the icon objective (the article: cos^4 at the centre position)
    attempts : render each icon this many times from different random starts and keep the one
        with the highest objective (lowest loss)
    per_direction : icons per direction; with ``diversity`` > 0 a diversity term weighted by it
        pushes them apart
    chunk : directions per batch; a batch holds chunk * attempts * per_direction images
    """

    size: int
    steps: int = 256
    lr: float = 0.05
    power: float = 4.0
    position: Any = "center"
    attempts: int = 1
    per_direction: int = 1
    diversity: float = 0.0
    chunk: int = 32
    param: str | Callable = "fft"
    transforms: Any = "default"
    seed: int = 0
    normalize: Callable[[torch.Tensor], torch.Tensor] | None = None

    def __post_init__(self):
        checked = {
            "size": int_at_least(self.size, "size", 8),
            "steps": int_at_least(self.steps, "steps", 1),
            "attempts": int_at_least(self.attempts, "attempts", 1),
            "per_direction": int_at_least(self.per_direction, "per_direction", 1),
            "chunk": int_at_least(self.chunk, "chunk", 1),
            "seed": random_seed(self.seed),
        }
        number(self.diversity, "diversity", 0)
        for name in ("lr", "power"):
            number(getattr(self, name), name)
        for name, v in checked.items():
            object.__setattr__(self, name, v)

    def replace(self, **changes) -> "IconSettings":
        """A copy with ``changes`` (field names of IconSettings), checked again."""
        _check_fields(changes)
        return dataclasses.replace(self, **changes)

    def record(self, layer: str) -> dict:
        """The JSON-able record the icon store keys and keeps (the same fields as ever, so icons
        stored before settings objects existed are found again)."""
        position = self.position
        return {
            "layer": layer, "size": self.size, "steps": self.steps, "lr": float(self.lr),
            "power": float(self.power),
            "position": position if position is None or isinstance(position, str) else list(position),
            "attempts": self.attempts, "per_direction": self.per_direction,
            "diversity": float(self.diversity), "chunk": self.chunk, "param": repr(self.param),
            "transforms": repr(self.transforms), "seed": self.seed, "normalize": repr(self.normalize),
        }


def _check_fields(options: dict) -> None:
    fields = [f.name for f in dataclasses.fields(IconSettings)]
    unknown = [k for k in options if k not in fields]
    if unknown:
        raise TypeError(f"Unknown icon setting(s) {unknown}; the settings are {fields}.")


def icon_settings(settings: IconSettings | None = None, **options) -> IconSettings:
    """``settings`` with ``options`` (IconSettings field names, the old keywords) applied on top;
    without ``settings``, IconSettings(**options)."""
    if settings is not None and not isinstance(settings, IconSettings):
        raise TypeError(f"settings must be an IconSettings, got {type(settings).__name__}; or pass "
                        "the settings as keywords (size=..., steps=...).")
    _check_fields(options)
    if settings is not None:
        return settings.replace(**options) if options else settings
    if "size" not in options:
        raise TypeError("The icon size is required: pass settings=IconSettings(size=...) or size=....")
    return IconSettings(**options)


def render_icons(
    model: nn.Module,
    layer: str,
    directions,
    settings: IconSettings | None = None,
    *,
    whiten=None,
    device: torch.device | str | None = None,
    store: str | Path | None = None,
    progress: bool = True,
    **options,
) -> Icons:
    """Render the icon objective (``objectives.icon``) of every direction, many per batch.

    Parameters
    ----------
    model : torch.nn.Module taking (n, 3, size, size) images (after ``normalize``)
    layer : the ``named_modules()`` name of the layer the directions live in
    directions : array or tensor, shape (m, C): e.g. ``atlas.cells.mean_act``
    settings : IconSettings (size, steps, lr, power, position, attempts, per_direction,
        diversity, chunk, param, transforms, seed, normalize)
    options : the same settings as keywords (``size=64, steps=128``), as before settings objects;
        with ``settings`` they override its fields
    whiten : S, shape (C, C) (see ``objectives.whitening``), an ActivationCache holding ``layer``
        (S is computed from its activations), or None for a plain dot product
    device : as in ``render``; the model moves there once for all chunks
    store : a directory; results are kept in ``store/icons-<key>/`` and reused or resumed
    progress : show a bar counting optimisation steps (True: steps x chunks still to render,
        left in the output when done), nothing (False), or a callable
        ``progress(steps_done, steps_total)`` called after every optimisation step; an exception
        it raises stops the run there (the chunks finished so far stay in ``store``)

    Returns
    -------
    Icons
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}.")
    if not isinstance(layer, str):
        raise TypeError(f"layer must be a layer name (str), got {type(layer).__name__}.")
    resolve_layers(model, layer)  # unknown names fail here, with close matches
    dirs = _as_directions(directions)
    if dirs.ndim != 2:
        raise ValueError(f"directions must have shape (m, C), one row per icon; got {tuple(dirs.shape)}. "
                         "For one direction pass directions[None].")
    if not callable(progress):
        checked_progress(progress)
    cfg = icon_settings(settings, **options)
    s = _whitening(whiten, layer, dirs.shape[1])
    record = cfg.record(layer)
    # the model moves to ``device`` once for every chunk (render would move it there and back
    # for each); inside, everything runs where the model is
    report = progress if callable(progress) else StepsBar("icons", progress)
    try:
        with on_device(model, device):
            return _render_icons(model, dirs, s, record, cfg.normalize, cfg.param, cfg.transforms,
                                 store, report)
    finally:  # the bar stays in the output, closed on error too
        if isinstance(report, StepsBar):
            report.close()


def _render_icons(model, dirs, s, settings, normalize, param, transforms, store, report) -> Icons:
    """render_icons once the arguments are checked and the model is where it runs; ``report``
    is called with (steps done, steps in all chunks) after every optimisation step."""
    layer, chunk, per_direction = settings["layer"], settings["chunk"], settings["per_direction"]
    n_channels = _layer_channels(model, layer, settings["size"], normalize)
    if dirs.shape[1] != n_channels:
        raise ValueError(f"directions have length {dirs.shape[1]} but layer {layer!r} has "
                         f"{n_channels} channels; pass an (m, {n_channels}) array.")

    m = dirs.shape[0]
    starts = list(range(0, m, chunk))
    steps = settings["steps"]

    def run_chunk(k: int) -> tuple[torch.Tensor, np.ndarray]:
        lo, hi = starts[k], min(m, starts[k] + chunk)

        def callback(done: int) -> None:
            report(k * steps + done, len(starts) * steps)
        return _render_chunk(model, layer, dirs[lo:hi], s, settings, normalize, param,
                             transforms, settings["seed"] * 1_000_003 + k, callback)

    parts = key_parts(model, dirs, s, settings)
    key = key_of(parts)
    for source in sources():  # shipped icons: read only, found by key
        found = _complete(source / f"icons-{key[:24]}", key, m * per_direction, settings)
        if found is not None:
            return found
    if store is None:
        pieces = [run_chunk(k) for k in range(len(starts))]
        images = torch.cat([p[0] for p in pieces])
        values = np.concatenate([p[1] for p in pieces])
        return _icons(images, values, per_direction, None)

    path = Path(store) / f"icons-{key[:24]}"
    return _stored(path, key, parts, settings, dirs, m, starts, run_chunk)


def cell_icons(model: nn.Module, atlas, cache: ActivationCache | None = None,
               settings: IconSettings | None = None, **kwargs) -> Icons:
    """Icons of an atlas's visible cells: ``render_icons`` of ``atlas.cells.mean_act``.

    atlas : an Atlas (or ComparisonAtlas) whose layer is a ``named_modules()`` name of ``model``
    cache : the ActivationCache the atlas was built from; its activations give the whitening,
        and when it has a store directory (``cache.path``: captured with ``store=``, loaded or
        saved) the icons are kept there, else in ``icon_cache_dir()`` (a user cache folder), so
        a later session reads them back instead of rendering again. ``store=`` overrides that;
        ``store=None`` keeps them in memory only.
    settings, kwargs : passed to ``render_icons`` (an IconSettings, or at least ``size=``)
    Icon i belongs to the cell ``atlas.cells.ids[i]``.
    """
    means = getattr(getattr(atlas, "cells", None), "mean_act", None)
    if means is None:
        raise ValueError("The atlas has no cell mean activations (cells.mean_act); build it with "
                         "build_atlas(cache, ...).")
    kwargs.setdefault("whiten", cache)
    home = getattr(cache, "path", None)
    if "store" not in kwargs:
        if home is not None and os.access(home, os.W_OK):
            kwargs["store"] = home  # beside the activation store (a read-only one is left alone)
        else:
            kwargs["store"] = icon_cache_dir()
    return render_icons(model, atlas.layer, means, settings, **kwargs)


def unit_icon(model: nn.Module, layer: str, unit, input_hw, steps: int, normalize: Callable | None,
              prefix_tokens: int | None = None, callback: Callable | None = None) -> torch.Tensor:
    """A feature visualisation of one unit (the neuron viewer's icon), seed 0.

    unit : a channel index, or a direction of shape (n_channels,)
    input_hw : the model's input size (the cache's ``input_hw``); the icon is that size, or 64 px
        when it is unknown
    prefix_tokens : a ViT block's leading CLS/register tokens, as given to capture
    callback : as in ``render`` (steps done, after every step; an exception it raises stops it)
    Returns the image, shape (3, s, s), values in [0, 1].
    """
    from . import objectives

    size = int(min(input_hw)) if min(input_hw) >= 8 else 64
    obj = (objectives.channel(layer, unit, prefix_tokens=prefix_tokens) if isinstance(unit, int)
           else objectives.direction(layer, unit, prefix_tokens=prefix_tokens))
    return render(model, obj, size=size, steps=steps, normalize=normalize, seed=0,
                  callback=callback).images[0]


def receptive_side(model: nn.Module, layer: str, size: int,
                   normalize: Callable | None = None) -> int:
    """The side, in pixels, of the square of a ``size`` x ``size`` input that reaches the centre
    position of ``layer`` (its receptive field, cut to the image): the icon size at which the
    icon objective's picture fills the icon instead of sitting in a grey frame of pixels the unit
    never sees. ``size`` for a layer without a spatial grid. Found from the gradient of the centre
    activations on a grey image (one forward and backward pass), rounded up to an even number.
    """
    size = int_at_least(size, "size", 8)
    x = torch.full((1, 3, size, size), 0.5, requires_grad=True)
    with eval_mode(model), torch.enable_grad():
        out = forward_layers(model, (layer,), model_input(model, x, normalize))[layer]
        if isinstance(out, (tuple, list)):
            out = out[0]
        if not isinstance(out, torch.Tensor) or out.ndim != 4:
            return size
        h, w = out.shape[2:]
        (grad,) = torch.autograd.grad(out[0, :, h // 2, w // 2].abs().sum(), x)
    reach = grad.abs().sum((0, 1)) > 0
    rows, cols = reach.any(1).nonzero(), reach.any(0).nonzero()
    if len(rows) == 0:
        return size
    side = max(int(rows[-1] - rows[0]) + 1, int(cols[-1] - cols[0]) + 1)
    return min(size, max(8, side + side % 2))


# ----------------------------------------------------------------------------- rendering


def _whitening(whiten, layer: str, n_channels: int) -> torch.Tensor | None:
    if whiten is None:
        return None
    if isinstance(whiten, ActivationCache):
        if layer not in whiten.layers:
            raise ValueError(f"The cache passed as whiten has no layer {layer!r}; it has "
                             f"{list(whiten.layers)}.")
        return whitening(whiten[layer].acts)
    s = whiten.detach().float().cpu() if isinstance(whiten, torch.Tensor) else torch.as_tensor(np.asarray(whiten, dtype=np.float32))
    if s.shape != (n_channels, n_channels):
        raise ValueError(f"whiten must have shape ({n_channels}, {n_channels}), got {tuple(s.shape)}; "
                         "build it with objectives.whitening(cache[layer].acts), or pass the cache.")
    if not torch.isfinite(s).all():
        raise ValueError("whiten contains NaN or infinite values.")
    return s


def _layer_channels(model, layer, size, normalize) -> int:
    """The layer's channel count, from one forward pass on a grey image (checks the size works)."""
    x = torch.full((1, 3, size, size), 0.5)
    with eval_mode(model), torch.no_grad():
        out = forward_layers(model, (layer,), model_input(model, x, normalize))[layer]
    if isinstance(out, (tuple, list)):
        out = out[0]
    if not isinstance(out, torch.Tensor) or out.ndim not in (2, 4):
        raise ValueError(f"Layer {layer!r} gives {getattr(out, 'shape', type(out).__name__)}; icons need "
                         "an output of shape (n, C, H, W) or (n, C).")
    return int(out.shape[1])


def _render_chunk(model, layer, dirs, s, settings, normalize, param, transforms, seed, callback=None):
    """Icons of one chunk of directions: (images uint8 (k * per, 3, size, size), values (k * per,))."""
    a, per = settings["attempts"], settings["per_direction"]
    k = dirs.shape[0]
    # batch order: direction, then attempt, then variant
    rep = dirs.repeat_interleave(a * per, dim=0)
    position = settings["position"]
    position = tuple(position) if isinstance(position, list) else position
    score = icon(layer, rep, whiten=s, power=settings["power"], position=position)
    objective = score
    if per > 1 and settings["diversity"] > 0:
        groups = np.repeat(np.arange(k * a), per)
        objective = score + settings["diversity"] * _diversity(layer, groups)
    out = render(model, objective, size=settings["size"], param=param, steps=settings["steps"],
                 lr=settings["lr"], transforms=transforms, seed=seed, normalize=normalize,
                 callback=callback)
    images = out.images
    # the icon objective alone (without the diversity term) decides the best attempt
    with eval_mode(model), torch.no_grad():  # as render() scored them: batch statistics off
        x = model_input(model, images.float() / 255, normalize)
        values = score(forward_layers(model, (layer,), x)).float().cpu().numpy()
    if a > 1:
        per_attempt = values.reshape(k, a, per).sum(2)
        best = per_attempt.argmax(1)  # highest objective = lowest loss
        pick = ((np.arange(k) * a + best)[:, None] * per + np.arange(per)).reshape(-1)
        images, values = images[torch.as_tensor(pick)], values[pick]
    return images, values.astype(np.float32)


def _icons(images, values, per, path) -> Icons:
    direction = np.repeat(np.arange(len(images) // per), per).astype(np.int64)
    return Icons(images, values.astype(np.float32), direction, per, path)


# ----------------------------------------------------------------------------- the store


def _sha(t: torch.Tensor) -> str:
    return hashlib.sha256(t.detach().to("cpu", torch.float32).contiguous().numpy().tobytes()).hexdigest()


def key_parts(model: nn.Module, dirs: torch.Tensor, whiten: torch.Tensor | None, settings: dict) -> dict:
    """What decides an icon store's pixels, as JSON: the model's weights fingerprint, the sha256
    of the directions (float32, shape (m, C)) and of the whitening S (or None), and the settings
    record (``IconSettings.record``). ``key_of(parts)`` is the store's key."""
    return {"model": model_fingerprint(model), "directions": _sha(dirs),
            "shape": list(dirs.shape), "whiten": None if whiten is None else _sha(whiten),
            "settings": settings}


def key_of(parts: dict) -> str:
    """The key of an icon store: sha256 of its ``key_parts``."""
    return hashlib.sha256((FORMAT + json.dumps(parts, sort_keys=True)).encode()).hexdigest()


def _complete(path: Path, key: str, count: int, settings: dict) -> Icons | None:
    """The icons of a complete store at ``path`` made with ``key``, or None."""
    if not path.is_dir():
        return None
    manifest = _read_manifest(path, key)
    if manifest is None or not manifest.get("complete"):
        return None
    loaded = _load_complete(path, manifest, count, settings["size"])
    return None if loaded is None else _icons(loaded[0], loaded[1], settings["per_direction"], path)


def _stored(path: Path, key, parts, settings, dirs, m, starts, run_chunk) -> Icons:
    per = settings["per_direction"]
    manifest = _read_manifest(path, key)
    if manifest is not None and manifest.get("complete"):
        loaded = _load_complete(path, manifest, m * per, settings["size"])
        if loaded is not None:
            return _icons(loaded[0], loaded[1], per, path)
    path.mkdir(parents=True, exist_ok=True)
    for name in os.listdir(path):  # temporaries of a killed run are garbage by construction
        if is_ours_tmp(name):
            (path / name).unlink(missing_ok=True)
    done = _verified_chunks(path, manifest, settings["size"]) if manifest is not None else []
    manifest = {"format": FORMAT, "schema_version": SCHEMA_VERSION, "key": key, "parts": parts,
                "settings": settings, "n_directions": m, "chunks": [r for r, _ in done],
                "complete": False}
    _write_json(path / MANIFEST, manifest)
    pieces = [(imgs, np.asarray(r["values"], np.float32)) for r, imgs in done]
    for k in range(len(done), len(starts)):
        imgs, vals = run_chunk(k)
        png, cols = sprite_sheet(imgs)
        name = f"chunk-{k:05d}.png"
        atomic_write(path / name, png)
        manifest["chunks"].append({"file": name, "sha256": hashlib.sha256(png).hexdigest(),
                                   "count": len(imgs), "cols": cols, "values": vals.tolist()})
        _write_json(path / MANIFEST, manifest)
        pieces.append((imgs, vals))
    images = torch.cat([p[0] for p in pieces])
    values = np.concatenate([p[1] for p in pieces])
    _finish(path, manifest, images, values, per, dirs)
    return _icons(images, values, per, path)


def _finish(path: Path, manifest: dict, images: torch.Tensor, values: np.ndarray, per: int,
            dirs: torch.Tensor) -> None:
    png, cols = sprite_sheet(images)
    atomic_write(path / "icons.png", png)
    index = {"size": int(images.shape[-1]), "cols": cols, "count": len(images),
             "per_direction": per,
             "icons": [{"direction": i // per, "variant": i % per, "value": float(v)}
                       for i, v in enumerate(values)]}
    index_bytes = json.dumps(index, indent=1).encode("utf-8")
    atomic_write(path / "index.json", index_bytes)
    buf = io.BytesIO()
    np.save(buf, dirs.detach().to("cpu", torch.float32).numpy(), allow_pickle=False)
    atomic_write(path / "directions.npy", buf.getvalue())
    manifest["sheet"] = {"file": "icons.png", "sha256": hashlib.sha256(png).hexdigest(),
                         "index_sha256": hashlib.sha256(index_bytes).hexdigest(),
                         "directions_sha256": hashlib.sha256(buf.getvalue()).hexdigest()}
    manifest["complete"] = True
    _write_json(path / MANIFEST, manifest)
    for name in os.listdir(path):  # the chunks are in the sheet now
        if name.startswith("chunk-") and name.endswith(".png"):
            (path / name).unlink(missing_ok=True)
