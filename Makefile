# Two commands: `make demo` opens JupyterLab on the quickstart, `make test` runs every test.
# Both create .venv on first use. torch is installed on its own first: the pinned CPU build,
# because a bare `torch` requirement on a machine without torch pulls a multi-GB CUDA build.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH ?= torch==2.13.0
PORT ?= 8888
# jupyter refuses to run as root without this flag (containers, CI, Binder-like machines)
ROOT_FLAG := $(shell [ "$$(id -u)" = 0 ] && echo --allow-root)

.PHONY: demo test bench reliability gpu-check clean

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

# binder/overrides.json: JupyterLab's defaults for this venv (no news pop-up, no update checks)
demo: $(BIN)/.installed
	mkdir -p $(VENV)/share/jupyter/lab/settings
	cp binder/overrides.json $(VENV)/share/jupyter/lab/settings/overrides.json
	@echo "Starting JupyterLab on notebooks/01_quickstart.ipynb; open the URL printed below."
	$(BIN)/jupyter lab notebooks/01_quickstart.ipynb --no-browser --ip=127.0.0.1 --port=$(PORT) $(ROOT_FLAG)

test: $(BIN)/.installed
	$(BIN)/python -m pytest -ra --durations=12 -n 2 --dist loadfile

bench: $(BIN)/.installed
	$(BIN)/python bench/capture.py

# 20 kill -9s at random moments of captures and re-saves into a store, resumed and compared with an
# uninterrupted run (minutes; not part of `make test`)
reliability: $(BIN)/.installed
	$(BIN)/python bench/reliability.py

# on a machine with a CUDA GPU (PyPI's torch==2.13.0 is a CUDA build there): the tests marked
# cuda, which skip everywhere else, and both benchmarks on the GPU
gpu-check: $(BIN)/.installed
	$(BIN)/python -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 'gpu-check needs a CUDA GPU and a CUDA build of torch; this is torch ' + torch.__version__)"
	$(BIN)/python -m pytest -ra -m cuda tests
	$(BIN)/python bench/capture.py --device cuda
	$(BIN)/python bench/icons.py --device cuda

clean:
	rm -rf $(VENV) test-artifacts .pytest_cache
