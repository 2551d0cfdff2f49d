"""Every path that runs a user's model feeds it on its own device and in its own dtype.

Half-precision models are common on GPUs; here a bfloat16 copy of the kitchen model stands in for
one (CPU convolutions take bfloat16). Before, feature_vis, render_icons, the neuron viewer's maps
and ModelDiff.class_shift fed it float32 images and failed deep inside torch. The CUDA moves
themselves can only run where there is a GPU (the tests marked "needs CUDA").
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

import atlaswidgets as aw
from atlaswidgets.cache.hooks import as_model_input, model_device, model_dtype, on_device, placement
from atlaswidgets.experiments.diff import diff_models
from atlaswidgets.render.icons import render_icons
from atlaswidgets.cache.facts import LayerOutputs
from atlaswidgets.zoo import kitchen

LAYER = "block4"


def needs_cuda(test):
    """Marked cuda (``make gpu-check`` runs these) and skipped without a GPU."""
    return pytest.mark.cuda(pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")(test))


@pytest.fixture(scope="module")
def nets():
    full = kitchen.model()
    return full, copy.deepcopy(full).to(torch.bfloat16)


@pytest.fixture(scope="module")
def data():
    return kitchen.dataset(48, seed=21)


def _cos(a, b) -> float:
    a, b = a.double().flatten(), b.double().flatten()
    return float(a @ b / (a.norm() * b.norm()))


def test_helpers_report_the_models_place_and_dtype(nets):
    full, half = nets
    assert model_device(full).type == "cpu" and model_dtype(full) == torch.float32
    assert model_dtype(half) == torch.bfloat16
    x = torch.rand(2, 3, 8, 8)
    assert as_model_input(half, x).dtype == torch.bfloat16
    assert as_model_input(half, torch.zeros(2, dtype=torch.int64)).dtype == torch.int64  # ids stay ids
    assert model_device(torch.nn.ReLU()).type == "cpu"  # no parameters: the CPU
    if not torch.cuda.is_available():
        assert placement(full, None) == (torch.device("cpu"), None)
    with on_device(full, "cpu") as dev:
        assert dev.type == "cpu"
    assert model_device(full).type == "cpu"


def test_by_default_a_cpu_model_runs_on_cuda_when_there_is_one(nets, monkeypatch):
    full, _ = nets
    monkeypatch.delenv("ATLASWIDGETS_DEVICE", raising=False)  # tests/conftest.py sets it
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    # (where to run, where to move the model back to afterwards)
    assert placement(full, None) == (torch.device("cuda", 0), torch.device("cpu"))
    assert placement(full, "cpu") == (torch.device("cpu"), None)
    assert placement(torch.nn.ReLU(), None) == (torch.device("cuda", 0), None)
    with pytest.raises(ValueError, match=r"device='cuda:3' but this machine has 1 CUDA device\(s\)"):
        placement(full, "cuda:3")
    monkeypatch.setenv("ATLASWIDGETS_DEVICE", "cpu")  # keeps the work on the CPU
    assert placement(full, None) == (torch.device("cpu"), None)
    assert placement(torch.nn.ReLU(), None) == (torch.device("cpu"), None)
    monkeypatch.setenv("ATLASWIDGETS_DEVICE", "tpu9")
    with pytest.raises(ValueError, match="environment variable ATLASWIDGETS_DEVICE='tpu9' is not usable"):
        placement(full, None)


def test_unknown_devices_are_clear_errors(nets, data, tmp_path):
    full, _ = nets
    cache = aw.capture(full, data, LAYER, progress=False, device="cpu")
    path = cache.save(tmp_path / "s")
    for call in (lambda: aw.capture(full, data, LAYER, progress=False, device="gpu"),
                 lambda: cache.to("gpu"), lambda: aw.ActivationCache.load(path, device="gpu")):
        with pytest.raises(ValueError, match="device='gpu' is not a device torch knows; pass 'cpu', 'cuda'"):
            call()
    # a device type torch knows but this kit does not run on is refused before the model moves:
    # on "meta" its weights could not be moved back
    weight = full.state_dict()[next(iter(full.state_dict()))].clone()
    for kind in ("meta", "mps", "xpu"):
        for call in (lambda: aw.capture(full, data, LAYER, progress=False, device=kind),
                     lambda: cache.to(kind), lambda: aw.ActivationCache.load(path, device=kind),
                     lambda: aw.feature_vis(full, aw.objectives.channel(LAYER, 3), size=32,
                                            steps=1, device=kind)):
            with pytest.raises(ValueError, match=f"a '{kind}' device is not supported"):
                call()
    assert model_device(full).type == "cpu" and torch.equal(full.state_dict()[next(iter(full.state_dict()))], weight)
    if not torch.cuda.is_available():
        for call in (lambda: cache.to("cuda"), lambda: aw.ActivationCache.load(path, device="cuda")):
            with pytest.raises(ValueError, match="CUDA is not available here"):
                call()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message given without CUDA")
def test_asking_for_cuda_without_it_is_a_clear_error(nets):
    full, _ = nets
    obj = aw.objectives.channel(LAYER, 3)
    with pytest.raises(ValueError, match="CUDA is not available"):
        aw.feature_vis(full, obj, size=32, steps=1, device="cuda")
    with pytest.raises(ValueError, match="CUDA is not available"):
        render_icons(full, LAYER, torch.rand(2, 128), size=32, steps=1, device="cuda", progress=False)
    assert model_device(full).type == "cpu"


def test_half_model_capture_and_attribution_match_float32(nets, data):
    full, half = nets
    a = aw.capture(full, data, LAYER, sample="all", progress=False)
    b = aw.capture(half, data, LAYER, sample="all", progress=False)
    assert _cos(a[LAYER].acts, b[LAYER].acts) > 0.99
    fa = aw.attribute(full, data, LAYER, ("wok", "frying pan"), cache=a, store=False,
                      progress=False).per_channel
    fb = aw.attribute(half, data, LAYER, ("wok", "frying pan"), cache=b, store=False,
                      progress=False).per_channel
    assert _cos(fa, fb) > 0.95


def test_half_model_feature_vis_and_icons(nets, data):
    full, half = nets
    obj = aw.objectives.channel(LAYER, 84)
    few = aw.feature_vis(half, obj, size=64, steps=1, seed=0)
    more = aw.feature_vis(half, obj, size=64, steps=24, seed=0)
    assert np.isfinite(more.values).all() and float(more.values[0]) > float(few.values[0])
    cache = aw.capture(full, data, LAYER, progress=False)
    dirs = cache[LAYER].acts[:3]
    icons = render_icons(half, LAYER, dirs, size=64, steps=8, whiten=cache, progress=False)
    assert icons.icons.shape == (3, 3, 64, 64) and np.isfinite(icons.values).all()
    assert next(half.parameters()).dtype == torch.bfloat16  # the model itself is untouched


def test_half_model_neuron_maps_match_float32(nets, data):
    full, half = nets
    cache = aw.capture(full, data, LAYER, progress=False)
    ids = np.array([0, 5, 7])
    want = LayerOutputs(full, cache.input_hw, None)(cache.images, LAYER, (8, 8), ids)
    got = LayerOutputs(half, cache.input_hw, None)(cache.images, LAYER, (8, 8), ids)
    assert got.dtype == torch.float32 and got.shape == want.shape
    assert _cos(want, got) > 0.99


def test_half_model_class_shift_against_itself(nets, data):
    _, half = nets
    d = diff_models(half, copy.deepcopy(half), data, layers=[LAYER], per_image=4)
    shift = d.class_shift(LAYER)
    assert len(shift) == len(kitchen.CLASSES)
    assert all(abs(r["novel_change"]) < 1e-3 for r in shift)


@needs_cuda
def test_render_moves_the_model_to_cuda_and_back(nets):
    full, _ = nets
    out = aw.feature_vis(full, aw.objectives.channel(LAYER, 3), size=32, steps=2, device="cuda")
    assert out.images.device.type == "cpu" and model_device(full).type == "cpu"
    icons = render_icons(full, LAYER, torch.rand(2, 128), size=32, steps=2, device="cuda", progress=False)
    assert len(icons) == 2 and model_device(full).type == "cpu"


@needs_cuda
def test_class_shift_with_caches_on_cuda_and_models_on_the_cpu(data):
    base = kitchen.model()
    d = diff_models(base, copy.deepcopy(base), data, layers=[LAYER], per_image=4)
    d.cache_a, d.cache_b = d.cache_a.to("cuda"), d.cache_b.to("cuda")
    assert len(d.class_shift(LAYER)) == len(kitchen.CLASSES)
