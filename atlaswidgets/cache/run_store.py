"""The store side of one capture (``run._Run``): opening the store at ``capture(..., store=path)``
under its write lock, resuming from its verified shards, checking that the data fed is the data
they hold, and the manifest's header of the capture.

``_Run`` inherits these methods; they read and set its state (``path``, ``lock``, ``prior``,
``digests``, ``layer_info``, ...), which ``_Run.__init__`` creates.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from . import store as _store
from .data import DIGEST_SIZE
from .stats_capture import stats_from_shards

__all__ = ["_RunStore"]


class _RunStore:
    """The store methods of ``_Run`` (see the module docstring)."""

    def open_store(self, store: str | Path | None) -> None:
        if store is None:
            return
        self.path = Path(store).expanduser()
        self.lock = _store.lock_for_writing(self.path, "capture(..., store=path)")
        try:
            self._open_store()
        except BaseException:
            self.lock.release()
            raise

    def _open_store(self) -> None:
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
        # an incomplete store whose last shard is short lacks only its final manifest: written again
        self.reuse_whole = bool(manifest.get("complete")) and len(self.prior) == len(manifest["shards"])
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

    def _header(self) -> dict:
        layers = {n: {k: v for k, v in info.items() if k != "rows_per_sample"} for n, info in self.layer_info.items()}
        return {
            "fingerprint": dict(self.fingerprint),
            "layers": layers,
            "input_hw": list(self.input_hw),
            "classes": self.classes,
            "vocab": self.vocab,
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
            "input": self.kind,
            # the form of token batches, so a viewer's re-run can rebuild it (LayerOutputs)
            "token_inputs": self.token_inputs,
            "output": self.output,
            "atlaswidgets_version": __version__,
        }
