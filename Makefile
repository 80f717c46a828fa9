# Two entry points (see README): `make demo` and `make test`. Both create .venv if it is missing.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/bayesprune train --dataset teacher

test: $(STAMP)
	$(VENV)/bin/ruff check bayesprune tests benchmarks notebooks
	$(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check bayesprune tests benchmarks notebooks

clean:
	rm -rf runs .pytest_cache
