# Two commands for a fresh machine: `make demo` and `make test`.
# `make test` runs the checks (lint) and every test (what CI runs); `make test-fast` leaves out the `slow` ones
# (wheel install, benchmark scripts) while you iterate; `make lint` is ruff's check and format check, the
# import-linter contracts (the package's layers, no import cycle) and mypy over clipflow/.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# torch/torchvision pinned to a pair whose wheels match each other (CPU machines get the
# same build CI tests with); override TORCH_PIN to use another pair.
TORCH_PIN ?= torch==2.14.1 torchvision==0.29.1

.PHONY: install demo test test-fast lint bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_PIN)
	$(PY) -m pip install -q -e ".[test]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(PY) scripts/demo.py --out outputs/demo

test: lint
	$(PY) -m pytest -q -m "slow or not slow"

test-fast: install
	$(PY) -m pytest -q

lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(VENV)/bin/lint-imports
	$(PY) -m mypy

clean:
	rm -rf outputs build *.egg-info

# Extraction benchmark: UnivFD-style baseline, our fast path and the default config (no flags), in one run.
# CPU + tiny by default; e.g. make bench ARGS="--device cuda --backbone vit_l14_random --sizes 256 1024"
bench: install
	$(PY) scripts/bench_extract.py $(ARGS)

# Every experiment of the paper on a generated miniature of the benchmark (tiny random
# backbone, CPU, about two minutes), choices included (at seeds 0,1, not its own three), with
# fresh training draws per epoch as the paper (ARGS=--fast: one cached draw): tables with the
# paper's numbers + plots under outputs/reproduce-mini/ (index.md links them). docs/reproduce.md.
.PHONY: reproduce-mini
reproduce-mini: install
	$(PY) scripts/reproduce_mini.py --out outputs/reproduce-mini $(ARGS)
