# Two commands do all the set-up on a fresh machine:
#   make demo   installs into .venv and lints the shipped samples
#   make test   installs into .venv and runs the test suite (make test-fast: without training)
VENV ?= .venv
PY := $(VENV)/bin/python
CURATE := $(VENV)/bin/curate

.PHONY: install demo test test-fast bench
install: $(VENV)/.installed

# torch is pinned first so pip takes the CPU wheel instead of a multi-GB CUDA build.
$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[train,dev]'
	-$(PY) -m curate.text.aot  # the kernels compiled ahead of time (~10 s; without a C compiler the JIT runs them)
	touch $@

# The dirty samples exit 1 (they have planted errors); the demo goes on and ends on the clean one.
demo: install
	-$(CURATE) lint samples/support-chat.jsonl --eval samples/support-eval.jsonl --model samples/tiny-chat
	-$(CURATE) lint samples/alpaca-tasks.jsonl
	$(CURATE) lint samples/clean-chat.jsonl

test: install
	$(PY) -m pytest -q

# The everyday loop: everything but the tests that train a model (CI runs them all with `make test`).
test-fast: install
	$(PY) -m pytest -q -m "not slow"

bench: install
	$(PY) bench/lint.py
	$(PY) bench/dedup.py
	$(PY) bench/templates.py
	$(PY) bench/formats.py
	$(PY) bench/train.py
	$(PY) bench/review.py
