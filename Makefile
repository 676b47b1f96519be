# Two commands set everything up on a fresh machine: `make demo` and `make test`.
# Each creates .venv if it is missing and installs the package with its extras.

PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
STAMP   = $(VENV)/.installed-stamp

.PHONY: install demo test test-fast lint typecheck bench bench-scale data-samples notebooks clean

$(STAMP): pyproject.toml
	@echo "Installing the Python environment into $(VENV) (first run, or pyproject.toml changed):"
	@echo "this downloads and installs gosat_pipeline's dependencies and takes one to three minutes."
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install --quiet --upgrade pip
	@$(PY) -m pip install --quiet -e ".[dev]"
	@touch $(STAMP)
	@echo "Environment ready: $(VENV)"

install: $(STAMP)

# The demonstration inputs are generated (deterministically) rather than stored in git.
SAMPLES = data_samples/truth.json
SAMPLE_SOURCES = gosat_pipeline/testing/demo.py gosat_pipeline/testing/granules.py \
                 gosat_pipeline/testing/inventories.py gosat_pipeline/testing/soundings.py \
                 gosat_pipeline/testing/atmosphere.py

$(SAMPLES): $(STAMP) $(SAMPLE_SOURCES)
	@echo "Building the demonstration inputs in data_samples/ (a few seconds)"
	$(VENV)/bin/gosat-pipeline synth samples --out data_samples

demo: $(SAMPLES)
	@test -d data_samples/granules || $(VENV)/bin/gosat-pipeline synth samples --out data_samples  # deleted by hand
	$(VENV)/bin/gosat-pipeline run configs/demo.yaml

lint: $(STAMP)
	$(VENV)/bin/ruff check gosat_pipeline tests benchmarks
	$(VENV)/bin/ruff format --check gosat_pipeline tests benchmarks

test: $(STAMP) lint
	$(VENV)/bin/pytest

# The inner loop: ruff and every test not marked slow (the demo runs, notebooks, browser, kill/resume).
test-fast: $(STAMP) lint
	$(VENV)/bin/pytest -m "not slow"

# mypy on the public API and the stage modules ([tool.mypy] in pyproject.toml). Not part of
# `make lint`: a first (uncached) run takes one to three minutes on this machine.
typecheck: $(STAMP)
	$(VENV)/bin/mypy

bench: $(STAMP)
	$(PY) benchmarks/run_all.py $(BENCH_ARGS)

# Real volumes through the whole pipeline (about 1 h and 4 GB of generated granules; not part of make test).
bench-scale: $(STAMP)
	$(PY) benchmarks/bench_scale.py $(BENCH_ARGS)

data-samples: $(STAMP)
	$(VENV)/bin/gosat-pipeline synth samples --out data_samples

clean:
	rm -rf outputs .pytest_cache .ruff_cache
