"""The Explorer in a real JupyterLab: an atlas click drives the viewer, a channel highlights the
atlas, a hostile class name stays text in every widget, and on a laptop screen (1400 x 900, and
1024 x 768) the atlas and the viewer are in view side by side with no label cut short."""

from __future__ import annotations

import json

import pytest

from .lab import (
    clipped_labels,
    dismiss_news,
    ready_widget,
    run_code,
    run_scratch,
    set_sidebar,
    visible_part,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

NOTEBOOK = "explorer_lab.ipynb"
XSS = "<img src=x onerror=window.__awPwned=1>"

# A small kitchen cache with statistics and the wok/frying pan attributions (so the Explorer has a
# comparison atlas), "baking tray" renamed to hostile markup, and a cheap PCA layout (no UMAP run);
# no model, so the viewer draws boxes instead of maps and renders no icon.
CELLS = [
    f"""import json, torch
import atlaswidgets as aw
from atlaswidgets.zoo import kitchen

XSS = {XSS!r}
classes = [XSS if c == "baking tray" else c for c in kitchen.CLASSES]
model = kitchen.model()
data = kitchen.dataset(240, seed=1)
cache = aw.capture(model, data, "block4", per_image=4, stats=True, classes=classes, progress=False)
acts = cache["block4"].acts.float()
centred = acts - acts.mean(0)
xy = (centred @ torch.linalg.svd(centred, full_matrices=False).Vh[:2].T).numpy()
cache.add_attribution(aw.attribute(model, data, "block4", [("wok", "frying pan"), "wok", "frying pan"],
                                   cache=cache, store=False, progress=False))""",
    """explorer = aw.Explorer(cache, "block4", xy=xy, y=xy[:, 0], grid_size=8, compare_grid_size=6,
                       k=4, viewer_options=dict(n=3))
explorer""",
]

ATLAS = ".aw-atlas[data-mode='atlas']"  # the activation atlas; the comparison's is data-mode='compare'
ROOT_JS = f"document.querySelector(\"{ATLAS}\")"


def _wait_viewer(page, unit: str) -> None:
    page.wait_for_selector(f".aw-neuron[data-unit='{unit}']", timeout=30_000)
    page.wait_for_function("() => !document.querySelector('.aw-neuron').dataset.pending", timeout=30_000)


def test_explorer_in_lab(lab, page, artifacts):
    run_scratch(page, lab, NOTEBOOK, CELLS)
    atlas = ready_widget(page, ATLAS)
    page.wait_for_selector(".aw-neuron", timeout=30_000)

    # 1. A click on the busiest cell shows that cell's mean direction in the viewer.
    info = json.loads(run_code(page, (
        "a = explorer.atlas_widget.atlas; _k = int(a.cells.count.argmax()); "
        "print(json.dumps({'id': int(a.cells.ids[_k]), 'ij': a.cells.ij[_k].tolist()}))"
    )))
    canvas = atlas.locator(".aw-atlas-canvas")
    canvas.scroll_into_view_if_needed()
    scale, ox, oy = (float(v) for v in atlas.get_attribute("data-view").split(","))
    box = canvas.bounding_box()
    row, col = info["ij"]
    page.mouse.click(box["x"] + ox + (col + 0.5) * scale, box["y"] + oy + (row + 0.5) * scale)
    page.wait_for_function(f"(id) => {ROOT_JS}.dataset.selected === String(id)", arg=info["id"],
                           timeout=10_000)
    _wait_viewer(page, "direction")
    py = json.loads(run_code(page, (
        "import numpy as np; _d = aw.selection_direction(explorer.atlas_widget.atlas, [%d]); "
        "print(json.dumps({'source': explorer.source, 'unit': explorer.viewer.unit, "
        "'same': bool(np.allclose(explorer.direction, _d)), "
        "'top': explorer.viewer.samples.groups['top'].sample_id.tolist()}))" % info["id"]
    )))
    assert py["source"] == "atlas" and py["same"] and py["unit"]["kind"] == "direction"
    assert str(info["id"]) in py["unit"]["label"]
    top = page.locator(".aw-neuron [data-group='top'][data-sample-id]")
    assert [int(e.get_attribute("data-sample-id")) for e in top.all()] == py["top"]

    # 2. A channel typed into the viewer highlights, in the atlas, the cells where it is strongest.
    channel_box = page.locator(".aw-neuron-channel")
    channel_box.fill("84")
    channel_box.press("Enter")
    _wait_viewer(page, "channel:84")
    strongest = json.loads(run_code(page, (
        "print(json.dumps(sorted(aw.strongest_cells(explorer.atlas_widget.atlas, 84, n=4))))"
    )))
    page.wait_for_function(f"(s) => {ROOT_JS}.dataset.highlighted === s",
                           arg=",".join(map(str, strongest)), timeout=10_000)
    # a highlight, not a selection: the clicked cell stays selected and its panel stays
    assert atlas.get_attribute("data-selected") == str(info["id"])
    assert "4 highlighted" in atlas.locator(".aw-atlas-status").text_content()
    state = json.loads(run_code(page, (
        "print(json.dumps([explorer.viewer.unit, explorer.atlas_widget.highlighted, "
        "explorer.atlas_widget.selected, explorer.atlas_panel.selected]))"
    )))
    assert state == [{"kind": "channel", "layer": "block4", "channel": 84}, strongest,
                     [info["id"]], [info["id"]]]
    dismiss_news(page)
    atlas.scroll_into_view_if_needed()
    atlas.screenshot(path=str(artifacts / "explorer-highlight.png"))

    # 3. The hostile class name is text in the atlas tooltip, the panel and the viewer.
    tray = json.loads(run_code(page, (
        "_names = explorer.atlas_widget.atlas.top_class_names; "
        "_ids = [int(i) for i, n in zip(explorer.atlas_widget.atlas.cells.ids, _names) if n == XSS]; "
        "explorer.show_cells(_ids[:1]); print(json.dumps(_ids[:1]))"
    )))
    assert tray, "expected a cell whose most common class is the renamed baking tray"
    page.wait_for_function(
        "(id) => document.querySelector('.aw-examples-header')?.dataset.cells === String(id)",
        arg=tray[0], timeout=20_000)
    _wait_viewer(page, "direction")
    labels = [e.text_content() for e in page.locator(".aw-example-label").all()]
    assert XSS in labels
    viewer_labels = page.locator(".aw-neuron").text_content()
    assert XSS in viewer_labels
    # hover the tray cell: the tooltip names the class as text
    row, col = json.loads(run_code(page, (
        "print(json.dumps(explorer.atlas_widget.atlas.cells.ij["
        "list(explorer.atlas_widget.atlas.cells.ids).index(%d)].tolist()))" % tray[0])))
    canvas.scroll_into_view_if_needed()
    scale, ox, oy = (float(v) for v in atlas.get_attribute("data-view").split(","))
    box = canvas.bounding_box()
    page.mouse.move(box["x"] + ox + (col + 0.5) * scale, box["y"] + oy + (row + 0.5) * scale)
    page.wait_for_function(f"(id) => {ROOT_JS}.dataset.hover === String(id)", arg=tray[0], timeout=5_000)
    assert XSS in atlas.locator(".aw-atlas-tooltip-class").text_content()
    assert page.evaluate("() => document.querySelectorAll('img[src=\"x\"]').length") == 0
    assert page.evaluate("() => window.__awPwned") is None
    dismiss_news(page)
    page.locator(".jp-OutputArea-output", has=atlas).screenshot(path=str(artifacts / "explorer-lab.png"))

    # 4. A laptop screen. The atlas and the viewer sit side by side, both in view at once when the
    # Explorer's top is scrolled to the top of the notebook, and no label of any of its widgets
    # (atlases, panels, viewer, their titles) is cut short. At 1024 px the file browser is folded
    # away, as a person on that screen would; at 1400 px it stays open.
    out = page.locator(".jp-OutputArea-output", has=atlas)
    for width, height in ((1400, 900), (1024, 768)):
        page.set_viewport_size({"width": width, "height": height})
        set_sidebar(page, width >= 1400)
        out.evaluate("e => e.scrollIntoView({block: 'start'})")
        page.wait_for_timeout(400)
        size = f"{width}x{height}"
        dismiss_news(page)
        page.screenshot(path=str(artifacts / f"explorer-{size}.png"))
        viewer = page.locator(".aw-neuron")
        assert visible_part(page, canvas) > 0.99, size
        for part in (".aw-neuron-bar", ".aw-neuron-title", ".aw-neuron-hist"):
            assert visible_part(page, viewer.locator(part)) > 0.99, (size, part)
        assert viewer.bounding_box()["x"] >= canvas.bounding_box()["x"] + canvas.bounding_box()["width"], size
        assert clipped_labels(out) == [], size
        # the box names what the viewer shows: the tray cell selected in step 3
        assert page.locator(".aw-neuron-channel").input_value() == f"cell {tray[0]}"
