# Two commands do all the setup on a fresh machine (Python 3.10+):
#   make demo   - create/reuse .venv, then audit the sample model on its dataset
#   make test   - create/reuse .venv, then run the whole test suite
#   (make test-fast leaves out the slow, browser and real-data tests: a quick local loop)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SHARED_DATA := $(abspath ../shared/data/medmnist)
# Real MedMNIST files: $MEDAUDIT_DATA_ROOT if set, else ../shared/data/medmnist when present.
export MEDAUDIT_DATA_ROOT ?= $(if $(wildcard $(SHARED_DATA)),$(SHARED_DATA),)
DEMO_MODEL ?= sample_models/pneumoniamnist_rescnn.pt

.PHONY: demo test test-fast lint clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	mkdir -p out
	$(BIN)/medaudit info $(DEMO_MODEL)
	$(BIN)/medaudit eval $(DEMO_MODEL) --json out/demo_eval.json
	$(BIN)/medaudit attack $(DEMO_MODEL) --eps 0.004 --json out/demo_attack.json
	$(BIN)/medaudit shift $(DEMO_MODEL) --json out/demo_shift.json --save-heatmap out/demo_shift_heatmap.png

test: $(STAMP)
	$(BIN)/python -m pytest -q

# The quick local loop: no slow, browser or real-data tests. `make test` (and CI) runs them all.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow and not browser and not real_data"

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check . && $(BIN)/mypy

clean:
	rm -rf $(VENV) out .pytest_cache
