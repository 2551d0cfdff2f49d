"""capture() on a ViT block (patch tokens as a grid, CLS handled explicitly) and with preprocess=."""

from __future__ import annotations

import warnings

import pytest
import torch

from atlaswidgets.cache.capture import capture
from atlaswidgets.cache.store import load_cache

from .conftest import TinyViT, layer_output


def cap(model, data, layers="block", **kw):
    kw.setdefault("progress", False)
    return capture(model, data, layers, **kw)


@pytest.fixture(scope="module")
def vit():
    return TinyViT(0).eval()


def test_a_vit_block_needs_its_cls_token_named(vit, data):
    images = data[0]
    with pytest.raises(ValueError, match=r"Layer 'block' outputs 17 tokens per image.*not a square grid "
                                         r"of patches. If the first 1 token\(s\) are CLS/register tokens, "
                                         r"pass prefix_tokens=1"):
        cap(vit, images)
    assert not vit.block._forward_hooks
    with pytest.raises(ValueError, match=r"with prefix_tokens=2 the other 15 are not a square grid"):
        cap(vit, images, prefix_tokens=2)
    with pytest.raises(ValueError, match=r"prefix_tokens must be an int >= 0"):
        cap(vit, images, prefix_tokens=-1)


def test_vit_patch_tokens_are_a_grid(vit, data):
    images, labels = data
    cache = cap(vit, (images, labels % 3), ["patch", "block"], sample="all", prefix_tokens=1, batch_size=16)
    la = cache["block"]
    assert la.kind == "grid" and la.hw == (4, 4) and la.n_rows == len(images) * 16
    want = layer_output(vit, "block", images)[:, 1:]  # (N, 16 patches, 16), row-major patches
    assert torch.allclose(la.acts, want.reshape(-1, 16), atol=1e-5)
    assert torch.equal(la.yx[:16], torch.stack([torch.arange(16) // 4, torch.arange(16) % 4], 1))
    # receptive fields in input pixels: a patch is 4x4; attention mixes every patch into a block token
    assert cache["patch"].rf == (4, 4) and la.rf == (16, 16)
    assert cache.logits.shape == (len(images), 3) and cache.meta["output"] == "per_sample"
    # the image path as for a conv layer: random positions on the grid, statistics, mean
    rand = cap(vit, images, per_image=5, prefix_tokens=1, stats={"k": 3})
    assert rand["block"].n_rows == 5 * len(images) and rand.stats["block"].hw == (4, 4)
    top = rand.stats["block"].top(0)
    flat = want[..., 0].amax(1)
    assert torch.allclose(torch.as_tensor(top.values), flat.sort(descending=True).values[:3], atol=1e-5)
    mean = cap(vit, images, sample="mean", prefix_tokens=1)
    assert torch.allclose(mean["block"].acts, want.mean(1), atol=1e-5)


def test_preprocess_runs_before_the_model_and_display_copies_come_from_the_raw_images(model, data, tmp_path):
    images, labels = data
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    calls = []

    def normalise(x):
        calls.append(len(x))
        return (x - mean.to(x)) / std.to(x)

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # raw images in [0, 1]: nothing to warn about
        cache = cap(model, (images, labels), "conv2", sample="all", preprocess=normalise,
                    store=tmp_path / "s")
    assert calls and cache.preprocess is normalise
    want = layer_output(model, "conv2", normalise(images))
    assert torch.allclose(cache["conv2"].acts, want.permute(0, 2, 3, 1).reshape(-1, 16), atol=1e-5)
    with torch.no_grad():
        assert torch.allclose(cache.logits, model(normalise(images)), atol=1e-5)
    assert torch.equal(cache.images, (images * 255).round().to(torch.uint8))
    # the same activations as normalising by hand, where display copies need to_display
    by_hand = cap(model, (normalise(images), labels), "conv2", sample="all",
                  to_display=lambda x: x * std.to(x) + mean.to(x))
    assert torch.allclose(by_hand["conv2"].acts, cache["conv2"].acts, atol=1e-6)
    # the receptive field is probed through preprocess, in raw input pixels
    assert cache["conv2"].rf == by_hand["conv2"].rf
    assert load_cache(tmp_path / "s", device="cpu").preprocess is None  # not on disk: pass it again
    with pytest.raises(TypeError, match="preprocess must be a function"):
        cap(model, images, preprocess="imagenet")
