"""Feature-vis icons of an AtlasWidget rendered in a background thread, so the kernel stays free.

The page asks through the ``icons`` trait (its toggle sets "feature-vis", its Cancel sets
"examples" again); a level switch asks for the level's own icons. ``BackgroundIcons`` starts one
render per request in a daemon thread, reports ``fv_state`` and ``fv_progress`` a few times a
second, and hands the finished icons to the kernel's main thread (its IO loop), where widget
traits are set. A cancel is a flag the render's per-step callback checks, so it stops within one
step; the icon store keeps the chunks finished so far.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import torch

from ..render.icons import CELL_ICON_DEFAULTS

__all__ = ["BackgroundIcons", "ICON_DEFAULTS", "RENDER_LOCK"]

# the cell_icons settings the widget renders with unless fv_options say otherwise
ICON_DEFAULTS: dict[str, Any] = CELL_ICON_DEFAULTS

# one render at a time in this process: renders of one model (an Explorer's two atlases) would
# otherwise hook it together
RENDER_LOCK = threading.Lock()


class _Cancelled(Exception):
    """Raised inside a render's progress callback to stop it."""


class _Job:
    """One background render of a level's feature-vis icons."""

    def __init__(self, level: int, atlas):
        self.level, self.atlas = level, atlas
        self.cancel, self.done, self.lock = threading.Event(), threading.Event(), threading.Lock()
        self.icons: torch.Tensor | None = None
        self.error: BaseException | None = None
        self.applied = False
        self.reported = 0.0


def _on_main(fn) -> None:
    """Run ``fn`` on the kernel's main thread (widgets' traits are set there), or now outside one."""
    try:
        from IPython import get_ipython

        loop = getattr(getattr(get_ipython(), "kernel", None), "io_loop", None)
    except ImportError:
        loop = None
    if loop is None:
        fn()
    else:
        loop.add_callback(fn)



class BackgroundIcons:
    """The background-render half of AtlasWidget (it supplies ``_render``, ``_render_options``,
    ``_send_icons``, ``_icon_sets``, ``_job``, ``_jobs`` and the ``fv_*`` traits)."""

    def wait_icons(self, timeout: float | None = None) -> bool:
        """Block until the background feature-vis renders (if any) end and their icons are shown.

        Returns False when ``timeout`` seconds passed first, True otherwise; re-raises the error
        of the render asked for last (a cancelled render just ends).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        current = self._job
        for job in list(self._jobs):
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not job.done.wait(left):
                return False
            self._finish_job(job)
        if current is not None and current.error is not None:
            raise current.error
        return True

    def _show_icons(self, kind: str) -> None:
        """The page's toggle: show ``kind`` icons of the level shown, or start rendering them."""
        key = (self.cells_level, kind)
        if kind == "feature-vis" and key not in self._icon_sets:
            self._render_options(self.cells_level)  # refuse now (no model, no size), not later
            self._start_job(self.cells_level, self._atlas)
            return
        self._send_icons(self._atlas, self.cells_level, kind)

    def _start_job(self, level: int, atlas) -> None:
        job = self._job
        if job is not None and job.level == level and job.atlas is atlas and not job.done.is_set():
            return
        self._cancel_job()
        job = self._job = _Job(level, atlas)
        self._jobs.append(job)
        with self.hold_sync():
            self.fv_state, self.fv_progress, self.fv_message = "rendering", 0.0, ""
        threading.Thread(target=self._run_job, args=(job,), name="atlaswidgets-icons",
                         daemon=True).start()

    def _cancel_job(self) -> None:
        job = self._job
        if job is None:
            return
        job.cancel.set()
        self._job = None
        if self.fv_state == "rendering":
            self.fv_state = "cancelled"

    def _run_job(self, job: _Job) -> None:
        """The background thread: render, then hand the icons to the kernel's main thread."""
        def progress(done: int, total: int) -> None:
            if job.cancel.is_set():
                raise _Cancelled()
            now = time.monotonic()
            if now - job.reported >= 0.25 or done == total:  # a few messages a second at most
                job.reported = now
                _on_main(lambda: self._report(job, done / max(total, 1)))

        try:
            if not job.cancel.is_set():
                job.icons = self._render(job.atlas, job.level, progress)
        except _Cancelled:
            pass
        except Exception as e:  # noqa: BLE001 - shown in the widget, re-raised by wait_icons
            job.error = e
        finally:
            job.done.set()
            _on_main(lambda: self._finish_job(job))

    def _report(self, job: _Job, fraction: float) -> None:
        if self._job is job and not job.cancel.is_set():
            self.fv_progress = fraction

    def _finish_job(self, job: _Job) -> None:
        """Apply a finished render once (from the main thread, or from wait_icons, which must
        not return before it is applied: hence the lock around all of it)."""
        with job.lock:
            if not job.applied:
                job.applied = True
                self._jobs = [j for j in self._jobs if j is not job]
                self._apply_job(job)

    def _apply_job(self, job: _Job) -> None:
        if job.icons is not None:
            self._icon_sets[(job.level, "feature-vis")] = job.icons
        if self._job is not job:
            return  # cancelled or replaced; its icons are kept all the same
        self._job = None
        if job.error is not None:
            with self.hold_sync():
                self.fv_state, self.fv_message = "failed", f"{type(job.error).__name__}: {job.error}"
                self._quiet = True
                try:  # the page's toggle recovers: the icons asked for are the ones shown
                    self.icons = self.sprite_icons
                finally:
                    self._quiet = False
            return
        if job.icons is None:
            self.fv_state = "cancelled"
            return
        with self.hold_sync():
            self.fv_state, self.fv_progress = "", 1.0
            if self.icons == "feature-vis" and self.cells_level == job.level and self._atlas is job.atlas:
                self._send_icons(job.atlas, job.level, "feature-vis")

