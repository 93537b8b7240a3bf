# The two commands of the README; each sets up .venv on first use.
PYTHON ?= python3
VENV := .venv

.PHONY: demo test

$(VENV)/.installed: setup.py
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e ".[test]"
	touch $@

# Prepare the embedded People's Daily corpus, pretrain tiny BERT, report accuracy.
demo: $(VENV)/.installed
	$(VENV)/bin/bert-jax demo --workdir demo_workdir

# The full suite on 8 emulated CPU devices (slow end-to-end tests included).
test: $(VENV)/.installed
	$(VENV)/bin/python -m pytest -q --durations=15 tests
