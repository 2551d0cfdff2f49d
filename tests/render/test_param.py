"""Parameterisations and transforms: shapes, ranges, seeding, the 1/f spectrum, bad input."""

from __future__ import annotations

import pytest
import torch

from atlaswidgets.render.param import fft_image, make_image, pixel_image
from atlaswidgets.render.transforms import (compose, default_transforms, jitter, pad, random_affine,
                                            random_rotate, random_scale)


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("build", [fft_image, pixel_image])
def test_images_in_unit_range_with_batch_shape(build):
    params, image_fn = build(3, 20, 24, generator=_gen())
    img = image_fn()
    assert img.shape == (3, 3, 20, 24)
    assert img.min() >= 0 and img.max() <= 1
    assert all(p.requires_grad for p in params)
    # the gradient reaches the parameters
    img.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in params)


def test_same_seed_same_image_other_seed_other_image():
    a = fft_image(2, 16, generator=_gen(1))[1]()
    b = fft_image(2, 16, generator=_gen(1))[1]()
    c = fft_image(2, 16, generator=_gen(2))[1]()
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_fft_start_is_dominated_by_low_frequencies():
    # 1/f scaling: a random spectrum gives an image whose low-frequency power is far above white noise
    _, fn = fft_image(8, 64, sd=1.0, decorrelate=False, generator=_gen())
    _, px = pixel_image(8, 64, sd=1.0, decorrelate=False, generator=_gen())

    def low_share(img):
        logit = torch.logit(img.detach().clamp(1e-6, 1 - 1e-6))
        power = torch.fft.rfft2(logit - logit.mean((2, 3), keepdim=True)).abs() ** 2
        fy = torch.fft.fftfreq(64)[:, None].abs()
        fx = torch.fft.rfftfreq(64)[None, :]
        low = (torch.maximum(fy, fx) < 0.1)
        return float(power[..., low].sum() / power.sum())

    assert low_share(fn()) > 0.6
    assert low_share(px()) < 0.2


def test_decorrelation_couples_colour_channels():
    # with decorrelation one parameter channel moves all three RGB channels together
    params, fn = pixel_image(1, 8, decorrelate=True, sd=0.0, generator=_gen())
    with torch.no_grad():
        params[0][:, 0] = 1.0
    rgb = fn()[0, :, 0, 0]
    assert (rgb > 0.5).all()


def test_make_image_by_name_and_bad_names():
    params, fn = make_image("pixel", 2, 8, generator=_gen())
    assert fn().shape == (2, 3, 8, 8)
    with pytest.raises(ValueError, match="Unknown parameterisation 'jpeg'"):
        make_image("jpeg", 1, 8)
    with pytest.raises(ValueError, match="h must be an int >= 1"):
        fft_image(1, 0)


def test_transforms_are_per_image_seeded_and_keep_the_size():
    x = torch.rand(6, 3, 64, 64)
    t = default_transforms(64)
    a, b = t(x, _gen(3)), t(x, _gen(3))
    assert a.shape == x.shape
    assert torch.equal(a, b)
    assert not torch.equal(t(x, _gen(4)), a)
    # per-image randomness: identical inputs come out different
    same = x[:1].expand(6, -1, -1, -1)
    out = t(same, _gen(0))
    assert not torch.equal(out[0], out[1])
    assert "shift 3," in repr(t) and "rotate -10..10 deg" in repr(t)
    assert "shift 12," in repr(default_transforms(224))


def test_random_affine_is_the_composition_in_one_resampling():
    x = torch.rand(5, 3, 32, 32)
    # integer shifts only: the same draws as pad + jitter + identity zoom/turn + jitter, exactly
    steps = compose(pad(3), jitter(3), random_scale([1.0]), random_rotate([0]), jitter(3))
    assert torch.allclose(random_affine(3, [1.0], [0])(x, _gen(7)), steps(x, _gen(7)), atol=1e-5)
    # a zoom in (nothing sampled from outside): one resampling, as random_scale alone
    assert torch.allclose(random_affine(0, [1.5], [0])(x, _gen(1)), random_scale([1.5])(x, _gen(1)),
                          atol=1e-5)
    # a half turn of a non-square image is a flip of both axes; outside the image is the fill
    wide = torch.rand(2, 3, 16, 40)
    assert torch.allclose(random_affine(0, [1.0], [180])(wide, _gen()), wide.flip(2, 3), atol=1e-5)
    small = random_affine(0, [0.5], [0], fill=0.25)(x, _gen())
    assert torch.allclose(small[:, :, 0, 0], torch.full((5, 3), 0.25))
    # the zoom and the turn are drawn per image, and the input gets a gradient
    y = x[:1].expand(4, -1, -1, -1).clone().requires_grad_(True)
    out = random_affine(2, [0.9, 1.0, 1.1], list(range(-10, 11)))(y, _gen(3))
    assert len({tuple(o.flatten()[:50].tolist()) for o in out}) > 1
    out.sum().backward()
    assert y.grad.abs().sum() > 0


def test_jitter_crops_shifted_windows():
    x = torch.arange(10.0)[None, None, None, :].expand(4, 3, 10, 10).contiguous()
    out = jitter(2)(x, _gen())
    assert out.shape == (4, 3, 8, 8)
    starts = out[:, 0, 0, 0]
    assert set(starts.tolist()) <= {0.0, 1.0, 2.0}
    # each crop is a contiguous window
    assert torch.equal(out[:, 0, 0], starts[:, None] + torch.arange(8.0))
    # the gradient reaches exactly each image's own window, once per pixel
    x = torch.rand(4, 3, 10, 10, requires_grad=True)
    out = jitter(2)(x, _gen())
    (g,) = torch.autograd.grad(out.sum(), x)
    for i in range(4):
        oy, ox = (g[i, 0] > 0).nonzero().min(0).values.tolist()
        assert torch.equal(out[i], x[i, :, oy : oy + 8, ox : ox + 8])
        want = torch.zeros(3, 10, 10)
        want[:, oy : oy + 8, ox : ox + 8] = 1
        assert torch.equal(g[i], want)


def test_scale_and_rotate_identity_settings_and_gradients():
    x = torch.rand(2, 3, 16, 16, requires_grad=True)
    assert torch.allclose(random_scale([1.0])(x, _gen()), x, atol=1e-5)
    assert torch.allclose(random_rotate([0])(x, _gen()), x, atol=1e-5)
    r90 = random_rotate([90])(x, _gen())
    assert torch.allclose(r90, torch.rot90(x, k=1, dims=(2, 3)), atol=1e-4) or torch.allclose(
        r90, torch.rot90(x, k=-1, dims=(2, 3)), atol=1e-4)
    compose(pad(2), random_scale([1.1]), jitter(4))(x, _gen()).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_transform_bad_input():
    with pytest.raises(ValueError, match="scales must be a non-empty list of positive"):
        random_scale([0.0, 1.0])
    with pytest.raises(ValueError, match="width must be an int >= 0"):
        pad(-1)
    with pytest.raises(ValueError, match="jitter\\(9\\) needs images larger"):
        jitter(9)(torch.rand(1, 3, 8, 8), _gen())
    with pytest.raises(ValueError, match="degrees must be a non-empty list of finite numbers"):
        random_affine(2, [1.0], [float("nan")])
    with pytest.raises(ValueError, match="shift=8\\) needs images larger"):
        random_affine(8)(torch.rand(1, 3, 8, 8), _gen())
    with pytest.raises(ValueError, match="fill must be a finite number"):
        random_affine(1, fill="grey")
    with pytest.raises(TypeError, match="every transform must be callable"):
        compose(pad(1), 3)
