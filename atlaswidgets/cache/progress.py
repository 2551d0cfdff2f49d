"""Progress of the long steps, shown one way everywhere: a ``tqdm.auto`` bar per step.

In a notebook kernel with ipywidgets installed, ``tqdm.auto`` draws a widget bar in the output of
the cell that runs the step; elsewhere (a script, a terminal) it writes a text bar to stderr. Every
long step (capture, attribution, layouts, patch attacks, image folders) takes ``progress=True``
and ``progress=False`` turns its bar off, for tests, scripts and loops that report on their own.

Bars are left in place when their step ends (tqdm's ``leave=True``), so an executed notebook keeps
the record of what ran and how long it took.
"""

from __future__ import annotations

from typing import Any

__all__ = ["StepsBar", "checked_progress", "progress_bar", "tqdm_options"]


def checked_progress(progress: Any) -> bool:
    """``progress`` as a bool; a TypeError for anything but True or False (a typo such as
    ``progress="no"`` would otherwise turn the bar on)."""
    if not isinstance(progress, bool):
        raise TypeError(f"progress must be True or False, got {progress!r} "
                        f"({type(progress).__name__}).")
    return progress


def tqdm_options(desc: str, unit: str, progress: bool) -> dict[str, Any]:
    """The settings every bar of the kit uses, as tqdm keyword arguments: for a library that makes
    its own bar from them (umap-learn's ``tqdm_kwds``) as well as for ``progress_bar``."""
    return {"desc": desc, "unit": unit, "disable": not checked_progress(progress), "leave": True}


def progress_bar(desc: str, total: int | None = None, unit: str = "it", progress: bool = True):
    """A ``tqdm.auto`` bar for one step: ``desc`` names the step, ``total`` counts ``unit``\\s
    (None: unknown). Use it as a context manager (closed on error too) and ``update(n)`` it.
    With ``progress=False`` it is a disabled bar, which draws nothing and costs nothing."""
    from tqdm.auto import tqdm

    return tqdm(total=total, **tqdm_options(desc, unit, progress))


class StepsBar:
    """``progress=True/False`` as the ``report(done, total)`` callable of a step that reports
    itself that way (feature-vis renders: steps done of all chunks' steps). The bar opens at the
    first report, so a step that finds its result stored opens none, and counts from there: a
    resumed run's stored part is not counted as rendered now, which would skew tqdm's rate.
    Call ``close()`` when the step ends (the bar is left in the output)."""

    def __init__(self, desc: str, progress: bool = True, unit: str = "step"):
        self.desc, self.unit, self.show = desc, unit, checked_progress(progress)
        self.bar, self.offset = None, 0

    def __call__(self, done: int, total: int) -> None:
        if self.bar is None:
            self.offset = done - 1
            self.bar = progress_bar(self.desc, total - self.offset, self.unit, self.show)
        self.bar.update(done - self.offset - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
