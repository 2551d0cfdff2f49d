"""The shipped KitchenNet: loads safely, is accurate on a fresh seed, and uses the noodles cue."""

from __future__ import annotations

import pytest
import torch

from atlaswidgets.zoo import kitchen
from atlaswidgets.experiments import model_card
from atlaswidgets.zoo.kitchen import evaluate, train

FRESH_SEED = 2024   # neither the training seed (0) nor the validation seed


@pytest.fixture(scope="module")
def net():
    return kitchen.model()


@pytest.fixture(scope="module")
def fresh():
    return kitchen.dataset(1200, seed=FRESH_SEED)


@pytest.fixture(scope="module")
def preds(net, fresh):
    return evaluate.predict(net, fresh.images)


def test_model_loads_in_eval_mode_on_cpu(net):
    assert isinstance(net, kitchen.KitchenNet) and not net.training
    assert all(p.device.type == "cpu" for p in net.parameters())
    names = dict(net.named_modules())
    assert {"block1", "block2", "block3", "block4", "head"} <= set(names)
    assert kitchen.net.WEIGHTS.stat().st_size <= 10 * 1024 * 1024


def test_block_grid_sizes(net):
    x = torch.rand(2, 3, 64, 64)
    sizes = {}
    hooks = [getattr(net, f"block{k}").register_forward_hook(
        lambda m, i, o, k=k: sizes.__setitem__(k, tuple(o.shape[-2:]))) for k in range(1, 5)]
    try:
        net(x)
    finally:
        for h in hooks:
            h.remove()
    assert sizes == {1: (64, 64), 2: (32, 32), 3: (16, 16), 4: (8, 8)}


def test_training_facts_match_the_weights():
    facts = kitchen.net.training_facts()
    assert facts["seed"] == 0 and facts["epochs"] >= 1 and facts["classes"] == kitchen.CLASSES
    assert FRESH_SEED not in (facts["seed"], facts["val_seed"])


def test_clean_accuracy_on_fresh_seed(fresh, preds):
    acc = float((preds == fresh.labels).float().mean())
    assert acc >= 0.90, acc


def test_accuracy_helper_agrees(net, fresh, preds):
    acc = train.accuracy(net, fresh.images[:200], fresh.labels[:200])
    assert acc == pytest.approx(int((preds[:200] == fresh.labels[:200]).sum()) / 200)


def test_noodles_patch_flips_frying_pans_to_wok(net, fresh, preds):
    # best corner and size per image, as in the Activation Atlases experiment
    result = model_card.patch_experiment(net, fresh, sizes=(20, 24), preds=preds)
    assert result["n_images"] >= 100
    assert result["noodles_flip"] >= 0.30, result["noodles_flip"]
    assert result["noise_flip"] < result["noodles_flip"] / 3, result


def test_missing_weights_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="python -m atlaswidgets.zoo.kitchen.train"):
        kitchen.model(tmp_path / "nothing.safetensors")


def test_patch_experiment_old_place_forwards_with_warning():
    # the world no longer imports the experiment; the old name forwards for one release
    with pytest.warns(FutureWarning, match="experiments.model_card.patch_experiment"):
        old = evaluate.patch_experiment
    assert old is model_card.patch_experiment
