"""The atlas in a real JupyterLab: switch to feature-vis icons, zoom into the finer level, click there;
then a long feature-vis render runs in the background: its progress shows, the kernel answers a
click on another widget meanwhile, and Cancel stops it."""

from __future__ import annotations

import json

import pytest

from .lab import click_cell, dismiss_news, ready_widget, run_code, run_scratch, settle

pytestmark = [pytest.mark.browser, pytest.mark.slow]

NOTEBOOK = "atlas_levels_lab.ipynb"

# A small kitchen cache laid out by its first two principal components (no UMAP run), and
# feature-vis icons with few steps: the test is about the widget, not the pictures' quality.
CELLS = [
    """import json, numpy as np, torch
import atlaswidgets as aw
from atlaswidgets.zoo import kitchen

model = kitchen.model()
data = kitchen.dataset(300, seed=1)
cache = aw.capture(model, data, "block4", sample="random", per_image=4, seed=0,
                   classes=kitchen.CLASSES, keep_images=True, progress=False)
acts = cache["block4"].acts.float()
centred = acts - acts.mean(0)
xy = (centred @ torch.linalg.svd(centred, full_matrices=False).Vh[:2].T).numpy()""",
    """atlas = aw.build_atlas(cache, "block4", xy=xy, grid_size=8, min_count=3)
widget = aw.AtlasWidget(atlas, cache, size=480, model=model,
                        fv_options=dict(steps=6, chunk=256, progress=False))
panel = aw.ExamplePanel(atlas, cache, k=6, thumb_size=64)
aw.link(widget, panel)
aw.show(widget, panel)""",
]


def _view(page) -> tuple[float, float, float]:
    scale, ox, oy = (float(v) for v in page.locator(".aw-atlas").get_attribute("data-view").split(","))
    return scale, ox, oy


def _grid_to_page(page, canvas, gx: float, gy: float) -> tuple[float, float]:
    """Viewport point of grid coordinates (gx = column units, gy = row units) from data-view."""
    scale, ox, oy = _view(page)
    box = canvas.bounding_box()
    return box["x"] + ox + gx * scale, box["y"] + oy + gy * scale


def _page_to_grid(page, canvas, x: float, y: float) -> tuple[float, float]:
    scale, ox, oy = _view(page)
    box = canvas.bounding_box()
    return (x - box["x"] - ox) / scale, (y - box["y"] - oy) / scale




def _shot(page, root, path) -> None:
    page.mouse.move(5, 5)  # no tooltip or hover outline in the picture
    dismiss_news(page)
    root.screenshot(path=str(path))


def test_atlas_icons_and_levels_in_lab(lab, page, artifacts):
    run_scratch(page, lab, NOTEBOOK, CELLS)
    root = ready_widget(page, ".aw-atlas", "[data-ready='1'][data-icons='examples'][data-level='0']")
    canvas = page.locator(".aw-atlas-canvas")
    toggle = page.locator("button.aw-atlas-icons")
    assert root.get_attribute("data-grid-size") == "8"
    assert toggle.is_visible() and toggle.get_attribute("aria-pressed") == "false"
    canvas.scroll_into_view_if_needed()
    _shot(page, root, artifacts / "atlas-level0-examples.png")

    # The toggle asks Python for feature-vis icons; the page says so while they render.
    toggle.click()
    page.wait_for_selector(".aw-atlas[data-ready='1'][data-icons='feature-vis']", timeout=60_000)
    assert toggle.get_attribute("aria-pressed") == "true"
    assert toggle.inner_text() == "Show examples"
    seen = json.loads(run_code(page, "print(json.dumps([widget.icons, widget.sprite_icons, "
                                     "widget.icon_size, list(widget.icons_at().shape)]))"))
    n0 = int(root.get_attribute("data-n-cells"))
    # icons at the receptive field of block4's centre (render.icons.receptive_side), not 64 px
    assert seen == ["feature-vis", "feature-vis", 40, [n0, 3, 40, 40]]
    canvas.scroll_into_view_if_needed()
    _shot(page, root, artifacts / "atlas-level0-feature-vis.png")

    # Zoom with the wheel over the busiest cell until the page shows level 1: a 16x16 grid whose
    # cells sit in the same place on screen (the point under the pointer keeps its grid position).
    info = json.loads(run_code(page, (
        "_k = int(np.argmax(atlas.cells.count)); "
        "print(json.dumps({'ij': atlas.cells.ij[_k].tolist()}))")))
    row, col = info["ij"]
    settle(page, canvas)
    x, y = _grid_to_page(page, canvas, col + 0.3, row + 0.3)
    page.mouse.move(x, y)
    before = None
    for _ in range(12):
        if root.get_attribute("data-busy") or root.get_attribute("data-level") == "1":
            break
        before = _page_to_grid(page, canvas, x, y)  # a wheel zooms about the pointer: it stays
        page.mouse.wheel(0, -120)
        page.wait_for_timeout(120)
    # the level's cells come at once with their example icons; its feature-vis ones follow
    page.wait_for_selector(".aw-atlas[data-level='1'][data-ready='1'][data-icons='feature-vis']",
                           timeout=60_000)
    assert root.get_attribute("data-grid-size") == "16"
    after = _page_to_grid(page, canvas, x, y)
    assert abs(after[0] - 2 * before[0]) < 0.05 and abs(after[1] - 2 * before[1]) < 0.05

    # Click the busiest fine cell inside that coarse cell: the panel shows Python's examples of it.
    fine = json.loads(run_code(page, (
        "_f = widget.atlas; _kids = [k for k, (r, c) in enumerate(_f.cells.ij) "
        f"if r // 2 == {row} and c // 2 == {col}]; "
        "_k = max(_kids, key=lambda k: _f.cells.count[k]); _id = int(_f.cells.ids[_k]); "
        "print(json.dumps({'level': widget.level, 'n': _f.cells.n, 'id': _id, "
        "'ij': _f.cells.ij[_k].tolist(), 'panel_is_level': panel.atlas is _f, "
        "'samples': _f.examples([_id], k=6).sample_id.tolist()}))")))
    assert fine["level"] == 1 and fine["n"] == 16 and fine["panel_is_level"]
    settle(page, canvas)
    fr, fc = fine["ij"]
    x, y = _grid_to_page(page, canvas, fc + 0.5, fr + 0.5)
    click_cell(page, x, y, fine["id"])
    assert root.get_attribute("data-selected") == str(fine["id"])
    shown = [int(e.get_attribute("data-sample-id"))
             for e in page.locator(".aw-examples .aw-example").all()]
    assert shown == fine["samples"]
    canvas.scroll_into_view_if_needed()
    _shot(page, root, artifacts / "atlas-level1-feature-vis.png")
    page.locator(".jp-OutputArea-output", has=root).screenshot(
        path=str(artifacts / "atlas-level1-lab.png"))

    # Back to examples at level 1: the fine grid's own dataset-example icons.
    page.locator("button.aw-atlas-icons").click()
    page.wait_for_selector(".aw-atlas[data-ready='1'][data-icons='examples'][data-level='1']",
                           timeout=30_000)
    _shot(page, root, artifacts / "atlas-level1-examples.png")

    # Reset view goes home: the whole atlas at level 0; the fine selection becomes its parent.
    page.locator("button.aw-atlas-reset").click()
    page.wait_for_selector(".aw-atlas[data-level='0'][data-ready='1']", timeout=30_000)
    assert root.get_attribute("data-grid-size") == "8"
    assert root.get_attribute("data-selected") == str(row * 8 + col)

    # A long render (thousands of steps) in a second atlas widget: the page shows its progress and
    # a Cancel button, and the kernel is free: a click on the first atlas updates its panel.
    run_code(page, "slow = aw.AtlasWidget(atlas, cache, size=300, model=model, "
                   "fv_options=dict(steps=20_000, chunk=256, progress=False)); display(slow)")
    slow = page.locator(".aw-atlas").nth(1)
    slow.wait_for(timeout=30_000)
    slow.locator("button.aw-atlas-icons").click()
    page.wait_for_function(
        "() => { const r = document.querySelectorAll('.aw-atlas')[1]; const p = r && "
        "r.querySelector('.aw-atlas-progress'); return r.dataset.fv === 'rendering' && "
        "p && !p.hidden && p.value > 0; }", timeout=60_000)
    cancel = slow.locator("button.aw-atlas-cancel")
    assert cancel.is_visible() and slow.locator("button.aw-atlas-icons").is_hidden()
    assert "Rendering icons" in slow.locator(".aw-atlas-status").inner_text()
    slow.scroll_into_view_if_needed()
    _shot(page, slow, artifacts / "atlas-feature-vis-rendering.png")
    other = int(run_code(page, "print([int(i) for i in atlas.cells.ids "
                               "if int(i) not in widget.selected][0])"))
    first, first_canvas = page.locator(".aw-atlas").first, page.locator(".aw-atlas-canvas").first
    settle(page, first_canvas)
    scale, ox, oy = (float(v) for v in first.get_attribute("data-view").split(","))
    box = first_canvas.bounding_box()
    r, c = divmod(other, 8)
    page.mouse.click(box["x"] + ox + (c + 0.5) * scale, box["y"] + oy + (r + 0.5) * scale)
    page.wait_for_function(
        "(id) => document.querySelector('.aw-examples-header')?.dataset.cells === String(id)",
        arg=other, timeout=20_000)
    assert slow.get_attribute("data-fv") == "rendering"  # answered while the icons render
    cancel.click()
    page.wait_for_function(
        "() => { const r = document.querySelectorAll('.aw-atlas')[1]; return r.dataset.fv === "
        "'cancelled' && r.dataset.icons === 'examples' && !r.dataset.busy; }", timeout=30_000)
    assert slow.locator(".aw-atlas-progress").is_hidden() and cancel.is_hidden()
    assert slow.locator("button.aw-atlas-icons").is_visible()
    state = json.loads(run_code(page, "print(json.dumps([slow.fv_state, slow.icons, "
                                      "slow.sprite_icons, slow._job is None]))"))
    assert state == ["cancelled", "examples", "examples", True]
