"""One capture's state: the batches fed, the sampled rows, the shards being filled and written.

``capture()`` (in ``capture.py``) checks its arguments and feeds each batch of the data to a
``_Run``; see that module's docstring for the policies, inputs and costs.
"""

from __future__ import annotations

import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch

from . import store as _store
from .buffers import Columns
from .cache import ActivationCache
from .data import (
    DIGEST_SIZE,
    LABEL_KEYS,
    _as_tensor,
    check_batch,
    check_display,
    check_finite,
    check_labels,
    display_hw,
    display_uint8,
    sample_digests,
)
from .hooks import model_dtype
from .inputs import (
    Batch,
    describe,
    make_batch,
    model_failed,
    select_logits,
    vocab_size_of,
)
from .run_store import _RunStore
from .sampling import LIST_HINT, Sampler, receptive_field
from .stats_capture import StatsRecorder
from .topk import ChannelStats

__all__ = ["_Run"]


class _Run(_RunStore):
    """State of one capture: shards being filled, shards reused from a store, the store writer
    (opening, resuming and the manifest's header: ``run_store._RunStore``).

    Pieces are dicts with a shard's keys ("{layer}/acts", "{layer}/sample_id", "{layer}/yx",
    "labels", "logits", "images", "sample_digest") covering consecutive samples [lo, hi).
    """

    def __init__(self, model, names, policy, per_image, seed, dtype, keep_images, to_display, classes,
                 shard_samples, stats_cfg=None, display_size=None):
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
        self.display_size = display_size
        if keep_images:  # what the display copies are shrunk to changes what the store holds
            self.fingerprint["policy"]["display_size"] = display_size
        self.stats_cfg = stats_cfg
        if stats_cfg is not None:  # only then: fingerprints of captures without stats stay as they were
            self.fingerprint["policy"]["stats"] = dict(stats_cfg)
        self.shard_samples = shard_samples
        self.model_dtype = model_dtype(model)
        self.dev = torch.device("cpu")
        self.path: Path | None = None
        self.writer: _store.StoreWriter | None = None
        self.lock = None  # the store's write lock, held from open_store() to close()
        self.reuse_whole = False  # a complete store, every shard verified: nothing to write
        self.prior: list[tuple[dict, dict]] = []  # (record, tensors) reused from the store
        self.closed = False  # the reused shards end the data: nothing may follow them
        self.checked = 0  # reused shards whose data hash has been compared
        self.layer_info: dict[str, dict] = {}
        self.input_hw: tuple[int, int] | None = None
        self.display_hw: tuple[int, int] | None = None  # of the display copies, set on the first batch
        self.logits_width = 0
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
        self.columns: Columns | None = None  # see _targets()
        self.targets: dict[str, torch.Tensor] = {}  # this batch's views of them

    def setup(self, forward, logits, vocab, prefix_tokens, preprocess) -> None:
        """The capture's input and output options (see capture's docstring)."""
        self.forward, self.logits_key, self.vocab, self.preprocess = forward, logits, vocab, preprocess
        self.prefix_tokens = prefix_tokens
        self.sampler.prefix_tokens = prefix_tokens
        self.vocab_size = vocab_size_of(self.model, vocab)
        self.kind: str | None = None  # the first batch's: "image", "tokens" or "other"
        self.token_inputs: str | list[str] | None = None  # token batches: "ids" or a dict's keys
        self.output = "per_sample"  # or "per_token", for (N, T, V) logits
        # options that change what is stored join the fingerprint, only when used: fingerprints
        # of captures without them stay as they were
        for key, value in (("logits", logits), ("prefix_tokens", prefix_tokens)):
            if value is not None:
                self.fingerprint["policy"][key] = value

    def batch_of(self, inputs: Any, labels: Any, index: int, n_classes: int | None) -> Batch:
        """One batch of the data as a checked Batch (images, tokens or other inputs)."""
        x = _as_tensor(inputs)
        token_ids = isinstance(x, torch.Tensor) and x.ndim == 2 and not x.is_floating_point() \
            and x.dtype != torch.bool
        if isinstance(x, torch.Tensor) and not token_ids and (
                self.forward is None or (x.ndim == 4 and x.is_floating_point())):
            images, labels = check_batch(x, labels, index, n_classes)
            batch = Batch("image", images, len(images), labels=labels)
        else:
            batch = make_batch(x, labels, index, self.forward, self.vocab_size, LABEL_KEYS)
            if batch.labels is not None:
                batch.labels = check_labels(batch.labels, batch.n, f"Batch {index}: labels", n_classes)
        if self.kind is not None and batch.kind != self.kind and batch.n:
            raise ValueError(f"Batch {index} holds {batch.kind} inputs, but the first batch held "
                             f"{self.kind} inputs; every batch must be of one kind.")
        return batch

    def close(self) -> None:
        self._hasher.shutdown(wait=True)
        if self.lock is not None:
            self.lock.release()

    # -- batches ----------------------------------------------------------------------------

    def feed(self, batch: Batch) -> None:
        n = batch.n
        if n == 0:
            return
        if self.kind is None:
            self.kind = batch.kind
            if self.kind == "tokens":
                self.token_inputs = sorted(batch.x) if isinstance(batch.x, dict) else "ids"
            if self.kind != "image":
                self.sampler.images = False
                self.keep_images = False  # nothing to show as a picture
            else:
                self.input_hw = (int(batch.x.shape[2]), int(batch.x.shape[3]))
                self.input_channels = int(batch.x.shape[1])
            self._first_batch(batch)
        elif self.kind == "image":
            images = batch.x
            hw = (int(images.shape[2]), int(images.shape[3]))
            if hw != self.input_hw:
                raise ValueError(f"Images of size {hw[0]}x{hw[1]} follow images of size "
                                 f"{self.input_hw[0]}x{self.input_hw[1]}; every batch must have the "
                                 "same height and width. Resize or crop them to one size.")
            if images.shape[1] != self.input_channels:
                raise ValueError(f"Images with {images.shape[1]} channels follow images with "
                                 f"{self.input_channels}; every batch must have the same channels.")
        if batch.labels is None:
            batch.labels = torch.full((n,), -1, dtype=torch.int64)
        start = self.seen
        self.seen += n
        if self.seen <= self.resume_at:  # reused from the store; only its data hash is needed
            self.digests += self._digests(batch)
            self._check_prior()
            return
        if self.closed:
            raise self._different_data(f"it has more than the store's {self.resume_at} samples")
        # hashing the inputs runs beside the forward pass (hashlib releases the GIL); the batch is
        # not touched by anything else until both are done (its compact tokens, which both read,
        # are made before)
        if batch.kind == "tokens":
            batch.compact_tokens()
        hashing = self._hasher.submit(self._digests, batch)
        try:
            piece = self._forward(batch, start)
        finally:
            digests = hashing.result()
        self.digests += digests
        self._check_prior()
        digest = torch.frombuffer(bytearray(digests), dtype=torch.uint8).reshape(n, DIGEST_SIZE)
        piece["sample_digest"] = self.targets.pop("sample_digest").copy_(digest) if self.targets else digest
        lo = start
        if start < self.resume_at:  # the batch straddles the resume point: drop the reused part
            piece = self._cut(piece, start, self.resume_at - start, n)
            lo = self.resume_at
        self.pending.append((lo, start + n, piece))
        while self.pending and self.pending[-1][1] - self.shard_start >= self.shard_samples:
            self._emit(self.shard_start + self.shard_samples)

    @staticmethod
    def _digests(batch: Batch) -> bytes:
        if batch.kind == "image":
            return sample_digests(batch.x, batch.labels)
        return batch.digests()

    def _call(self, batch: Batch, x: Any) -> Any:
        """The model's output on ``x``; a model that fails on the first batch gets an error that
        says what the batch looked like and how to pass it. The hooks' own errors pass through."""
        self.hook_error = None
        try:
            return batch.call(self.model, x, self.forward, self.preprocess)
        except Exception as e:
            if self.hook_error is not None or self.layer_info or isinstance(e, torch.cuda.OutOfMemoryError):
                raise
            if batch.kind == "image" and self.forward is None and isinstance(e, RuntimeError):
                failure = model_failed(batch.x, e)
                if failure is e:
                    raise
                raise failure from e
            cls = TypeError if isinstance(e, TypeError) else ValueError
            why = f"{type(e).__name__}: {str(e).rstrip('. ')}"
            if self.forward is not None:
                raise cls(f"forward= failed on the first batch, {describe(batch.x)}, with {why}. "
                          "Check that it takes one batch as the data gives it and returns the "
                          "model's output.") from e
            how = ("model(x)" if batch.kind == "image" else "model(**batch)" if isinstance(batch.x, dict)
                   else "model(ids)")
            raise cls(
                f"The model failed on the first batch, called as {how} with {describe(batch.x)}: "
                f"{why}. If the model takes its inputs another way, pass forward=fn, a function "
                "that calls it on one batch and returns its output, e.g. "
                "forward=lambda b: model(b['input_ids'], mask=b['attention_mask'])."
            ) from e

    def _probe(self, batch: Batch, names: list[str]) -> dict[str, tuple[tuple, Any]]:
        """Output shape of each layer, and for image inputs the input gradient of its channels'
        sum at the centre (token ids have no gradient: None)."""
        image = batch.kind == "image"
        x = batch.model_input(self.dev, self.model_dtype)
        if image:
            x = x.detach().clone().requires_grad_(True)
        self.sampler.begin("measure", 0)
        if batch.kind == "tokens":
            self.sampler.mask = batch.valid_tokens().to(self.dev)
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
            with torch.enable_grad() if image else torch.no_grad():
                out = self._call(batch, x)
                self._read_logits(out, batch.n, check=True)  # an unreadable output fails now
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

    def _read_logits(self, out: Any, n: int, check: bool = False) -> torch.Tensor:
        """Per-sample logits (N, V) float32; (N, 0) for per-token outputs (see capture's doc)."""
        picked = select_logits(out, n, self.logits_key)
        if picked.ndim == 3:
            if check:
                self.output = "per_token"
            return torch.zeros((n, 0), device=self.dev)
        if check:
            self.logits_width = int(picked.shape[1])
        if check and self.classes is not None and len(self.classes) != picked.shape[1]:
            raise ValueError(f"classes has {len(self.classes)} names, but the model's logits have "
                             f"{picked.shape[1]} columns; pass one class name per logit (or "
                             "classes=None), or logits= to read another output.")
        return picked.detach().float()

    def _first_batch(self, batch: Batch) -> None:
        """Measure each layer once: output shape, and receptive field by gradient."""
        probed = self._probe(batch.head(1), self.names)  # first: inputs the model cannot take fail here
        image = batch.kind == "image"
        if image and self.keep_images:  # after the probe, whose errors about the input layout come first
            warning = check_display(batch.x.to(self.dev), self.to_display)  # fail before more work
            if warning is not None and self.preprocess is None:
                # stacklevel: _first_batch < feed < capture < the caller's line
                warnings.warn(warning, UserWarning, stacklevel=4)
        # all units off at the centre of the first image give no gradient: ask a few more images
        dead = [n for n, (shape, g) in probed.items()
                if image and len(shape) == 4 and (g is None or not bool(g.any()))]
        if dead and batch.n > 1:
            probed.update({n: (probed[n][0], g) for n, (_, g) in self._probe(batch.head(8), dead).items()})
        for name, (shape, grad) in probed.items():
            tokens = len(shape) == 3 and not image
            if tokens:
                hw, rf, kind = (1, int(shape[1])), (1, 1), "tokens"
            else:
                grid = shape
                hw, kind = (grid[2], grid[3]) if len(grid) == 4 else (1, 1), "grid"
                rf = receptive_field(grad, self.input_hw) if len(grid) == 4 else self.input_hw
            rows = {"all": hw[0] * hw[1], "mean": 1}.get(self.policy, min(self.sampler.per_image, hw[0] * hw[1]))
            self.layer_info[name] = {
                "kind": kind,
                "hw": list(hw),
                "rf": list(rf),
                "channels": int(shape[2] if len(shape) == 3 else shape[1]),
                "dtype": self.fingerprint["policy"]["dtype"],
                "rows_per_sample": None if tokens and self.policy != "mean" else rows,
            }
            if self.stats_cfg is not None:
                self.layer_info[name]["stats"] = dict(self.stats_cfg)
        blind = [n for n, info in self.layer_info.items() if info["kind"] == "tokens" and self.kind == "other"]
        if blind:
            raise ValueError(
                f"Layer {blind[0]!r} outputs tokens (N, T, D), but the batches carry no input_ids and "
                "attention_mask, so capture cannot tell tokens from padding. Pass tokenized dict "
                "batches ({'input_ids': ..., 'attention_mask': ...}); a forward= function receives "
                "them as they are.")
        if self.kind != "image":
            self.input_hw = (1, max(info["hw"][1] for info in self.layer_info.values()))
        elif self.keep_images:
            rfs = [info["rf"] for info in self.layer_info.values()]
            self.display_hw = display_hw(self.input_hw, rfs, self.display_size)
        if self.path is not None and not self.reuse_whole:
            self.writer = _store.StoreWriter(self.path, self._header(), [r for r, _ in self.prior])

    def hook(self, name: str, out: Any) -> Any:
        """The forward hook: the sampler's slice, and the statistics of the whole output."""
        try:
            kept = self.sampler(name, out)  # validates the output first
            if self.recorder is not None and self.sampler.mode == "rows":
                self.recorder.feed(name, self.sampler.last.detach(), self.sampler.start, self.sampler.mask)
        except Exception as e:
            self.hook_error = e  # not the model's failure: _call lets it through unchanged
            raise
        return kept

    def sampler_output(self, name: str) -> Any:
        """What the hook kept of layer ``name`` in the latest forward pass."""
        value = self.recorded.get(name)
        if value is None or self.sampler.calls.get(name, 0) != 1:
            raise ValueError(f"Layer {name!r} did not run in the model's forward pass, so it has no "
                             f"output to capture. {LIST_HINT}")
        return value

    def _forward(self, batch: Batch, start: int) -> dict:
        n = batch.n
        x = batch.model_input(self.dev, self.model_dtype)
        self.sampler.begin("rows", start)
        if batch.kind == "tokens":
            self.sampler.mask = batch.valid_tokens().to(self.dev, non_blocking=True)
        targets = self._targets(start, n) if batch.kind == "image" else {}
        self.targets = targets
        self.sampler.targets = {name: targets[f"{name}/acts"] for name in self.names if targets}
        out = batch.call(self.model, x, self.forward, self.preprocess)
        piece: dict[str, torch.Tensor] = {}
        ids = torch.arange(start, start + n, device=self.dev)
        for name in self.names:
            rows, pos = self.sampler_output(name)
            info = self.layer_info[name]
            k = info["rows_per_sample"]
            w = info["hw"][1]
            if info["kind"] == "tokens" and pos is not None:  # (batch index, token index) per row
                bi, ti = pos
                sid = bi + start
                yx = torch.stack([torch.zeros_like(ti), ti], dim=-1)
            elif self.policy == "random" and pos is not None:
                sid = ids.repeat_interleave(k) if k > 1 else ids
                yx = torch.stack([pos // w, pos % w], dim=-1).reshape(-1, 2)
            else:  # the same grid for every sample ("all", or "random" on a small grid; -1 for "mean")
                sid = ids.repeat_interleave(k) if k > 1 else ids
                yx = self._grid(name).repeat(n, 1)
            piece[f"{name}/acts"] = rows.to(self.dev)
            piece[f"{name}/sample_id"] = sid.to(self.dev)
            piece[f"{name}/yx"] = yx.to(self.dev)
        piece["labels"] = batch.labels.to(self.dev, torch.int64)
        piece["logits"] = self._read_logits(out, n).to(self.dev)
        for key, value in piece.items():  # into the buffers (the acts are there already)
            if key in targets and value is not targets[key]:
                piece[key] = targets[key].copy_(value)
        if self.keep_images:  # from the inputs before preprocess, which the model alone sees
            piece["images"] = display_uint8(x, self.to_display, out=targets.get("images"), hw=self.display_hw)
        if batch.kind == "tokens":
            piece["tokens"] = batch.compact_tokens()
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
        """Views of the buffers (``Columns``) where this batch's columns go (a shard's keys), or {}
        for a resumed capture, which keeps pieces. One buffer per column when the data's length is
        known (no concatenation at the end), chunks joined once when it is not (see ``buffers``)."""
        if self.prior:
            return {}
        if self.columns is None:
            dev, specs = self.dev, {}
            for name, info in self.layer_info.items():
                k = info["rows_per_sample"]
                specs[f"{name}/acts"] = ((k, info["channels"]), self.sampler.dtype, dev)
                specs[f"{name}/sample_id"] = ((k,), torch.int64, dev)
                specs[f"{name}/yx"] = ((k, 2), torch.int64, dev)
            specs["labels"] = ((), torch.int64, dev)
            specs["logits"] = ((self.logits_width,), torch.float32, dev)
            if self.keep_images:
                specs["images"] = ((3, *self.display_hw), torch.uint8, dev)
            specs["sample_digest"] = ((DIGEST_SIZE,), torch.uint8, torch.device("cpu"))
            self.columns = Columns(specs, self.capacity)
        return self._flat_rows(self.columns.views(n))

    def _flat_rows(self, columns: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """A layer's columns (n, k, ...) as its rows (n * k, ...): a sample's k rows in a row."""
        rows = {f"{n}/{c}" for n in self.layer_info for c in ("acts", "sample_id", "yx")}
        return {key: v.flatten(0, 1) if key in rows else v for key, v in columns.items()}

    def _cut(self, piece: dict, lo: int, a: int, b: int) -> dict:
        """Rows of samples [lo + a, lo + b) of a piece that starts at sample lo. A layer's rows
        are found by their sample ids (ordered), so any number of rows per sample works."""
        out = {}
        bounds = {}
        for key, t in piece.items():
            layer = key.rpartition("/")[0]
            if layer in self.layer_info and "/" in key:
                if layer not in bounds:
                    sid = piece[f"{layer}/sample_id"]
                    want = torch.tensor([lo + a, lo + b], device=sid.device, dtype=sid.dtype)
                    bounds[layer] = torch.searchsorted(sid, want).tolist()
                r0, r1 = bounds[layer]
                out[key] = t[r0:r1]
            else:
                out[key] = t[a:b]
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
        check_finite(shard, self.names)
        stats = self.recorder.close_shard(self.shard_start) if self.recorder is not None else {}
        if self.writer is not None:
            tensors = {k: _store.join([p[k] for p in shard], k) for k in shard[0]}
            tensors.update(stats)
            data = self._data_hash(self.shard_start, stop)
            self.writer.write_shard(tensors, self.shard_start, stop, data)
        if self.columns is None:  # with buffers the cache is made from the buffers, not the pieces
            self.done.extend(shard)
        self.pending = rest
        self.shard_start = stop

    def _sequence_lengths(self, pieces: list[dict]) -> None:
        """Token layers' grid (1, T_max): T_max is the most valid tokens of any sample (the width
        of cache.tokens), which no batch split or padding changes."""
        if self.kind == "image":
            return
        longest = 1
        for p in pieces:
            if "tokens" in p:
                longest = max(longest, int(p["tokens"].shape[1]))
            else:
                for name, info in self.layer_info.items():
                    yx = p[f"{name}/yx"]
                    if info["kind"] == "tokens" and len(yx):
                        longest = max(longest, int(yx[:, 1].max()) + 1)
        for info in self.layer_info.values():
            if info["kind"] == "tokens":
                info["hw"] = [1, longest]
        self.input_hw = (1, longest)

    def finish(self) -> ActivationCache:
        if self.seen == 0:
            raise ValueError("data is empty: it yielded no images or texts. Pass at least one batch "
                             "(N, C, H, W) or (N, T).")
        if self.seen < self.resume_at:
            raise self._different_data(f"it has {self.seen} samples, fewer than the {self.resume_at} in the store")
        if self.pending:
            self._emit(self.seen)
        pieces = [tensors for _, tensors in self.prior] + self.done
        self._sequence_lengths(pieces)
        self.fingerprint["data"] = self._data_hash(0, self.seen)
        header = self._header()
        if self.writer is not None:
            self.writer.finish(fingerprint=header["fingerprint"], meta=header["meta"], n_samples=self.seen,
                               layers=header["layers"], input_hw=header["input_hw"])
        if self.columns is not None:
            # the pieces are views of the buffers: drop them, so that each chunk is freed as soon
            # as it is joined
            pieces = self.done = self.pending = []
            self.sampler.targets = self.targets = {}
            whole = self.columns.take()
            self.columns = None
            pieces = [self._flat_rows(whole)]
            del whole
        cache = _store.assemble(pieces, header, self.dev)
        cache.path = self.path
        cache.preprocess = self.preprocess
        cache.forward = self.forward  # in memory only, as preprocess: a function is not stored
        if self.recorder is not None:
            for name, part in self._stats_prior.items():
                self.recorder.add(name, part.to(self.dev))
            cache.stats = {n: self.recorder.total[n] for n in self.names if n in self.recorder.total}
        return cache
