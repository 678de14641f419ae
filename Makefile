# locseg: two commands to remember: `make demo` and `make test`.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export NO_ALBUMENTATIONS_UPDATE := 1
export WANDB_MODE ?= offline
export WANDB_SILENT := true
export HYDRA_FULL_ERROR := 1

.PHONY: install demo drions paper test lint format bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

# One experiment = localize -> segment sweep (fraction x fold x arm) -> report.
# $(call experiment,DATA_ARGS,SWEEP_DIR,LOCALIZE_TEMPLATE,COMMON_ARGS,SEGMENT_ARGS)
define experiment
	$(BIN)/python -m locseg.train -m +sweep=$(3) $(1) sweep_dir=$(2) $(4)
	$(BIN)/python -m locseg.train -m +sweep=segment $(1) sweep_dir=$(2) $(4) $(5)
	$(BIN)/python -m locseg.report $(2)
endef
PARALLEL := hydra/launcher=joblib hydra.launcher.n_jobs=2
FRACTIONS ?= 0.1,0.25,0.5,1.0

# The main job, on the embedded synthetic set (CPU, minutes).
DEMO_DATA ?= data/synthetic
DEMO_SWEEP ?= outputs/sweeps/demo
demo: install
	$(BIN)/python -m locseg.prepare synthetic $(DEMO_DATA)
	$(call experiment,data.root=$(DEMO_DATA),$(DEMO_SWEEP),localize,logger=csv,$(PARALLEL) data.fraction=$(FRACTIONS))

# Real photographs: DRIONS-DB from ../shared (centres and masks share images: one localizer per fold).
drions: install
	$(call experiment,data=drions,outputs/sweeps/drions,localize_per_fold $(PARALLEL),logger=csv,$(PARALLEL) data.fraction=$(FRACTIONS))

# Paper scale on a GPU: 256 px, depth-4 width-32 U-Net, all ten fractions, the fine-tuned arm too.
PAPER_DATA ?= data/synthetic-paper
paper: install
	$(BIN)/python -m locseg.prepare synthetic $(PAPER_DATA) --n-localize 3000 --n-segment 300 --size 512
	$(call experiment,data.root=$(PAPER_DATA),outputs/sweeps/paper,localize,experiment=paper,)
	$(BIN)/python -m locseg.train -m +sweep=segment_finetune data.root=$(PAPER_DATA) \
		sweep_dir=outputs/sweeps/paper experiment=paper
	$(BIN)/python -m locseg.report outputs/sweeps/paper

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
