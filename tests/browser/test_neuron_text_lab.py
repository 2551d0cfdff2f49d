"""The neuron viewer on a TinyLM neuron in a real JupyterLab: its groups, token strips, top tokens,
what the neuron writes, a token search, and the hostile token shown as text (issue #15)."""

from __future__ import annotations

import json

import pytest

from .lab import dismiss_news, run_code, run_scratch

pytestmark = [pytest.mark.browser, pytest.mark.slow]

NOTEBOOK = "neuron_text_lab.ipynb"

# A TinyLM capture of blocks.1.mlp.act on a corpus with the hostile token (text.HOSTILE,
# "<img src=x onerror=alert(1)>") at every fourth position, so that every context shows it; the
# page must show it as text. window.alert is replaced to record a call, should one ever happen.
CELLS = [
    """import json
import torch
import atlaswidgets as aw
from atlaswidgets.zoo import text
from atlaswidgets.widgets.neuron import NeuronViewer

model = text.model()
cols = text.corpus(120, seed=4).columns
ids = cols["input_ids"].clone()
spot = torch.zeros_like(ids, dtype=torch.bool)
spot[:, 3::4] = True
ids[spot & cols["attention_mask"].bool()] = text.VOCAB.index(text.HOSTILE)
cache = aw.capture(model, {**cols, "input_ids": ids}, "blocks.1.mlp.act", progress=False)""",
    """viewer = NeuronViewer(cache, channel=5, model=model, n=3)
viewer""",
]

STATE = ("print(json.dumps({'unit': viewer.unit, 'groups': viewer.groups, 'n': viewer.n_examples, "
         "'contexts': viewer.contexts, 'heat': [[None if v != v else float(v) for v in r] for r in viewer.heat], "
         "'top': viewer.top_tokens, 'up': viewer.writes_up, 'down': viewer.writes_down, "
         "'hostile': text.HOSTILE}))")


def _wait_unit(page, unit: str) -> None:
    page.wait_for_selector(f".aw-neuron[data-unit='{unit}']", timeout=30_000)
    page.wait_for_function("() => !document.querySelector('.aw-neuron').dataset.pending", timeout=30_000)


def test_text_neuron_viewer_in_lab(lab, page, artifacts):
    page.add_init_script("window.alert = () => { window.__awPwned = 1; };")
    run_scratch(page, lab, NOTEBOOK, CELLS)
    _wait_unit(page, "channel:5")
    root = page.locator(".aw-neuron")
    assert root.get_attribute("data-mode") == "text"
    py = json.loads(run_code(page, STATE))
    hostile = py["hostile"]
    assert py["unit"] == {"kind": "channel", "layer": "blocks.1.mlp.act", "channel": 5}

    # the groups, one token strip per example, each token's text and value Python's
    sections = root.locator(".aw-neuron-group")
    assert sections.count() == len(py["groups"])
    for sec, g in zip(sections.all(), py["groups"]):
        assert sec.get_attribute("data-group") == g["name"]
        assert sec.locator(".aw-neuron-group-title").inner_text().startswith(g["title"])
        assert sec.locator(".aw-neuron-strip").count() == g["count"]
    strips = root.locator(".aw-neuron-strip")
    assert strips.count() == py["n"] and root.locator(".aw-neuron-img").count() == 0
    page_strips = strips.evaluate_all(
        "(ss) => ss.map((s) => [...s.querySelectorAll('.aw-neuron-tok')].map((t) => "
        "[t.textContent, t.dataset.value, t.classList.contains('aw-neuron-tok-mark')]))")
    for got, ctx, heat in zip(page_strips, py["contexts"], py["heat"]):
        assert [t for t, _, _ in got] == ctx["tokens"]
        assert [m for _, _, m in got].index(True) == ctx["index"]
        for (_, value, _), want in zip(got, heat):
            assert abs(float(value) - want) < 1e-4  # every token known: the model was re-run
    # the marked token is coloured (the heat strip), the strongest examples first
    assert root.locator(".aw-neuron-tok-mark").first.evaluate("(t) => t.style.backgroundColor") != ""

    # top tokens and what the neuron writes, as Python lists them
    for key, items in (("top", py["top"]), ("up", py["up"]), ("down", py["down"])):
        shown = root.locator(f".aw-neuron-token[data-list='{key}']")
        assert shown.count() == len(items) > 0
        assert [b.get_attribute("data-token") for b in shown.all()] == [t["token"] for t in items]
    assert "through the unembedding" in root.locator(".aw-neuron-writes-note").inner_text()

    # the hostile token is text: in the strips as a text node, and no element made from it
    tok = root.locator(".aw-neuron-tok", has_text=hostile).first
    assert tok.inner_text() == hostile
    assert tok.evaluate("(t) => t.childNodes.length === 1 && t.firstChild.nodeType === 3")
    assert page.evaluate("() => document.querySelectorAll('img[src=\"x\"]').length") == 0
    assert root.locator("img:not(.aw-neuron-icon)").count() == 0
    assert page.evaluate("() => window.__awPwned") is None
    # a tall viewport, so that the whole viewer (summary and every group) is in the picture
    page.set_viewport_size({"width": 1400, "height": 2200})
    dismiss_news(page)
    root.locator(".aw-neuron-title").scroll_into_view_if_needed()
    root.screenshot(path=str(artifacts / "neuron-viewer-text.png"))
    page.set_viewport_size({"width": 1400, "height": 1000})

    # typing a token finds the channels that read it, and shows the first
    root.locator(".aw-neuron-search").fill("salt")
    root.locator(".aw-neuron-go").click()
    page.wait_for_selector(".aw-neuron-result", timeout=30_000)
    _wait_unit(page, f"channel:{root.locator('.aw-neuron-result').first.get_attribute('data-channel')}")
    after = json.loads(run_code(page, STATE))
    assert "salt" in [t["token"] for t in after["top"]]
    assert root.locator(".aw-neuron-token[data-list='top'][data-token='salt']").count() == 1
    assert page.evaluate("() => window.__awPwned") is None
