# The commands of the README. Each sets up everything on a fresh machine with Python 3.11:
# a virtual environment in .venv, the package and its dependencies (including the
# nats-server binary), then runs.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo demo-terminal demo-video test lint bench bench-micro bench-baseline clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/python -m pip install --quiet --no-deps 'mediapipe==0.10.14'  # pyproject.toml, hands
	touch $(STAMP)

# The store live in a browser (docs/dashboard.md): the embedded nats-server, a simulated
# day published at 60 times its pace, the engine, the projections, the API and the
# dashboard on 127.0.0.1; it prints the URL and an operator token. Ctrl-C stops it all.
DEMO_PORT ?= 8000

demo: $(STAMP)
	$(BIN)/aisle serve --demo --host 127.0.0.1 --port $(DEMO_PORT)

# The same store day in the terminal: published, derived, and summed up in tables.
demo-terminal: $(STAMP)
	$(BIN)/aisle demo

# The vision adapters on rendered video (docs/adapters.md): two shoppers' visits to the
# example store filmed by its four cameras (under a minute of video, rendered once), then
# every camera through detection, tracking, the floor and the hand-off into the log, with
# an annotated video per camera. The summary says where the videos are and what was
# published; run again, it makes the same events and publishes none of them twice.
DEMO_VIDEO := .aisle/demo-video
STORE := examples/stores/convenience.yaml

$(DEMO_VIDEO)/.rendered: $(STAMP)
	$(BIN)/aisle render --store $(STORE) --minutes 0.25 --shoppers 2 --seed 4 --out $(DEMO_VIDEO)
	touch $@

demo-video: $(DEMO_VIDEO)/.rendered
	$(BIN)/aisle adapt --layout $(STORE) --all --source '$(DEMO_VIDEO)/{camera}.mp4' \
		--annotate $(DEMO_VIDEO)/annotated.mp4
	@echo "Watch $(DEMO_VIDEO)/annotated.CAMERA.mp4; the events: $(BIN)/aisle log replay --store corner-01"

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Every benchmark, in 30 to 40 minutes on 2 cores (docs/benchmarks.md has each one's
# longer run). Each prints the commit and the machine first.
bench: bench-micro
	$(BIN)/python bench/log_throughput.py
	$(BIN)/python bench/engine_throughput.py
	$(BIN)/python bench/snapshots.py
	$(BIN)/python bench/projections.py
	$(BIN)/python bench/api_load.py
	$(BIN)/python bench/engine_latency.py --quick --no-machine
	$(BIN)/python bench/receipt_accuracy.py
	$(BIN)/python bench/simulate_speed.py --stores 10 --publish-stores 3
	$(BIN)/python bench/tracking_accuracy.py
	$(BIN)/python bench/floor_accuracy.py
	$(BIN)/python bench/vision_fps.py

# The micro-benchmarks (pytest-benchmark), compared with the baseline committed in
# bench/results/; this run's figures go to bench/results/last.json (not committed).
MICRO := $(BIN)/pytest bench/micro -p no:cacheprovider --benchmark-only \
	--benchmark-storage=bench/results --benchmark-columns=min,median,iqr,rounds \
	--benchmark-sort=name

bench-micro: $(STAMP)
	$(MICRO) --benchmark-compare --benchmark-json=bench/results/last.json

# A new baseline: bench/results/<machine>/NNNN_baseline.json, to commit.
bench-baseline: $(STAMP)
	$(MICRO) --benchmark-save=baseline

clean:
	rm -rf $(VENV) .aisle .pytest_cache .hypothesis
