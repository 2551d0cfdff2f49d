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
