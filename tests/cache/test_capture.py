"""capture(): sampling policies, determinism, labels and logits, data forms, and bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from atlaswidgets.cache.capture import capture
from atlaswidgets.cache.data import DIGEST_SIZE, sample_digests
from atlaswidgets.cache.sampling import _splitmix64, _splitmix64_int, random_positions

from .conftest import N_SAMPLES, TinyCNN, layer_output


def cap(model, data, layers="conv2", **kw):
    kw.setdefault("progress", False)
    return capture(model, data, layers, **kw)


# ----------------------------------------------------------------------------- policies


def test_all_rows_are_the_layer_output_permuted(model, data):
    images = data[0]
    cache = cap(model, images, ["conv1", "conv2"], sample="all", batch_size=16)
    for name, (c, h, w) in {"conv1": (8, 16, 16), "conv2": (16, 8, 8)}.items():
        la = cache[name]
        out = layer_output(model, name, images)  # conv2's output before the in-place ReLU
        assert la.hw == (h, w) and la.acts.shape == (N_SAMPLES * h * w, c)
        assert torch.equal(la.acts, out.permute(0, 2, 3, 1).reshape(-1, c))
        assert torch.equal(la.sample_id, torch.arange(N_SAMPLES).repeat_interleave(h * w))
        grid = torch.stack(torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij"), -1).reshape(-1, 2)
        assert torch.equal(la.yx, grid.repeat(N_SAMPLES, 1))
        assert la.acts.dtype == torch.float32 and la.sample_id.dtype == la.yx.dtype == torch.int64


def test_random_rows_are_a_subset_of_all_rows(model, data):
    images = data[0]
    full = cap(model, images, sample="all")["conv2"]
    la = cap(model, images, sample="random", per_image=5, seed=3)["conv2"]
    assert la.acts.shape == (N_SAMPLES * 5, 16)
    assert torch.equal(la.sample_id, torch.arange(N_SAMPLES).repeat_interleave(5))
    flat = la.yx[:, 0] * 8 + la.yx[:, 1]
    per_sample = flat.reshape(N_SAMPLES, 5)
    assert (per_sample[:, 1:] > per_sample[:, :-1]).all()  # distinct and ascending within a sample
    assert torch.equal(la.acts, full.acts[la.sample_id * 64 + flat])


def test_random_takes_every_position_when_the_grid_is_smaller_than_per_image(model, data):
    la = cap(model, data[0][:3], sample="random", per_image=100)["conv2"]
    assert la.acts.shape == (3 * 64, 16)
    assert torch.equal(la.yx[:64, 0] * 8 + la.yx[:64, 1], torch.arange(64))


def test_mean_is_the_spatial_mean_and_accepts_flat_layers(model, data):
    images = data[0]
    cache = cap(model, images, ["conv1", "fc"], sample="mean")
    out = layer_output(model, "conv1", images)
    assert torch.allclose(cache["conv1"].acts, out.mean(dim=(2, 3)), atol=1e-6)
    assert torch.equal(cache["fc"].acts, layer_output(model, "fc", images))
    for la in cache.layers.values():
        assert torch.equal(la.sample_id, torch.arange(N_SAMPLES))
        assert (la.yx == -1).all()
    assert cache["fc"].rf == (16, 16)  # a flat layer sees the whole input


def test_float16_activations(model, data):
    cache = cap(model, data[0], sample="all", dtype=torch.float16)
    full = cap(model, data[0], sample="all")
    assert cache["conv2"].acts.dtype == torch.float16
    assert torch.equal(cache["conv2"].acts, full["conv2"].acts.half())
    assert cache.logits.dtype == torch.float32


# ----------------------------------------------------------------------------- determinism


def test_the_hash_matches_the_reference_splitmix64():
    xs = [0, 1, 2, 12345, -1, 2**62, -(2**63)]
    got = _splitmix64(torch.tensor(xs, dtype=torch.int64)).tolist()
    assert got == [_splitmix64_int(x) for x in xs]
    # the published first output of splitmix64 seeded with 0 (state advanced once by the golden gamma)
    assert _splitmix64_int(0) & (2**64 - 1) == 0xE220A8397B1DCDAF


def test_random_positions_depend_only_on_seed_and_sample():
    ids = torch.arange(100, 140)
    whole = random_positions(7, ids, 64, 6)
    pieces = torch.cat([random_positions(7, ids[i : i + 3], 64, 6) for i in range(0, 40, 3)])
    assert torch.equal(whole, pieces)
    assert not torch.equal(whole, random_positions(8, ids, 64, 6))
    # about uniform: every position is picked at a similar rate over many samples
    counts = torch.bincount(random_positions(0, torch.arange(20000), 64, 8).flatten(), minlength=64)
    assert counts.min() > 0.85 * 2500 and counts.max() < 1.15 * 2500


def test_random_is_seeded_and_independent_of_batch_size(model, data):
    a = cap(model, data, ["conv1", "conv2"], per_image=4, seed=5, batch_size=40)
    b = cap(model, data, ["conv1", "conv2"], per_image=4, seed=5, batch_size=7)
    c = cap(model, data, ["conv1", "conv2"], per_image=4, seed=6, batch_size=40)
    for name in ("conv1", "conv2"):
        assert torch.equal(a[name].yx, b[name].yx)
        assert torch.allclose(a[name].acts, b[name].acts, atol=1e-6)
        assert not torch.equal(a[name].yx, c[name].yx)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cpu_and_cuda_pick_the_same_rows(data):
    model = TinyCNN()
    on_cpu = cap(model, data, per_image=4, device="cpu")
    on_gpu = cap(model, data, per_image=4, device="cuda")
    assert on_gpu["conv2"].acts.device.type == "cuda"
    assert torch.equal(on_cpu["conv2"].yx, on_gpu["conv2"].yx.cpu())
    assert torch.allclose(on_cpu["conv2"].acts, on_gpu["conv2"].acts.cpu(), atol=1e-4)
    assert next(model.parameters()).device.type == "cpu"  # moved back


# ----------------------------------------------------------------------------- per sample


def test_labels_logits_images_and_metadata(model, data):
    images, labels = data
    cache = cap(model, (images, labels), classes=["a", "b", "c", "d"])
    with torch.no_grad():
        logits = model(images)
    assert torch.equal(cache.labels, labels)
    assert torch.allclose(cache.logits, logits, atol=1e-6) and cache.logits.dtype == torch.float32
    assert cache.images.dtype == torch.uint8 and cache.images.shape == (N_SAMPLES, 3, 16, 16)
    assert torch.equal(cache.images, (images.clamp(0, 1) * 255).round().to(torch.uint8))
    assert cache.input_hw == (16, 16) and cache.classes == ["a", "b", "c", "d"]
    assert cache.sample_digest.shape == (N_SAMPLES, 16) and cache.sample_digest.dtype == torch.uint8
    assert cache.meta["sample"] == "random" and cache.meta["per_image"] == 8
    assert cache.meta["rf"] == {"conv2": [5, 5]}
    assert cache["conv2"].rf == (5, 5)  # two 3x3 convs, the second with stride 2
    assert cap(model, images, "conv1")["conv1"].rf == (3, 3)
    assert (cap(model, images).labels == -1).all()  # no labels given


def test_sample_digests_see_every_bit_and_ignore_batching(data):
    images, labels = data
    whole = sample_digests(images, labels)
    assert len(whole) == len(images) * DIGEST_SIZE
    assert whole == sample_digests(images[:7], labels[:7]) + sample_digests(images[7:], labels[7:])
    changed = images.clone()
    changed[5, 2, 3, 4] = torch.nextafter(changed[5, 2, 3, 4], torch.tensor(2.0))  # one ulp
    other = sample_digests(changed, labels)
    rows = [other[i * DIGEST_SIZE : (i + 1) * DIGEST_SIZE] != whole[i * DIGEST_SIZE : (i + 1) * DIGEST_SIZE]
            for i in range(len(images))]
    assert rows == [i == 5 for i in range(len(images))]  # that sample only
    relabelled = labels.clone()
    relabelled[0] += 1
    assert sample_digests(images, relabelled)[:DIGEST_SIZE] != whole[:DIGEST_SIZE]
    assert sample_digests(images.double(), labels)[:DIGEST_SIZE] != whole[:DIGEST_SIZE]  # dtype counts


def test_to_display_and_keep_images(model, data):
    images = data[0]
    normalised = (images - 0.5) / 0.25
    cache = cap(model, normalised, to_display=lambda x: x * 0.25 + 0.5)
    assert torch.equal(cache.images, (images.clamp(0, 1) * 255).round().to(torch.uint8))
    assert cap(model, images, keep_images=False).images is None
    with pytest.raises(ValueError, match="pass to_display=fn"):
        cap(model, images, to_display=lambda x: x[:, :2])


def test_model_state_is_restored(data):
    model = TinyCNN().train()
    model.fc.eval()
    model.conv1.weight.requires_grad_(False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    threads = torch.get_num_threads()
    cap(model, data[0])
    assert model.training and not model.fc.training  # ran in eval mode, flags restored
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert [n for n, p in model.named_parameters() if not p.requires_grad] == ["conv1.weight"]
    assert all(p.grad is None for p in model.parameters())  # the probe took input gradients only
    assert torch.get_num_threads() == threads


# ----------------------------------------------------------------------------- data forms


def test_data_forms_give_the_same_cache(model, data):
    images, labels = data
    ref = cap(model, (images, labels), batch_size=8)
    loader = DataLoader(TensorDataset(images, labels), batch_size=8)
    generator = ((images[i : i + 8], labels[i : i + 8], "extra") for i in range(0, N_SAMPLES, 8))
    for form in (loader, generator, [(images[:20], labels[:20]), (images[20:], labels[20:])],
                 (images.numpy(), labels.numpy()), (images, labels, ["annotations"] * N_SAMPLES)):
        got = cap(model, form)
        assert torch.equal(got["conv2"].yx, ref["conv2"].yx)
        assert torch.allclose(got["conv2"].acts, ref["conv2"].acts, atol=1e-6)
        assert torch.equal(got.labels, labels)
    # dicts: a Hugging Face dataset in torch format, a DataLoader over a Dataset of dicts
    dicts = [{"pixel_values": images[i : i + 8], "label": labels[i : i + 8], "id": list(range(i, i + 8))}
             for i in range(0, N_SAMPLES, 8)]
    for form in (dicts, {"images": images, "labels": labels}, DataLoader(_DictDataset(images, labels), batch_size=8)):
        got = cap(model, form)
        assert torch.equal(got["conv2"].yx, ref["conv2"].yx)
        assert torch.allclose(got["conv2"].acts, ref["conv2"].acts, atol=1e-6)
        assert torch.equal(got.labels, labels)
    assert (cap(model, [{"image": images}]).labels == -1).all()  # labels are optional
    plain = cap(model, (images[i : i + 8] for i in range(0, N_SAMPLES, 8)))
    assert (plain.labels == -1).all() and plain.n_samples == N_SAMPLES
    batches = cap(model, [images[:10], images[10:]])  # a list of two image batches
    assert batches.n_samples == N_SAMPLES


class _DictDataset(torch.utils.data.Dataset):
    def __init__(self, images, labels):
        self.images, self.labels = images, labels

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return {"image": self.images[i], "label": self.labels[i], "caption": f"sample {i}"}


def test_dict_data_with_unknown_keys_or_bad_columns(model, data):
    images, labels = data
    with pytest.raises(TypeError, match=r"Batch 0 is a dict with keys \['jpeg', 'target'\], none of which "
                                        r"holds images.*'pixel_values'"):
        cap(model, [{"jpeg": images, "target": labels}])
    with pytest.raises(TypeError, match=r"data is a dict whose images must be one tensor \(N, C, H, W\), got list"):
        cap(model, {"image": [images[0]], "label": labels[:1]})
    with pytest.raises(ValueError, match=rf"labels must be one integer per image, shape \({N_SAMPLES},\), got \(3,\)"):
        cap(model, {"images": images, "labels": labels[:3]})


# ----------------------------------------------------------------------------- bad input


def test_bad_data(model, data):
    images = data[0]
    with pytest.raises(ValueError, match="data is empty"):
        cap(model, images[:0])
    with pytest.raises(ValueError, match="data is empty"):
        cap(model, iter([]))
    with pytest.raises(ValueError, match=r"one image; capture expects batches of shape \(N, C, H, W\)"):
        cap(model, [images[0]])
    with pytest.raises(ValueError, match=r"must have shape \(N, C, H, W\), got shape \(40, 3, 16, 16, 1\)"):
        cap(model, images[..., None])
    with pytest.raises(TypeError, match=r"must be a float tensor \(N, C, H, W\).*got dtype torch.uint8"):
        cap(model, (images * 255).to(torch.uint8))
    with pytest.raises(ValueError, match="Images of size 8x8 follow images of size 16x16"):
        cap(model, [images[:4], images[:4, :, :8, :8]])
    with pytest.raises(TypeError, match="labels must be integer class indices"):
        cap(model, [(images[:4], torch.zeros(4))])
    with pytest.raises(ValueError, match=r"labels must have shape \(4,\)"):
        cap(model, [(images[:4], torch.zeros(3, dtype=torch.long))])
    with pytest.raises(TypeError, match="data must be an image tensor"):
        cap(model, 42)
    with pytest.raises(ValueError, match="Images with 1 channels follow images with 3"):
        cap(model, [images[:4], images[:4, :1]])
    with pytest.raises(ValueError, match=r"The model failed on the first image, of shape \(1, 16, 16\) and "
                                         r"dtype torch.float32, with RuntimeError: .*3 channels.*layout \(C, H, W\)"):
        cap(model, images[:, :1])
    with pytest.raises(ValueError, match=r"They look channels-last \(N, H, W, C\).*images.permute\(0, 3, 1, 2\)"):
        cap(model, images.permute(0, 2, 3, 1).contiguous())
    with pytest.raises(ValueError, match=rf"a pair \(images, labels\) with {N_SAMPLES} images, but its labels "
                                         rf"have shape \(5,\); pass one integer label per image"):
        cap(model, (images, data[1][:5]))
    with pytest.raises(ValueError, match=r"but its labels have 2 items"):
        cap(model, (images, [0, 1]))
    with pytest.raises(TypeError, match="Batch 1 is a str"):
        cap(model, [images[:4], "images/0001.png"])


def test_the_models_own_error_is_not_blamed_on_the_images(data):
    # issue #17, item 8: a model's own RuntimeError was re-raised as a ValueError about image layout
    class Exploding(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)

        def forward(self, x):
            self.conv(x)
            raise RuntimeError("the lookup table is not loaded")

    with pytest.raises(RuntimeError, match="the lookup table is not loaded") as info:
        capture(Exploding(), data[0][:8], layers="conv", progress=False)
    assert "capture's first batch" in " ".join(getattr(info.value, "__notes__", []))


def test_store_must_be_a_path(model, data):
    with pytest.raises(TypeError, match=r"capture\(..., store=path\) needs a path \(str or pathlib.Path\), got int"):
        capture(model, data[0][:8], layers="conv1", store=123, progress=False)


def test_bad_arguments(model, data):
    images = data[0]
    with pytest.raises(ValueError, match="sample must be one of"):
        cap(model, images, sample="some")
    with pytest.raises(ValueError, match="per_image must be a positive int"):
        cap(model, images, per_image=0)
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        cap(model, images, batch_size=0)
    with pytest.raises(ValueError, match="dtype must be one of"):
        cap(model, images, dtype=torch.int32)
    with pytest.raises(TypeError, match="classes must be a list"):
        cap(model, images, classes="abcd")
    with pytest.raises(TypeError, match="progress must be True or False, got 0"):
        cap(model, images, progress=0)


def test_flat_layer_with_a_spatial_policy(model, data):
    with pytest.raises(ValueError, match=r"Layer 'fc' outputs shape \(N, 4\), but sample='random' needs a "
                       r"\(N, C, H, W\) or \(N, T, D\) output.*sample='mean'"):
        cap(model, data[0], "fc")

    class Seq(nn.Module):  # an (N, T, D) output of an image model is read as a ViT block's tokens
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv1d(3, 5, 3)

        def forward(self, x):
            return self.conv(x.flatten(2))

    seq = Seq()
    # 5 tokens are no square grid of patches; 5 - 1 are: the CLS token must be named
    with pytest.raises(ValueError, match=r"Layer 'conv' outputs 5 tokens per image.*not a square grid of "
                                         r"patches. If the first 1 token\(s\) are CLS/register tokens, pass "
                                         r"prefix_tokens=1"):
        cap(seq, data[0], "conv", sample="mean")


def test_predicate_top_examples_k_and_repr_details(model, data):
    with pytest.raises(TypeError, match=r"called as predicate\(name, module\).*lambda name, module"):
        cap(model, data[0], lambda name: name == "conv2")
    cache = cap(model, data[0])
    assert "classes none" in repr(cache)  # no class names, not an empty list
    direction = torch.ones(cache["conv2"].n_channels)
    assert np.array_equal(cache.top_examples(direction, np.int64(3)).rows, cache.top_examples(direction, 3).rows)


def test_non_finite_activations_name_the_layer_and_first_sample(model, data):
    images = data[0].clone()
    images[13, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="Layer 'conv1' has NaN or infinite values, first at sample 13"):
        cap(model, images, ["conv1", "conv2"], sample="all", batch_size=8)
    images[5, 1, 2, 2] = float("inf")
    with pytest.raises(ValueError, match="first at sample 5"):
        cap(model, images, "conv2", sample="mean", batch_size=8)


def test_outputs_that_are_not_tensors(data):
    class Pair(nn.Module):
        def forward(self, x):
            return x, x

    class Wrap(nn.Module):
        def __init__(self):
            super().__init__()
            self.pair = Pair()

        def forward(self, x):
            return self.pair(x)[0].mean(dim=(2, 3))

    with pytest.raises(TypeError, match="Layer 'pair' returns tuple, not a tensor"):
        cap(Wrap(), data[0], "pair")


def test_progress_bar_runs(model, data, capsys):
    cache = capture(model, data[0], "conv2", progress=True)
    assert cache.n_samples == N_SAMPLES
    assert "capture" in capsys.readouterr().err


def test_receptive_field_probe_falls_back_to_more_images_then_the_whole_input():
    net = nn.Sequential(nn.Conv2d(3, 2, 3, padding=1, bias=False), nn.ReLU())
    with torch.no_grad():
        net[0].weight.fill_(0.1)
    images = torch.rand(4, 3, 16, 16)
    images[0] = 0  # every unit is off on the first image: its gradient is zero
    assert cap(net, images, "1")["1"].rf == (3, 3)
    assert cap(net, torch.zeros(4, 3, 16, 16), "1")["1"].rf == (16, 16)


class _Announced:
    """An iterable of batches whose ``dataset`` announces a length (as a DataLoader's does)."""

    def __init__(self, images, labels, announced):
        self.images, self.labels, self.dataset = images, labels, range(announced)

    def __iter__(self):
        for i in range(0, len(self.images), 8):
            yield self.images[i : i + 8], self.labels[i : i + 8]


@pytest.mark.parametrize("sample", ["all", "random", "mean"])
def test_announced_length_may_be_wrong(model, data, sample):
    # captures write into buffers sized by the announced length; a wrong length must not matter
    images, labels = data
    ref = cap(model, _Announced(images, labels, 0), sample=sample)  # no length: pieces joined at the end
    for announced in (N_SAMPLES, N_SAMPLES - 13, N_SAMPLES + 9):
        got = cap(model, _Announced(images, labels, announced), sample=sample)
        assert got.n_samples == N_SAMPLES and got["conv2"].n_rows == ref["conv2"].n_rows
        assert torch.equal(got["conv2"].acts, ref["conv2"].acts)
        assert torch.equal(got["conv2"].yx, ref["conv2"].yx)
        assert torch.equal(got.images, ref.images) and torch.equal(got.logits, ref.logits)


def test_batch_norm_statistics_are_not_updated(data):
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU()).train()
    before = net[1].running_mean.clone()
    cache = cap(net, data[0], "1", sample="mean")
    assert torch.equal(net[1].running_mean, before) and net.training
    with torch.no_grad():
        net.eval()
        expected = net[1](net[0](data[0])).mean(dim=(2, 3))  # batch norm with its running statistics
    assert torch.allclose(cache["1"].acts, expected, atol=1e-5)


def test_class_names_come_from_the_model_and_the_repr_is_a_summary(model, data):
    wide = TinyCNN(0).eval()
    wide.fc = nn.Linear(16, 10)  # 10 logits: one per class name
    wide.classes = [f"class {i}" for i in range(10)]
    cache = capture(wide, data, "conv2", progress=False)
    # class names that do not match the logits' width are refused, not shown against other columns
    model.classes = [f"class {i}" for i in range(10)]
    try:
        with pytest.raises(ValueError, match=r"classes has 10 names, but the model's logits have 4 columns"):
            capture(model, data, "conv2", progress=False)
    finally:
        del model.classes
    assert cache.classes == [f"class {i}" for i in range(10)]
    text = repr(cache)
    assert "'class 5', ... (10 in all)" in text and "'conv2': LayerActs(rows=" in text
    assert "tensor(" not in text  # no tensor dumps
    assert capture(model, data, "conv2", progress=False).classes is None
