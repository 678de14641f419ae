# locseg: two commands to remember: `make demo` and `make test`.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export NO_ALBUMENTATIONS_UPDATE := 1
export WANDB_MODE ?= offline
export WANDB_SILENT := true
export HYDRA_FULL_ERROR := 1

.PHONY: install demo test lint format paper drions bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

# The main job on the embedded synthetic set: data -> localizer -> fraction x fold x arm -> report.
DEMO_DATA ?= data/synthetic
DEMO_SWEEP ?= outputs/sweeps/demo
DEMO_FRACTIONS ?= 0.1,0.25,0.5,1.0
demo: install
	$(BIN)/python -m locseg.prepare synthetic $(DEMO_DATA)
	$(BIN)/python -m locseg.train -m +sweep=localize data.root=$(DEMO_DATA) sweep_dir=$(DEMO_SWEEP)
	$(BIN)/python -m locseg.train -m +sweep=segment data.root=$(DEMO_DATA) sweep_dir=$(DEMO_SWEEP) \
		hydra/launcher=joblib hydra.launcher.n_jobs=2 \
		data.fraction=$(DEMO_FRACTIONS)
	$(BIN)/python -m locseg.report $(DEMO_SWEEP)

test: install
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check locseg tests && $(BIN)/ruff format --check locseg tests

format: install
	$(BIN)/ruff check --fix locseg tests && $(BIN)/ruff format locseg tests

bench: install
	$(BIN)/python -m locseg.bench

clean:
	rm -rf outputs multirun wandb lightning_logs .pytest_cache
