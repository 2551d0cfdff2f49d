"""A text atlas in a real JupyterLab: a TinyLM layer's cells drawn as tokens, a click fills the
linked panel with that cell's token strips, a zoom brings the finer cells' tokens, and the hostile
token <img src=x onerror=alert(1)> shows as text everywhere (no <img> element, no alert)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .lab import click_cell, dismiss_news, ready_widget, run_code, run_scratch, settle

pytestmark = [pytest.mark.browser, pytest.mark.slow]

NOTEBOOK = "text_atlas_lab.ipynb"
HOSTILE = "<img src=x onerror=alert(1)>"

# Every token of 60 documents of the text world, with the world's hostile source line appended to
# each (tests/layout/_text.py), so the hostile token gathers a cell of its own; a real UMAP layout.
ROOT = Path(__file__).resolve().parents[2]  # the kernel runs in the lab's folder: find tests/ here
CELLS = [
    f"""import json, sys
sys.path.insert(0, {str(ROOT)!r})
import atlaswidgets as aw
from atlaswidgets.zoo import text
from tests.layout._text import hostile_text_data

LAYER = "blocks.1.mlp.act"
model = text.model()
cache = aw.capture(model, hostile_text_data(60, seed=3), layers=LAYER, sample="all",
                   progress=False)""",
    """atlas = aw.build_atlas(cache, LAYER, grid_size=10)
widget = aw.AtlasWidget(atlas, cache, size=480, model=model)
panel = aw.ExamplePanel(atlas, cache, k=12)
aw.link(widget, panel)
aw.show(widget, panel)""",
]

# What the page shows of the panel's examples: sample id, tokens, the marked one, coloured or not
PANEL_JS = """() => [...document.querySelectorAll('.aw-examples .aw-example')].map(e => ({
  sample: Number(e.dataset.sampleId),
  tokens: [...e.querySelectorAll('.aw-token')].map(t => t.textContent),
  marked: [...e.querySelectorAll('.aw-token')].findIndex(t => t.classList.contains('aw-token-marked')),
  coloured: [...e.querySelectorAll('.aw-token')].map(t => t.style.backgroundColor !== ''),
}))"""

NO_IMG_JS = """() => document.querySelectorAll('img[src="x"], .aw-examples img, .aw-atlas img').length"""




def _cell_point(page, root, canvas, row: float, col: float) -> tuple[float, float]:
    scale, ox, oy = (float(v) for v in root.get_attribute("data-view").split(","))
    box = canvas.bounding_box()
    return box["x"] + ox + col * scale, box["y"] + oy + row * scale


def test_text_atlas_and_panel_in_lab(lab, page, artifacts):
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    run_scratch(page, lab, NOTEBOOK, CELLS, timeout_ms=300_000)
    root = ready_widget(page, ".aw-atlas", "[data-ready='1'][data-cells-kind='text'][data-level='0']")
    canvas = page.locator(".aw-atlas-canvas")
    assert page.locator(".aw-examples").get_attribute("data-kind") == "text"
    assert page.locator("button.aw-atlas-icons").is_hidden()  # no feature-vis for text

    # The cell whose token is the hostile one (Python says where it is and what it holds).
    info = json.loads(run_code(page, (
        "_ct = widget.cell_tokens(); _k = _ct.token.index(text.HOSTILE); "
        "_id = int(atlas.cells.ids[_k]); _ex = atlas.examples([_id], k=12); "
        "print(json.dumps({'id': _id, 'ij': atlas.cells.ij[_k].tolist(), "
        "'n': int(atlas.cells.count[_k]), 'samples': _ex.sample_id.tolist()}))")))
    row, col = info["ij"]
    settle(page, canvas)
    x, y = _cell_point(page, root, canvas, row + 0.5, col + 0.5)
    page.mouse.move(x, y)
    page.wait_for_function("(id) => document.querySelector('.aw-atlas').dataset.hover === String(id)",
                           arg=info["id"], timeout=5_000)
    tip = page.locator(".aw-atlas-tooltip")
    assert HOSTILE in tip.locator(".aw-atlas-tooltip-class").text_content()
    assert HOSTILE in tip.locator(".aw-atlas-tooltip-context").text_content()
    assert f"{info['n']} positions" in tip.text_content()
    page.locator(".jp-OutputArea-output", has=root).screenshot(
        path=str(artifacts / "text-atlas-tooltip.png"))

    # A click selects the cell; the linked panel shows its examples as token strips. (The
    # screenshot scrolled the page: find the cell again.)
    settle(page, canvas)
    x, y = _cell_point(page, root, canvas, row + 0.5, col + 0.5)
    click_cell(page, x, y, info["id"])
    assert root.get_attribute("data-selected") == str(info["id"])
    shown = page.evaluate(PANEL_JS)
    want = json.loads(run_code(page, (
        "print(json.dumps([[_t, _i, [bool(v == v) for v in _v]] for _t, _i, _v in panel.contexts()]))")))
    assert [e["sample"] for e in shown] == info["samples"]
    assert [[e["tokens"], e["marked"], e["coloured"]] for e in shown] == want
    assert all(e["coloured"][e["marked"]] for e in shown)
    panel_text = page.locator(".aw-examples").text_content()
    assert HOSTILE in panel_text  # the token, as the characters it is made of
    assert page.evaluate(NO_IMG_JS) == 0 and dialogs == []
    page.mouse.move(5, 5)
    dismiss_news(page)
    page.locator(".jp-OutputArea-output", has=root).screenshot(
        path=str(artifacts / "text-atlas-panel.png"))

    # Zoom in over the cell until the finer level arrives: its cells are text too, and the
    # selection (and the panel) follow to the finer cells.
    settle(page, canvas)
    x, y = _cell_point(page, root, canvas, row + 0.5, col + 0.5)
    page.mouse.move(x, y)
    for _ in range(12):
        if root.get_attribute("data-busy") or root.get_attribute("data-level") == "1":
            break
        page.mouse.wheel(0, -120)
        page.wait_for_timeout(120)
    page.wait_for_selector(".aw-atlas[data-level='1'][data-ready='1'][data-cells-kind='text']",
                           timeout=60_000)
    fine = json.loads(run_code(page, (
        "print(json.dumps({'n': widget.atlas.cells.n, 'cells': len(widget.cell_token), "
        "'selected': widget.selected, 'panel': panel.shown_cells, "
        "'panel_is_level': panel.atlas is widget.atlas}))")))
    assert fine["n"] == 20 and fine["panel_is_level"] and fine["panel"] == fine["selected"]
    assert root.get_attribute("data-grid-size") == "20"
    assert root.get_attribute("data-n-cells") == str(fine["cells"])
    page.wait_for_function(
        "(ids) => document.querySelector('.aw-examples-header')?.dataset.cells === ids",
        arg=",".join(str(i) for i in fine["selected"]), timeout=20_000)
    assert page.evaluate(NO_IMG_JS) == 0 and dialogs == []
    page.mouse.move(5, 5)
    page.locator(".jp-OutputArea-output", has=root).screenshot(
        path=str(artifacts / "text-atlas-level1.png"))
