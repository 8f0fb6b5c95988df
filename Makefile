# mlc — every target sets up what it needs (a .venv built from constraints.txt) on a fresh machine.
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -ec
# This machine's pip configuration lists local mirrors that may not exist; pip warns once per package.
PIP_QUIET := 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.mlc-installed
UI_PORT ?= 5000
SERVER_HOST ?= 127.0.0.1
SERVER_PORT ?= 5000
OUTPUTS ?= $(or $(MLC_OUTPUTS),outputs)

.DEFAULT_GOAL := help
.PHONY: help install demo sweep test test-fast ui server bench gpu-check lint clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

install: $(STAMP) ## create .venv with the pinned stack (torch 2.14.1 CPU/CUDA, Optuna 5 + Hydra sweeper)

# Two pip steps on purpose: hydra-optuna-sweeper 1.3.0 declares optuna<3 (which cannot use an RDB
# storage with SQLAlchemy 2); the plugin itself works with Optuna 5, so it goes in without its
# declared dependencies, on top of the pinned modern Optuna. tests/test_install.py checks the result.
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	@echo "installing the pinned stack into $(VENV) (about 2 minutes on a fresh machine)..."
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev]" --config-settings editable_mode=compat $(PIP_QUIET)
	$(PY) -m pip install --quiet -c constraints.txt --no-deps hydra-optuna-sweeper $(PIP_QUIET)
	@touch $(STAMP)
	@echo "installed: $$($(PY) -c 'import torch, optuna, mlflow; print("torch", torch.__version__, "| optuna", optuna.__version__, "| mlflow", mlflow.__version__)')"

WORKERS ?= 2
sweep: install ## a sweep filled by WORKERS processes (ARGS="hparams_search=lambda_vs_negative_ratio ...")
	$(PY) -m mlc.cli sweep --workers $(WORKERS) $(ARGS)

demo: install ## the main job: a small λ-vs-negative-ratio Optuna sweep on the built-in digits data
	$(PY) -m mlc.cli.train -m experiment=demo

# Two test processes (pytest-xdist; a file's tests stay together): most tests wait on subprocesses, so
# the suite is ~1.5x faster on 2 cores than one process. TEST_JOBS=1 runs them one after another.
TEST_JOBS ?= 2
test: install ## run the whole test suite (about 13 minutes on 2 CPU cores; prints the 25 slowest tests)
	$(PY) -m pytest -q -n $(TEST_JOBS) --dist loadfile --durations=25

test-fast: install ## unit tests only (skips end-to-end subprocess runs)
	$(PY) -m pytest -q -m "not slow"

ui: install ## MLflow dashboard on http://127.0.0.1:5000 (UI_PORT=...) over the store in outputs/
	$(PY) -m mlc.cli.ui --outputs $(OUTPUTS) --port $(UI_PORT)

# SERVER_FLAGS="--backend-store-uri postgresql://user@host/db --artifacts-destination /shared/mlartifacts" ...
server: install ## shared MLflow tracking server for runs and sweeps on 127.0.0.1:5000 (SERVER_PORT=...)
	$(PY) -m mlc.cli.ui --serve --outputs $(OUTPUTS) --host $(SERVER_HOST) --port $(SERVER_PORT) $(SERVER_FLAGS)

bench: install ## benchmarks (ratios against a baseline measured in the same run) -> experiments/benchmarks/
	$(PY) -m benchmarks

gpu-check: install ## on a GPU: AMP, compile, NCCL DDP, fused losses on CUDA, trainer vs bare loop -> experiments/benchmarks/gpu.md
	$(PY) -m benchmarks.gpu_check

lint: install ## ruff
	$(VENV)/bin/ruff check mlc hydra_plugins benchmarks tests

# Standard library only, so it runs before .venv exists; CLEAN_FLAGS=--dry-run lists without removing.
clean: ## remove what mlc wrote under OUTPUTS (runs, sweeps, caches, stores); refuses unmarked folders, /, ~, the repo
	$(PYTHON) -m mlc.cli.clean "$(OUTPUTS)" $(CLEAN_FLAGS)
