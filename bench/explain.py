"""Explaining whole layers offline: time, the planted cues found, and a stopped run resumed.

    python bench/explain.py [--images 1200] [--docs 300] [--repeats 3] [--repeats-mgis 20] [--threads T] [--only kitchen|text]

Issue #19's done-when, measured:

- Time to explain and score all 128 units of the kitchen model's block4 with the offline concept
  pair (``explain_layer``, in memory; goal < 60 s on 2 cores), the median of ``--repeats`` runs,
  beside the time ``find_units`` takes to score one fixed explanation on every unit (the cost of
  the scoring alone, same process) and the capture the layer came from.
- Kitchen world, block3 and block4, annotations as ground truth: for each planted cue (noodles,
  eggs, steam) the unit ``find_units`` ranks first for "its receptive field overlaps the cue",
  the explanation ``explain_layer`` gives it and the score (goal: names the cue, >= 0.7).
- Text world (``text.corpus(docs, seed=2024)``, TinyLM's two MLP layers, token pair): for the
  token-identity truth ``salt`` and the planted cue word ``chopsticks``, the same.
- MG-IS (``explain.sampling.compare_sampling``): at a budget of 50 inputs per unit, over all
  block4 units, the mean absolute error against the all-data score of uniform sampling, top-only
  and MG-IS (goal: MG-IS at least 3x smaller than uniform).
- A run stopped by an error after 40 units (chunks of 16) resumes to the table of a run never
  stopped, explaining only the units not yet stored.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without install

import atlaswidgets as aw  # noqa: E402
from atlaswidgets.explain import ConceptExplainer, find_units, rf_overlap  # noqa: E402
from atlaswidgets.explain.sampling import compare_sampling  # noqa: E402

CUES = ("noodles", "eggs", "steam")


class StopsAt(ConceptExplainer):
    """The concept explainer (same name, same store key) raising on call ``at``; counts calls."""

    def __init__(self, at=None):
        super().__init__()
        self.at, self.calls = at, 0

    def explain(self, unit, samples=None):
        self.calls += 1
        if self.at is not None and self.calls == self.at:
            raise RuntimeError("stopped")
        return super().explain(unit, samples)


def kitchen(args) -> None:
    from atlaswidgets.zoo import kitchen as kw

    t = time.perf_counter()
    data = kw.dataset(args.images, seed=7)
    t_data = time.perf_counter() - t
    t = time.perf_counter()
    cache = aw.capture(kw.model(), (data.images, data.labels), ["block3", "block4"], progress=False,
                       stats=True)
    t_cap = time.perf_counter() - t
    print(f"kitchen: dataset({args.images}, seed=7) {t_data:.1f} s, capture block3+block4 with stats "
          f"{t_cap:.1f} s")
    ann = data.annotations

    explain_s, score_s, tables = [], [], {}
    for _ in range(args.repeats):
        t = time.perf_counter()
        tables["block4"] = aw.explain_layer(cache, "block4", annotations=ann, store=None, progress=False)
        explain_s.append(time.perf_counter() - t)
        t = time.perf_counter()
        find_units(cache, rf_overlap(cache, "noodles", "block4"), "block4", ann, top=None)
        score_s.append(time.perf_counter() - t)
    e, s = statistics.median(explain_s), statistics.median(score_s)
    print(f"block4, 128 units: explain_layer {e:.2f} s (median of {args.repeats}: "
          f"{', '.join(f'{x:.2f}' for x in explain_s)}); find_units, one explanation on every unit "
          f"{s:.2f} s; ratio {e / s:.2f}; goal < 60 s")
    tables["block3"] = aw.explain_layer(cache, "block3", annotations=ann, store=None, progress=False)

    for layer in ("block3", "block4"):
        table = tables[layer]
        named = {c: len(table.search(c)) for c in CUES}
        print(f"{layer}: units explained by each cue {named}; of {len(table)}")
        for cue in CUES:
            best = find_units(cache, rf_overlap(cache, cue, layer), layer, ann, top=1)[0]
            row = table.unit(best.unit)
            ok = "ok" if row["explanation"] == f'object "{cue}"' and row["score"] >= 0.7 else "MISSED"
            top = table.search(cue)[0]
            print(f"  {cue}: channel {best.unit} (find_units {best.top_and_random:.3f}) -> "
                  f"{row['explanation']} score {row['score']:.3f} (top only {row['top_only']:.3f}, "
                  f"random only {row['random_only']:.3f}) [{ok}]; best '{cue}' unit: channel "
                  f"{top['unit']} {top['score']:.3f}")

    t = time.perf_counter()
    cmp = compare_sampling(cache, tables["block4"], aw.ConceptSimulator(), ann, budget=50,
                           repeats=args.repeats_mgis, seed=0)
    mae = cmp.mae
    print(f"MG-IS, block4, budget 50 inputs per unit of {args.images}, {args.repeats_mgis} draws per "
          f"unit ({time.perf_counter() - t:.1f} s): mean absolute error against the all-data score: "
          f"uniform {mae['uniform']:.4f}, top-only {mae['top']:.4f}, MG-IS {mae['mgis']:.4f}; "
          f"uniform / MG-IS {mae['uniform'] / mae['mgis']:.2f}x (goal >= 3x); MG-IS better on "
          f"{int((cmp.errors['mgis'] < cmp.errors['uniform']).sum())} of {len(cmp.units)} units")

    with tempfile.TemporaryDirectory() as tmp:
        stopped = StopsAt(41)
        try:
            aw.explain_layer(cache, "block4", stopped, annotations=ann, store=tmp, chunk=16, progress=False)
        except RuntimeError:
            pass
        rest = StopsAt()
        t = time.perf_counter()
        resumed = aw.explain_layer(cache, "block4", rest, annotations=ann, store=tmp, chunk=16,
                                   progress=False)
        t_resume = time.perf_counter() - t
        t = time.perf_counter()
        again = aw.explain_layer(cache, "block4", StopsAt(1), annotations=ann, store=tmp, progress=False)
        t_read = time.perf_counter() - t
    print(f"resume: stopped at unit 41 (chunks of 16), resumed explaining {rest.calls} units in "
          f"{t_resume:.2f} s; same table as an unstopped run: {resumed == tables['block4']}; "
          f"a third call read the store in {t_read * 1000:.0f} ms, same table: {again == resumed}")


def text_world(args) -> None:
    from atlaswidgets.zoo import text

    data = text.corpus(args.docs, seed=2024)
    layers = ["blocks.0.mlp.act", "blocks.1.mlp.act"]
    t = time.perf_counter()
    cache = aw.capture(text.model(), data.columns, layers, sample="all", progress=False, stats=True)
    print(f"text: corpus({args.docs}, seed=2024), capture {len(layers)} MLP layers (sample='all', "
          f"stats) {time.perf_counter() - t:.1f} s")
    cue_id = text.VOCAB.index(text.CUE)
    truths = {"salt": data.truth["salt"], text.CUE: torch.as_tensor(data.input_ids == cue_id)}
    for layer in layers:
        t = time.perf_counter()
        table = aw.explain_layer(cache, layer, store=None, progress=False)
        print(f"{layer}: {len(table)} units explained and scored in {time.perf_counter() - t:.2f} s")
        for word, truth in truths.items():
            best = find_units(cache, truth, layer, top=1)[0]
            row = table.unit(best.unit)
            ok = "ok" if word in (row["explanation"] or "") and row["score"] >= 0.7 else "MISSED"
            hits = table.search(f'"{word}"')
            top = f"channel {hits[0]['unit']} {hits[0]['explanation']} {hits[0]['score']:.3f}" if len(hits) else "none"
            print(f"  {word}: unit {best.unit} (find_units {best.top_and_random:.3f}) -> "
                  f"{row['explanation']} score {row['score']:.3f} (top only {row['top_only']:.3f}) "
                  f"[{ok}]; best unit naming it: {top}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--images", type=int, default=1200)
    p.add_argument("--docs", type=int, default=300)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--repeats-mgis", type=int, default=20)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--only", choices=("kitchen", "text"), default=None)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    np.set_printoptions(precision=3)
    print(f"torch threads {torch.get_num_threads()}")
    if args.only in (None, "kitchen"):
        kitchen(args)
    if args.only in (None, "text"):
        text_world(args)


if __name__ == "__main__":
    main()
