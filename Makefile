# The project's scripts. `make run` and `make test` work on a fresh machine with python3 >= 3.11.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Optional dependency groups from pyproject.toml installed into the venv.
EXTRAS ?= test,dev
# Marks a finished install; it is redone whenever pyproject.toml changes.
STAMP := $(VENV)/.installed
# Extra arguments for pytest, e.g. make test ARGS="-k session -x"
ARGS ?=

.PHONY: install run test check format docs clean

install: $(STAMP)

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e ".[$(EXTRAS)]"
	touch $@

run: install
	$(VENV)/bin/voice-fsm serve

test: install
	$(VENV)/bin/pytest $(ARGS)

check: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

docs: install
	$(PY) -m voice_fsm.docs_gen

clean:
	rm -rf $(VENV) build dist .pytest_cache .mypy_cache .ruff_cache
	find . -name '*.egg-info' -prune -exec rm -rf {} +
	find . -name __pycache__ -prune -exec rm -rf {} +
