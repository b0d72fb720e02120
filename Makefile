# advpure: every target installs what it needs first (a fresh machine needs only `make run` / `make test`).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
EXTRAS := dev,sweep,slurm,published

.DEFAULT_GOAL := help
.PHONY: help install run test test-full bench device-kit grad-modes lint format lock clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN{FS=":.*## "}{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e ".[$(EXTRAS)]"
	@touch $(STAMP)

install: $(STAMP)  ## create .venv with the pinned set (constraints.txt) and advpure in editable mode

run: $(STAMP)  ## the default job: digits classifier behind DiffPure vs AutoAttack (< 5 min on 2 CPU cores)
	$(PY) run.py $(ARGS)

test: $(STAMP)  ## fast tests (no slow, no gpu), < 10 min on 2 CPU cores
	$(PY) -m pytest -q $(ARGS)

test-full: $(STAMP)  ## all tests including slow ones (gpu tests run only where CUDA is present)
	$(PY) -m pytest -q -m "not gpu or gpu" $(ARGS)

bench: $(STAMP)  ## benchmarks: purification vs DiffPure's reference path -> benchmarks/RESULTS.md; grad memory, attack cost -> benchmarks/results/
	$(PY) benchmarks/purification.py $(ARGS)
	$(PY) benchmarks/grad_memory.py
	$(PY) benchmarks/attack_cost.py

device-kit: $(STAMP)  ## .device_site: the packages the GPU machine lacks, for benchmarks/device/gpu_checks.sh there
	bash benchmarks/device/prepare.sh

grad-modes: $(STAMP)  ## digits default under each grad mode: sweep.md + sweep.png in the sweep folder
	$(PY) run.py -m purifier.grad_mode=full,adjoint,surrogate,bpda,blind $(ARGS)

lint: $(STAMP)  ## ruff lint and format check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)  ## apply ruff fixes and formatting
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

lock: $(STAMP)  ## rewrite constraints.txt from the current .venv
	@{ head -3 constraints.txt; $(PY) -m pip freeze --exclude-editable; } > constraints.txt.new && mv constraints.txt.new constraints.txt

clean:  ## remove caches, outputs and the virtual environment
	rm -rf $(VENV) .pytest_cache .ruff_cache build src/*.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
	find outputs -mindepth 1 ! -name .gitkeep -exec rm -rf {} +
