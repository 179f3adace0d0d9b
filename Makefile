# The two entry points the README leads with: `make quickstart` and `make test`.
# Each sets itself up from nothing: creates .venv if missing, installs the project, then runs.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Local copies of the datasets (these machines have them beside the checkout; elsewhere data comes from the Hub).
DATA_DIR ?= $(firstword $(wildcard ../shared/data))
PYTEST_WORKERS ?= 2

.PHONY: quickstart test test-all lint install clean

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@# A CPU build of torch 2.13.0 lies on disk here; an unpinned torch would pull a multi-GB CUDA build.
	@$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q torch==2.13.0
	@# .[dev] = the package with its [train,eval,onnx] extras (what the recipes, quickstart and tests use) + test tools
	$(PY) -m pip install -q -e ".[dev]"
	@touch $@

install: $(VENV)/.installed

quickstart: $(VENV)/.installed
	$(VENV)/bin/hf-attn quickstart $(if $(DATA_DIR),--data-dir $(DATA_DIR)) $(ARGS)

test: $(VENV)/.installed
	$(PY) -m pytest -q -m "not slow" -n $(PYTEST_WORKERS)

# ruff, configured in pyproject.toml ([tool.ruff]): pycodestyle, pyflakes, bugbear and import order at 120 columns.
lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .

test-all: $(VENV)/.installed
	$(PY) -m pytest -q -n $(PYTEST_WORKERS)

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache
