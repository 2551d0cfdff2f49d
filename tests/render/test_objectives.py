"""Objectives on hand-made activations: values, batching, algebra, descriptions, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from atlaswidgets.render import objectives as ob


@pytest.fixture()
def acts():
    gen = torch.Generator().manual_seed(0)
    return {"conv": torch.rand(3, 5, 4, 6, generator=gen), "fc": torch.rand(3, 7, generator=gen)}


def test_channel_mean_position_and_batched(acts):
    a = acts["conv"]
    assert torch.allclose(ob.channel("conv", 2)(acts), a[:, 2].mean((1, 2)))
    assert torch.allclose(ob.channel("conv", 2, position="center")(acts), a[:, 2, 2, 3])
    assert torch.allclose(ob.neuron("conv", 1, position=(0, 5))(acts), a[:, 1, 0, 5])
    batched = ob.channel("conv", [0, 4, 1], position="center")
    assert batched.batch == 3
    assert torch.allclose(batched(acts), torch.stack([a[0, 0, 2, 3], a[1, 4, 2, 3], a[2, 1, 2, 3]]))


def test_direction_is_a_dot_product_per_image(acts):
    a = acts["conv"]
    d = torch.arange(5.0)
    assert torch.allclose(ob.direction("conv", d, position="center")(acts), a[:, :, 2, 3] @ d)
    ds = torch.randn(3, 5)
    out = ob.direction("conv", ds)(acts)
    assert torch.allclose(out, (a.mean((2, 3)) * ds).sum(1))
    assert torch.allclose(ob.direction("fc", torch.ones(7))(acts), acts["fc"].sum(1))


def test_algebra_and_descriptions(acts):
    c, d = ob.channel("conv", 1), ob.direction("fc", np.ones(7))
    combo = c - 0.5 * d + 2 * c
    expect = 3 * c(acts) - 0.5 * d(acts)
    assert torch.allclose(combo(acts), expect)
    assert torch.allclose((-c)(acts), -c(acts))
    assert torch.allclose((c / 4)(acts), c(acts) / 4)
    assert torch.allclose(sum([c, c])(acts), 2 * c(acts))
    assert repr(combo) == "channel('conv', 1) - 0.5 * direction('fc', (7,) vector) + 2 * channel('conv', 1)"
    assert combo.layers == ("conv", "fc")
    with pytest.raises(TypeError):
        c * c
    with pytest.raises(ValueError, match="built for 3 and 2 images"):
        ob.channel("conv", [0, 1, 2]) + ob.channel("conv", [0, 1])


def test_whitening_inverts_the_covariance():
    gen = torch.Generator().manual_seed(1)
    a = torch.randn(500, 4, generator=gen) @ torch.tensor([[2.0, 0, 0, 0], [1, 1, 0, 0], [0, 0, 3, 0], [0, 0, 0, 0.5]])
    s = ob.whitening(a, ridge=1e-6)
    cov = a.T.double() @ a.double() / 500
    assert torch.allclose(s.double() @ cov, torch.eye(4, dtype=torch.float64), atol=1e-3)
    # a dead channel stays finite thanks to the ridge
    a[:, 3] = 0
    assert torch.isfinite(ob.whitening(a)).all()


def test_icon_value_rewards_alignment_and_rare_channels():
    v = torch.tensor([1.0, 1.0, 0.0])
    aligned = torch.tensor([[2.0, 2.0, 0.0]])
    skew = torch.tensor([[2.0, 2.0, 2.0]])
    assert ob.icon_value(aligned, v)[0] > ob.icon_value(skew, v)[0]
    # value = dot * cos^4; with S = I and cos = 1 it is the plain dot
    assert torch.isclose(ob.icon_value(aligned, v)[0], torch.tensor(4.0))
    # whitening: channel 0 is common (large variance), channel 1 rare -> rare counts more
    s = torch.diag(torch.tensor([0.1, 10.0, 1.0]))
    h0, h1 = torch.tensor([[1.0, 0.5, 0]]), torch.tensor([[0.5, 1.0, 0]])
    assert ob.icon_value(h1, v, s)[0] > ob.icon_value(h0, v, s)[0]
    obj = ob.icon("conv", torch.ones(2, 5), whiten=torch.eye(5))
    assert obj.batch == 2 and "whitened" in repr(obj) and "cos^4" in repr(obj)


def test_diversity_is_low_for_identical_images(acts):
    same = {"conv": acts["conv"][:1].expand(3, -1, -1, -1)}
    assert torch.allclose(ob.diversity("conv")(same), torch.full((3,), -1.0), atol=1e-5)
    groups = ob.diversity("conv", groups=[0, 0, 1])(acts)
    assert groups[2] == 0  # alone in its group
    assert groups[0] < 0 and torch.isclose(groups[0], groups[1])


def test_bad_input(acts):
    with pytest.raises(ValueError, match="channel 9 is out of range for layer 'conv', which has 5 channels"):
        ob.channel("conv", 9)(acts)
    with pytest.raises(ValueError, match=r"position \(4, 0\) is outside the 4x6 grid .* y in \[0, 3\]"):
        ob.neuron("conv", 0, position=(4, 0))(acts)
    with pytest.raises(ValueError, match="direction has length 4 but layer 'conv' has 5 channels"):
        ob.direction("conv", np.ones(4))(acts)
    with pytest.raises(ValueError, match="NaN or infinite values \\(rows \\[1\\]\\)"):
        ob.icon("conv", [[1.0] * 5, [np.nan] * 5])
    with pytest.raises(ValueError, match="built for 2 images but the batch holds 3"):
        ob.direction("conv", np.ones((2, 5)))(acts)
    with pytest.raises(ValueError, match="no spatial grid"):
        ob.neuron("fc", 0, position=(0, 0))(acts)
    with pytest.raises(ValueError, match='position must be None .* "center"'):
        ob.channel("conv", 0, position="middle")
    with pytest.raises(ValueError, match="whiten must have shape \\(5, 5\\)"):
        ob.icon("conv", np.ones(5), whiten=np.eye(4))
    with pytest.raises(TypeError, match="channels must be an int or a list of ints"):
        ob.channel("conv", 1.5)
