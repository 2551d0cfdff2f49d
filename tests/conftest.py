"""Shared test settings: fixed seeds, one thread pool size, and the artifacts folder."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"

if os.environ.get("PYTEST_XDIST_WORKER"):
    # Under `make test` two pytest-xdist workers share the 2 cores. With torch's default of one
    # OpenMP thread per core in each worker, and in each notebook kernel a worker starts (they
    # inherit the environment), busy-waiting threads oversubscribe the cores; one thread each
    # keeps both cores busy without that.
    for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ.setdefault(_var, "1")
    torch.set_num_threads(1)


# The suite checks its results as CPU tensors. On a machine with a GPU the default device would be
# CUDA, so keep it on the CPU here (notebook kernels and JupyterLab inherit this); the tests marked
# `cuda` pass device="cuda" themselves (`make gpu-check`). A value set outside is kept.
os.environ.setdefault("ATLASWIDGETS_DEVICE", "cpu")

# Icons that cell_icons builds once and keeps (render.icons.icon_cache_dir) go to a folder of this
# run, not the user's cache, so no test reads what an earlier run left; kernels inherit it.
if not os.environ.get("ATLASWIDGETS_CACHE_DIR"):
    os.environ["ATLASWIDGETS_CACHE_DIR"] = tempfile.mkdtemp(prefix="atlaswidgets-test-cache-")
    atexit.register(shutil.rmtree, os.environ["ATLASWIDGETS_CACHE_DIR"], ignore_errors=True)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


# The notebook files take longest, and pytest-xdist (``-n 2 --dist loadfile``, see the Makefile)
# hands out whole files in collection order: collected first, they start at once on one worker
# while the other works through the rest.
_FIRST = ("test_notebook_session.py", "test_workshop_notebooks.py", "test_notebook_language.py")


def pytest_collection_modifyitems(config, items):
    items.sort(key=lambda item: 0 if item.path.name in _FIRST else 1)  # stable within each group

