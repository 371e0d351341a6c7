# The study's two commands. Each builds the pinned environment in .venv first (Python 3.11,
# every package pinned by requirements.lock), so a fresh clone needs nothing else.
#   make repro              regenerate every report at the default (2-core CPU) scale
#   make repro SCALE=paper  the papers' settings (params-paper.yaml copied onto params.yaml)
#   make test               the test suite (pytest: library tests + every notebook through nbval)
PYTHON ?= python3.11
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
SCALE ?= default
export PATH := $(BIN):$(PATH)

.PHONY: repro test env sync

$(VENV)/.installed: pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c requirements.lock -e '.[test]'
	touch $@

env: $(VENV)/.installed

repro: env
ifeq ($(SCALE),paper)
	cp params-paper.yaml params.yaml
	@echo "params.yaml now holds the papers' settings (git checkout params.yaml restores the default)"
else ifneq ($(SCALE),default)
	$(error SCALE must be 'default' or 'paper', got '$(SCALE)')
endif
	dvc repro
	dvc metrics show

test: env
	$(BIN)/python -m pytest

# after editing a notebook in JupyterLab (or its .py twin), bring the pair back in step
sync: env
	jupytext --sync notebooks/*.ipynb
