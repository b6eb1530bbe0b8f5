# trioxide - every target sets up what it needs (.venv via pip) by itself.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TRACE ?= traces-out/demo.jsonl

.PHONY: demo view test lint typecheck pytest bench fuzz clean

$(STAMP): pyproject.toml setup.py traces/_cruns.c
	@echo "setting up $(VENV) with pip: trioxide and its test tools (about a minute on a first run)"
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/trioxide demo

view: $(STAMP)  # the browser viewer on a trace (default: the one `make demo` wrote)
	$(BIN)/trioxide view $(TRACE)

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
	$(BIN)/python bench/bench_wire.py

fuzz: $(STAMP)
	$(BIN)/python -m tests.runtime.fuzz --scenarios 10000

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis build
	rm -f traces/_cruns*.so
