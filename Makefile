# Everything runs from a project-local virtual environment that `make install` creates.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install run sim test lint proto proto-check bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

## run the gateway on 127.0.0.1:50051 with the embedded TWS simulator behind it
run: install
	$(VENV)/bin/ibgw serve

## run the TWS simulator alone on 127.0.0.1:7497 (a paper TWS for any ib_insync script)
sim: install
	$(PY) -m tws_simulator --host 127.0.0.1 --port 7497

## the whole test suite (unit + end-to-end against the simulator)
test: install
	$(PY) -m pytest

lint: install
	$(VENV)/bin/ruff check server tests bench
	$(VENV)/bin/ruff format --check server tests bench
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
