"""Execute the notebooks top to bottom and check what they computed and displayed."""

from __future__ import annotations

import json
import time

import nbformat
import pytest
from nbclient import NotebookClient

from .conftest import ROOT

WIDGET_MIME = "application/vnd.jupyter.widget-view+json"

# Appended to the notebook in memory: prints what the notebook computed, for the asserts below.
FACTS = """
import json as _json
print("FACTS" + _json.dumps({
    "accuracy": accuracy,
    "rows": int(acts.n_rows),
    "cells": int(len(atlas.cells.ids)),
    "wok_cells": wok_cells,
    "selected": list(atlas_widget.selected),
    "panel_selected": list(panel.selected),
    "share_in_wok_cells": share_in_wok_cells,
    "share_overall": share_overall,
    "top_noodle_cell_classes": [int(atlas.top_class[i]) for i in top_noodle_cells],
    "wok": wok,
}))
"""


def _run(name: str, tmp_path, extra: str) -> tuple[nbformat.NotebookNode, dict, float]:
    nb = nbformat.read(ROOT / "notebooks" / name, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(extra))
    start = time.perf_counter()
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    seconds = time.perf_counter() - start
    out = "".join(o.get("text", "") for o in nb.cells[-1].outputs if o.output_type == "stream")
    facts = json.loads(out.split("FACTS", 1)[1])
    return nb, facts, seconds


@pytest.mark.slow
def test_quickstart(tmp_path, artifacts):
    nb, facts, seconds = _run("01_quickstart.ipynb", tmp_path, FACTS)
    (artifacts / "quickstart-facts.json").write_text(json.dumps(dict(facts, seconds=seconds), indent=1))
    print(f"quickstart executed in {seconds:.1f} s")

    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
    # the images row and the linked atlas + panel were displayed as widgets
    widget_cells = [c for c in nb.cells if c.cell_type == "code"
                    and any(WIDGET_MIME in o.get("data", {}) for o in c.outputs)]
    assert len(widget_cells) >= 2

    assert facts["accuracy"] >= 0.9
    assert facts["rows"] == 2000 * 4
    assert facts["cells"] >= 30
    # selection set from Python reached the linked panel
    assert facts["wok_cells"], "expected some cells dominated by woks"
    assert facts["selected"] == sorted(facts["wok_cells"][:5]) == facts["panel_selected"]
    # the planted cue shows up: wok cells see noodles far more often than positions overall
    assert facts["share_in_wok_cells"] >= 2 * facts["share_overall"]
    # and the cells whose positions most often see noodles are mostly wok cells
    assert facts["top_noodle_cell_classes"].count(facts["wok"]) >= 4


PAN_VS_WOK_FACTS = """
import json as _json
_rows = {r["patch"]: r for r in table.rows}
print("FACTS" + _json.dumps({
    "share_wok_side": share_wok_side,
    "share_all": share_all,
    "selected": list(compare_widget.selected),
    "panel_selected": list(panel.selected),
    "wok_side": sorted(wok_side),
    "pairs": compare_widget.pairs,
    "noodles": _rows["kitchen noodles"],
    "cell": _rows["from atlas cell"],
    "icon": _rows["icon of the cell"],
    "noise": _rows["random noise"],
    "patch_shape": list(atlas_patch.shape),
    "class_atlas_cls": wok_atlas.cls,
    "class_atlas_rows": int(wok_atlas.kept.sum()),
    "class_atlas_wok_share": float((cache.labels[cache["block4"].sample_id[wok_atlas.kept]] == 1).float().mean()),
    "class_atlas_noodles": share_wok_atlas,
    "class_atlas_compared": len(wok_atlas.compared),
    "imagenet": [net.classes[567], net.classes[909]],
}))
"""


@pytest.mark.slow
def test_pan_vs_wok(tmp_path, artifacts):
    nb, facts, seconds = _run("02_pan_vs_wok.ipynb", tmp_path, PAN_VS_WOK_FACTS)
    (artifacts / "pan-vs-wok-facts.json").write_text(json.dumps(dict(facts, seconds=seconds), indent=1))
    print(f"02_pan_vs_wok executed in {seconds:.1f} s")
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert sum(WIDGET_MIME in o.get("data", {}) for o in outputs) >= 5  # atlas+panel, 3 image rows, class atlas
    assert any("application/vnd.plotly.v1+json" in o.get("data", {}) for o in outputs)
    html = [o["data"]["text/html"] for o in outputs if "text/html" in o.get("data", {})]
    assert any("kitchen noodles" in h and "random noise" in h for h in html)  # the table

    # the comparison atlas points at the planted cue: wok-side cells see noodles >= 3x as often
    assert facts["share_wok_side"] >= 3 * facts["share_all"]
    assert facts["selected"] == facts["wok_side"] == facts["panel_selected"]
    assert ["wok", "frying pan"] in facts["pairs"] and len(facts["pairs"]) == 2
    # the attack: noodles flip >= 30% of pans, noise < a third of that, the atlas patch >= 2x noise
    noodles, cell, noise = facts["noodles"], facts["cell"], facts["noise"]
    assert noodles["n_images"] == cell["n_images"] == noise["n_images"] >= 150
    assert noodles["dynamic_rate"] >= 0.30
    assert noise["dynamic_rate"] < noodles["dynamic_rate"] / 3
    assert cell["dynamic_flips"] >= 2 * noise["dynamic_flips"]
    assert facts["icon"]["dynamic_flips"] >= 2 * noise["dynamic_flips"]
    assert facts["patch_shape"] == [3, 24, 24]
    # the class atlas of wok (top-1 among all 6 classes) holds mostly positions of wok images,
    # and they see noodles far more often than positions overall
    assert facts["class_atlas_cls"] == "wok" and facts["class_atlas_compared"] == 6
    assert facts["class_atlas_rows"] > 300 and facts["class_atlas_wok_share"] > 0.6
    assert facts["class_atlas_noodles"] >= 3 * facts["share_all"]
    assert facts["imagenet"] == ["frying pan", "wok"]
