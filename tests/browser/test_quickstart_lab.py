"""The quickstart in a real JupyterLab: run it, see the atlas, click a cell, read what changed."""

from __future__ import annotations

import json

import pytest

from .lab import clipped_at_laptop_sizes, dismiss_news, open_notebook, ready_widget, run_all, run_code

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def _ids(text: str | None) -> list[int]:
    return [int(v) for v in text.split(",")] if text else []


def _cell_point(page, canvas, row: int, col: int) -> tuple[float, float]:
    """Viewport coordinates of the centre of grid cell (row, col), from the widget's view."""
    scale, ox, oy = (float(v) for v in page.locator(".aw-atlas").get_attribute("data-view").split(","))
    box = canvas.bounding_box()
    return box["x"] + ox + (col + 0.5) * scale, box["y"] + oy + (row + 0.5) * scale


def test_quickstart_atlas_answers_clicks(lab, page, artifacts):
    open_notebook(page, lab.notebook_url("01_quickstart.ipynb"))
    run_all(page)
    atlas = ready_widget(page, ".aw-atlas")
    panel = page.locator(".aw-examples")
    canvas = page.locator(".aw-atlas-canvas")
    canvas.scroll_into_view_if_needed()

    # The notebook selected the wok cells from Python: the page shows that selection.
    py = json.loads(run_code(page, "import json; print(json.dumps(sorted(atlas_widget.selected)))"))
    assert py and _ids(atlas.get_attribute("data-selected")) == py
    assert _ids(panel.locator(".aw-examples-header").get_attribute("data-cells")) == py
    canvas.scroll_into_view_if_needed()
    dismiss_news(page)
    page.screenshot(path=str(artifacts / "quickstart-lab.png"), full_page=False)

    # Pick the busiest cell that is not selected yet, and ask Python what it should show.
    target = json.loads(run_code(page, (
        "import json, numpy as np; _free = [i for i in np.argsort(-atlas.cells.count) "
        "if int(atlas.cells.ids[i]) not in atlas_widget.selected]; _i = int(_free[0]); "
        "print(json.dumps({'id': int(atlas.cells.ids[_i]), 'ij': atlas.cells.ij[_i].tolist(), "
        "'samples': atlas.examples([int(atlas.cells.ids[_i])]).sample_id.tolist()}))"
    )))
    canvas.scroll_into_view_if_needed()
    x, y = _cell_point(page, canvas, *target["ij"])

    # Hover: the tooltip names the cell; click: the atlas and the panel switch to it.
    page.mouse.move(x, y)
    page.wait_for_function("(id) => document.querySelector('.aw-atlas').dataset.hover === String(id)",
                           arg=target["id"], timeout=5_000)
    page.mouse.click(x, y)
    page.wait_for_function("(id) => document.querySelector('.aw-atlas').dataset.selected === String(id)",
                           arg=target["id"], timeout=10_000)
    page.wait_for_function(
        "(id) => document.querySelector('.aw-examples-header')?.dataset.cells === String(id)",
        arg=target["id"], timeout=20_000,
    )
    shown = [int(e.get_attribute("data-sample-id")) for e in panel.locator(".aw-example").all()]
    assert shown == target["samples"]
    page.mouse.move(x, y)
    atlas.screenshot(path=str(artifacts / "atlas-widget.png"))
    panel.screenshot(path=str(artifacts / "examples-panel.png"))
    page.locator(".jp-OutputArea-output", has=atlas).screenshot(path=str(artifacts / "atlas-and-panel.png"))

    # Python saw the click, in the atlas and, through link(), in the panel.
    seen = json.loads(run_code(page, "print(json.dumps([atlas_widget.selected, panel.selected]))"))
    assert seen == [[target["id"]], [target["id"]]]

    # A laptop screen: no label of the widget or its panel is cut short.
    assert clipped_at_laptop_sizes(page, page.locator(".jp-OutputArea-output", has=atlas)) == {}
