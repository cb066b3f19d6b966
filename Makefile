# `make demo` is the main job; `make test` is the test command CI runs (ruff's lint, ruff.toml, then pytest).
# Both build .venv from the pinned lock when it is missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.zoo-installed

.PHONY: demo test venv clean

venv: $(STAMP)

$(STAMP): requirements/lock.txt setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements/lock.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m zoo demo

test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m pytest -q -n 2 --dist loadfile --durations=15 parity_tests tests

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
