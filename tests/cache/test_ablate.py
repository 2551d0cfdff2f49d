"""aw.ablate: chosen units of a layer set during forward passes, the model restored on exit."""

from __future__ import annotations

import pytest
import torch

import atlaswidgets as aw
from atlaswidgets.cache.hooks import hooks

from .conftest import TinyCNN, TinyTextLM, text_batch


def test_ablate_zeroes_or_sets_units_and_restores_the_model():
    net = TinyCNN(0).eval()
    x = torch.rand(4, 3, 16, 16)
    with torch.no_grad():
        before = net(x)
    with torch.no_grad(), hooks(net, "relu1") as rec, aw.ablate(net, "conv1", [1, 5]):
        net(x)
        out = rec["relu1"]  # what the next layer received
        assert float(out[:, [1, 5]].abs().max()) == 0.0 and float(out[:, 0].abs().max()) > 0
    with torch.no_grad(), aw.ablate(net, "conv1", 2, value=0.5):
        with hooks(net, "relu1") as rec:
            net(x)
        assert torch.allclose(rec["relu1"][:, 2], torch.full_like(rec["relu1"][:, 2], 0.5))
    assert not net.conv1._forward_hooks
    with torch.no_grad():
        assert torch.equal(net(x), before)
    with pytest.raises(RuntimeError, match="boom"), aw.ablate(net, "conv1", [0]):
        raise RuntimeError("boom")
    assert not net.conv1._forward_hooks  # restored after an error too


def test_ablate_token_layers_along_the_last_dim_and_its_errors():
    lm = TinyTextLM(0).eval()
    ids, mask = text_batch(5)
    seen = {}
    with aw.ablate(lm, "embed", [3], value=torch.tensor([2.0])), torch.no_grad():
        handle = lm.block.register_forward_pre_hook(lambda m, args, kw: seen.update(x=args[0]),
                                                    with_kwargs=True)
        try:
            lm(ids, mask)
        finally:
            handle.remove()
    assert bool((seen["x"][..., 3] == 2.0).all()) and not bool((seen["x"][..., 2] == 2.0).all())
    # gradients flow through an ablated layer (no in-place change of the output)
    with aw.ablate(lm, "embed", [0, 1]):
        lm(ids, mask)["logits"].sum().backward()
    assert lm.head.weight.grad is not None
    with pytest.raises(ValueError, match="out of range: layer 'embed' has 16 units"), \
            aw.ablate(lm, "embed", [16]):
        lm(ids, mask)
    assert not lm.embed._forward_hooks
    with pytest.raises(ValueError, match="non-empty list"):
        with aw.ablate(lm, "embed", []):
            pass
    with pytest.raises(ValueError, match="one number per unit"):
        with aw.ablate(lm, "embed", [1, 2], value=[1.0]):
            pass
    with pytest.raises(ValueError, match="Unknown layer"):
        with aw.ablate(lm, "embedd", [1]):
            pass
