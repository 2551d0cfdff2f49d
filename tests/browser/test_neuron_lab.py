"""The neuron viewer in a real JupyterLab: its groups, a key press, a related-unit click, hostile
text, a concept word in its search box, and no label cut short on a laptop screen."""

from __future__ import annotations

import json

import pytest

from .lab import clipped_at_laptop_sizes, dismiss_news, run_code, run_scratch

pytestmark = [pytest.mark.browser, pytest.mark.slow]

NOTEBOOK = "neuron_lab.ipynb"
XSS = "<img src=x onerror=window.__awPwned=1>"

# A small kitchen cache with statistics; the class "baking tray" is renamed to hostile markup, and
# block4 has single-class attributions toward wok and toward it. Channel 84 is a noodles channel
# (find_units ranks it first on this data; tests/widgets/test_neuron_viewer.py checks that).
CELLS = [
    f"""import json
import atlaswidgets as aw
from atlaswidgets.zoo import kitchen
from atlaswidgets.widgets.neuron import NeuronViewer

XSS = {XSS!r}
classes = [XSS if c == "baking tray" else c for c in kitchen.CLASSES]
model = kitchen.model()
data = kitchen.dataset(200, seed=1)
cache = aw.capture(model, data, "block4", stats=True, classes=classes, progress=False)
for target in ("wok", XSS):
    cache.add_attribution(aw.attribute(model, data, "block4", target, cache=cache, store=False, progress=False))""",
    """viewer = NeuronViewer(cache, "block4", 84, model=model, n=4, icon_steps=8,
                      annotations=data.annotations)
viewer""",
]


STATE = ("print(json.dumps({'unit': viewer.unit, 'groups': viewer.groups, 'n': viewer.n_examples, "
         "'related': viewer.related_channels, 'classes': viewer.classes_up + viewer.classes_down, "
         "'sprite_cols': viewer.sprite_cols, 'thumb': viewer.thumb_size}))")


ACTIVE_CELL = "() => [...document.querySelectorAll('.jp-Notebook .jp-Cell')].findIndex(c => c.classList.contains('jp-mod-active'))"


def _wait_unit(page, unit: str) -> None:
    page.wait_for_selector(f".aw-neuron[data-unit='{unit}']", timeout=30_000)
    page.wait_for_function("() => !document.querySelector('.aw-neuron').dataset.pending", timeout=30_000)


def test_neuron_viewer_in_lab(lab, page, artifacts):
    run_scratch(page, lab, NOTEBOOK, CELLS)
    _wait_unit(page, "channel:84")
    root = page.locator(".aw-neuron")

    # The groups' headings and example counts are Python's.
    py = json.loads(run_code(page, STATE))
    assert py["unit"] == {"kind": "channel", "layer": "block4", "channel": 84}
    sections = root.locator(".aw-neuron-group")
    assert sections.count() == len(py["groups"])
    for sec, g in zip(sections.all(), py["groups"]):
        assert sec.get_attribute("data-group") == g["name"]
        assert sec.locator(".aw-neuron-group-title").inner_text().startswith(g["title"])
        assert sec.locator(".aw-neuron-example").count() == g["count"]
    assert root.locator(".aw-neuron-example").count() == py["n"] == int(root.get_attribute("data-n-examples"))
    assert root.locator(".aw-neuron-title").inner_text() == "block4 · channel 84"
    # Each picture is its thumbnail of the sheet as a background (no canvas per picture: each
    # would be a compositor layer), with its activation map over it; "show maps" hides the maps.
    tiles = root.locator(".aw-neuron-example .aw-neuron-img")
    assert tiles.count() == py["n"] and root.locator(".aw-neuron-groups canvas").count() == 0
    cols = py["sprite_cols"]
    for i in (0, py["n"] - 1):
        style = tiles.nth(i).evaluate("(t) => [t.style.backgroundImage, t.style.backgroundPosition]")
        assert style[0].startswith('url("blob:')
        assert style[1] == f"{-(i % cols) * py['thumb']}px {-(i // cols) * py['thumb']}px"
    heat = root.locator(".aw-neuron-heat")
    assert heat.count() == py["n"] and heat.first.is_visible()
    root.locator(".aw-neuron-toggle input").uncheck()
    assert not heat.first.is_visible()
    root.locator(".aw-neuron-toggle input").check()
    assert heat.first.is_visible()
    # the feature-vis icon arrives after the examples
    page.wait_for_function(
        "() => document.querySelector('.aw-neuron-iconbox')?.dataset.unit === 'block4:channel:84' "
        "&& !document.querySelector('.aw-neuron-icon').hidden", timeout=60_000)

    # A hostile class name shows as text, in the related classes and in example captions.
    names = [c["name"] for c in py["classes"]]
    assert XSS in names
    hostile = root.locator(".aw-neuron-class").nth(names.index(XSS))
    assert hostile.get_attribute("data-class") == XSS
    assert hostile.inner_text().startswith(XSS)
    assert hostile.evaluate("(b) => b.firstChild.nodeType") == 3  # a text node, not markup
    assert root.locator("img").count() == 1  # only the icon: no element came from the text
    assert page.evaluate("() => window.__awPwned") is None
    root.scroll_into_view_if_needed()
    dismiss_news(page)
    root.screenshot(path=str(artifacts / "neuron-viewer.png"))

    # ArrowRight after a click on the viewer shows channel 85, on the page and in Python.
    root.locator(".aw-neuron-title").click()
    assert page.evaluate("() => document.activeElement === document.querySelector('.aw-neuron')")
    page.keyboard.press("ArrowRight")
    _wait_unit(page, "channel:85")
    assert root.locator(".aw-neuron-title").inner_text() == "block4 · channel 85"
    py = json.loads(run_code(page, STATE))
    assert py["unit"]["channel"] == 85

    # Clicking a related channel shows it.
    target = py["related"][0]["channel"]
    button = root.locator(f".aw-neuron-related-channel[data-channel='{target}']")
    button.scroll_into_view_if_needed()
    button.click()
    _wait_unit(page, f"channel:{target}")
    after = json.loads(run_code(page, STATE))
    assert after["unit"] == {"kind": "channel", "layer": "block4", "channel": target}
    assert root.locator(".aw-neuron-example").count() == after["n"]
    assert page.evaluate("() => window.__awPwned") is None

    # In command mode, pointing at the viewer is enough, and JupyterLab's own "j" (select the
    # cell below) stays out of it: the viewer moves on, the notebook's active cell does not.
    page.keyboard.press("Escape")
    page.mouse.move(5, 5)
    root.locator(".aw-neuron-title").hover()
    # focus moved into the viewer, so JupyterLab made the viewer's cell the active one
    page.wait_for_function("() => document.activeElement === document.querySelector('.aw-neuron')")
    active = page.evaluate(ACTIVE_CELL)
    key, expected = ("j", target + 1) if target < 127 else ("k", target - 1)
    page.keyboard.press(key)
    _wait_unit(page, f"channel:{expected}")
    assert page.evaluate(ACTIVE_CELL) == active

    # The search box takes a concept word from the annotations, and says what it takes otherwise.
    search = root.locator(".aw-neuron-search")
    search.fill("noodles")
    search.press("Enter")
    page.wait_for_function(
        "() => document.querySelector('.aw-neuron-results')?.textContent.includes('noodles')", timeout=30_000)
    _wait_unit(page, "channel:" + root.locator(".aw-neuron-result").first.get_attribute("data-channel"))
    search.fill("spatula")
    search.press("Enter")
    page.wait_for_function(
        "() => document.querySelector('.aw-neuron-error')?.textContent.includes('The search box takes')",
        timeout=30_000)
    assert "an annotated object (" in root.locator(".aw-neuron-error").inner_text()
    # a pushed class reads as a share of the strongest channel for it, not a bare 1e-4
    assert root.locator(".aw-neuron-class .aw-neuron-corr").first.inner_text().strip().endswith("%")

    # A laptop screen: no label of the viewer is cut short.
    out = page.locator(".jp-OutputArea-output", has=root)
    assert clipped_at_laptop_sizes(page, out) == {}
