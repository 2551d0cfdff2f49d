"""The Binder set-up: the files repo2docker reads, and a fresh install the way it would run them."""

from __future__ import annotations

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
    badge = re.search(r"\(https://mybinder\.org/v2/gh/[^)]+\)", (ROOT / "README.md").read_text())
    assert badge and "urlpath=lab/tree/notebooks/01_quickstart.ipynb" in badge.group(0)


@pytest.mark.slow
def test_binder_install_in_a_fresh_venv(tmp_path):
    """pip install -r binder/requirements.txt, then binder/postBuild, in a new venv.

    Binder's PyTorch CPU index cannot be reached from the test machines (only PyPI can), so the
    requirements are installed without that one line; this machine's pip configuration serves
    the same CPU build of torch.
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
    env = dict(os.environ, PATH=f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}", VIRTUAL_ENV=str(venv))
    env.pop("PYTHONPATH", None)

    def run(*cmd, cwd=repo):
        done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
        assert done.returncode == 0, f"{cmd} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        return done.stdout

    run("python", "-m", "pip", "install", "--quiet", "-r", str(req))
    run("bash", "binder/postBuild")
    out = run("python", "-c", (
        "import torch, atlaswidgets as aw; from atlaswidgets.zoo import kitchen; "
        "print(torch.__version__, aw.__version__, kitchen.model().classes[1], aw.AtlasWidget.__name__)"
    ), cwd=tmp_path)
    assert out.split()[0].startswith("2.13.0") and out.split()[2:] == ["wok", "AtlasWidget"]
    # anywidget and the widget manager ship prebuilt lab extensions: no `jupyter lab build`
    extensions = run("jupyter", "labextension", "list")
    extensions += subprocess.run(["jupyter", "labextension", "list"], cwd=repo, env=env,
                                 capture_output=True, text=True).stderr
    for name in ("anywidget", "@jupyter-widgets/jupyterlab-manager", "jupyterlab-plotly"):
        assert re.search(rf"{re.escape(name)} v\S+ \S*enabled", extensions), name
    # the kitchen weights are package data of the installed (not editable) package
    weights = run("python", "-c", "import atlaswidgets.zoo.kitchen.net as n; print(n.WEIGHTS)", cwd=tmp_path)
    assert str(venv) in weights and Path(weights.strip()).is_file()
