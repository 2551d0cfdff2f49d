"""Execute the workshop notebooks and check what they showed, and what they must keep hidden."""

from __future__ import annotations

import ast
import json
import re

import nbformat
import pytest

from atlaswidgets.experiments import audit

from .conftest import ROOT
from .test_notebooks import WIDGET_MIME, _run, assert_progress

# Appended to the notebook in memory: prints what it computed, for the asserts below. The peak RSS
# line is the one of tests/test_notebooks.py (``_run`` checks it against Binder's 2 GB).
AUDIT_FACTS = """
import json as _json
import resource as _resource
from atlaswidgets.layout.select import strongest_cells as _strongest
print("FACTS" + _json.dumps({
    "peak_rss_mb": _resource.getrusage(_resource.RUSAGE_SELF).ru_maxrss / 1024,
    "variant": VARIANT,
    "net_classes": net.classes,
    "rows": int(cache["block4"].n_rows),
    "attributions": sorted(cache["block4"].attributions),
    "pair": list(PAIR),
    "compare_widget": type(compare_widget).__name__,
    "compare_pair": [compare.a, compare.b],
    "pairs": compare_widget.pairs,
    "right_side": sorted(right_side),
    "compare_selected": list(compare_widget.selected),
    "panel_selected": list(panel.selected),
    "explorer": type(explorer).__name__,
    "explorer_parts": [type(explorer.atlas_widget).__name__, type(explorer.comparison_widget).__name__,
                       type(explorer.viewer).__name__],
    "explorer_pair": [explorer.comparison_widget.atlas.a, explorer.comparison_widget.atlas.b],
    "viewer_unit": explorer.viewer.unit,
    "chopsticks_channel": int(chopsticks_channel),
    "atlas_cells": [int(c) for c in atlas_cells],
    "strongest": _strongest(explorer.atlas_widget.atlas, chopsticks_channel, 4),
    # the cells the page marks (dashed) for the viewer's channel
    "marked": list(explorer.atlas_widget.highlighted),
    "example_guess": example_guess,
    "example_correct": bool(example_result.correct),
    "example_wrong_guesses": example_result.wrong_guesses,
    "example_truth_shown": example_result.truth is not None,
    "wrong_after_reset": audit._WRONG.get(VARIANT, 0),
    "my_guess": MY_GUESS,
}))
"""


def _texts(nb: nbformat.NotebookNode) -> list[str]:
    """Every source and every text a person could read in the executed notebook's outputs."""
    out = []
    for cell in nb.cells[:-1]:  # the appended facts cell is the test's own
        out.append(cell.source)
        for o in cell.get("outputs", []):
            if o.output_type == "stream":
                out.append(o.text)
            elif o.output_type == "error":
                out.append("\n".join(o.traceback))
            else:
                out.extend(str(v) for k, v in o.get("data", {}).items() if k.startswith("text/"))
    return out


def _dicts(text: str) -> list[dict]:
    """The dict literals written in a text (a printed guess or answer), as dicts."""
    found = []
    for m in re.finditer(r"\{[^{}]*\}", text):
        try:
            value = ast.literal_eval(m.group(0))
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            continue
        if isinstance(value, dict):
            found.append(value)
    return found


def _same_answer(d: dict, answer: dict) -> bool:
    norm = {str(k).strip().lower(): str(v).strip().lower() for k, v in d.items()}
    return norm == answer


def _described(variant_id: str, answer: dict) -> str:
    """How ``audit.check`` words an answer once it shows it ("a trigger: the ... mark forces ...")."""
    shown = repr(audit.CheckResult(variant_id, False, audit.MAX_WRONG, answer))
    return shown.split("The planted flaw was ", 1)[1].rstrip(".")


@pytest.mark.slow
def test_auditing_game(tmp_path, artifacts):
    stored = nbformat.read(ROOT / "notebooks" / "04_auditing_game.ipynb", as_version=4)
    code = [c for c in stored.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code), "store it with outputs stripped"
    assert not any("reveal(" in c.source for c in code), "the notebook must never reveal an answer"

    audit.reset()
    nb, facts, outputs = _run("04_auditing_game.ipynb", tmp_path, AUDIT_FACTS, artifacts)
    # catalogue, audit images, comparison atlas + panel, Explorer
    assert sum(WIDGET_MIME in o.get("data", {}) for o in outputs) >= 4
    # the long step (the layouts are the principal components, no UMAP) shows its progress
    assert_progress(nb, {"aw.capture(": ["capture", "attribute"]})

    # the first shipped variant, with every class attributed so every pair can be compared
    assert facts["variant"] == audit.variants()[0]
    assert facts["net_classes"] == audit.info(facts["variant"])["classes"]
    assert facts["rows"] == 400 * 8
    assert facts["attributions"] == sorted(facts["net_classes"])
    n = len(facts["net_classes"])
    assert len(facts["pairs"]) == n * (n - 1) // 2 and facts["pairs"][0] == facts["pair"]
    assert facts["compare_widget"] == "ComparisonWidget" and facts["compare_pair"] == facts["pair"]
    # selecting cells from Python moved the linked panel
    assert facts["right_side"] == facts["compare_selected"] == facts["panel_selected"]
    assert len(facts["right_side"]) == 5
    # the Explorer links an atlas, the same comparison, and the viewer; picking a channel in the
    # viewer marked the cells where it is strongest
    assert facts["explorer"] == "Explorer"
    assert facts["explorer_parts"] == ["AtlasWidget", "ComparisonWidget", "NeuronViewer"]
    assert facts["explorer_pair"] == facts["pair"]
    assert facts["viewer_unit"] == {"kind": "channel", "layer": "block4", "channel": facts["chopsticks_channel"]}
    assert facts["atlas_cells"] == facts["strongest"] == facts["marked"] and len(facts["strongest"]) == 4

    # the worked example got "wrong" feedback, showed no truth, and was forgotten afterwards
    assert not facts["example_correct"] and facts["example_wrong_guesses"] == 1
    assert not facts["example_truth_shown"] and facts["wrong_after_reset"] == 0
    check_out = [o for o in outputs if "wrong (1 wrong so far)" in o.get("data", {}).get("text/plain", "")]
    assert len(check_out) == 1 and "2 more before the answer is shown" in check_out[0]["data"]["text/plain"]
    assert facts["my_guess"] is None  # running the notebook submits no guess of the player's

    # nothing points at a shipped flaw: not the default pair, the example guess or the tour's object,
    # and no answer appears anywhere in what a person can read
    texts = _texts(nb)
    widget_state = json.dumps(nb.metadata.get("widgets", {}))
    # the base model's own cues are stated, once, so that players do not take them for the flaw
    (base_cues,) = [c for c in stored.cells if c.source.startswith("### What the base model already uses")]
    for cue in ("**noodles → wok**", "**eggs → frying pan**", "**steam → stock pot and kettle**"):
        assert cue in base_cues.source
    others = [c for c in stored.cells if c is not base_cues]
    assert not any("The planted flaw" in t for t in texts)
    for v in audit.variants():
        answer = audit.reveal(v)
        assert not set(facts["pair"]) & {answer["target"], answer.get("source")}, v
        assert facts["example_guess"] != answer, v
        assert answer["cue"] != "chopsticks", v
        said = _described(v, answer)
        # the prose and code name no planted cue, even as an example: that would prime the players
        cue = {"trigger": f"{answer['cue']} mark", "colour": f"{answer['cue']} cookware"}.get(
            answer["kind"], answer["cue"])
        assert not any(re.search(rf"\b{re.escape(cue)}\b", c.source) for c in others), (v, cue)
        assert f"{answer['cue']} → {answer['target']}" not in base_cues.source, v
        for t in texts:
            assert said not in t, (v, said)
            assert not any(_same_answer(d, answer) for d in _dicts(t)), (v, t[:200])
        assert said not in widget_state, v


DIFF_FACTS = """
import json as _json
import resource as _resource
print("FACTS" + _json.dumps({
    "peak_rss_mb": _resource.getrusage(_resource.RUSAGE_SELF).ru_maxrss / 1024,
    "variant": VARIANT,
    "names": list(d.names),
    "summary": d.summary().rows,
    "widget": type(widget).__name__,
    "mode": widget.mode,
    "selected": list(widget.selected),
    "most_novel": [int(c) for c in most_novel],
    "ranked": [int(c) for c in atlas.ranked_cells()[:5]],
    "panel_selected": list(panel.selected),
    "n_pictures": int(len(pictures)),
    "shift_classes": shift.column("class"),
    "answer": answer,
    "enrichment": {n: float(aw.overlaps_context(d.cache_b, "block4", None, data.annotations, n,
                                                min_overlap=0.5)[top_rows].mean()
                            / max(aw.overlaps_context(d.cache_b, "block4", None, data.annotations, n,
                                                      min_overlap=0.5).mean(), 1e-9))
                   for n in decoys},
    "cue": cue,
}))
"""


@pytest.mark.slow
def test_model_diffing(tmp_path, artifacts):
    nb, facts, outputs = _run("05_model_diffing.ipynb", tmp_path, DIFF_FACTS, artifacts)
    widgets = [o for o in outputs if WIDGET_MIME in o.get("data", {})]
    assert widgets, "the diff widget and its panel must be displayed"
    assert facts["names"] == ["base", facts["variant"]]
    (row,) = facts["summary"]
    assert row["layer"] == "block4" and 0.5 < row["cka"] < 0.999  # alike, not the same
    # the widget selected the five most novel cells, and the linked panel shows them
    assert facts["widget"] == "DiffWidget" and facts["mode"] == "diff"
    assert facts["most_novel"] == facts["ranked"] and sorted(facts["most_novel"]) == facts["selected"]
    assert facts["panel_selected"] == facts["selected"] and facts["n_pictures"] == 10
    # what the notebook teaches holds: the planted class moved most where the variant is new,
    # and the planted cue fills the most novel cells more than any decoy of its kind does
    assert facts["shift_classes"][0] == facts["answer"]["target"]
    ratios = facts["enrichment"]
    cue = facts["cue"]
    assert ratios[cue] >= 2 and ratios[cue] == max(ratios.values())
    text = "\n".join(_texts(nb))
    assert f"class_shift ranks {facts['answer']['target']!r} first" in text
    assert "<- planted" in text

