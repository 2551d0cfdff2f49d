"""explain_layer: a whole layer explained offline and scored, the results store (a second call
reads it, a run stopped midway resumes to the same table), directions, the table (issue #19)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import atlaswidgets as aw
from atlaswidgets.explain import ConceptExplainer, ExplanationFailed, find_units, rf_overlap

from .test_score_text import setup as text_setup  # noqa: F401  (the toy token model's cache)


class Counting(ConceptExplainer):
    """The offline concept explainer (same name, so the same store key), counting its calls and
    failing on call number ``fail_at`` (a deterministic stand-in for a killed run)."""

    def __init__(self, fail_at: int | None = None):
        super().__init__()
        self.calls, self.fail_at = 0, fail_at

    def explain(self, unit, samples=None):
        self.calls += 1
        if self.fail_at is not None and self.calls == self.fail_at:
            raise RuntimeError("injected failure")
        return super().explain(unit, samples)


def test_the_kitchen_cues_are_named_and_scored(kitchen_block4, tmp_path):
    cache, annotations = kitchen_block4
    table = aw.explain_layer(cache, "block4", annotations=annotations, store=tmp_path, progress=False)
    assert len(table) == 128 and [r["unit"] for r in table] == list(range(128))
    assert table.path is not None and table.path.parent == tmp_path
    for cue in ("noodles", "eggs"):  # the unit the cue's own predicate ranks first
        best = find_units(cache, rf_overlap(cache, cue), annotations=annotations, top=1)[0]
        row = table.unit(best.unit)
        print(f"{cue}: channel {best.unit} -> {row['explanation']} {row['score']:.3f} "
              f"(top only {row['top_only']:.3f})")
        assert row["explanation"] == f'object "{cue}"' and row["score"] >= 0.7
        assert table.search(cue.upper())[0]["unit"] == best.unit  # best score first
    found = table.search("noodles")
    assert all("noodles" in r["explanation"] for r in found) and 0 < len(found) < 128
    assert all(r["n_samples"] > 50 and r["error"] is None for r in table)
    frame = table.to_pandas()
    assert list(frame.columns)[:4] == ["unit", "kind", "explanation", "score"] and len(frame) == 128

    again = Counting()  # a second call reads the store and explains nothing
    assert aw.explain_layer(cache, "block4", again, annotations=annotations, store=tmp_path,
                            progress=False) == table
    assert again.calls == 0


def test_a_run_stopped_midway_resumes_to_the_same_table(kitchen_block4, tmp_path):
    cache, annotations = kitchen_block4
    units = list(range(0, 128, 6))  # 22 units, chunks of 4
    kw = dict(units=units, annotations=annotations, chunk=4, progress=False)
    whole = aw.explain_layer(cache, "block4", store=None, **kw)
    stopped = Counting(fail_at=11)
    with pytest.raises(RuntimeError, match="injected failure"):
        aw.explain_layer(cache, "block4", stopped, store=tmp_path, **kw)
    parts = sorted(p.name for p in next(tmp_path.iterdir()).glob("part-*.json"))
    assert len(parts) == 3  # two full chunks, then the 2 units finished before the failure
    rest = Counting()
    resumed = aw.explain_layer(cache, "block4", rest, store=tmp_path, **kw)
    assert rest.calls == len(units) - 10  # the 10 finished units are not explained again
    assert resumed.rows == whole.rows


def test_directions_and_failed_units(kitchen_block4, tmp_path):
    cache, annotations = kitchen_block4
    best = find_units(cache, rf_overlap(cache, "noodles"), annotations=annotations, top=1)[0].unit
    dirs = torch.zeros(2, 128)
    dirs[0, best] = 1.0  # a one-hot direction is the channel, scored from the cached rows
    dirs[1] = torch.randn(128, generator=torch.Generator().manual_seed(3))
    table = aw.explain_layer(cache, "block4", units=dirs, annotations=annotations, store=None,
                             progress=False)
    assert [(r["kind"], r["unit"]) for r in table] == [("direction", 0), ("direction", 1)]
    assert table[0]["explanation"] == 'object "noodles"' and table[0]["score"] > 0.5

    hostile = '<img src=x onerror=alert(1)>'

    def simulator(text, record):
        if "onerror" in text:
            raise ExplanationFailed("the simulator's reply had no numbers")
        return 0.0

    failed = aw.explain_layer(cache, "block4", lambda records: hostile, simulator, units=[1, 2],
                              annotations=annotations, store=tmp_path, progress=False)
    assert [r["score"] for r in failed] == [None, None] and len(failed.failed()) == 2
    assert failed[0]["error"] == "the simulator's reply had no numbers"
    assert failed.search("onerror")[0]["explanation"] == hostile
    page = failed._repr_html_()
    assert hostile not in page and "&lt;img src=x onerror=alert(1)&gt;" in page
    assert "failed: the simulator" in repr(failed)
    stored = json.loads(next(failed.path.glob("part-*.json")).read_text())
    assert stored["rows"][0]["explanation"] == hostile and stored["rows"][0]["score"] is None


def test_tokens_on_a_text_layer(text_setup):  # noqa: F811
    cache = text_setup[0]
    table = aw.explain_layer(cache, store=None, progress=False)
    assert table[0]["explanation"] == 'token "w3"' and table[0]["score"] > 0.99
    assert [r["unit"] for r in table.search("w3")][:1] == [0]
    sim = aw.TokenSimulator()
    sim.prepare(cache, "feat")
    ids = cache.tokens[0].numpy()
    pred = sim.simulate('tokens "w5" "w3"', 0)
    prev = np.concatenate([[-1], ids[:-1]])
    assert np.array_equal(pred, ((ids == 3) & (prev == 5)).astype(float))
    for unreadable in ("the token w3", 'token "w3" and more', 'token "\\x"', 'object "w3"'):
        with pytest.raises(ExplanationFailed, match="Cannot read the explanation"):
            sim.simulate(unreadable, 0)


def test_bad_arguments_are_refused_before_any_write(kitchen_block4, text_setup, tmp_path):  # noqa: F811
    cache, annotations = kitchen_block4
    cases = [
        (dict(annotations=annotations, units=[128]), ValueError, "channel 128 is out of range"),
        (dict(annotations=annotations, units="noodles"), TypeError, "units must be None"),
        (dict(annotations=annotations, units=[1, 1]), ValueError, "lists a channel twice"),
        (dict(annotations=annotations, units=torch.zeros(2, 5)), ValueError, r"shape \(128,\)"),
        (dict(annotations=annotations, units=torch.ones(1, 128), source="stats"), ValueError, "directions"),
        (dict(annotations=annotations, chunk=0), ValueError, "chunk must be a positive int"),
        (dict(annotations=annotations, explainer=3), TypeError, "explainer must have prepare"),
        (dict(annotations=annotations, ranges="top"), ValueError, "ranges must be pairs"),
        (dict(annotations=annotations[:5]), ValueError, "annotations has 5 entries"),
        (dict(), ValueError, "need annotations="),
    ]
    for kw, err, match in cases:
        with pytest.raises(err, match=match):
            aw.explain_layer(cache, "block4", store=tmp_path, progress=False, **kw)
    with pytest.raises(ValueError, match="is a text layer"):
        aw.explain_layer(text_setup[0], explainer=aw.ConceptExplainer(), store=tmp_path, progress=False)
    with pytest.raises(ValueError, match="quantile must be a number in"):
        aw.ConceptExplainer(quantile=1.5)
    assert list(tmp_path.iterdir()) == []


def test_the_text_world_salt_and_cue_neurons():
    """TinyLM's block-0 MLP on a small fresh corpus: the salt neuron and the chopsticks neuron
    (the ones bench/explain.py finds with find_units on 300 documents) are named by their token."""
    from atlaswidgets.zoo import text

    data = text.corpus(120, seed=2024)
    cache = aw.capture(text.model(), data.columns, ["blocks.0.mlp.act"], sample="all", progress=False)
    table = aw.explain_layer(cache, units=[236, 73], store=None, progress=False)
    print(table)
    assert [r["explanation"] for r in table] == ['token "salt"', f'token "{text.CUE}"']
    assert all(r["score"] >= 0.7 for r in table)
    with pytest.raises(ValueError, match="measure must be"):
        aw.TokenExplainer(measure="f1")


def test_the_results_store_sits_beside_the_activation_store(kitchen_block4, tmp_path):
    import copy

    cache, annotations = kitchen_block4
    stored = copy.copy(cache)  # the session's cache keeps its own (absent) path
    stored.save(tmp_path / "acts")
    table = aw.explain_layer(stored, "block4", units=[3, 4], annotations=annotations, progress=False)
    assert table.path is not None and table.path.parent == tmp_path / "acts"
    assert json.loads((table.path / "manifest.json").read_text())["settings"]["layer"] == "block4"
    loaded = aw.ActivationCache.load(tmp_path / "acts")  # a later session reads the results
    again = Counting()
    assert aw.explain_layer(loaded, "block4", again, units=[3, 4], annotations=annotations,
                            progress=False) == table
    assert again.calls == 0
    assert aw.explain_layer(cache, "block4", units=[3], annotations=annotations, progress=False).path is None
