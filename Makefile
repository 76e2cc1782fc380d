# Set-up and entry points. `make demo` and `make test` create .venv from
# requirements.txt on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
DATA ?= synthetic
RESULTS ?= results/$(notdir $(DATA))
# Extra pipeline.sh flags, e.g. PIPELINE_ARGS=--resume or --overwrite for a second run.
PIPELINE_ARGS ?=

.PHONY: venv demo test lint pipeline

$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $@

venv: $(VENV)/.installed

demo: venv
	bash pipeline.sh --data $(DATA) --output-dir $(RESULTS) $(PIPELINE_ARGS)

test: venv
	$(VENV)/bin/ruff check .
	$(PY) -m pytest

lint: venv
	$(VENV)/bin/ruff check .
