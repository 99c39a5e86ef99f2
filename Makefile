# Braid: every target a person or CI needs. `make help` lists them.
.DEFAULT_GOAL := help
SHELL := /bin/bash

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch goes in first so the project's range is already met by this build
# (here: a CPU wheel on local disk). Override for GPUs: make test TORCH_SPEC="torch==2.x".
TORCH_SPEC ?= torch==2.13.0
SAMPLES ?= samples
LAKE ?= lake
N ?= 24

# Nothing reaches outside: no telemetry, no model hub.
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export DO_NOT_TRACK := 1
export GX_ANALYTICS_ENABLED := false
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: help venv demo test test-all check format clean bench bench-quick soak

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-11s %s\n", $$1, $$2}'

$(BIN)/braid: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	@# librosa's numba kernels compile once into its package's cache (about 20 s), here
	@# rather than in the first run that decodes audio
	$(BIN)/python -c "from tasks.media.audio import compile_kernels; compile_kernels()"
	@touch $@

venv: $(BIN)/braid ## create .venv with torch, the project and its dev tools

demo: venv ## make sample data, run the whole pipeline, print a SQL summary
	$(BIN)/braid samples $(SAMPLES) --n $(N)
	$(BIN)/braid run $(SAMPLES) --lake $(LAKE)
	$(BIN)/braid sql --lake $(LAKE) \
	  "select modality, status, count(*) as objects from objects group by all order by all"
	$(BIN)/braid sql --lake $(LAKE) \
	  "select stage, reason, count(*) as objects from quarantine group by all order by all"
	$(BIN)/braid quality --lake $(LAKE)
	$(BIN)/braid search --lake $(LAKE) -k 3 "a cat lying down"

# Three pytest workers on two cores, one test file each at a time: the end-to-end stack
# test mostly waits on debounce windows and child runs, so two run beside it.
PYTEST_ARGS ?= -n 3 --dist loadfile

test: venv ## run the test suite CI runs (unit, flow and end-to-end; under 20 minutes with install)
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

test-all: venv ## run every test, the `slow` ones too (make test plus about 6 more minutes of scenarios)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

check: venv ## lint, format check and type check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: venv ## apply the formatter and safe lint fixes
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: venv ## measure the performance targets (about 25 min): benchmarks/results/<date>.json, BENCHMARKS.md
	$(BIN)/python -m benchmarks --scale full --markdown BENCHMARKS.md

bench-quick: venv ## a small `make bench` (under 3 min; 100k rows for f, no braid up for g); prints the table
	$(BIN)/python -m benchmarks --scale quick

soak: venv ## one braid run over 10,000 seeded hostile files; prints what held (targets: 0 crashes, 0 hangs, 100 % accounted, 0 non-finite, <= 2 GiB)
	$(BIN)/python -m benchmarks.soak --files 10000 --json benchmarks/results/soak.json

clean: ## remove the sample data and the lake (keeps .venv)
	rm -rf $(SAMPLES) $(LAKE)
