"""The comparison atlas in a real JupyterLab: legend, a wok-side click, a lasso, the pair menu, swap.

The widget is built in a scratch notebook from a small kitchen cache with the same calls as
notebooks/02_pan_vs_wok.ipynb, but its 1-D embedding is given (y=) rather than computed by UMAP:
this test is about what the page shows and does. The notebook itself, UMAP included, is executed
and checked by tests/test_notebook_session.py (notebook 02).
"""

from __future__ import annotations

import json

import pytest

from .lab import clipped_at_laptop_sizes, dismiss_news, ready_widget, run_code, run_scratch

pytestmark = [pytest.mark.browser, pytest.mark.slow]

NOTEBOOK = "compare_lab.ipynb"
COMPARE = ".aw-atlas[data-mode='compare']"
ROOT_JS = f"document.querySelector({COMPARE!r})"

# Notebook 02's cache, attributions and widget calls on 400 images instead of 2,000. y is each
# row's rank along the first principal component: rows spread evenly over the grid's rows, as a
# UMAP's would, at no cost. The selection is set from Python in a later cell, after display.
CELLS = [
    """import json, numpy as np, torch
import atlaswidgets as aw
from atlaswidgets.zoo import kitchen

model = kitchen.model()
data = kitchen.dataset(400, seed=1)
cache = aw.capture(model, (data.images, data.labels), layers="block4", sample="random",
                   per_image=4, seed=0, classes=kitchen.CLASSES, progress=False)
for target in [("wok", "frying pan"), "wok", "frying pan", ("saucepan", "wok")]:
    cache.add_attribution(aw.attribute(model, data.images, "block4", target, cache=cache,
                                       store=False, progress=False))
acts = cache["block4"].acts.float()
centred = acts - acts.mean(0)
pc1 = (centred @ torch.linalg.svd(centred, full_matrices=False).Vh[0]).numpy()
y = np.argsort(np.argsort(pc1)).astype(np.float32)""",
    """compare = aw.compare_atlas(cache, "wok", "frying pan", grid_size=10, y=y)
compare_widget = aw.ComparisonWidget(compare, cache)
panel = aw.ExamplePanel(compare, cache, k=8, by="attribution")
aw.link(compare_widget, panel)
aw.show(compare_widget, panel)""",
    """n_top = max(1, round(0.1 * len(compare.cells.ids)))
wok_side = compare.cells.ids[np.argsort(-compare.mean_diff)[:n_top]].tolist()
compare_widget.selected = sorted(wok_side)""",
]


def _ids(text: str | None) -> list[int]:
    return [int(v) for v in text.split(",")] if text else []


def _grid_to_page(page, canvas, gx: float, gy: float) -> tuple[float, float]:
    """Viewport point of grid coordinates (gx = column units, gy = row units) from data-view."""
    scale, ox, oy = (float(v) for v in page.locator(COMPARE).get_attribute("data-view").split(","))
    box = canvas.bounding_box()
    return box["x"] + ox + gx * scale, box["y"] + oy + gy * scale


def _legend(page) -> tuple[str, str]:
    # textContent, not innerText: JupyterLab may skip rendering the part of a long notebook that
    # is out of view, and innerText of unrendered text is ""
    return (page.locator(".aw-legend-left").text_content(), page.locator(".aw-legend-right").text_content())


def test_comparison_widget_in_lab(lab, page, artifacts):
    """Build notebook 02's comparison widget and panel in the page, then use them."""
    run_scratch(page, lab, NOTEBOOK, CELLS)
    root = ready_widget(page, COMPARE)
    canvas = root.locator(".aw-atlas-canvas")
    panel = page.locator(".aw-examples")
    canvas.scroll_into_view_if_needed()

    # The legend names b on the left and a on the right, as plain text.
    assert _legend(page) == ("frying pan", "wok")
    assert page.evaluate("() => document.querySelector('.aw-atlas-legend .aw-legend-left').children.length") == 0

    # the last cell selected the top wok-side cells from Python; the page shows that selection
    wok_side = json.loads(run_code(page, "import json; print(json.dumps(sorted(wok_side)))"))
    assert _ids(root.get_attribute("data-selected")) == wok_side

    info = json.loads(run_code(page, (
        "comp = compare; _n = comp.cells.n; _names = np.array(comp.top_class_names); "
        "_right = np.flatnonzero((comp.cells.ij[:, 1] >= _n // 2) & (_names == 'wok')); "
        "_k = int(_right[np.argmax(comp.cells.count[_right])]); _id = int(comp.cells.ids[_k]); "
        "print(json.dumps({'n': _n, 'id': _id, 'ij': comp.cells.ij.tolist(), "
        "'ids': comp.cells.ids.tolist(), "
        "'samples': comp.examples([_id], k=8, by='attribution').sample_id.tolist()}))"
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
    page.wait_for_function(f"(id) => {ROOT_JS}.dataset.hover === String(id)",
                           arg=target, timeout=5_000)
    tip = root.locator(".aw-atlas-tooltip-diff").text_content()
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
    root.locator("button.aw-atlas-clear").click()
    page.wait_for_function(f"() => {ROOT_JS}.dataset.selected === ''")
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
    page.wait_for_function(f"(s) => {ROOT_JS}.dataset.selected === s",
                           arg=",".join(map(str, expected)), timeout=10_000)
    page.wait_for_function(
        "(s) => document.querySelector('.aw-examples-header')?.dataset.cells === s",
        arg=",".join(map(str, expected)), timeout=20_000,
    )
    dismiss_news(page)
    page.locator(".jp-OutputArea-output", has=root).screenshot(path=str(artifacts / "compare-lasso.png"))
    seen = json.loads(run_code(page, "print(json.dumps([compare_widget.selected, panel.selected]))"))
    assert seen == [expected, expected]

    # The pair menu lists both attributed pairs; picking the other one switches the sides.
    menu = root.locator("select.aw-atlas-pair")
    assert menu.is_visible()
    assert [o.text_content() for o in menu.locator("option").all()] == [
        "frying pan ← → wok", "wok ← → saucepan"]
    menu.select_option("1")
    page.wait_for_function(
        "() => document.querySelector('.aw-legend-right')?.textContent === 'saucepan'", timeout=30_000)
    page.wait_for_selector(f"{COMPARE}[data-ready='1']", timeout=30_000)
    assert _legend(page) == ("wok", "saucepan")
    assert root.get_attribute("data-selected") == ""
    after = json.loads(run_code(page, (
        "print(json.dumps([compare_widget.pair, compare_widget.selected, panel.selected, "
        "bool(np.array_equal(compare_widget.atlas.y, comp.y)), panel.atlas is compare_widget.atlas]))"
    )))
    assert after == [["saucepan", "wok"], [], [], True, True]

    # Swap sides: one click puts wok on the right of saucepan, in wok's colour still: colours
    # belong to the classes, not to the sides
    wok_left, pan_right = root.get_attribute("data-side-colors").split(" ")
    wok_css = page.locator(".aw-legend-left").evaluate("e => getComputedStyle(e).color")
    root.locator("button.aw-atlas-swap").click()
    page.wait_for_function(
        "() => document.querySelector('.aw-legend-right')?.textContent === 'wok'", timeout=30_000)
    assert _legend(page) == ("saucepan", "wok")
    assert root.get_attribute("data-side-colors").split(" ") == [pan_right, wok_left]
    assert page.locator(".aw-legend-right").evaluate("e => getComputedStyle(e).color") == wok_css
    canvas.scroll_into_view_if_needed()
    dismiss_news(page)
    root.screenshot(path=str(artifacts / "compare-swapped.png"))

    # A laptop screen: no label of the widget or its panel is cut short.
    assert clipped_at_laptop_sizes(page, page.locator(".jp-OutputArea-output", has=root)) == {}
