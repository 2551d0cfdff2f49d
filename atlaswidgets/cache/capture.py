"""Capture activations of chosen layers into an ActivationCache.

Hooks live only inside the ``hooks()`` context manager and are removed in ``finally``, so a user's
model never keeps one, even after an error. ``capture()`` copies only the sampled slice of each
layer's output inside the hook (a gather on the device), so its cost is about one forward pass.

Sampling policies over the spatial positions of an (N, C, H, W) output:

- ``"all"``: every position, rows ordered by sample, then y, then x;
- ``"random"``: ``per_image`` positions per sample without replacement (all of them when the grid
  has fewer), ordered by position. The positions of sample ``i`` depend only on ``(seed, i)`` and
  the grid size, through an integer hash computed with int64 tensor ops, so they are the same for
  any batch size, after a resume, and on CPU and CUDA. Layers with the same grid size get the same
  positions, so their rows line up;
- ``"mean"``: the spatial mean, one row per sample with ``(y, x) = (-1, -1)``. Only this policy
  also accepts layers whose output is (N, C), such as a linear layer.

Cost: besides the forward pass, a capture hashes each input sample (XXH3-128, in a thread beside
the forward pass; the store uses it to recognise the data on resume), makes the uint8 display
copy, and probes each layer's receptive field once with one image's input gradient. When the data
announces its size (a tensor, a tuple, a DataLoader), rows are written straight into one buffer
per layer. bench/capture.py measures the ratio to a plain forward pass.

Devices: the cache's activations end where the model runs. By default that is CUDA when it is
available (a model on the CPU is moved there for the capture), else where the model is; with
``device=...``, there. A model that is moved for the capture is moved back afterwards. The model runs in
eval mode (dropout off, batch-norm statistics frozen); each module's training flag is restored.

Layer selection and the hooks context manager live in ``hooks.py``; they are re-exported here.
"""

from __future__ import annotations

import hashlib
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from . import store as _store
from .cache import ActivationCache
from .data import DIGEST_SIZE, batches, check_batch, check_display, display_uint8, logits_of, sample_digests
from .hooks import LayerSpec, eval_mode, hooks, model_dtype, on_device, resolve_layers
from .sampling import LIST_HINT, Sampler, receptive_field
from .stats_capture import StatsRecorder, stats_from_shards
from .targets import model_classes
from .topk import ChannelStats, stats_config

__all__ = ["resolve_layers", "hooks", "capture"]

POLICIES = ("random", "all", "mean")
_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


# ----------------------------------------------------------------------------- capture


def capture(
    model: nn.Module,
    data: Any,
    layers: LayerSpec,
    sample: str = "random",
    per_image: int = 8,
    seed: int = 0,
    device: torch.device | str | None = None,
    batch_size: int = 64,
    keep_images: bool = True,
    classes: Sequence[str] | None = None,
    store: str | Path | None = None,
    shard_samples: int = 1024,
    progress: bool = True,
    dtype: torch.dtype = torch.float32,
    to_display: Callable[[torch.Tensor], torch.Tensor] | None = None,
    stats: bool | dict | None = None,
) -> ActivationCache:
    """Run ``model`` over ``data`` and keep the sampled activations of ``layers``.

    data : float tensor (N, C, H, W) (cut into batches of ``batch_size``), a tuple
        (images, labels, ...) such as ``kitchen.dataset(n)``, a dict of columns, or an iterable
        (a DataLoader) of image batches, (images, labels, ...) batches or dict batches. Dicts keep
        images under the first key of ``data.IMAGE_KEYS`` present ("images", "image",
        "pixel_values", ...) and labels under ``data.LABEL_KEYS`` ("labels", "label", ...).
        Labels are class indices, one per image, shape (N,): -1 for no label, and below
        ``len(classes)`` when class names are known (class names, one-hot rows or floats are
        refused with the fix to use). Missing labels become -1. Images may be normalised (see
        ``to_display``); they must be float and all of one height and width.
    layers : a ``named_modules()`` name, a list of names, or a predicate (name, module) -> bool
    sample : "random" (``per_image`` positions per sample, seeded), "all" or "mean" (see module doc)
    dtype : dtype of the cached activations (float32, float16 or bfloat16); logits stay float32
    keep_images : keep a uint8 copy (n_samples, 3, H, W) of the inputs for display, made by
        ``to_display(batch)`` (for normalised inputs: map them back to RGB in [0, 1]) or, without
        it, by clamping the inputs to [0, 1]. Inputs well outside [0, 1] without ``to_display``
        warn (UserWarning); a ``to_display`` that returns no floats, or values well outside
        [0, 1], is refused on the first batch
    store : a directory to stream shards of ``shard_samples`` samples into while capturing. If it
        already holds shards of the same capture (same model, layers, policy), they are reused after
        checking that the data matches, and the capture resumes after them with bit-identical results.
    classes : class names indexed by label, kept in the cache; default the model's own
        ``model.classes`` when it has them (the zoo's models do)
    stats : True, or a dict with any of ``k``, ``bins``, ``reservoir``, ``seed`` (see
        ``atlaswidgets.cache.topk``): also stream per-channel statistics over every spatial
        position of each layer (top-k samples, histograms, quantile-bin sketch) into
        ``cache.stats[layer]``, on the capture's device. Off by default (it costs extra passes
        over each layer's whole output).
    Returns an ActivationCache with activations, labels and logits on the model's device (see
    module doc), images and per-sample input checksums on the CPU. Raises ValueError/TypeError
    for bad layers, data or arguments, and for NaN or infinite activations.
    """
    if sample not in POLICIES:
        raise ValueError(f"sample must be one of {POLICIES}, got {sample!r}.")
    for arg, value in (("per_image", per_image), ("batch_size", batch_size), ("shard_samples", shard_samples)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{arg} must be a positive int, got {value!r}.")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}.")
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {[str(d) for d in _DTYPES]}, got {dtype!r}.")
    if classes is None:
        classes = model_classes(model)
    if classes is not None:
        if isinstance(classes, str) or not all(isinstance(c, str) for c in classes):
            raise TypeError("classes must be a list of class names (str), indexed by label.")
        classes = list(classes)
    names = resolve_layers(model, layers)
    stats_cfg = stats_config(stats)
    run = _Run(model, names, sample, int(per_image), int(seed), dtype, keep_images, to_display,
               classes, int(shard_samples), stats_cfg)
    run.open_store(store)
    # labels are checked against the class names before the model sees them: a pair's or a dict's
    # all at once here, an iterable's batch by batch in check_batch
    n_classes = len(classes) if classes else None
    stream, total = batches(data, int(batch_size), n_classes)
    run.capacity = total if total else None
    from tqdm.auto import tqdm

    bar = tqdm(total=total, unit="img", desc="capture", disable=not progress)
    try:
        # the model's place and each submodule's mode come back afterwards, even after an error
        with on_device(model, device) as dev, eval_mode(model):
            run.dev = dev
            with torch.no_grad(), hooks(model, names, run.hook) as recorded:
                run.recorded = recorded
                for i, (images, labels) in enumerate(stream):
                    images, labels = check_batch(images, labels, i, n_classes)
                    run.feed(images, labels)
                    bar.update(len(images))
            return run.finish()
    finally:
        bar.close()
        run.close()


def _model_failed(images: torch.Tensor, error: Exception) -> ValueError:
    """The error for a model that fails on the first image: almost always images of the wrong
    layout, channel count, size or dtype, which torch reports from deep inside a layer."""
    shape = tuple(images.shape[1:])
    hint = ""
    if images.shape[-1] in (1, 3, 4) and images.shape[1] not in (1, 3, 4):
        hint = (" They look channels-last (N, H, W, C); capture takes (N, C, H, W): pass "
                "images.permute(0, 3, 1, 2).")
    return ValueError(
        f"The model failed on the first image, of shape {shape} and dtype {images.dtype}, with "
        f"{type(error).__name__}: {str(error).rstrip('. ')}.{hint} Check that the images have the layout (C, H, W), "
        "channel count, size and normalisation the model was trained on."
    )


class _Run:
    """State of one capture: shards being filled, shards reused from a store, the store writer.

    Pieces are dicts with a shard's keys ("{layer}/acts", "{layer}/sample_id", "{layer}/yx",
    "labels", "logits", "images", "sample_digest") covering consecutive samples [lo, hi).
    """

    def __init__(self, model, names, policy, per_image, seed, dtype, keep_images, to_display, classes,
                 shard_samples, stats_cfg=None):
        self.model, self.names, self.policy = model, names, policy
        self.keep_images, self.to_display, self.classes = keep_images, to_display, classes
        self.sampler = Sampler(policy, per_image, seed, dtype)
        self.fingerprint = {
            "model": _store.model_fingerprint(model),
            "model_class": f"{type(model).__module__}.{type(model).__qualname__}",
            "layers": list(names),
            "policy": {
                "sample": policy,
                "per_image": per_image if policy == "random" else None,
                "seed": seed if policy == "random" else None,
                "dtype": str(dtype).removeprefix("torch."),
                "keep_images": bool(keep_images),
            },
        }
        self.stats_cfg = stats_cfg
        if stats_cfg is not None:  # only then: fingerprints of captures without stats stay as they were
            self.fingerprint["policy"]["stats"] = dict(stats_cfg)
        self.shard_samples = shard_samples
        self.model_dtype = model_dtype(model)
        self.dev = torch.device("cpu")
        self.path: Path | None = None
        self.writer: _store.StoreWriter | None = None
        self.prior: list[tuple[dict, dict]] = []  # (record, tensors) reused from the store
        self.closed = False  # the reused shards end the data: nothing may follow them
        self.checked = 0  # reused shards whose data hash has been compared
        self.layer_info: dict[str, dict] = {}
        self.input_hw: tuple[int, int] | None = None
        self.input_channels = 0
        self.recorded: dict[str, Any] = {}  # filled by hooks()
        self.seen = 0
        self.digests = bytearray()
        self.done: list[dict] = []  # pieces of finished shards
        self.pending: list[tuple[int, int, dict]] = []  # (lo, hi, piece) of the shard being filled
        self.shard_start = 0
        self._hasher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="atlaswidgets-hash")
        self._grids: dict[str, torch.Tensor] = {}
        self.capacity: int | None = None  # samples the data announces (len), when known
        self.recorder = StatsRecorder(stats_cfg, shard_samples) if stats_cfg is not None else None
        self._stats_prior: dict[str, ChannelStats] = {}  # merged partials of reused shards (CPU)
        self.buffers: dict[str, torch.Tensor] | None = None  # see _targets()

    def close(self) -> None:
        self._hasher.shutdown(wait=True)

    # -- store ------------------------------------------------------------------------------

    def open_store(self, store: str | Path | None) -> None:
        if store is None:
            return
        self.path = Path(store).expanduser()
        manifest = _store.check_target(self.path, self.fingerprint, "capture(..., store=path)")
        if manifest is None:
            return
        self.prior = _store.verified_prefix(self.path, manifest)
        if self.prior and self.stats_cfg is not None:
            for name, part in stats_from_shards([t for _, t in self.prior], manifest["layers"], "cpu").items():
                self._stats_prior[name] = part
        if self.prior:
            first = self.prior[0][0]
            self.shard_samples = first["stop"] - first["start"]  # keep the store's shard size
            last = self.prior[-1][0]
            self.closed = (manifest.get("complete") and len(self.prior) == len(manifest["shards"])) or (
                last["stop"] - last["start"] < self.shard_samples
            )
            self.shard_start = last["stop"]
        if self.recorder is not None:
            self.recorder.resume_at, self.recorder.shard_samples = self.resume_at, self.shard_samples

    @property
    def resume_at(self) -> int:
        return self.prior[-1][0]["stop"] if self.prior else 0

    def _check_prior(self) -> None:
        while self.checked < len(self.prior) and self.prior[self.checked][0]["stop"] <= self.seen:
            record = self.prior[self.checked][0]
            want = record.get("data_sha256")
            got = self._data_hash(record["start"], record["stop"])
            if want is None or want != got:
                raise ValueError(
                    f"The store at {str(self.path)!r} was captured from different data: the samples "
                    f"{record['start']}..{record['stop'] - 1} of this data do not match its shard "
                    f"{record['file']!r}. Pass the same data in the same order, use another path, or "
                    "delete the directory to capture afresh."
                )
            self.checked += 1

    def _data_hash(self, start: int, stop: int) -> str:
        """sha256 of the digests of samples [start, stop), as ``store.data_sha256`` computes it."""
        return hashlib.sha256(bytes(self.digests[start * DIGEST_SIZE : stop * DIGEST_SIZE])).hexdigest()

    def _different_data(self, why: str) -> ValueError:
        return ValueError(
            f"The store at {str(self.path)!r} was captured from different data: {why}. Pass the "
            "same data in the same order, use another path, or delete the directory."
        )

    # -- batches ----------------------------------------------------------------------------

    def feed(self, images: torch.Tensor, labels: torch.Tensor | None) -> None:
        n = len(images)
        if n == 0:
            return
        hw = (int(images.shape[2]), int(images.shape[3]))
        if self.input_hw is None:
            self.input_hw, self.input_channels = hw, int(images.shape[1])
            self._first_batch(images)
        elif hw != self.input_hw:
            raise ValueError(f"Images of size {hw[0]}x{hw[1]} follow images of size "
                             f"{self.input_hw[0]}x{self.input_hw[1]}; every batch must have the "
                             "same height and width. Resize or crop them to one size.")
        elif images.shape[1] != self.input_channels:
            raise ValueError(f"Images with {images.shape[1]} channels follow images with "
                             f"{self.input_channels}; every batch must have the same channels.")
        if labels is None:
            labels = torch.full((n,), -1, dtype=torch.int64)
        start = self.seen
        self.seen += n
        if self.seen <= self.resume_at:  # reused from the store; only its data hash is needed
            self.digests += sample_digests(images, labels)
            self._check_prior()
            return
        if self.closed:
            raise self._different_data(f"it has more than the store's {self.resume_at} samples")
        # hashing the inputs runs beside the forward pass (hashlib releases the GIL); the batch is
        # not touched by anything else until both are done
        hashing = self._hasher.submit(sample_digests, images, labels)
        try:
            piece = self._forward(images, labels, start)
        finally:
            digests = hashing.result()
        self.digests += digests
        self._check_prior()
        piece["sample_digest"] = torch.frombuffer(bytearray(digests), dtype=torch.uint8).reshape(n, DIGEST_SIZE)
        lo = start
        if start < self.resume_at:  # the batch straddles the resume point: drop the reused part
            piece = self._cut(piece, start, self.resume_at - start, n)
            lo = self.resume_at
        self.pending.append((lo, start + n, piece))
        while self.pending and self.pending[-1][1] - self.shard_start >= self.shard_samples:
            self._emit(self.shard_start + self.shard_samples)

    def _probe(self, images: torch.Tensor, names: list[str]) -> dict[str, tuple[tuple, Any]]:
        """Output shape of each layer, and the input gradient of its channels' sum at the centre."""
        x = self._to_model(images).detach().clone().requires_grad_(True)
        self.sampler.begin("measure", 0)
        probed = {}
        # only the input's gradient is wanted, so autograd need not track the weights; restored after
        flags = [(p, p.requires_grad) for p in self.model.parameters()]
        # one image is too little work to share out: on a busy CPU, threads waiting for each other
        # made this probe 20x slower than one thread (measured); restored after
        threads = torch.get_num_threads()
        try:
            if self.dev.type == "cpu":
                torch.set_num_threads(1)
            for p, _ in flags:
                p.requires_grad_(False)
            with torch.enable_grad():
                try:
                    out = self.model(x)
                except RuntimeError as e:  # torch's shape and dtype errors; the hooks raise others
                    raise _model_failed(images, e) from e
                logits_of(out, len(x))  # an output without logits fails now, not after a batch
                for name in names:
                    shape, centre = self.sampler_output(name)
                    grad = None
                    if centre is not None and centre.requires_grad:
                        (grad,) = torch.autograd.grad(centre, x, retain_graph=True, allow_unused=True)
                    probed[name] = (shape, grad)
        finally:
            torch.set_num_threads(threads)
            for p, flag in flags:
                p.requires_grad_(flag)
        return probed

    def _first_batch(self, images: torch.Tensor) -> None:
        """Measure each layer once: output shape, and receptive field by gradient."""
        probed = self._probe(images[:1], self.names)  # first: images the model cannot take fail here
        if self.keep_images:  # after the probe, whose errors about the input layout come first
            warning = check_display(images.to(self.dev), self.to_display)  # fail before more work
            if warning is not None:
                # stacklevel: _first_batch < feed < capture < the caller's line
                warnings.warn(warning, UserWarning, stacklevel=4)
        # all units off at the centre of the first image give no gradient: ask a few more images
        dead = [n for n, (shape, g) in probed.items() if len(shape) == 4 and (g is None or not bool(g.any()))]
        if dead and len(images) > 1:
            probed.update({n: (probed[n][0], g) for n, (_, g) in self._probe(images[:8], dead).items()})
        for name, (shape, grad) in probed.items():
            hw = (int(shape[2]), int(shape[3])) if len(shape) == 4 else (1, 1)
            rows = {"all": hw[0] * hw[1], "mean": 1}.get(self.policy, min(self.sampler.per_image, hw[0] * hw[1]))
            self.layer_info[name] = {
                "hw": list(hw),
                "rf": list(receptive_field(grad, self.input_hw) if len(shape) == 4 else self.input_hw),
                "channels": int(shape[1]),
                "dtype": self.fingerprint["policy"]["dtype"],
                "rows_per_sample": rows,
            }
            if self.stats_cfg is not None:
                self.layer_info[name]["stats"] = dict(self.stats_cfg)
        if self.path is not None and not self.closed:
            self.writer = _store.StoreWriter(self.path, self._header(), [r for r, _ in self.prior])

    def hook(self, name: str, out: Any) -> Any:
        """The forward hook: the sampler's slice, and the statistics of the whole output."""
        kept = self.sampler(name, out)  # validates the output first
        if self.recorder is not None and self.sampler.mode == "rows":
            self.recorder.feed(name, out.detach(), self.sampler.start)
        return kept

    def sampler_output(self, name: str) -> Any:
        """What the hook kept of layer ``name`` in the latest forward pass."""
        value = self.recorded.get(name)
        if value is None or self.sampler.calls.get(name, 0) != 1:
            raise ValueError(f"Layer {name!r} did not run in the model's forward pass, so it has no "
                             f"output to capture. {LIST_HINT}")
        return value

    def _to_model(self, images: torch.Tensor) -> torch.Tensor:
        x = images.to(self.dev, non_blocking=True)
        if self.model_dtype is not None and x.dtype != self.model_dtype:
            x = x.to(self.model_dtype)
        return x

    def _forward(self, images: torch.Tensor, labels: torch.Tensor, start: int) -> dict:
        n = len(images)
        x = self._to_model(images)
        self.sampler.begin("rows", start)
        targets = self._targets(start, n)
        self.sampler.targets = targets
        out = self.model(x)
        piece: dict[str, torch.Tensor] = {}
        ids = torch.arange(start, start + n, device=self.dev)
        for name in self.names:
            rows, pos = self.sampler_output(name)
            info = self.layer_info[name]
            k = info["rows_per_sample"]
            w = info["hw"][1]
            if self.policy == "random" and pos is not None:
                yx = torch.stack([pos // w, pos % w], dim=-1).reshape(-1, 2)
            else:  # the same grid for every sample ("all", or "random" on a small grid; -1 for "mean")
                yx = self._grid(name).repeat(n, 1)
            piece[f"{name}/acts"] = rows.to(self.dev)
            piece[f"{name}/sample_id"] = ids.repeat_interleave(k) if k > 1 else ids
            piece[f"{name}/yx"] = yx
        piece["labels"] = labels.to(self.dev, torch.int64)
        piece["logits"] = logits_of(out, n).to(self.dev)
        if self.keep_images:
            piece["images"] = display_uint8(x, self.to_display, out=targets.get("images"))
        return piece

    def _grid(self, name: str) -> torch.Tensor:
        """(y, x) of each of a layer's rows for one sample, shape (k, 2)."""
        grid = self._grids.get(name)
        if grid is None:
            h, w = self.layer_info[name]["hw"]
            if self.policy == "mean":
                grid = torch.full((1, 2), -1, dtype=torch.int64, device=self.dev)
            else:
                pos = torch.arange(h * w, device=self.dev)
                grid = torch.stack([pos // w, pos % w], dim=-1)
            self._grids[name] = grid
        return grid

    def _targets(self, start: int, n: int) -> dict[str, torch.Tensor]:
        """Views of the preallocated outputs where this batch's activations and images go.

        When the number of samples is known up front, the hook writes each batch straight into
        one buffer per layer: the cache then needs no concatenation at the end (for "all" that
        saved a copy of every activation). Data longer than announced falls back to pieces.
        """
        if self.buffers is None:
            if self.capacity is None or self.prior:
                return {}
            self.buffers = {}
            for name, info in self.layer_info.items():
                shape = (self.capacity * info["rows_per_sample"], info["channels"])
                self.buffers[f"{name}/acts"] = torch.empty(shape, dtype=self.sampler.dtype, device=self.dev)
            if self.keep_images:
                self.buffers["images"] = torch.empty(
                    (self.capacity, 3, *self.input_hw), dtype=torch.uint8, device=self.dev
                )
        if start + n > self.capacity:
            self.capacity = -1  # overflow: this and later batches make their own tensors
            return {}
        if self.capacity < 0:
            return {}
        out = {}
        for key, buf in self.buffers.items():
            k = self.layer_info[key[:-5]]["rows_per_sample"] if key.endswith("/acts") else 1
            out[key[:-5] if key.endswith("/acts") else key] = buf[start * k : (start + n) * k]
        return out

    def _cut(self, piece: dict, lo: int, a: int, b: int) -> dict:
        """Rows of samples [lo + a, lo + b) of a piece that starts at sample lo."""
        out = {}
        for key, t in piece.items():
            layer = key.rpartition("/")[0]
            k = self.layer_info[layer]["rows_per_sample"] if layer in self.layer_info and "/" in key else 1
            out[key] = t[a * k : b * k]
        return out

    # -- shards -----------------------------------------------------------------------------

    def _emit(self, stop: int) -> None:
        """Finish the shard of samples [shard_start, stop): check it, write it, keep it."""
        shard, rest = [], []
        for lo, hi, piece in self.pending:
            if hi <= stop:
                shard.append(piece)
            elif lo >= stop:
                rest.append((lo, hi, piece))
            else:
                shard.append(self._cut(piece, lo, 0, stop - lo))
                rest.append((stop, hi, self._cut(piece, lo, stop - lo, hi - lo)))
        self._check_finite(shard)
        stats = self.recorder.close_shard(self.shard_start) if self.recorder is not None else {}
        if self.writer is not None:
            tensors = {k: torch.cat([p[k] for p in shard]) if len(shard) > 1 else shard[0][k] for k in shard[0]}
            tensors.update(stats)
            data = self._data_hash(self.shard_start, stop)
            self.writer.write_shard(tensors, self.shard_start, stop, data)
        self.done.extend(shard)
        self.pending = rest
        self.shard_start = stop

    def _check_finite(self, shard: list[dict]) -> None:
        keys = [f"{n}/acts" for n in self.names] + ["logits"]
        for key in keys:
            for piece in shard:
                t = piece[key]
                # one reduction without a mask: the sum is finite unless some value is not (or the
                # sum overflows, which the exact check below then clears)
                if bool(torch.isfinite(t.sum(dtype=torch.float32))) or bool(torch.isfinite(t).all()):
                    continue
                row = int((~torch.isfinite(t)).reshape(len(t), -1).any(dim=1).nonzero()[0])
                if key == "logits":  # a piece's first row of any layer belongs to its first sample
                    sample, what = int(piece[f"{self.names[0]}/sample_id"][0]) + row, "The model's output (logits)"
                else:
                    sample, what = int(piece[key.replace("/acts", "/sample_id")][row]), f"Layer {key[:-5]!r}"
                raise ValueError(
                    f"{what} has NaN or infinite values, first at sample {sample}. Check the model's "
                    "weights and the inputs (normalisation, dtype); a cache with non-finite "
                    "activations would break the atlas, top examples and attribution."
                )

    def _header(self) -> dict:
        layers = {n: {k: v for k, v in info.items() if k != "rows_per_sample"} for n, info in self.layer_info.items()}
        return {
            "fingerprint": dict(self.fingerprint),
            "layers": layers,
            "input_hw": list(self.input_hw),
            "classes": self.classes,
            "meta": self._meta(),
        }

    def _meta(self) -> dict:
        from .. import __version__

        policy = self.fingerprint["policy"]
        return {
            "fingerprint": dict(self.fingerprint),
            **policy,
            "layers": list(self.names),
            "rf": {n: info["rf"] for n, info in self.layer_info.items()},
            "rows_per_sample": {n: info["rows_per_sample"] for n, info in self.layer_info.items()},
            "shard_samples": self.shard_samples,
            "n_samples": self.seen,
            "atlaswidgets_version": __version__,
        }

    def finish(self) -> ActivationCache:
        if self.seen == 0:
            raise ValueError("data is empty: it yielded no images. Pass at least one batch (N, C, H, W).")
        if self.seen < self.resume_at:
            raise self._different_data(f"it has {self.seen} samples, fewer than the {self.resume_at} in the store")
        if self.pending:
            self._emit(self.seen)
        self.fingerprint["data"] = self._data_hash(0, self.seen)
        header = self._header()
        if self.writer is not None:
            self.writer.finish(fingerprint=header["fingerprint"], meta=header["meta"], n_samples=self.seen)
        pieces = [tensors for _, tensors in self.prior] + self.done
        ready = {}
        if self.buffers is not None and self.capacity is not None and self.capacity >= 0:
            for key, buf in self.buffers.items():
                k = self.layer_info[key[:-5]]["rows_per_sample"] if key.endswith("/acts") else 1
                used = buf[: self.seen * k]
                ready[key] = used if len(used) == len(buf) else used.clone()  # free the unused tail
        cache = _store.assemble(pieces, header, self.dev, ready)
        cache.path = self.path
        if self.recorder is not None:
            for name, part in self._stats_prior.items():
                self.recorder.add(name, part.to(self.dev))
            cache.stats = {n: self.recorder.total[n] for n in self.names if n in self.recorder.total}
        return cache
