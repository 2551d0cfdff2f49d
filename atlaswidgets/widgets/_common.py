"""Pieces shared by the widgets: their ES modules, the array trait and its wire format, a
cell-ids trait and the errors and checks that keep a refused value from the page out of a widget."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch
import traitlets

from ..cache.checks import is_int

__all__ = [
    "Array", "CellIds", "RefusedType", "RefusedValue", "RollsBackPageState", "array_from_json",
    "array_to_json", "bundle", "refuses",
]

# Each widget's front end is one ES module in static/, bundled by js/build.mjs from the sources in
# js/src/ (which import one another). A bundle, not the sources: anywidget loads a widget's _esm on
# its own, from a blob URL, where a relative import cannot resolve. Being a file (anywidget's
# ``_esm = Path(...)``), it is watched and reloaded in the page under ANYWIDGET_HMR=1 while
# ``npm run watch`` in js/ rebuilds it. DEVELOPERS.md says more.
_STATIC = Path(__file__).parent / "static"


def bundle(widget: str) -> Path:
    """The ES module file of ``widget`` ("atlas", "examples" or "neuron"), for a class's ``_esm``."""
    path = _STATIC / f"{widget}.js"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; build it with `npm ci && npm run build` in js/.")
    return path


# ---- arrays on the wire ------------------------------------------------------------------------
# An array trait's value reaches the page as {"view": memoryview, "dtype": "float32", "shape": [n, 2]}:
# ipywidgets sends the memoryview as a binary buffer, and the page's readArray (js/src/array.js)
# makes a typed array of it. dtype and shape travel with the bytes, so neither side writes them
# down anywhere else. Little-endian, C order.
WIRE_DTYPES = ("float32", "int32", "uint32", "uint8")


def array_to_json(value, widget=None) -> dict | None:
    """An array trait's value as ipywidgets sends it: ``{"view", "dtype", "shape"}``.

    float64 becomes float32 (the page has no use for the precision, and it halves the bytes);
    an array trait has already cast its value to its dtype, so this is a no-op for those.
    """
    if value is None:
        return None
    a = np.asarray(value)
    if a.dtype == np.float64:
        a = a.astype(np.float32)
    if a.dtype.name not in WIRE_DTYPES:
        raise TypeError(f"an array sent to the page must be one of {list(WIRE_DTYPES)} (or float64), "
                        f"got {a.dtype}.")
    a = np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<"))  # a no-op on little-endian machines
    # the bytes as one flat view: the shape travels beside them
    return {"view": memoryview(a.reshape(-1).view(np.uint8)), "dtype": a.dtype.name, "shape": list(a.shape)}


def array_from_json(value, widget=None) -> np.ndarray | None:
    """Inverse of ``array_to_json``: the array (read-only, over the message's bytes)."""
    if value is None:
        return None
    dtype = value.get("dtype") if isinstance(value, dict) else None
    if dtype not in WIRE_DTYPES:
        raise RefusedType(f"an array from the page must be a {{view, dtype, shape}} object with dtype "
                          f"one of {list(WIRE_DTYPES)}, got {value!r:.80}.")
    a = np.frombuffer(value["view"], dtype=np.dtype(dtype).newbyteorder("<"))
    return a.reshape(value["shape"])


class Array(traitlets.TraitType):
    """A numeric array synced to the page as binary with its dtype and shape (``array_to_json``).

    Takes numpy arrays, torch tensors and sequences; keeps a read-only C-order copy cast to
    ``dtype`` (one of WIRE_DTYPES). Integers that ``dtype`` cannot hold and arrays of another
    ``ndim`` are refused with RefusedValue (a ValueError and a TraitError, so a message from the
    page is rolled back). The default is an empty array; an empty array means "none" on the page.
    """

    info_text = "a numeric array"

    def __init__(self, dtype: str, ndim: int = 1, **kwargs):
        if dtype not in WIRE_DTYPES:
            raise ValueError(f"dtype must be one of {list(WIRE_DTYPES)}, got {dtype!r}.")
        self.dtype = np.dtype(dtype)
        self.ndim = int(ndim)
        empty = np.zeros((0,) * self.ndim, dtype=self.dtype)
        empty.setflags(write=False)
        super().__init__(default_value=empty, **kwargs)
        self.metadata.update(to_json=array_to_json, from_json=array_from_json)

    def validate(self, obj, value):
        if isinstance(value, torch.Tensor):
            value = value.detach().cpu().numpy()
        a = np.asarray(value)
        if a.size == 0:
            a = a.reshape((0,) * self.ndim) if a.ndim != self.ndim else a
        if a.dtype.kind not in "uif":
            raise RefusedType(f"{self.name} must be an array of numbers, got dtype {a.dtype}.")
        if a.ndim != self.ndim:
            raise RefusedValue(f"{self.name} must be a {self.ndim}-D array, got shape {a.shape}.")
        if self.dtype.kind in "ui" and a.size:
            if a.dtype.kind == "f" and not np.array_equal(a, np.round(a)):
                raise RefusedValue(f"{self.name} holds whole numbers ({self.dtype}), got fractions.")
            info = np.iinfo(self.dtype)
            lo, hi = a.min(), a.max()
            if lo < info.min or hi > info.max:
                raise RefusedValue(f"{self.name} holds {self.dtype} values in [{info.min}, {info.max}], "
                                   f"got values in [{lo}, {hi}].")
        out = np.array(a, dtype=self.dtype, order="C", copy=True)
        out.setflags(write=False)
        return out


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
