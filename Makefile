# trioxide - every target sets up what it needs (.venv via pip) by itself.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck pytest bench fuzz clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/trioxide demo

test: lint typecheck pytest

lint: $(STAMP)
	$(BIN)/ruff check src runtime traces actors tests bench examples

typecheck: $(STAMP)
	$(BIN)/mypy -p trioxide

pytest: $(STAMP)
	$(BIN)/pytest

bench: $(STAMP)
	$(BIN)/python bench/run_all.py
	$(BIN)/python bench/bench_explorer.py
	$(BIN)/python bench/bench_sled.py
	$(BIN)/python bench/bench_scale.py
	$(BIN)/python bench/bench_latency.py
	$(BIN)/python bench/bench_flight.py
	$(BIN)/python bench/bench_viewer.py

fuzz: $(STAMP)
	$(BIN)/python -m tests.runtime.fuzz --scenarios 10000

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
