# Two commands (see README):  make lab   |   make test
# Both create the virtual environment on first use. VENV and PYTHON can be overridden.
PYTHON ?= python3
VENV ?= .venv
BIN = $(VENV)/bin

.PHONY: lab test bench

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	# torch first, pinned: on our machines this is a local CPU wheel; the ranges in
	# requirements.txt then accept it instead of pulling a multi-GB CUDA build
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -r requirements.txt
	# nbkit itself, editable: notebooks run from notebooks/ and still import it
	$(BIN)/pip install -q --no-deps -e .
	touch $@

lab: $(VENV)/.installed
	$(BIN)/jupyter lab notebooks/

test: $(VENV)/.installed
	$(BIN)/python -m pytest -q

bench: $(VENV)/.installed
	$(BIN)/python bench/trainer_overhead.py
