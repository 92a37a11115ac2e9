# Two commands set up and run everything on a fresh machine:
#   make demo   builds the environment, then runs the demo on the built-in testbed
#   make test   builds the environment, then runs the test suite
VENV ?= .venv
PYTHON ?= python3.11
# The torch build to install before anything that depends on it. On a GPU machine, set it to the
# CUDA build you want (e.g. TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128").
TORCH_SPEC ?= torch==2.13.0
EXTRAS ?= dev,multi,trl

STAMP := $(VENV)/.installed

.PHONY: demo test lint install

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -m pip install -q $(TORCH_SPEC)
	$(VENV)/bin/python -m pip install -q -e '.[$(EXTRAS)]'
	touch $@

demo: $(STAMP)
	$(VENV)/bin/sps demo

test: $(STAMP)
	$(VENV)/bin/python -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check .
