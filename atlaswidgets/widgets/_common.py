"""Pieces shared by the widgets: their ES module text, binary buffers, a cell-ids trait and the
errors and checks that keep a refused value from the page out of a widget."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch
import traitlets

from ..cache.checks import is_int

__all__ = [
    "CellIds", "RefusedType", "RefusedValue", "RollsBackPageState", "esm", "from_buffer",
    "refuses", "to_buffer",
]

_HERE = Path(__file__).parent


def esm(*names: str) -> str:
    """A widget's ES module: _shared.js followed by ``names`` (files beside this one), in order.

    anywidget evaluates each module on its own, so a relative import of a sibling file cannot
    resolve; concatenating keeps one copy of the shared helpers in the source tree and lets a
    widget's front end be split into files of a readable size. Only the last file may export.
    """
    if not names:
        raise ValueError("esm needs at least one file name, e.g. esm('atlas.js').")
    return "\n".join((_HERE / n).read_text() for n in ("_shared.js", *names))

# dtypes a widget sends; the browser reads them with DataView getters, little-endian
_WIRE = {"float32": "<f4", "uint32": "<u4", "int32": "<i4"}


def to_buffer(arr, dtype: str) -> bytes:
    """Bytes of ``arr`` as little-endian ``dtype`` ("float32", "uint32" or "int32"), C order."""
    if dtype not in _WIRE:
        raise ValueError(f"dtype must be one of {sorted(_WIRE)}, got {dtype!r}.")
    a = arr.detach().cpu().numpy() if isinstance(arr, torch.Tensor) else np.asarray(arr)
    return np.ascontiguousarray(a, dtype=_WIRE[dtype]).tobytes()


def from_buffer(buf, dtype: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
    """Inverse of ``to_buffer``: an array of ``dtype`` (native byte order), optionally reshaped."""
    if dtype not in _WIRE:
        raise ValueError(f"dtype must be one of {sorted(_WIRE)}, got {dtype!r}.")
    a = np.frombuffer(bytes(buf), dtype=_WIRE[dtype]).astype(dtype)
    return a.reshape(shape) if shape is not None else a


class RefusedValue(traitlets.TraitError, ValueError):
    """A value a widget's trait refuses: a ValueError for the caller, and a TraitError for traitlets.

    The page's messages reach a widget through ipywidgets' ``set_state``, which sets the traits
    under ``hold_trait_notifications`` and validates them at the end; only a TraitError rolls the
    message back there (a plain ValueError would leave the refused value in place, and linked
    widgets would copy it). Being a ValueError too keeps ``except ValueError`` and the message the
    same for a value set from Python.
    """


class RefusedType(traitlets.TraitError, TypeError):
    """A value of the wrong type for a widget's trait; see ``RefusedValue``."""


def refuses(validator):
    """Make a ``@traitlets.validate`` method raise RefusedValue / RefusedType for its ValueError /
    TypeError, with the same message, so a refused message from the page is rolled back.

    Use it under the ``@traitlets.validate(...)`` line.
    """

    @functools.wraps(validator)
    def checked(self, proposal):
        try:
            return validator(self, proposal)
        except traitlets.TraitError:
            raise
        except ValueError as e:
            raise RefusedValue(*e.args).with_traceback(e.__traceback__) from None
        except TypeError as e:
            raise RefusedType(*e.args).with_traceback(e.__traceback__) from None

    return checked


class RollsBackPageState:
    """Mixin for a widget whose validators refuse values with a TraitError (see ``refuses``).

    traitlets rolls a refused message back without a change event, so nothing would tell the page,
    which goes on showing what it sent (a selection of cells that do not exist, say). After a
    refusal this sends the traits of the message again, with the values the widget kept, and then
    re-raises so the refusal still shows up (ipykernel logs it).
    """

    def set_state(self, sync_data):
        try:
            super().set_state(sync_data)
        except traitlets.TraitError:
            kept = [name for name in sync_data if name in self.keys]
            if kept:
                self.send_state(kept)
            raise


class CellIds(traitlets.List):
    """A list of cell ids (ints). Accepts numpy arrays and numpy ints; drops repeats, sorts.

    Sorting makes the value canonical, so two linked widgets agree on "the same selection" and
    the page can show it as a stable ``data-selected`` string. A value that is no list of ints
    raises RefusedType (a TypeError and a TraitError, so a message from the page is rolled back).
    """

    def __init__(self, **kwargs):
        super().__init__(trait=traitlets.Int(), **kwargs)

    def validate(self, obj, value):
        if isinstance(value, torch.Tensor):
            value = value.detach().cpu().numpy()
        if isinstance(value, np.ndarray):
            if value.ndim != 1:
                raise RefusedType(f"cell ids must be a 1-D list of ints, got shape {value.shape}.")
            value = value.tolist()
        if isinstance(value, (list, tuple, set)):
            ints = []
            for v in value:
                if not is_int(v):
                    raise RefusedType(f"cell ids must be ints, got {v!r} ({type(v).__name__}).")
                ints.append(int(v))
            value = sorted(set(ints))
        return super().validate(obj, value)
