"""Training KitchenNet: a one-epoch smoke test, determinism, the CLI, safe weight files."""

from __future__ import annotations

import json

import pytest
import torch

from atlaswidgets.zoo import kitchen
from atlaswidgets.zoo.kitchen import train


def test_one_epoch_smoke():
    net, history = train.train(n_train=256, epochs=1, seed=1, n_val=64, log=None)
    assert isinstance(net, kitchen.KitchenNet) and not net.training
    assert len(history) == 1
    row = history[0]
    assert row["epoch"] == 1 and 0.0 < row["loss"] < 10.0
    assert 0.0 <= row["train_acc"] <= 1.0 and 0.0 <= row["val_acc"] <= 1.0
    out = net(kitchen.dataset(4, seed=5).images)
    assert out.shape == (4, len(kitchen.CLASSES)) and torch.isfinite(out).all()


def test_training_is_deterministic():
    a, hist_a = train.train(n_train=96, epochs=1, seed=3, n_val=0, batch_size=32, log=None)
    b, hist_b = train.train(n_train=96, epochs=1, seed=3, n_val=0, batch_size=32, log=None)
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(pa, pb), name
    assert hist_a[0]["loss"] == hist_b[0]["loss"]
    c, _ = train.train(n_train=96, epochs=1, seed=4, n_val=0, batch_size=32, log=None)
    assert not torch.equal(a.head[2].weight, c.head[2].weight)


def test_cli_writes_safetensors_and_facts(tmp_path):
    out = tmp_path / "new-folder" / "tiny.safetensors"  # a folder that does not exist yet
    train.main(["--epochs", "1", "--n-train", "64", "--n-val", "32", "--seed", "2",
                "--out", str(out)])
    facts = json.loads(out.with_suffix(".json").read_text())
    assert facts["seed"] == 2 and facts["epochs"] == 1 and facts["n_train"] == 64
    assert 0.0 <= facts["val_acc"] <= 1.0
    # a safetensors file starts with its 8-byte header length and a JSON header, never a pickle
    raw = out.read_bytes()
    assert raw[8:9] == b"{" and not raw.startswith(b"\x80")
    net = kitchen.model(out)
    x = kitchen.dataset(3, seed=8).images
    assert net(x).shape == (3, len(kitchen.CLASSES))
    assert sorted(p.name for p in out.parent.iterdir()) == ["tiny.json", "tiny.safetensors"]


def test_cli_checks_the_output_path_before_training(tmp_path, capsys):
    for bad in (tmp_path / "weights.pt", tmp_path):
        with pytest.raises(SystemExit):
            train.main(["--epochs", "1", "--n-train", "64", "--out", str(bad)])
        assert "--out" in capsys.readouterr().err


def test_bad_training_arguments():
    with pytest.raises(ValueError, match="n_train must be an int >= 1"):
        train.train(n_train=0)
    with pytest.raises(ValueError, match="epochs must be an int >= 1"):
        train.train(n_train=10, epochs=0)
    with pytest.raises(ValueError, match="seed must be an int >= 0"):
        train.train(n_train=10, seed=-2)
