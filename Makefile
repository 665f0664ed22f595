# The two commands of the README: `make run` and `make test`. Both set up a
# virtualenv in .venv first (Python 3.11+), so they work on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: setup run test typecheck test-faults bench docs clean

$(BIN)/httpqueue: setup.cfg setup.py pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,flower]'
	touch $@

setup: $(BIN)/httpqueue

# `httpqueue run` listens on 127.0.0.1:2356 unless HTTPQUEUE_ADDRESS says otherwise, so allowing
# callbacks to loopback (a receiver on this machine) opens nothing to the network.
run: setup
	HTTPQUEUE_CALLBACK_ALLOW="$${HTTPQUEUE_CALLBACK_ALLOW-127.0.0.0/8,::1}" $(BIN)/httpqueue run

# mypy first (seconds), then the suite: the README's test command checks both. The fault tests
# (kill -9, failovers, resharding: about three minutes) run apart, in `make test-faults` and in CI.
test: setup typecheck
	$(BIN)/python -m pytest -q -m "not faults" $(PYTEST_ARGS)

typecheck: setup
	$(BIN)/mypy httpqueue

test-faults: setup
	$(BIN)/python -m pytest -q -m faults $(PYTEST_ARGS)

bench: setup
	$(BIN)/python -m bench.run

# The documentation site (Sphinx, furo theme): HTML in docs/_build/html; any warning fails the build.
docs: setup
	$(BIN)/sphinx-build -W --keep-going -q -b html docs docs/_build/html

clean:
	rm -rf $(VENV) httpqueue-data test-artifacts .pytest_cache docs/_build docs/_generated
