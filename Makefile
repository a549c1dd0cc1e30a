# Two commands for a fresh machine: `make demo` and `make test`.
# Both create (or reuse) the virtual environment in $(VENV) and install the package into it.
# torch is installed first at a pinned version so that a machine holding a local CPU wheel of
# it uses that wheel; override with e.g. `make test TORCH_SPEC=torch` elsewhere.

PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Test workers (pytest-xdist), each with one thread: one per core of a two-core machine.
TEST_WORKERS ?= 2

.PHONY: setup demo test lint bench clean

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[dev,ray,tensorboard]"
	# Cross-check for the attacks. Its wheel pins packages (torchvision, old requests) that
	# would replace this torch; its code needs only torch and scipy, so no dependencies.
	$(BIN)/python -m pip install --quiet --no-deps "torchattacks==3.5.1"
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/softlabels reproduce --out runs/reproduce

test: $(STAMP)
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS)

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
