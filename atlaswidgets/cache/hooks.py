"""Layer selection and forward hooks with a clear lifetime.

Hooks are global state on a user's model, so they exist only inside the ``hooks()`` context
manager and are removed in ``finally``, even when the ``with`` block raises.
"""

from __future__ import annotations

import contextlib
import difflib
from typing import Any, Callable, Iterator, Sequence, Union

from torch import nn

from .sampling import LIST_HINT

__all__ = ["LayerSpec", "resolve_layers", "hooks"]

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
        wanted = [n for n, m in model.named_modules() if layers(n, m)]
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
) -> Iterator[dict[str, Any]]:
    """Record each selected layer's output during forward passes inside the ``with`` block.

    Yields a dict layer name -> the output of that layer in the latest forward pass, or
    ``fn(name, output)`` when ``fn`` is given (use it to keep a slice instead of a whole map).
    Outputs are the tensors themselves: a later in-place op (``ReLU(inplace=True)``) can change
    them, so copy inside ``fn`` what must survive. The hooks are removed on leaving the block,
    also after an exception.
    """
    names = resolve_layers(model, layers)
    modules = dict(model.named_modules())
    recorded: dict[str, Any] = {}
    handles = []

    def make(name: str):
        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            recorded[name] = output if fn is None else fn(name, output)

        return hook

    try:
        for name in names:
            handles.append(modules[name].register_forward_hook(make(name)))
        yield recorded
    finally:
        for handle in handles:
            handle.remove()


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

