"""The NeuronViewer's feature-vis icon, rendered in a background thread so the kernel stays free.

A new unit's examples are shown at once; its icon (a second or more of CPU) renders in a daemon
thread and is handed to the kernel's main thread (its IO loop), where widget traits are set,
like the atlas's icons (``atlas_icons``). Until it arrives the icon slot says it is rendering.
Renders take ``RENDER_LOCK`` (one render of a model at a time, with the atlases'), and a unit
left is skipped, or stopped at its next step, so clicking through units queues no backlog.
The viewer's own model runs (activation maps, on the main thread) stop its render in progress
and take the viewer's model lock, which the render holds too: the render hooks the same model
and would see their activations. They do not take ``RENDER_LOCK``, which an atlas render in an
Explorer holds for all its chunks (tens of seconds): the kernel would wait for it.
"""

from __future__ import annotations

import hashlib
import threading
from contextlib import contextmanager

import numpy as np

from .atlas_icons import RENDER_LOCK, _Cancelled, _on_main
from .neuron_image import icon_png

__all__ = ["RENDERING_NOTE", "BackgroundIcon"]

RENDERING_NOTE = "feature visualisation: rendering in the background…"


class _IconJob:
    """One background render of one unit's icon."""

    def __init__(self, key: tuple, name: str, layer: str, unit):
        self.key, self.name, self.layer, self.unit = key, name, layer, unit
        self.cancel, self.done, self.lock = threading.Event(), threading.Event(), threading.Lock()
        self.result: tuple[bytes, str] | None = None
        self.applied = False


class BackgroundIcon:
    """The icon half of NeuronViewer (it supplies ``_model``, ``_icons``, ``_icon_steps``,
    ``_normalize``, ``_cache``, ``_icon_memo``, ``layer`` and the ``icon*`` traits)."""

    _icon_job: _IconJob | None = None

    def wait_icon(self, timeout: float | None = None) -> bool:
        """Block until the icon of the unit shown has arrived (for scripts and tests).

        Returns False when ``timeout`` seconds passed first, True otherwise."""
        job = self._icon_job
        if job is None:
            return True
        if not job.done.wait(timeout):
            return False
        self._apply_icon(job)
        return True

    @property
    def _model_lock(self) -> threading.Lock:
        """Held by this viewer's icon render and by its own model runs (made on the main
        thread, at the first _show, before any render thread starts)."""
        lock = getattr(self, "_model_lock_", None)
        if lock is None:
            lock = self._model_lock_ = threading.Lock()
        return lock

    @contextmanager
    def _model_turn(self):
        """The main thread's use of the model: the icon render in progress stops at its next
        step (a second render of the unit is cheaper than a kernel that waits for the first)."""
        job = self._icon_job
        if job is not None:
            job.cancel.set()
        with self._model_lock:
            yield

    def _send_icon(self, unit) -> None:
        """The unit's feature-vis icon: from memory, or started in the background."""
        if isinstance(unit, int):
            key = (self.layer, "channel", unit)
            name = f"{self.layer}:channel:{unit}"
        else:
            digest = hashlib.sha256(np.asarray(unit, dtype="<f4").tobytes()).hexdigest()[:16]
            key = (self.layer, "direction", digest)
            name = f"{self.layer}:direction:{digest}"
        if self._model is None or not self._icons:
            why = "no model given" if self._model is None else "icons=False"
            self._set_icon(None, b"", name, f"no feature-vis icon ({why})")
            return
        if key in self._icon_memo:
            png, note = self._icon_memo[key]
            self._set_icon(None, png, name, note)
            return
        job = _IconJob(key, name, self.layer, unit)
        self._set_icon(job, b"", name, RENDERING_NOTE)
        threading.Thread(target=self._run_icon, args=(job,), name="atlaswidgets-unit-icon",
                         daemon=True).start()

    def _set_icon(self, job: _IconJob | None, png: bytes, name: str, note: str) -> None:
        self._icon_job = job
        with self.hold_sync():
            self.icon, self.icon_unit, self.icon_note = png, name, note

    def _run_icon(self, job: _IconJob) -> None:
        """The background thread: render (unless the unit was left meanwhile), then apply."""
        def step(done: int) -> None:
            if job.cancel.is_set() or self._icon_job is not job:
                raise _Cancelled()

        try:
            with RENDER_LOCK, self._model_lock:
                if not job.cancel.is_set() and self._icon_job is job:
                    job.result = icon_png(self._model, job.layer, job.unit, self._cache,
                                          self._icon_steps, self._normalize, step)
        except _Cancelled:
            pass
        except Exception as e:  # noqa: BLE001 - said in the icon's note, never lost in a thread
            job.result = (b"", f"no icon: {type(e).__name__}: {e}")
        finally:
            job.done.set()
            _on_main(lambda: self._apply_icon(job))

    def _apply_icon(self, job: _IconJob) -> None:
        """Keep the finished icon and show it if its unit is still shown (once, on the main
        thread or in wait_icon, which must not return before it is applied)."""
        with job.lock:
            if job.applied:
                return
            job.applied = True
            if job.result is None:
                return  # skipped or stopped: the unit was left, or the model was needed
            self._icon_memo[job.key] = job.result
            if self._icon_job is job:
                self._set_icon(None, job.result[0], job.name, job.result[1])
