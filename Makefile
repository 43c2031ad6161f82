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
DEMO_LIMIT ?= 200

.PHONY: demo test test-fast lint clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	mkdir -p out
	@echo "demo: eval on the whole PneumoniaMNIST test split, attack and shift on a stratified subset of $(DEMO_LIMIT) of its images (--limit $(DEMO_LIMIT))"
	$(BIN)/medaudit info $(DEMO_MODEL)
	$(BIN)/medaudit eval $(DEMO_MODEL) --json out/demo_eval.json
	$(BIN)/medaudit attack $(DEMO_MODEL) --eps 0.004 --limit $(DEMO_LIMIT) --json out/demo_attack.json
	$(BIN)/medaudit shift $(DEMO_MODEL) --limit $(DEMO_LIMIT) --json out/demo_shift.json --save-heatmap out/demo_shift_heatmap.png
	@echo "demo done. The same audits on all 624 test images (about a minute each on 2 cores):"
	@echo "  $(BIN)/medaudit attack $(DEMO_MODEL) --eps 0.004 --json out/attack.json"
	@echo "  $(BIN)/medaudit shift $(DEMO_MODEL) --json out/shift.json"

test: $(STAMP)
	$(BIN)/python -m pytest -q

# The quick local loop: no slow, browser or real-data tests. `make test` (and CI) runs them all.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow and not browser and not real_data"

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check . && $(BIN)/mypy

clean:
	rm -rf $(VENV) out .pytest_cache
