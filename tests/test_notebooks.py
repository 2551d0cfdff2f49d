"""Execute a notebook top to bottom in its own kernel, for the tests that check what it computed.

Notebooks 01-03 run in one JupyterLab session instead (tests/test_notebook_session.py), as a
participant runs them on Binder; 04-06 use ``_run`` here.
"""

from __future__ import annotations

import html
import json
import re
import time
from collections import Counter

import nbformat
from nbclient import NotebookClient

from .conftest import ROOT

WIDGET_MIME = "application/vnd.jupyter.widget-view+json"


def _run(name: str, tmp_path, extra: str, artifacts) -> tuple[nbformat.NotebookNode, dict, list]:
    """Execute notebook ``name`` with ``extra`` appended (it prints "FACTS" + JSON).

    Checks what every notebook must do (no error output, fit a 2 GB Binder machine), saves the
    facts and the run time (measured, not asserted) as a test artifact, and returns the executed notebook, the facts and
    every output of its code cells.
    """
    nb = nbformat.read(ROOT / "notebooks" / name, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(extra))
    start = time.perf_counter()
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    seconds = time.perf_counter() - start
    out = "".join(o.get("text", "") for o in nb.cells[-1].outputs if o.output_type == "stream")
    facts = json.loads(out.split("FACTS", 1)[1])
    stem = name.removesuffix(".ipynb")
    (artifacts / f"{stem}.facts.json").write_text(json.dumps(dict(facts, seconds=seconds), indent=1))
    print(f"{stem} executed in {seconds:.1f} s, peak kernel RSS {facts['peak_rss_mb']:.0f} MB")
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert facts["peak_rss_mb"] < 2048, "the demo notebooks must fit a Binder machine (2 GB)"
    return nb, facts, outputs


# a tqdm text bar ("desc: 100%|###| 8000/8000 [...]", umap-learn's format too), for a kernel
# without ipywidgets, where tqdm.auto writes to stderr instead of drawing a widget
_TEXT_BAR = re.compile(r"([^\r\n:|]+): *\d+%\|[^\r\n]*? (\d+)/(\d+) \[")


def progress_bars(nb: nbformat.NotebookNode) -> dict[int, list[tuple[str, float, float]]]:
    """The progress bars each code cell of an executed notebook left in its output.

    A tqdm.auto bar in a kernel with ipywidgets is an HBox of (HTML, FloatProgress, HTML) whose
    final state nbclient keeps in the notebook's widget state; without ipywidgets it is text on
    stderr. Returns {cell index: [(description, n, total), ...]} in output order.
    """
    state = (nb.metadata.get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {})
             .get("state", {}))
    bars: dict[int, list[tuple[str, float, float]]] = {}
    for i, cell in enumerate(nb.cells):
        for o in cell.get("outputs", []):
            if o.output_type == "stream" and o.name == "stderr":
                last = {m.group(1).strip(): (float(m.group(2)), float(m.group(3)))
                        for m in _TEXT_BAR.finditer(o.text)}
                bars.setdefault(i, []).extend((d, n, t) for d, (n, t) in last.items())
                continue
            box = state.get(o.get("data", {}).get(WIDGET_MIME, {}).get("model_id", ""), {})
            if box.get("model_name") != "HBoxModel":
                continue
            parts = [state.get(c.removeprefix("IPY_MODEL_"), {}) for c in box["state"].get("children", [])]
            if [p.get("model_name") for p in parts] != ["HTMLModel", "FloatProgressModel", "HTMLModel"]:
                continue
            # tqdm.notebook writes its spaces as figure spaces (U+2007)
            desc = html.unescape(parts[0]["state"].get("value", "")).replace("\u2007", " ")
            desc = desc.split(":")[0].strip()
            bar = parts[1]["state"]
            bars.setdefault(i, []).append((desc, float(bar.get("value", 0)), float(bar.get("max", 0))))
    return bars


def assert_progress(nb: nbformat.NotebookNode, expected: dict[str, list[str]]) -> None:
    """Each code cell whose source holds a key of ``expected`` left a finished bar (n == total
    > 0) in its own output for each name in the value (a description prefix; a name listed
    twice needs two bars). Long steps must show progress where the person runs them."""
    bars = progress_bars(nb)
    for marker, names in expected.items():
        cells = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and marker in c.source]
        assert len(cells) == 1, f"expected one code cell with {marker!r}, found {len(cells)}"
        drawn = bars.get(cells[0], [])
        for name, count in Counter(names).items():
            done = [b for b in drawn if b[0].startswith(name) and b[2] > 0 and b[1] == b[2]]
            assert len(done) >= count, (
                f"the cell with {marker!r} should show {count} finished {name!r} progress bar(s) "
                f"in its output; it showed {drawn}")


UMAP_BARS = ["UMAP neighbours", "UMAP graph", "UMAP epochs"]
