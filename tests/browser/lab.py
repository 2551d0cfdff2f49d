"""What a person does in JupyterLab, as Playwright steps: open a notebook, run it, add a cell."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

CHROMIUM = os.environ.get("ATLASWIDGETS_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
TOKEN = "atlaswidgets-browser-test"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_lab(root: Path, log: Path, timeout_s: float = 90, args: tuple[str, ...] = (),
              env: dict[str, str] | None = None) -> tuple[subprocess.Popen, str]:
    """Start JupyterLab serving ``root``, its output in ``log``; return (process, base URL).
    ``args`` are more command-line options, ``env`` more environment variables.

    Raises RuntimeError, with the log's tail, when the server does not answer in ``timeout_s``.
    """
    port = _free_port()
    cmd = [
        sys.executable, "-m", "jupyter", "lab", "--no-browser",
        f"--port={port}", "--ip=127.0.0.1",
        f"--ServerApp.token={TOKEN}", f"--ServerApp.root_dir={root}",
        # no update checks or news pop-ups: the machine has no internet and the page must be quiet
        "--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
    ]
    cmd += args
    if hasattr(os, "getuid") and os.getuid() == 0:
        cmd.append("--allow-root")
    env = dict(os.environ, JUPYTER_PLATFORM_DIRS="1", **(env or {}))
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=root)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + timeout_s
    while True:
        try:
            urllib.request.urlopen(f"{url}/api/status?token={TOKEN}", timeout=2)
            return proc, url
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                raise RuntimeError(f"JupyterLab did not start; see {log}:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)


def stop_lab(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()

ALL_RUN = """() => {
  const prompts = [...document.querySelectorAll('.jp-Notebook .jp-Cell.jp-CodeCell .jp-InputPrompt')];
  return prompts.length > 0 && prompts.every(e => /\\[\\d+\\]/.test(e.textContent));
}"""


def open_notebook(page, url: str) -> None:
    page.goto(url)
    page.wait_for_selector(".jp-Notebook", timeout=90_000)
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=30_000)
    accept_kernel_dialog(page)
    dismiss_news(page)


def accept_kernel_dialog(page) -> None:
    """Accept the "Select Kernel" dialog JupyterLab shows when it cannot pick the kernel itself."""
    try:
        page.wait_for_selector(".jp-Dialog", timeout=3_000)
    except Exception:  # noqa: BLE001 - no dialog is the usual case
        return
    page.locator(".jp-Dialog .jp-mod-accept").first.click()


def dismiss_news(page) -> None:
    """Say no to the "official Jupyter news" toast so it stays out of screenshots."""
    no = page.locator(".jp-Notification-Toast button", has_text=re.compile("^No$"))
    if no.count():
        no.first.click()


def run_all(page, timeout_ms: int = 300_000) -> None:
    page.get_by_role("menuitem", name="Run", exact=True).click()
    page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
    # On a loaded machine the "Select Kernel" dialog can come after open_notebook stopped waiting
    # for it, and swallow the run: accept it then, and run again.
    page.wait_for_function(f"() => ({ALL_RUN})() || !!document.querySelector('.jp-Dialog')",
                           timeout=timeout_ms)
    if page.locator(".jp-Dialog").count():
        for _ in range(5):  # two sessions started at once may each ask
            if not page.locator(".jp-Dialog").count():
                break
            page.locator(".jp-Dialog .jp-mod-accept").first.click()
            page.wait_for_timeout(2_000)
        page.get_by_role("menuitem", name="Run", exact=True).click()
        page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
    page.wait_for_function(ALL_RUN, timeout=timeout_ms)


def run_code(page, code: str, timeout_ms: int = 60_000) -> str:
    """Add a cell at the end of the notebook, type ``code``, run it, return its printed text."""
    cells = page.locator(".jp-Notebook .jp-Cell")
    before = cells.count()
    cells.nth(before - 1).locator(".jp-InputPrompt").click()  # select the last cell, command mode
    page.keyboard.press("Escape")
    page.keyboard.press("b")  # insert a cell below
    page.wait_for_function(f"() => document.querySelectorAll('.jp-Notebook .jp-Cell').length > {before}")
    cell = cells.nth(before)
    cell.locator(".cm-content").click()
    # one line at a time: the editor auto-indents after a newline, which would break pasted blocks
    page.keyboard.insert_text(code)
    page.keyboard.press("Shift+Enter")
    prompt = cell.locator(".jp-InputPrompt")
    page.wait_for_function(
        "(el) => /\\[\\d+\\]/.test(el.textContent)", arg=prompt.element_handle(), timeout=timeout_ms
    )
    return "\n".join(cell.locator(".jp-OutputArea-output").all_inner_texts())


def scratch_notebook(cells: list[str]) -> dict:
    """An nbformat-4 notebook (as JSON-able dict) of code cells, for a test to write into lab.root."""
    return {
        "cells": [
            {"cell_type": "code", "execution_count": None, "id": f"cell{i}", "metadata": {},
             "outputs": [], "source": src}
            for i, src in enumerate(cells)
        ],
        "metadata": {"kernelspec": {"display_name": "Python 3 (ipykernel)", "language": "python",
                                    "name": "python3"},
                     "language_info": {"name": "python"}},
        "nbformat": 4,
        "nbformat_minor": 5,
    }


def run_scratch(page, lab, name: str, cells: list[str], timeout_ms: int = 180_000) -> None:
    """Write a scratch notebook of ``cells`` into the lab's root, open it and run every cell."""
    (lab.root / name).write_text(json.dumps(scratch_notebook(cells)))
    open_notebook(page, lab.notebook_url(name))
    run_all(page, timeout_ms=timeout_ms)


def ready_widget(page, selector: str, ready: str = "[data-ready='1']"):
    """Wait for the widget root at ``selector`` to appear and to reach ``ready`` (by default:
    its icons decoded); return its locator."""
    root = page.locator(selector)
    root.wait_for(timeout=60_000)
    page.wait_for_selector(selector + ready, timeout=30_000)
    return root


def settle(page, canvas) -> None:
    """Scroll the canvas into view and wait until it stops moving: after a cell runs, JupyterLab
    scrolls to the next one a moment later, which would slide the grid under a still pointer."""
    canvas.scroll_into_view_if_needed()
    last = None
    for _ in range(40):
        box = canvas.bounding_box()
        if box == last:
            return
        last = box
        page.wait_for_timeout(150)


# Every element of the widgets under `root` that holds text of its own, and whose text is wider
# than its box (scrollWidth > clientWidth): a label cut short, by an ellipsis or an overflow.
# Inline elements have no box of their own (clientWidth 0); their block parent is checked instead.
CLIPPED = """(root) => {
  const out = [];
  for (const e of root.querySelectorAll('*')) {
    const own = [...e.childNodes].some(n => n.nodeType === 3 && n.textContent.trim());
    if (!own || !e.getClientRects().length || getComputedStyle(e).display === 'inline') continue;
    if (e.scrollWidth > e.clientWidth + 1) {
      out.push(`${e.className || e.tagName}: "${e.textContent.trim().slice(0, 40)}" ${e.scrollWidth} > ${e.clientWidth}`);
    }
  }
  return out;
}"""


def click_cell(page, x: float, y: float, cell: int) -> None:
    """Hover the atlas cell ``cell`` at page point (x, y), click it once the atlas says it is
    hovered, and wait until the linked example panel shows that cell."""
    page.mouse.move(x, y)
    page.wait_for_function("(id) => document.querySelector('.aw-atlas').dataset.hover === String(id)",
                           arg=cell, timeout=5_000)
    page.mouse.click(x, y)
    page.wait_for_function(
        "(id) => document.querySelector('.aw-examples-header')?.dataset.cells === String(id)",
        arg=cell, timeout=20_000)


def clipped_labels(locator) -> list[str]:
    """The labels cut short inside ``locator`` (see CLIPPED); empty when every one is whole."""
    return locator.evaluate(CLIPPED)


def visible_part(page, locator) -> float:
    """The fraction of ``locator``'s box that lies inside the notebook's visible area (below
    JupyterLab's toolbars and above its status bar, inside the window)."""
    return page.evaluate("""(e) => {
      const r = e.getBoundingClientRect();
      const v = e.closest('.jp-WindowedPanel-outer, .jp-Notebook').getBoundingClientRect();
      const top = Math.max(r.top, v.top, 0), bottom = Math.min(r.bottom, v.bottom, innerHeight);
      const left = Math.max(r.left, v.left, 0), right = Math.min(r.right, v.right, innerWidth);
      const area = Math.max(0, bottom - top) * Math.max(0, right - left);
      return r.width * r.height ? area / (r.width * r.height) : 0;
    }""", locator.element_handle())


def set_sidebar(page, open_: bool) -> None:
    """Open or collapse JupyterLab's left sidebar (the file browser), as its tab's click does."""
    shown = page.locator("#jp-left-stack").is_visible()
    if shown != open_:
        page.locator(".jp-SideBar.jp-mod-left .lm-TabBar-tab").first.click()
        page.wait_for_function("(want) => !!document.querySelector('#jp-left-stack')?.offsetWidth === want",
                               arg=open_, timeout=5_000)


LAPTOPS = ((1400, 900), (1024, 768))


def clipped_at_laptop_sizes(page, locator) -> dict[str, list[str]]:
    """The labels cut short inside ``locator`` at each laptop viewport of LAPTOPS, by size
    ("1400x900"); sizes where every label is whole are left out. The viewport is put back after."""
    before = page.viewport_size
    found = {}
    try:
        for width, height in LAPTOPS:
            page.set_viewport_size({"width": width, "height": height})
            page.wait_for_timeout(300)  # JupyterLab lays the notebook out again
            clipped = clipped_labels(locator)
            if clipped:
                found[f"{width}x{height}"] = clipped
    finally:
        page.set_viewport_size(before)
    return found
