"""Fixtures that start a real JupyterLab and drive it with Debian's Chromium through Playwright.

Chromium comes from the system (`apt-get install chromium`); Playwright's own browser download
cannot work offline. Outside CI a missing browser skips these tests; in CI it fails them, because
a green run without browser tests would hide that the widgets were never clicked.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from ..conftest import ROOT, in_ci
from .lab import CHROMIUM, CHROMIUM_ARGS, TOKEN, start_lab, stop_lab


def _require_browser() -> None:
    missing = []
    if not Path(CHROMIUM).exists():
        missing.append(f"{CHROMIUM} (apt-get install chromium)")
    try:
        import playwright  # noqa: F401
    except ImportError:
        missing.append("the playwright package (pip install -e '.[dev]')")
    if missing:
        msg = "browser tests need " + " and ".join(missing)
        if in_ci():
            pytest.fail(msg)
        pytest.skip(msg)


@dataclass
class Lab:
    url: str
    root: Path
    log: Path

    def notebook_url(self, name: str) -> str:
        return f"{self.url}/lab/tree/{name}?token={TOKEN}&reset"


@pytest.fixture(scope="session")
def lab(tmp_path_factory, artifacts) -> Lab:
    """JupyterLab serving a scratch copy of notebooks/ (running cells must not edit the repo)."""
    _require_browser()
    root = tmp_path_factory.mktemp("lab")
    for nb in (ROOT / "notebooks").glob("*.ipynb"):
        shutil.copy(nb, root / nb.name)
    # one JupyterLab per pytest-xdist worker, each with its own log
    log = artifacts / f"jupyterlab-{os.environ.get('PYTEST_XDIST_WORKER', 'main')}.log"
    try:
        proc, url = start_lab(root, log)
    except RuntimeError as err:
        pytest.fail(str(err))
    yield Lab(url=url, root=root, log=log)
    stop_lab(proc)


@pytest.fixture(scope="session")
def browser():
    _require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser, artifacts, request):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    console: list[str] = []
    page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
    page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
    yield page
    (artifacts / f"{request.node.name}.console.txt").write_text("\n".join(console))
    page.screenshot(path=str(artifacts / f"{request.node.name}.last.png"))  # what a failure saw
    context.close()
