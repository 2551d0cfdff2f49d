"""What the zoo's worlds share: writing a trained model's weights, and their model cards' command line."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from torch import nn

from ..cache.files import atomic_write

__all__ = ["save_weights", "card_parser"]


def save_weights(net: nn.Module, path: str | Path, facts: dict | None = None,
                 metadata: dict[str, str] | None = None) -> None:
    """Write ``net``'s weights as safetensors and ``facts`` as JSON beside them (same stem), each
    atomically, so an interruption never leaves shipped weights half-written."""
    from safetensors.torch import save

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in net.state_dict().items()}
    atomic_write(path, save(state, metadata=metadata))
    if facts is not None:
        atomic_write(path.with_suffix(".json"), (json.dumps(facts, indent=2) + "\n").encode())


def card_parser(prog: str, description: str, n: int) -> argparse.ArgumentParser:
    """The options every model card takes: how many fresh samples, their seed, other weights, JSON."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--n", type=int, default=n)
    parser.add_argument("--seed", type=int, default=777)
    parser.add_argument("--weights", default=None, help="safetensors file (default: shipped)")
    parser.add_argument("--json", action="store_true", help="print the raw report as JSON")
    return parser
