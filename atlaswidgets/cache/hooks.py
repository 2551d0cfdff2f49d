"""Layer selection, forward hooks with a clear lifetime, and where a user's model runs.

Hooks are global state on a user's model, so they exist only inside the ``hooks()`` context
manager and are removed in ``finally``, even when the ``with`` block raises. The same holds for
the other things done to a model for a while: eval mode (``eval_mode``) and a move to another
device (``on_device``) are undone on the way out.
"""

from __future__ import annotations

import contextlib
import difflib
import itertools
import os
import threading
from typing import Any, Callable, Iterator, Sequence, Union

import torch
from torch import nn

from .sampling import LIST_HINT

__all__ = ["LayerSpec", "resolve_layers", "hooks", "ablate", "forward_layers", "eval_mode", "model_device", "model_dtype", "placement",
           "on_device", "as_model_input"]

LayerSpec = Union[str, Sequence[str], Callable[[str, nn.Module], bool]]

def resolve_layers(model: nn.Module, layers: LayerSpec) -> list[str]:
    """Names of the selected layers, in the order given (or module order for a predicate).

    layers : a ``named_modules()`` name, a list of names, or a predicate ``(name, module) -> bool``
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}.")
    modules = dict(model.named_modules())
    if isinstance(layers, nn.Module):
        name = next((n for n, m in modules.items() if m is layers), None)
        hint = f"pass its name {name!r}" if name is not None else "it is not part of this model"
        raise TypeError(f"layers takes layer names, not modules: {hint}. {LIST_HINT}")
    if isinstance(layers, str):
        wanted = [layers]
    elif isinstance(layers, (list, tuple)):
        bad = [v for v in layers if not isinstance(v, str)]
        if bad:
            raise TypeError(f"layers must be names (str); got {type(bad[0]).__name__} {bad[0]!r}. {LIST_HINT}")
        wanted = list(layers)
    elif callable(layers):
        try:
            wanted = [n for n, m in model.named_modules() if layers(n, m)]
        except TypeError as e:
            raise TypeError(f"A layer predicate is called as predicate(name, module) and returns a "
                            f"bool, e.g. lambda name, module: name.startswith('block'); calling "
                            f"yours failed: {e}") from e
        if not wanted:
            raise ValueError(f"The layer predicate selected no layer of this model. {LIST_HINT}")
    else:
        raise TypeError(
            "layers must be a layer name, a list of names or a predicate (name, module) -> bool; "
            f"got {type(layers).__name__}."
        )
    if not wanted:
        raise ValueError(f"No layers given: pass at least one layer name. {LIST_HINT}")
    for name in wanted:
        if name not in modules:
            raise ValueError(_unknown_layer(name, list(modules)))
    return list(dict.fromkeys(wanted))  # drop repeats, keep order


def _unknown_layer(name: str, names: list[str]) -> str:
    close = difflib.get_close_matches(name, names, n=5, cutoff=0.5)
    close += [n for n in names if n.endswith("." + name) and n not in close][:5]
    hint = f" Close matches: {close}." if close else ""
    return f"Unknown layer {name!r}.{hint} {LIST_HINT}"


@contextlib.contextmanager
def hooks(
    model: nn.Module,
    layers: LayerSpec,
    fn: Callable[[str, Any], Any] | None = None,
    edit: bool = False,
) -> Iterator[dict[str, Any]]:
    """Record each selected layer's output during forward passes inside the ``with`` block.

    Yields a dict layer name -> the output of that layer in the latest forward pass, or
    ``fn(name, output)`` when ``fn`` is given (use it to keep a slice instead of a whole map).
    Outputs are the tensors themselves: a later in-place op (``ReLU(inplace=True)``) can change
    them, so copy inside ``fn`` what must survive. With ``edit=True``, what ``fn`` returns
    replaces the layer's output in the forward pass (an intervention; see ``ablate``). The hooks
    are removed on leaving the block, also after an exception. They act only on forward passes
    of the thread that entered the block: a widget rendering icons of the same model in a
    background thread neither sees nor changes this thread's passes, nor they its.
    """
    if edit and fn is None:
        raise ValueError("hooks(..., edit=True) needs fn: the function whose result replaces the output.")
    names = resolve_layers(model, layers)
    modules = dict(model.named_modules())
    recorded: dict[str, Any] = {}
    handles = []
    owner = threading.get_ident()

    def make(name: str):
        def hook(module: nn.Module, inputs: Any, output: Any) -> Any:
            if threading.get_ident() != owner:
                return None  # another thread's forward pass: not ours to record or edit
            recorded[name] = output if fn is None else fn(name, output)
            return recorded[name] if edit else None  # None keeps the output

        return hook

    try:
        for name in names:
            handles.append(modules[name].register_forward_hook(make(name)))
        yield recorded
    finally:
        for handle in handles:
            handle.remove()


@contextlib.contextmanager
def ablate(model: nn.Module, layer: str, units: Any, value: Any = 0.0) -> Iterator[nn.Module]:
    """Set chosen units (channels, neurons) of one layer to ``value`` in every forward pass
    inside the ``with`` block; the model is as before on leaving it, also after an error.

    layer : one ``named_modules()`` name whose output is a tensor: (N, C, H, W) or (N, C) (units
        along dim 1), or (N, T, D) (units along the last dim: a token layer, an MLP's neurons)
    units : a unit index or a list of them
    value : a number, or one number per unit (a tensor or list of len(units)), e.g. the units'
        mean activation for a mean ablation
    Yields the model. Example: ``with aw.ablate(lm, "blocks.1.mlp.act", [220]): lm(ids)``.
    """
    (name,) = resolve_layers(model, layer) if isinstance(layer, str) else (None,)
    if name is None:
        raise TypeError(f"layer must be one layer name (str), got {type(layer).__name__}.")
    if isinstance(units, (int,)) and not isinstance(units, bool):
        units = [units]
    if isinstance(units, torch.Tensor):
        units = units.tolist()
    if not isinstance(units, (list, tuple)) or not units or not all(
            isinstance(u, int) and not isinstance(u, bool) and u >= 0 for u in units):
        raise ValueError(f"units must be a unit index or a non-empty list of indices >= 0, got {units!r}.")
    fill = torch.as_tensor(value, dtype=torch.float32)
    if fill.ndim > 1 or (fill.ndim == 1 and len(fill) != len(units)) or not bool(torch.isfinite(fill).all()):
        raise ValueError(f"value must be a finite number or one number per unit ({len(units)}), got {value!r}.")
    index = torch.tensor(units, dtype=torch.long)

    def replace(_, out):
        if not isinstance(out, torch.Tensor) or out.ndim < 2:
            raise TypeError(f"Layer {name!r} returns {type(out).__name__}, not a tensor with a unit "
                            "dimension; ablate a layer that outputs (N, C, ...) or (N, T, D).")
        dim = out.ndim - 1 if out.ndim == 3 else 1
        if int(index.max()) >= out.shape[dim]:
            raise ValueError(f"Unit {int(index.max())} is out of range: layer {name!r} has "
                             f"{out.shape[dim]} units.")
        shape = [1] * out.ndim
        shape[dim] = len(index)
        at = index.to(out.device)
        # a new tensor (no in-place change of the layer's output, which autograd may need)
        return out.index_copy(dim, at, fill.to(out.device, out.dtype).reshape(shape if fill.ndim else [1] * out.ndim)
                              .expand(*[len(index) if d == dim else out.shape[d] for d in range(out.ndim)]))

    with hooks(model, name, replace, edit=True):
        yield model


class _Enough(Exception):
    """Raised by a hook once every needed layer has run: the rest of the forward pass is wasted."""


def forward_layers(model: nn.Module, layers: tuple[str, ...], x: Any,
                   call: Callable[[Any], Any] | None = None) -> dict[str, torch.Tensor]:
    """Run ``model`` on ``x`` until every layer in ``layers`` has produced its output.

    call : how to run it, ``call(x)`` (capture's ``forward=``); default ``model(x)``
    Returns dict layer name -> output. Hooks live only inside this call.
    """
    got: dict[str, torch.Tensor] = {}

    def keep(name, out):
        got[name] = out
        if len(got) == len(layers):
            raise _Enough
        return None

    with hooks(model, list(layers), keep):
        try:
            (model if call is None else call)(x)
        except _Enough:
            pass
    missing = [n for n in layers if n not in got]
    if missing:
        raise ValueError(f"Layers {missing} did not run in the model's forward pass; an objective "
                         "can only use layers the forward pass calls.")
    return got


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Every submodule in eval mode inside the block; each one's own mode restored after (a model
    may mix training and eval submodules, so ``model.train(was)`` would not restore it)."""
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        yield model
    finally:
        for m, mode in modes.items():
            m.train(mode)


def model_device(model: nn.Module) -> torch.device:
    """Where the model's first parameter (or buffer) lives; the CPU for a model with neither."""
    t = next(itertools.chain(model.parameters(), model.buffers()), None)
    return t.device if t is not None else torch.device("cpu")


def model_dtype(model: nn.Module) -> torch.dtype | None:
    """The dtype of the model's first floating-point parameter (float16 for a half model), or None."""
    return next((p.dtype for p in model.parameters() if p.is_floating_point()), None)


def as_model_input(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``x`` on the model's device and, if floating point, in its dtype: a GPU or half-precision
    model fed float32 CPU images would fail deep inside torch. Differentiable."""
    dtype = model_dtype(model) if x.is_floating_point() else None
    return x.to(model_device(model), dtype or x.dtype)


def check_device(device: torch.device | str) -> torch.device:
    """``device`` as a torch.device that exists here; a ValueError saying what to pass otherwise
    (torch's own errors for "gpu" or an absent CUDA come from deep inside torch)."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device={device!r} is not a device torch knows; pass 'cpu', 'cuda', "
                         "'cuda:1', a torch.device, or None.") from None
    if dev.type not in ("cpu", "cuda"):
        # checked before a model is moved: on "meta" a model's weights cannot be moved back, and
        # the other types (mps, xpu, ...) fail deep inside torch or in code tested only on cpu/cuda
        raise ValueError(f"device={device!r}: atlaswidgets runs on 'cpu' or 'cuda' (a "
                         f"{dev.type!r} device is not supported); pass 'cpu', 'cuda', 'cuda:1' or None.")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device={device!r} but CUDA is not available here; use device='cpu' or None.")
        if dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
        elif dev.index >= torch.cuda.device_count():
            raise ValueError(f"device={device!r} but this machine has {torch.cuda.device_count()} "
                             "CUDA device(s), numbered from 0.")
    return dev


DEVICE_ENV = "ATLASWIDGETS_DEVICE"


def env_device() -> torch.device | None:
    """The device named by the ATLASWIDGETS_DEVICE environment variable, or None when unset.

    It replaces the default "CUDA when available" everywhere (capture, render, attribute, load):
    ``ATLASWIDGETS_DEVICE=cpu`` keeps the work off a GPU that is busy training, and keeps a test
    suite's CPU expectations on a machine that has one.
    """
    name = os.environ.get(DEVICE_ENV, "").strip()
    if not name:
        return None
    try:
        return check_device(name)
    except ValueError as e:
        raise ValueError(f"The environment variable {DEVICE_ENV}={name!r} is not usable: {e}") from None


def placement(model: nn.Module, device: torch.device | str | None) -> tuple[torch.device, torch.device | None]:
    """(device to run on, device to move the model back to afterwards or None).

    device None: the ATLASWIDGETS_DEVICE environment variable when set; else CUDA when it is
    available and the model is on the CPU (moved there for the work and back after: the cache is
    meant to live on the GPU); else where the model is.
    """
    places = list(dict.fromkeys(t.device for t in itertools.chain(model.parameters(), model.buffers())))
    if device is None:
        device = env_device()
    if device is None:
        if torch.cuda.is_available() and all(p.type == "cpu" for p in places):
            device = "cuda"
        elif places:  # a model on a GPU, or spread over devices: inputs go to the first one
            return places[0], None
        else:
            return torch.device("cpu"), None
    dev = check_device(device)
    if not places or places == [dev]:
        return dev, None
    if len(places) > 1:
        raise ValueError(f"The model is spread over {places}; it cannot be moved to {dev}. "
                         "Pass device=None to run it where it is.")
    return dev, places[0]


@contextlib.contextmanager
def on_device(model: nn.Module, device: torch.device | str | None) -> Iterator[torch.device]:
    """The model on ``device`` inside the block (see ``placement``), moved back after; yields the
    device. None leaves it where it is."""
    dev, home = placement(model, device)
    if home is not None:
        model.to(dev)
    try:
        yield dev
    finally:
        if home is not None:
            model.to(home)
