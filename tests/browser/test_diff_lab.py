"""The model-diff atlas in a real JupyterLab: legend, colours, tooltip, a click into a linked panel."""

from __future__ import annotations

import json

import pytest

from .lab import clipped_at_laptop_sizes, dismiss_news, ready_widget, run_code, run_scratch, settle

pytestmark = [pytest.mark.browser, pytest.mark.slow]

NOTEBOOK = "diff_lab.ipynb"
DIFF = ".aw-atlas[data-mode='diff']"
ROOT_JS = f"document.querySelector({DIFF!r})"
# model a's name would run script if it were ever parsed as HTML; b's would turn bold
HOSTILE_A = "<img src=x onerror=\"window.__awXss=1\">"
NAME_B = "variant <b>1</b> & co"

# A small kitchen cache laid out by its first two principal components (no UMAP run), with a
# known novelty: every row of a wok image is wholly new (1), the kettle rows half (0.5), the rest
# shared (0). What the page shows must be exactly that, averaged per cell.
CELLS = [
    """import json, numpy as np, torch
import atlaswidgets as aw
from atlaswidgets.zoo import kitchen
from atlaswidgets.layout.diff import diff_atlas
from atlaswidgets.widgets.diff import DiffWidget

model = kitchen.model()
data = kitchen.dataset(200, seed=2)
cache = aw.capture(model, data, "block4", sample="random", per_image=4, seed=0,
                   classes=kitchen.CLASSES, keep_images=True, progress=False)
la = cache["block4"]
acts = la.acts.float()
centred = acts - acts.mean(0)
xy = (centred @ torch.linalg.svd(centred, full_matrices=False).Vh[:2].T).numpy()
label = cache.labels[la.sample_id].numpy()
novelty = np.where(label == kitchen.CLASSES.index("wok"), 1.0,
                   np.where(label == kitchen.CLASSES.index("kettle"), 0.5, 0.0))""",
    f"""diff = diff_atlas(cache, novelty, ({HOSTILE_A!r}, {NAME_B!r}), "block4", grid_size=8,
                  min_count=3, xy=xy)
widget = DiffWidget(diff, cache, size=480)
panel = aw.ExamplePanel(diff, cache, k=6, thumb_size=64)
aw.link(widget, panel)
aw.show(widget, panel)""",
]


def _grid_to_page(page, canvas, gx: float, gy: float) -> tuple[float, float]:
    """Viewport point of grid coordinates (gx = column units, gy = row units) from data-view."""
    scale, ox, oy = (float(v) for v in page.locator(DIFF).get_attribute("data-view").split(","))
    box = canvas.bounding_box()
    return box["x"] + ox + gx * scale, box["y"] + oy + gy * scale




def test_diff_widget_in_lab(lab, page, artifacts):
    run_scratch(page, lab, NOTEBOOK, CELLS)
    root = ready_widget(page, DIFF)
    canvas = root.locator(".aw-atlas-canvas")
    canvas.scroll_into_view_if_needed()

    # The legend names both models as plain text; no element was made from a name.
    legend = root.locator(".aw-atlas-legend.aw-legend-diff")
    assert legend.locator(".aw-legend-left").text_content() == f"shared with {HOSTILE_A}"
    assert legend.locator(".aw-legend-right").text_content() == f"only in {NAME_B}"
    assert root.get_attribute("data-names") == f"{HOSTILE_A}\t{NAME_B}"
    assert NAME_B in root.locator(".aw-atlas-title").text_content()
    assert page.evaluate(f"() => {ROOT_JS}.querySelectorAll('img, b').length") == 0
    assert page.evaluate("() => window.__awXss === undefined")

    # Every cell's colour value is Python's mean novelty over the scale, in cell order.
    info = json.loads(run_code(page, (
        "_top = int(diff.ranked_cells()[0]); _k = int(np.flatnonzero(diff.cells.ids == _top)[0]); "
        "print(json.dumps({'ids': diff.cells.ids.tolist(), 'ij': diff.cells.ij.tolist(), "
        "'values': widget.value_arrays()['value'].tolist(), 'scale': diff.scale, 'top': _top, "
        "'novelty': float(diff.mean_novelty[_k]), "
        "'samples': diff.examples([_top], k=6).sample_id.tolist()}))"
    )))
    values = [float(v) for v in root.get_attribute("data-cell-values").split(",")]
    assert len(values) == len(info["ids"]) == int(root.get_attribute("data-n-cells"))
    assert values == pytest.approx(info["values"], abs=6e-4)
    assert max(values) == 1.0 and min(values) < 0.5  # the most novel cell tops the scale
    # the ticks give the scale as novelty: 0, half and the most novel cell's mean
    scale = info["scale"]
    assert [t.text_content() for t in legend.locator(".aw-legend-tick").all()] == [
        "0.00", f"{scale / 2:.2f}", f"{scale:.2f}"]

    # Hover the most novel cell: the tooltip gives its mean novelty, naming a as text.
    target = info["top"]
    row, col = info["ij"][info["ids"].index(target)]
    settle(page, canvas)
    x, y = _grid_to_page(page, canvas, col + 0.5, row + 0.5)
    page.mouse.move(x, y)
    page.wait_for_function(f"(id) => {ROOT_JS}.dataset.hover === String(id)", arg=target, timeout=5_000)
    tip = root.locator(".aw-atlas-tooltip-novelty")
    assert tip.is_visible()
    pct = int(info["novelty"] * 100 + 0.5)  # as the page's Math.round
    assert tip.text_content() == (
        f"mean novelty {info['novelty']:.3f}: {pct}% not explained by {HOSTILE_A}")
    assert root.locator(".aw-atlas-tooltip img").count() == 0

    # Click it: the cell is selected here, in Python, and the linked panel shows its examples.
    page.mouse.click(x, y)
    page.wait_for_function(
        "(id) => document.querySelector('.aw-examples-header')?.dataset.cells === String(id)",
        arg=target, timeout=20_000,
    )
    assert root.get_attribute("data-selected") == str(target)
    shown = [int(e.get_attribute("data-sample-id"))
             for e in page.locator(".aw-examples .aw-example").all()]
    assert shown == info["samples"]
    seen = json.loads(run_code(page, "print(json.dumps([widget.selected, panel.selected]))"))
    assert seen == [[target], [target]]

    # Python's "most novel" selection reaches the page.
    top3 = json.loads(run_code(page, "print(json.dumps(sorted(widget.select_most_novel(3))))"))
    page.wait_for_function(f"(s) => {ROOT_JS}.dataset.selected === s",
                           arg=",".join(map(str, top3)), timeout=10_000)

    settle(page, canvas)
    page.mouse.move(*_grid_to_page(page, canvas, col + 0.5, row + 0.5))  # tooltip in the picture
    dismiss_news(page)
    page.locator(".jp-OutputArea-output", has=root).screenshot(path=str(artifacts / "diff_widget.png"))

    # Level 1 (what a zoom asks for): the finer cells' colours arrive with them, on the same scale.
    fine = json.loads(run_code(page, (
        "widget.level = 1; print(json.dumps({'n': widget.atlas.cells.n, "
        "'values': widget.value_arrays()['value'].tolist(), "
        "'same_novelty': bool(np.array_equal(widget.atlas.novelty, diff.novelty))}))")))
    assert fine["n"] == 16 and fine["same_novelty"]
    page.wait_for_selector(f"{DIFF}[data-level='1'][data-grid-size='16'][data-ready='1']", timeout=30_000)
    values = [float(v) for v in root.get_attribute("data-cell-values").split(",")]
    assert values == pytest.approx(fine["values"], abs=6e-4)
    assert legend.locator(".aw-legend-tick").last.text_content() == f"{scale:.2f}"

    # A laptop screen: no label of the widget or its panel is cut short.
    assert clipped_at_laptop_sizes(page, page.locator(".jp-OutputArea-output", has=root)) == {}
