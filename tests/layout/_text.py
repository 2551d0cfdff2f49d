"""A text world batch in which the hostile token is common, for text atlas and widget tests.

The corpus writes ``source : <img src=x onerror=alert(1)> .`` at the end of about one document in
twenty; here it is appended to every document that has room, so the token gathers a cell of its
own in an atlas of a TinyLM layer, and the pages' escaping is tested on a cell and examples that
really hold it.
"""

from __future__ import annotations

import torch

from atlaswidgets.zoo import text


def hostile_text_data(n: int = 60, seed: int = 3) -> dict[str, torch.Tensor]:
    """``{"input_ids", "attention_mask"}``, shape (n, 80), of ``text.corpus(n, seed)`` with the
    hostile source line appended (before ``<eos>``) to each document that lacks it and has room."""
    data = text.corpus(n, seed=seed)
    ids = data.columns["input_ids"].clone()
    mask = data.columns["attention_mask"].clone()
    tail = torch.tensor(text.encode(f"source : {text.HOSTILE} ."))
    eos, hostile = text.VOCAB.index("<eos>"), text.VOCAB.index(text.HOSTILE)
    for i in range(n):
        length = int(mask[i].sum())
        if ids[i, length - 1] != eos or (ids[i] == hostile).any() or length + len(tail) > ids.shape[1]:
            continue
        ids[i, length - 1: length - 1 + len(tail)] = tail
        ids[i, length - 1 + len(tail)] = eos
        mask[i, : length + len(tail)] = 1
    return {"input_ids": ids, "attention_mask": mask}


def pca_xy(cache, layer: str):
    """A 2-D layout of a layer's rows by their first two principal components (no UMAP run)."""
    acts = cache[layer].acts.float()
    centred = acts - acts.mean(0)
    return (centred @ torch.linalg.svd(centred, full_matrices=False).Vh[:2].T).numpy()
