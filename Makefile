# ibmonitor: the two set-up commands are `make demo` and `make test`.
# Each creates .venv (when missing or older than setup.cfg) and installs into it.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The CPU build of torch is installed first, so that the range in setup.cfg
# (torch>=2.2,<2.14) is already satisfied and pip fetches no CUDA build.
TORCH_SPEC ?= torch==2.13.0
# The tests build torchvision and timm models. PyPI's torchvision must match
# torch and is built for CUDA: importing it beside the CPU torch fails, and
# lightning (through torchmetrics) would import it too. So torchvision and
# timm go into a folder of their own (no dependencies resolved: nothing can
# pull a CUDA torch) that only tests/_models.py puts on sys.path.
TORCHVISION_SPEC ?= torchvision==0.28.0
TIMM_SPEC ?= timm==1.0.31
MODELS_DIR := $(VENV)/torchvision-cpu

.PHONY: help venv demo demo-quick test test-all bench gallery lint format clean

help:  ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[dev]"
	$(PY) -m pip install -q --no-deps --upgrade --target $(MODELS_DIR) "$(TORCHVISION_SPEC)" "$(TIMM_SPEC)"
	touch $(STAMP)

venv: $(STAMP)  ## create and fill .venv

demo: $(STAMP)  ## train the 12-bit tanh network and draw its information plane
	$(PY) -m ibmonitor demo

demo-quick: $(STAMP)  ## a much shorter demo
	$(PY) -m ibmonitor demo --quick

lint: $(STAMP)  ## ruff check and format check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: $(STAMP) lint  ## lint, then the test suite without the slow tests
	$(PY) -m pytest -m "not slow" -q

test-all: $(STAMP) lint  ## every test, slow ones included
	$(PY) -m pytest -q

bench: $(STAMP)  ## the benchmark scripts (figures go to the README)
	$(PY) scripts/bench_estimators.py
	$(PY) scripts/bench_knn.py
	$(PY) scripts/bench_overhead.py
	$(PY) scripts/bench_measures.py
	$(PY) scripts/bench_models.py

gallery: $(STAMP)  ## rerun the paper reproductions and renew docs/images
	$(PY) scripts/tishby_information_plane.py --gallery
	$(PY) scripts/saxe_tanh_vs_relu.py --gallery
	$(PY) scripts/random_labels.py --gallery
	$(PY) scripts/batch_size_sharpness.py --gallery
	$(PY) scripts/compare_runs.py runs/tishby_information_plane runs/saxe_tanh_vs_relu --gallery

format: $(STAMP)  ## ruff format and fix
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:  ## remove the venv, caches and runs
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .ruff_cache runs
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
