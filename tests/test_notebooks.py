"""Execute a notebook top to bottom in its own kernel, for the tests that check what it computed.

Notebooks 01-03 run in one JupyterLab session instead (tests/test_notebook_session.py), as a
participant runs them on Binder; 04-06 use ``_run`` here.
"""

from __future__ import annotations

import json
import time

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
