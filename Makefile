# Two entry points (see README): `make demo` and `make test`. Both create .venv if it is missing.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# torch==2.13.0 resolves to this machine's local 2.13.0+cpu wheel; override for a GPU build,
# e.g. make test TORCH='torch==2.14.1'
TORCH ?= torch==2.13.0
# the torch requirement the .venv was built with: rewritten only when TORCH changes, so that
# `make test TORCH=...` reinstalls torch in an existing .venv too
TORCH_PIN := $(VENV)/.torch

.PHONY: demo test lint clean FORCE

$(TORCH_PIN): FORCE
	@mkdir -p $(VENV)
	@test "$$(cat $@ 2>/dev/null)" = "$(TORCH)" || echo "$(TORCH)" > $@

$(STAMP): pyproject.toml $(TORCH_PIN)
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# The CPU build of torch first (about 0.7 GB; a CUDA build with its libraries is about 5.5 GB)
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/bayesprune train --dataset teacher

# the suite in TEST_JOBS processes (pytest-xdist), each test file in one of them so that a
# module's fixtures are built once; every test process computes on one thread (tests/conftest.py).
# TEST_JOBS=0 runs it in this process alone.
TEST_JOBS ?= 2
test: $(STAMP)
	$(VENV)/bin/ruff check bayesprune tests benchmarks notebooks
	$(PY) -m pytest -n $(TEST_JOBS) --dist loadfile

lint: $(STAMP)
	$(VENV)/bin/ruff check bayesprune tests benchmarks notebooks

clean:
	rm -rf runs .pytest_cache
