"""The Binder set-up: the files repo2docker reads, and a fresh install the way it would run them."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import ROOT

BINDER = ROOT / "binder"


def test_binder_files_pin_the_cpu_torch_and_open_the_quickstart():
    req = (BINDER / "requirements.txt").read_text().splitlines()
    lines = [ln.strip() for ln in req if ln.strip() and not ln.startswith("#")]
    # the CPU index, and the same torch pin as the Makefile
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in lines
    pin = re.search(r"^TORCH \?= (\S+)$", (ROOT / "Makefile").read_text(), re.M).group(1)
    assert pin in lines
    post = BINDER / "postBuild"
    assert os.access(post, os.X_OK) and "python -m pip install ." in post.read_text()
    assert re.fullmatch(r"python-3\.\d+", (BINDER / "runtime.txt").read_text().strip())
    # JupyterLab's news pop-up is off, on Binder and in `make demo`, through one overrides file
    # whose values the installed JupyterLab's settings schema allows (the served value is checked
    # in tests/test_notebook_session.py)
    overrides = json.loads((BINDER / "overrides.json").read_text())
    notification = overrides["@jupyterlab/apputils-extension:notification"]
    assert notification == {"fetchNews": "false", "checkForUpdates": False}
    schema = json.loads((Path(sys.prefix) / "share/jupyter/lab/schemas/@jupyterlab/apputils-extension"
                         / "notification.json").read_text())["properties"]
    assert "false" in [o["const"] for o in schema["fetchNews"]["oneOf"]]
    assert schema["checkForUpdates"]["type"] == "boolean"
    assert "binder/overrides.json" in post.read_text() and "share/jupyter/lab/settings" in post.read_text()
    demo = re.search(r"^demo:.*?(?=^\S)", (ROOT / "Makefile").read_text(), re.M | re.S).group(0)
    assert "cp binder/overrides.json $(VENV)/share/jupyter/lab/settings/overrides.json" in demo
    badge = re.search(r"\(https://mybinder\.org/v2/gh/[^)]+\)", (ROOT / "README.md").read_text())
    assert badge and "urlpath=lab/tree/notebooks/01_quickstart.ipynb" in badge.group(0)


@pytest.mark.slow
def test_binder_install_in_a_fresh_venv(tmp_path):
    """pip install -r binder/requirements.txt, then binder/postBuild, in a new venv.

    Binder's PyTorch CPU index cannot be reached from the test machines (only PyPI can), so the
    requirements are installed without that one line; this machine's pip configuration serves
    the same CPU build of torch.

    pip is told not to byte-compile what it installs (PIP_COMPILE=0): writing .pyc files for
    torch and the ~100 other packages took about half of the two installs' CPU time, and Python
    compiles what it imports anyway. The commands and what they install stay those of Binder.
    """
    repo = tmp_path / "repo"
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT, capture_output=True, check=True).stdout
    for name in filter(None, files.decode().split("\0")):
        if (ROOT / name).is_file():  # a file deleted but not yet committed is skipped
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, repo / name)
    req = tmp_path / "requirements.txt"
    req.write_text("\n".join(ln for ln in (BINDER / "requirements.txt").read_text().splitlines()
                             if not ln.startswith("--extra-index-url")))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    env = dict(os.environ, PATH=f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}", VIRTUAL_ENV=str(venv),
               PIP_COMPILE="0")
    env.pop("PYTHONPATH", None)
    # as on Binder, imports write their bytecode: the checks below then compile torch only once
    env.pop("PYTHONDONTWRITEBYTECODE", None)

    def run(*cmd, cwd=repo) -> subprocess.CompletedProcess:
        done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
        assert done.returncode == 0, f"{cmd} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        return done

    run("python", "-m", "pip", "install", "--quiet", "-r", str(req))
    run("bash", "binder/postBuild")
    out = run("python", "-c", (
        "import torch, atlaswidgets as aw; from atlaswidgets.zoo import kitchen; "
        "import atlaswidgets.zoo.kitchen.net as net; "
        "print(torch.__version__, aw.__version__, kitchen.model().classes[1], aw.AtlasWidget.__name__); "
        "print(net.WEIGHTS)"
    ), cwd=tmp_path).stdout.splitlines()
    assert out[0].split()[0].startswith("2.13.0") and out[0].split()[2:] == ["wok", "AtlasWidget"]
    # the kitchen weights are package data of the installed (not editable) package
    assert str(venv) in out[1] and Path(out[1].strip()).is_file()
    # postBuild put JupyterLab's overrides (no news pop-up) where the venv's JupyterLab reads them
    installed = venv / "share/jupyter/lab/settings/overrides.json"
    assert json.loads(installed.read_text()) == json.loads((BINDER / "overrides.json").read_text())
    # anywidget and the widget manager ship prebuilt lab extensions: no `jupyter lab build`.
    # The list goes to stdout or stderr depending on the jupyterlab version: read both.
    listed = run("jupyter", "labextension", "list")
    extensions = listed.stdout + listed.stderr
    for name in ("anywidget", "@jupyter-widgets/jupyterlab-manager", "jupyterlab-plotly"):
        assert re.search(rf"{re.escape(name)} v\S+ \S*enabled", extensions), name
