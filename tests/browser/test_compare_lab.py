"""The comparison widget in a real JupyterLab: legend, a wok-side click, a lasso, the pair menu."""

from __future__ import annotations

import json

import pytest

from .lab import dismiss_news, open_notebook, run_all, run_code

pytestmark = [pytest.mark.browser, pytest.mark.slow]

NOTEBOOK = "compare_lab.ipynb"

# A small kitchen cache with two attributed pairs; y is the first principal component of the
# activations, so the test pays for no UMAP run.
CELLS = [
    """import numpy as np, torch
import atlaswidgets as aw
from atlaswidgets.zoo import kitchen
from atlaswidgets.widgets.compare import ComparisonWidget

model = kitchen.model()
data = kitchen.dataset(400, seed=1)
cache = aw.capture(model, data, "block4", sample="random", per_image=4, seed=0,
                   classes=kitchen.CLASSES, keep_images=True, progress=False)
aw.attribute(model, data, "block4", ("wok", "frying pan"), cache=cache, progress=False)
aw.attribute(model, data, "block4", ("saucepan", "wok"), cache=cache, progress=False)
acts = cache["block4"].acts.float()
centred = acts - acts.mean(0)
y = (centred @ torch.linalg.svd(centred, full_matrices=False).Vh[0]).numpy()""",
    """comp = aw.compare_atlas(cache, "wok", "frying pan", "block4", y=y, grid_size=10, min_count=3)
widget = ComparisonWidget(comp, cache, size=480)
panel = aw.ExamplePanel(comp, cache)
aw.link(widget, panel)
aw.show(widget, panel)""",
]


def _notebook() -> dict:
    cells = [
        {"cell_type": "code", "execution_count": None, "id": f"cell{i}", "metadata": {},
         "outputs": [], "source": src}
        for i, src in enumerate(CELLS)
    ]
    return {
        "cells": cells,
        "metadata": {"kernelspec": {"display_name": "Python 3 (ipykernel)", "language": "python",
                                    "name": "python3"},
                     "language_info": {"name": "python"}},
        "nbformat": 4,
        "nbformat_minor": 5,
    }


def _ids(text: str | None) -> list[int]:
    return [int(v) for v in text.split(",")] if text else []


def _grid_to_page(page, canvas, gx: float, gy: float) -> tuple[float, float]:
    """Viewport point of grid coordinates (gx = column units, gy = row units) from data-view."""
    scale, ox, oy = (float(v) for v in page.locator(".aw-atlas").get_attribute("data-view").split(","))
    box = canvas.bounding_box()
    return box["x"] + ox + gx * scale, box["y"] + oy + gy * scale


def _legend(page) -> tuple[str, str]:
    return (page.locator(".aw-legend-left").inner_text(), page.locator(".aw-legend-right").inner_text())


def test_comparison_widget_in_lab(lab, page, artifacts):
    (lab.root / NOTEBOOK).write_text(json.dumps(_notebook()))
    open_notebook(page, lab.notebook_url(NOTEBOOK))
    run_all(page, timeout_ms=180_000)
    root = page.locator(".aw-atlas[data-mode='compare']")
    root.wait_for(timeout=60_000)
    page.wait_for_selector(".aw-atlas[data-mode='compare'][data-ready='1']", timeout=30_000)
    canvas = page.locator(".aw-atlas-canvas")
    panel = page.locator(".aw-examples")
    canvas.scroll_into_view_if_needed()

    # The legend names b on the left and a on the right, as plain text.
    assert _legend(page) == ("frying pan", "wok")
    assert page.evaluate("() => document.querySelector('.aw-atlas-legend .aw-legend-left').children.length") == 0

    info = json.loads(run_code(page, (
        "import json; _n = comp.cells.n; _names = np.array(comp.top_class_names); "
        "_right = np.flatnonzero((comp.cells.ij[:, 1] >= _n // 2) & (_names == 'wok')); "
        "_k = int(_right[np.argmax(comp.cells.count[_right])]); _id = int(comp.cells.ids[_k]); "
        "print(json.dumps({'n': _n, 'id': _id, 'ij': comp.cells.ij.tolist(), "
        "'ids': comp.cells.ids.tolist(), 'samples': comp.examples([_id]).sample_id.tolist()}))"
    )))
    n, target = info["n"], info["id"]
    k = info["ids"].index(target)

    # Every cell's colour value sits on its side of the middle: blue-left, orange-right.
    values = [float(v) for v in root.get_attribute("data-cell-values").split(",")]
    assert len(values) == len(info["ids"])
    for (row, col), v in zip(info["ij"], values):
        assert (v >= 0) if col >= n // 2 else (v <= 0)
    assert values[k] > 0

    # Hover and click the busiest wok cell on the wok side; the panel shows exactly Python's examples.
    canvas.scroll_into_view_if_needed()
    row, col = info["ij"][k]
    x, y = _grid_to_page(page, canvas, col + 0.5, row + 0.5)
    page.mouse.move(x, y)
    page.wait_for_function("(id) => document.querySelector('.aw-atlas').dataset.hover === String(id)",
                           arg=target, timeout=5_000)
    tip = page.locator(".aw-atlas-tooltip-diff").inner_text()
    assert tip.startswith("mean wok − frying pan: +")
    page.mouse.click(x, y)
    page.wait_for_function(
        "(id) => document.querySelector('.aw-examples-header')?.dataset.cells === String(id)",
        arg=target, timeout=20_000,
    )
    assert _ids(root.get_attribute("data-selected")) == [target]
    shown = [int(e.get_attribute("data-sample-id")) for e in panel.locator(".aw-example").all()]
    assert shown == info["samples"]
    page.mouse.move(x, y)
    dismiss_news(page)
    root.screenshot(path=str(artifacts / "compare-widget.png"))
    page.locator(".jp-OutputArea-output", has=root).screenshot(path=str(artifacts / "compare-lab.png"))

    # Lasso: clear, then shift-drag a triangle over the top-left half of the grid. Only cells with
    # row + col <= n - 2 have their centres inside; a box over the same drag would take them all.
    page.locator("button.aw-atlas-clear").click()
    page.wait_for_function("() => document.querySelector('.aw-atlas').dataset.selected === ''")
    canvas.scroll_into_view_if_needed()
    corners = [(-0.1, -0.1), (n - 0.1, -0.1), (-0.1, n - 0.1)]  # inside the canvas
    points = [_grid_to_page(page, canvas, gx, gy) for gx, gy in corners]
    page.keyboard.down("Shift")
    page.mouse.move(*points[0])
    page.mouse.down()
    for p in points[1:] + points[:1]:
        page.mouse.move(*p, steps=12)
    page.mouse.up()
    page.keyboard.up("Shift")
    expected = sorted(i for i, (r, c) in zip(info["ids"], info["ij"]) if r + c <= n - 2)
    assert len(expected) >= 3 and len(expected) < len(info["ids"])
    page.wait_for_function("(s) => document.querySelector('.aw-atlas').dataset.selected === s",
                           arg=",".join(map(str, expected)), timeout=10_000)
    page.wait_for_function(
        "(s) => document.querySelector('.aw-examples-header')?.dataset.cells === s",
        arg=",".join(map(str, expected)), timeout=20_000,
    )
    dismiss_news(page)
    page.locator(".jp-OutputArea-output", has=root).screenshot(path=str(artifacts / "compare-lasso.png"))
    seen = json.loads(run_code(page, "print(json.dumps([widget.selected, panel.selected]))"))
    assert seen == [expected, expected]

    # The pair menu lists both attributed pairs; picking the other one switches the sides.
    menu = page.locator("select.aw-atlas-pair")
    assert menu.is_visible()
    assert [o.inner_text() for o in menu.locator("option").all()] == [
        "frying pan ← → wok", "wok ← → saucepan"]
    menu.select_option("1")
    page.wait_for_function(
        "() => document.querySelector('.aw-legend-right')?.textContent === 'saucepan'", timeout=30_000)
    page.wait_for_selector(".aw-atlas[data-mode='compare'][data-ready='1']", timeout=30_000)
    assert _legend(page) == ("wok", "saucepan")
    assert root.get_attribute("data-selected") == ""
    after = json.loads(run_code(page, (
        "print(json.dumps([widget.pair, widget.selected, panel.selected, "
        "bool(np.array_equal(widget.atlas.y, comp.y))]))"
    )))
    assert after == [["saucepan", "wok"], [], [], True]

    # Swap sides: one click puts wok on the right of saucepan.
    page.locator("button.aw-atlas-swap").click()
    page.wait_for_function(
        "() => document.querySelector('.aw-legend-right')?.textContent === 'wok'", timeout=30_000)
    assert _legend(page) == ("saucepan", "wok")
    canvas.scroll_into_view_if_needed()
    dismiss_news(page)
    root.screenshot(path=str(artifacts / "compare-swapped.png"))
