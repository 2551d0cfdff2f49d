"""A tiny deterministic CNN and data for the cache tests (no kitchen model needed)."""

from __future__ import annotations

import pytest
import torch
from torch import nn


class TinyCNN(nn.Module):
    """16x16 RGB -> 4 classes. conv1: 8 x 16x16 grid, conv2: 16 x 8x8 grid, fc: (N, 4)."""

    def __init__(self, seed: int = 0):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.relu2 = nn.ReLU(inplace=True)  # modifies conv2's output in place: capture must copy first
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, 4)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=gen) * 0.3)

    def forward(self, x):
        x = self.relu1(self.conv1(x))
        x = self.relu2(self.conv2(x))
        return self.fc(self.pool(x).flatten(1))


N_SAMPLES = 40


@pytest.fixture(scope="session")
def model() -> TinyCNN:
    return TinyCNN(0).eval()


@pytest.fixture(scope="session")
def data() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    images = torch.rand(N_SAMPLES, 3, 16, 16, generator=gen)
    labels = torch.randint(0, 4, (N_SAMPLES,), generator=gen)
    return images, labels


def layer_output(model: nn.Module, name: str, images: torch.Tensor) -> torch.Tensor:
    """The output of layer ``name`` computed by hand (a cloned copy, before in-place ops)."""
    kept = {}

    def keep(module, inputs, output):  # returns None: a returned value would replace the output
        kept["out"] = output.detach().clone()

    handle = dict(model.named_modules())[name].register_forward_hook(keep)
    try:
        with torch.no_grad():
            model(images)
    finally:
        handle.remove()
    return kept["out"]


def assert_caches_equal(a, b) -> None:
    """Every tensor of two caches is bit-identical; the metadata matches."""
    assert list(a.layers) == list(b.layers)
    for name in a.layers:
        la, lb = a[name], b[name]
        for field in ("acts", "sample_id", "yx"):
            ta, tb = getattr(la, field), getattr(lb, field)
            assert ta.dtype == tb.dtype and torch.equal(ta.cpu(), tb.cpu()), (name, field)
        assert tuple(la.hw) == tuple(lb.hw) and tuple(la.rf) == tuple(lb.rf)
    for field in ("labels", "logits", "images", "sample_digest"):
        ta, tb = getattr(a, field), getattr(b, field)
        assert (ta is None) == (tb is None), field
        if ta is not None:
            assert ta.dtype == tb.dtype and torch.equal(ta.cpu(), tb.cpu()), field
    assert tuple(a.input_hw) == tuple(b.input_hw)
    assert a.classes == b.classes
    assert a.meta["fingerprint"] == b.meta["fingerprint"]
