"""Argument checks shared by every part of the package: ints, numbers, choices, seeds, channels, directions.

Each check returns the value in a plain form (``int``, ``float``, a float tensor) or raises before any
work is done, with a message that names the argument, what was given and what is allowed:

- a wrong type raises ``ArgumentTypeError``, a ``TypeError`` that is also a ``ValueError``
  (several of these checks raised ``ValueError`` for a bool or a float before they were shared
  here, and code that catches that keeps working);
- a value of the right type outside what is allowed raises ``ValueError``.

ints accept Python and numpy integers and refuse ``bool`` (``True`` is an int to Python, never a
count to a person); numbers accept ints and floats (numpy ones too), refuse ``bool`` and must be
finite. ``hint`` is a few words said in brackets after what is allowed, e.g. ``"pixels"``.

Layers are resolved elsewhere: ``ActivationCache.layer_name`` for a cache's layers,
``hooks.resolve_layers`` for a model's.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch

__all__ = ["ArgumentTypeError", "is_int", "is_number", "integer", "positive_int", "int_at_least",
           "non_negative_int", "int_in_range", "number", "probability", "one_of", "random_seed",
           "channel_index", "checked_direction"]


class ArgumentTypeError(TypeError, ValueError):
    """An argument of the wrong type: a TypeError, and a ValueError so that callers who caught the
    ValueError these checks raised before they were shared keep working."""


def is_int(value: Any) -> bool:
    """Whether ``value`` is a Python or numpy int and not a bool: the test under every int check
    here, for callers that word their own message or branch on it (a channel or a direction)."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def is_number(value: Any) -> bool:
    """Whether ``value`` is a real Python or numpy number (int or float, finite or not), not a bool."""
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def _said(hint: str) -> str:
    return f" ({hint})" if hint else ""


def _int_within(value: Any, message: str, low: int | None = None, high: int | None = None) -> int:
    """``value`` as an int in [low, high] (an open end where None); ``message`` for either error."""
    if not is_int(value):
        raise ArgumentTypeError(message)
    if (low is not None and value < low) or (high is not None and value > high):
        raise ValueError(message)
    return int(value)


def integer(value: Any, name: str, hint: str = "") -> int:
    """``value`` as an int (any int, negative too); a bool, float or string raises ArgumentTypeError
    "``name`` must be an int, got float (1.5)." Use it where the allowed range is said separately."""
    if not is_int(value):
        raise ArgumentTypeError(f"{name} must be an int{_said(hint)}, got {type(value).__name__} ({value!r}).")
    return int(value)


def int_at_least(value: Any, name: str, low: int, hint: str = "") -> int:
    """``value`` as an int >= ``low``: "``name`` must be an int >= ``low``, got ``value``." for a wrong
    type (ArgumentTypeError) or a smaller int (ValueError)."""
    return _int_within(value, f"{name} must be an int >= {low}{_said(hint)}, got {value!r}.", low)


def positive_int(value: Any, name: str, hint: str = "") -> int:
    """``value`` as an int >= 1, said as "``name`` must be a positive int, got ``value``.".

    Accepts what ``int_at_least(value, name, 1)`` accepts; the two differ only in their words,
    which callers' messages (and the tests that match them) have used both of."""
    return _int_within(value, f"{name} must be a positive int{_said(hint)}, got {value!r}.", 1)


def non_negative_int(value: Any, name: str, hint: str = "") -> int:
    """``value`` as an int >= 0 (an index, a count that may be zero)."""
    return int_at_least(value, name, 0, hint)


def int_in_range(value: Any, name: str, low: int, high: int, hint: str = "") -> int:
    """``value`` as an int with ``low <= value <= high`` (both ends allowed):
    "``name`` must be an int in [low, high], got ``value``."."""
    return _int_within(value, f"{name} must be an int in [{low}, {high}]{_said(hint)}, got {value!r}.", low, high)


def _interval(low: float | None, high: float | None, low_open: bool, high_open: bool) -> str:
    if low is not None and high is not None:
        return f"a number in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    if low is not None:
        return f"a number {'>' if low_open else '>='} {low:g}"
    if high is not None:
        return f"a number {'<' if high_open else '<='} {high:g}"
    return "a finite number"


def number(value: Any, name: str, low: float | None = None, high: float | None = None, *,
           low_open: bool = False, high_open: bool = False, hint: str = "") -> float:
    """``value`` as a finite float within the bounds given (closed unless ``low_open``/``high_open``):
    "``name`` must be a number in (0, 1], got 2.". NaN and infinities are refused."""
    message = f"{name} must be {_interval(low, high, low_open, high_open)}{_said(hint)}, got {value!r}."
    if not is_number(value):
        raise ArgumentTypeError(message)
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(message)
    if low is not None and (v <= low if low_open else v < low):
        raise ValueError(message)
    if high is not None and (v >= high if high_open else v > high):
        raise ValueError(message)
    return v


def probability(value: Any, name: str, hint: str = "") -> float:
    """``value`` as a float in [0, 1]."""
    return number(value, name, 0, 1, hint=hint)


def one_of(value: Any, name: str, choices: Sequence[Any], hint: str = "") -> Any:
    """``value`` itself when it is one of ``choices``, else ValueError
    "``name`` must be one of ['a', 'b'], got 'c'."."""
    try:
        ok = any(value is c or (isinstance(value, type(c)) and bool(value == c)) for c in choices)
    except (TypeError, ValueError):  # an array compared with a string, say
        ok = False
    if not ok:
        raise ValueError(f"{name} must be one of {list(choices)}{_said(hint)}, got {value!r}.")
    return value


def random_seed(value: Any, name: str = "seed", *, high: int | None = None, optional: bool = False) -> int | None:
    """A random seed: an int >= 0 (below ``high`` where the generator needs it, e.g. 2**32 for
    umap-learn), or None when ``optional``."""
    if value is None and optional:
        return None
    if high is None:
        return int_at_least(value, name, 0)
    also = " or None" if optional else ""
    return _int_within(value, f"{name} must be an int in [0, {_power(high)}){also}, got {value!r}.", 0, high - 1)


def _power(n: int) -> str:
    """2**32 rather than 4294967296 in a message."""
    return f"2**{n.bit_length() - 1}" if n > 1024 and n & (n - 1) == 0 else str(n)


def channel_index(value: Any, n_channels: int, layer: str | None = None) -> int:
    """``value`` as a channel index of a layer with ``n_channels`` channels: ArgumentTypeError
    "channel must be an int, ..." or ValueError "channel 9 is out of range: layer 'conv' has
    channels 0..7."."""
    c = integer(value, "channel")
    if not 0 <= c < n_channels:
        where = f"layer {layer!r}" if layer is not None else "this layer"
        raise ValueError(f"channel {c} is out of range: {where} has channels 0..{n_channels - 1}.")
    return c


def checked_direction(direction: Any, n_channels: int, layer: str) -> torch.Tensor:
    """``direction`` as a 1-D float tensor of ``n_channels`` values, detached from autograd (a
    classifier's weight row is a natural direction and requires grad), or a clear error."""
    if isinstance(direction, (bool, str, bytes)) or not isinstance(
            direction, (torch.Tensor, np.ndarray, list, tuple)):
        raise TypeError(f"A direction must be a tensor or array of {n_channels} numbers (one per "
                        f"channel of layer {layer!r}), got {type(direction).__name__}.")
    try:
        d = torch.as_tensor(direction.detach() if isinstance(direction, torch.Tensor)
                            else np.asarray(direction, dtype=np.float64))
    except (TypeError, ValueError):
        raise TypeError(f"A direction must hold numbers, got {direction!r:.80}.") from None
    if d.is_complex() or d.dtype == torch.bool:
        raise TypeError(f"A direction must hold real numbers, got {d.dtype}.")
    if d.ndim != 1 or d.shape[0] != n_channels:
        raise ValueError(f"A direction for layer {layer!r} must have shape ({n_channels},), "
                         f"got {tuple(d.shape)}.")
    d = d.float()
    if not bool(torch.isfinite(d).all()):
        raise ValueError("The direction contains NaN or infinite values.")
    if not bool(d.any()):
        raise ValueError("The direction is all zeros: every row scores 0, so nothing can be ranked; "
                         "pass a non-zero direction.")
    return d
