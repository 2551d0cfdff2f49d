"""Notebook 06 (language neurons), executed top to bottom: what it computed and displayed."""

from __future__ import annotations

import pytest

from .test_notebooks import UMAP_BARS, WIDGET_MIME, _run, assert_progress

FACTS = """
import json as _json
import resource as _resource
print("FACTS" + _json.dumps({
    "peak_rss_mb": _resource.getrusage(_resource.RUSAGE_SELF).ru_maxrss / 1024,
    "salt": [found["salt"].unit, found["salt"].top_and_random],
    "in_quotes": [found["in_quotes"].unit, found["in_quotes"].top_and_random],
    "salt_cells": salt_cells,
    "panel_selected": list(panel.selected),
    "panel_marked": [c[0][c[1]] for c in panel.contexts()],
    "viewer_channel": viewer.channel, "viewer_mode": viewer.mode,
    "viewer_groups": [g["name"] for g in viewer.groups], "viewer_writes": len(viewer.writes_up),
    "viewer_contexts": len(viewer.contexts),
    "cue_share": cue_share, "cue_base": cue_base,
    "card": card, "ablated": ablated, "cue_neurons": cue_neurons,
    "bert_rows": int(bert_cache[BERT_LAYER].n_rows), "bert_tokens": list(bert_top.tokens),
    "bert_vocab": len(bert_cache.vocab),
}))
"""


@pytest.mark.slow
def test_language_neurons(tmp_path, artifacts):
    nb, facts, outputs = _run("06_language_neurons.ipynb", tmp_path, FACTS, artifacts)
    widget_cells = [c for c in nb.cells if c.cell_type == "code"
                    and any(WIDGET_MIME in o.get("data", {}) for o in c.outputs)]
    assert len(widget_cells) >= 3  # atlas + panel, the viewer, the comparison + panel
    assert_progress(nb, {"aw.capture(lm, docs.columns": ["capture"], "aw.build_atlas(": UMAP_BARS,
                         "compare = aw.compare_atlas(": ["attribute"] + UMAP_BARS,
                         "slot = aw.compare_atlas(": ["attribute"] + UMAP_BARS})
    assert not [o for o in outputs if o.output_type == "stream" and o.name == "stderr"
                and "Warning" in o.text], "the notebook should run without warnings"
    # ground truth found with the kit's tools: a salt neuron and a quoted-list neuron
    assert facts["salt"][1] >= 0.7 and facts["in_quotes"][1] >= 0.7
    # the salt cells were selected from Python and the linked panel shows salt tokens, marked
    assert facts["salt_cells"] and facts["panel_selected"] == sorted(facts["salt_cells"])
    assert facts["panel_marked"].count("salt") >= len(facts["panel_marked"]) // 2
    # the viewer shows the salt neuron as text: top, quantile and random groups, what it writes
    assert facts["viewer_mode"] == "text" and facts["viewer_channel"] == facts["salt"][0]
    assert len(facts["viewer_groups"]) >= 3 and facts["viewer_contexts"] >= 10 and facts["viewer_writes"] > 0
    # the cue: chopsticks sits on the wok side, and zeroing what the atlas points at lowers its pull
    assert facts["cue_share"] >= 3 * facts["cue_base"]
    assert facts["card"]["effect"] >= 0.5
    assert facts["ablated"]["effect"] < facts["card"]["effect"]
    # MiniLM ran offline through its tokenizer's batches: every real token a row
    assert facts["bert_rows"] > 48 * 5 and facts["bert_vocab"] > 30000 and len(facts["bert_tokens"]) == 6
