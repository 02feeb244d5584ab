# devlab: `make run` benchmarks the sample models on the host CPU; `make test` runs the tests.
# Both create .venv with Python 3.11 when it is missing and install devlab into it.

PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: run test lint perf models agent clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[all,test]'
	@touch $(STAMP)

run: $(STAMP)
	$(BIN)/devlab --run assets/models --out results

test: $(STAMP)
	$(BIN)/ruff check backends console tests assets
	$(BIN)/ruff format --check backends console tests assets
	$(BIN)/lint-imports --no-cache
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check backends console tests assets
	$(BIN)/ruff format --check backends console tests assets
	$(BIN)/lint-imports --no-cache

perf: $(STAMP)
	$(BIN)/python tests/perf/host_overhead.py

models: $(STAMP)
	$(BIN)/python assets/make_models.py --out assets/models

# The agent for boards, one file (standard library only to build; docs/agent-board.md)
agent:
	$(PYTHON) -m backends.agent.zipapp --out dist/devlab-agent.pyz

clean:
	rm -rf $(VENV) results build dist *.egg-info
