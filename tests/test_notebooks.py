"""Execute the notebooks top to bottom and check what they computed and displayed."""

from __future__ import annotations

import html
import json
import re
import time
from collections import Counter

import nbformat
import pytest
from nbclient import NotebookClient

from .conftest import ROOT

WIDGET_MIME = "application/vnd.jupyter.widget-view+json"

# Appended to the notebook in memory: prints what the notebook computed, for the asserts below.
FACTS = """
import json as _json
import resource as _resource
print("FACTS" + _json.dumps({
    "peak_rss_mb": _resource.getrusage(_resource.RUSAGE_SELF).ru_maxrss / 1024,
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


def _run(name: str, tmp_path, extra: str, artifacts) -> tuple[nbformat.NotebookNode, dict, list]:
    """Execute notebook ``name`` with ``extra`` appended (it prints "FACTS" + JSON).

    Checks what every notebook must do (no error output, fit a 2 GB Binder machine), saves the
    facts and the run time (measured, not asserted) as a test artifact, and returns the executed notebook, the facts and
    every output of its code cells.
    """
    nb = nbformat.read(ROOT / "notebooks" / name, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(extra))
    start = time.perf_counter()
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    seconds = time.perf_counter() - start
    out = "".join(o.get("text", "") for o in nb.cells[-1].outputs if o.output_type == "stream")
    facts = json.loads(out.split("FACTS", 1)[1])
    stem = name.removesuffix(".ipynb")
    (artifacts / f"{stem}.facts.json").write_text(json.dumps(dict(facts, seconds=seconds), indent=1))
    print(f"{stem} executed in {seconds:.1f} s, peak kernel RSS {facts['peak_rss_mb']:.0f} MB")
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert facts["peak_rss_mb"] < 2048, "the demo notebooks must fit a Binder machine (2 GB)"
    return nb, facts, outputs


# a tqdm text bar ("desc: 100%|###| 8000/8000 [...]", umap-learn's format too), for a kernel
# without ipywidgets, where tqdm.auto writes to stderr instead of drawing a widget
_TEXT_BAR = re.compile(r"([^\r\n:|]+): *\d+%\|[^\r\n]*? (\d+)/(\d+) \[")


def progress_bars(nb: nbformat.NotebookNode) -> dict[int, list[tuple[str, float, float]]]:
    """The progress bars each code cell of an executed notebook left in its output.

    A tqdm.auto bar in a kernel with ipywidgets is an HBox of (HTML, FloatProgress, HTML) whose
    final state nbclient keeps in the notebook's widget state; without ipywidgets it is text on
    stderr. Returns {cell index: [(description, n, total), ...]} in output order.
    """
    state = (nb.metadata.get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {})
             .get("state", {}))
    bars: dict[int, list[tuple[str, float, float]]] = {}
    for i, cell in enumerate(nb.cells):
        for o in cell.get("outputs", []):
            if o.output_type == "stream" and o.name == "stderr":
                last = {m.group(1).strip(): (float(m.group(2)), float(m.group(3)))
                        for m in _TEXT_BAR.finditer(o.text)}
                bars.setdefault(i, []).extend((d, n, t) for d, (n, t) in last.items())
                continue
            box = state.get(o.get("data", {}).get(WIDGET_MIME, {}).get("model_id", ""), {})
            if box.get("model_name") != "HBoxModel":
                continue
            parts = [state.get(c.removeprefix("IPY_MODEL_"), {}) for c in box["state"].get("children", [])]
            if [p.get("model_name") for p in parts] != ["HTMLModel", "FloatProgressModel", "HTMLModel"]:
                continue
            # tqdm.notebook writes its spaces as figure spaces (U+2007)
            desc = html.unescape(parts[0]["state"].get("value", "")).replace("\u2007", " ")
            desc = desc.split(":")[0].strip()
            bar = parts[1]["state"]
            bars.setdefault(i, []).append((desc, float(bar.get("value", 0)), float(bar.get("max", 0))))
    return bars


def assert_progress(nb: nbformat.NotebookNode, expected: dict[str, list[str]]) -> None:
    """Each code cell whose source holds a key of ``expected`` left a finished bar (n == total
    > 0) in its own output for each name in the value (a description prefix; a name listed
    twice needs two bars). Long steps must show progress where the person runs them."""
    bars = progress_bars(nb)
    for marker, names in expected.items():
        cells = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and marker in c.source]
        assert len(cells) == 1, f"expected one code cell with {marker!r}, found {len(cells)}"
        drawn = bars.get(cells[0], [])
        for name, count in Counter(names).items():
            done = [b for b in drawn if b[0].startswith(name) and b[2] > 0 and b[1] == b[2]]
            assert len(done) >= count, (
                f"the cell with {marker!r} should show {count} finished {name!r} progress bar(s) "
                f"in its output; it showed {drawn}")


UMAP_BARS = ["UMAP neighbours", "UMAP graph", "UMAP epochs"]


@pytest.mark.slow
def test_quickstart(tmp_path, artifacts):
    nb, facts, _ = _run("01_quickstart.ipynb", tmp_path, FACTS, artifacts)
    # the images row and the linked atlas + panel were displayed as widgets
    widget_cells = [c for c in nb.cells if c.cell_type == "code"
                    and any(WIDGET_MIME in o.get("data", {}) for o in c.outputs)]
    assert len(widget_cells) >= 2
    # the two long steps show their progress in their own cell's output
    assert_progress(nb, {"kitchen.dataset(": ["kitchen images"], "aw.capture(": ["capture"],
                         "aw.build_atlas(": UMAP_BARS})

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


NEURON_VIEWER_FACTS = """
import json as _json
from atlaswidgets.layout.select import strongest_cells as _strongest
_rows = explorer.atlas_widget.atlas.rows_of(noodle_cells)
_mean = cache["block4"].acts[_rows].double().mean(0).numpy()
explorer.viewer.show_channel(noodles_channel)
import resource as _resource
print("FACTS" + _json.dumps({
    "peak_rss_mb": _resource.getrusage(_resource.RUSAGE_SELF).ru_maxrss / 1024,
    "noodles_channel": int(noodles_channel),
    "noodles_score": float(noodles_score),
    "chopsticks_score": float(chopsticks.top_and_random),
    "viewer_unit": viewer.unit,
    "top_group_noodles": float(np.mean([has_noodles(data.annotations[s])
                                        for s in viewer.samples.groups["top"].sample_id])),
    "noodle_cells": [int(c) for c in noodle_cells],
    "strongest": _strongest(explorer.atlas_widget.atlas, noodles_channel, 4),
    "comparison_strongest": _strongest(explorer.comparison_widget.atlas, noodles_channel, 4),
    "comparison_highlighted": list(explorer.comparison_widget.highlighted),
    "atlas_highlighted_after": list(explorer.atlas_widget.highlighted),
    "atlas_selected_after": list(explorer.atlas_widget.selected),
    "panel_selected": list(explorer.atlas_panel.selected),
    "direction_error": float(np.abs(direction - _mean).max()),
    "direction_top_noodles": direction_top_noodles,
    "related": related,
    "noodles_top5": [int(r.unit) for r in ranked],
    "share_cells": share_cells,
    "share_all": share_all,
    "viewer_unit_after": explorer.viewer.unit,
}))
"""


@pytest.mark.slow
def test_neuron_viewer_notebook(tmp_path, artifacts):
    nb, facts, outputs = _run("03_neuron_viewer.ipynb", tmp_path, NEURON_VIEWER_FACTS, artifacts)
    assert sum(WIDGET_MIME in o.get("data", {}) for o in outputs) >= 2  # the viewer and the Explorer
    # capture, attribution, and the Explorer's two layouts (its atlas, its comparison's 1-D y)
    assert_progress(nb, {"aw.capture(": ["kitchen images", "capture"], "aw.attribute(": ["attribute"],
                         "aw.Explorer(": UMAP_BARS * 2})

    # explanation scoring finds a noodles channel, well above the control object
    assert facts["noodles_score"] >= 0.5
    assert facts["chopsticks_score"] < facts["noodles_score"] - 0.2
    assert facts["viewer_unit"] == {"kind": "channel", "layer": "block4", "channel": facts["noodles_channel"]}
    assert facts["top_group_noodles"] >= 0.8  # its top examples do show noodles
    # the Explorer's views agree: the channel highlighted its strongest cells in both atlases;
    # selecting those cells (show_cells) sent their members' mean to the viewer, and the panel
    # followed the selection; picking the channel again highlights them again and keeps it
    assert facts["noodle_cells"] == facts["strongest"] == facts["atlas_highlighted_after"]
    assert facts["comparison_highlighted"] == facts["comparison_strongest"]
    assert facts["atlas_selected_after"] == facts["strongest"] == facts["panel_selected"]
    assert facts["direction_error"] < 1e-4
    assert facts["direction_top_noodles"] >= 0.8
    # the direction's most correlated channels include channels that "noodles" explains well
    assert set(facts["related"]) & set(facts["noodles_top5"])
    assert facts["viewer_unit_after"]["channel"] == facts["noodles_channel"]
    # and those cells see noodles far more often than positions overall
    assert facts["share_cells"] >= 2 * facts["share_all"]
