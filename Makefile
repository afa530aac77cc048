# sharplib: `make paper` rebuilds the paper (default), `make test` runs the test suite.
SHELL := /bin/bash
.DELETE_ON_ERROR:
.DEFAULT_GOAL := paper

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
export SHARPLIB_DATA ?= $(abspath ../shared/data)

# The venv is rebuilt only when pyproject.toml changes.
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[test]"
	touch $@

.PHONY: venv test
venv: $(VENV)/.installed

test: $(VENV)/.installed
	$(PY) -m pytest $(PYTEST_ARGS)
