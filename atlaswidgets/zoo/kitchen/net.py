"""KitchenNet, the small CNN trained on the kitchen world, and the loader of its shipped weights.

Layer map for a 64 px input (the atlas needs a layer with at least 8 x 8 positions):

=========  ==========================  =============  ==================================
module     what                        output         receptive field (input px)
=========  ==========================  =============  ==================================
block1     conv 3x3                    16 x 64 x 64   3
block2     maxpool, conv 3x3           32 x 32 x 32   8
block3     maxpool, conv 3x3 x 2       64 x 16 x 16   26
block4     maxpool, conv 3x3           128 x 8 x 8    46
head       global average pool, linear 6
=========  ==========================  =============  ==================================

For atlases use ``block4`` (8 x 8 positions whose receptive fields cover whole objects, and the
head is linear on their average, so attribution there is exact) or ``block3`` (16 x 16, finer
parts: rims, strands, yolks). Inputs are images in [0, 1]; the net normalises them itself.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from .world import CLASSES

WEIGHTS = Path(__file__).with_name("kitchen_net.safetensors")
FACTS = Path(__file__).with_name("kitchen_net.json")


def _conv(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=False)]


class KitchenNet(nn.Module):
    """Four conv blocks and a linear head over globally averaged block4 features.

    n_classes : number of outputs (6 for the kitchen world)
    widths : channels of block1..block4
    Input: tensor, shape (n, 3, H, W), float in [0, 1] (H = W = 64 for the shipped weights).
    Output: logits, shape (n, n_classes).
    """

    def __init__(self, n_classes: int = 6, widths: tuple[int, int, int, int] = (16, 32, 64, 128)):
        super().__init__()
        w1, w2, w3, w4 = widths
        self.block1 = nn.Sequential(*_conv(3, w1))
        self.block2 = nn.Sequential(nn.MaxPool2d(2), *_conv(w1, w2))
        self.block3 = nn.Sequential(nn.MaxPool2d(2), *_conv(w2, w3), *_conv(w3, w3))
        self.block4 = nn.Sequential(nn.MaxPool2d(2), *_conv(w3, w4))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(w4, n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # fixed normalisation inside the net, so callers pass plain [0, 1] images
        x = (x - 0.5) / 0.25
        return self.head(self.block4(self.block3(self.block2(self.block1(x)))))


def model(path: str | Path | None = None) -> KitchenNet:
    """The trained KitchenNet, loaded from safetensors, in eval mode on the CPU.

    path : weights file; default the one shipped in the package (written by
        ``python -m atlaswidgets.zoo.kitchen.train``).
    """
    from safetensors.torch import load_file

    path = Path(path) if path is not None else WEIGHTS
    if not path.is_file():
        raise FileNotFoundError(
            f"no KitchenNet weights at {path}. Train them with "
            "`python -m atlaswidgets.zoo.kitchen.train` (about 5 minutes on a CPU).")
    state = load_file(str(path), device="cpu")
    widths = tuple(int(state[f"block{k}.{0 if k == 1 else 1}.weight"].shape[0])
                   for k in range(1, 5))
    n_classes = int(state["head.2.weight"].shape[0])
    net = KitchenNet(n_classes, widths)  # type: ignore[arg-type]
    net.load_state_dict(state)
    if n_classes == len(CLASSES):
        net.classes = list(CLASSES)  # capture and attribute take class names from here
    return net.eval()


def training_facts(path: str | Path | None = None) -> dict:
    """The JSON of facts the training script wrote beside the weights (seed, epochs, accuracy)."""
    path = Path(path) if path is not None else FACTS
    return json.loads(Path(path).read_text())
