# locseg: two commands to remember: `make demo` and `make test`.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export NO_ALBUMENTATIONS_UPDATE := 1
export WANDB_MODE ?= offline
export WANDB_SILENT := true
export HYDRA_FULL_ERROR := 1

.PHONY: install demo tune-drions tune-idrid idrid drions drions-crops idrid-crops idrid-whole drions-whole ablation paper test lint format bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

# One experiment = localize -> segment sweep (fraction x fold x arm, three arms) -> report.
# $(call experiment,DATA_ARGS,SWEEP_DIR,LOCALIZE_TEMPLATE,SEGMENT_ARGS)
define experiment
	$(BIN)/python -m locseg.train -m +sweep=$(3) $(1) sweep_dir=$(2) $(PARALLEL)
	$(BIN)/python -m locseg.train -m +sweep=segment $(1) sweep_dir=$(2) $(PARALLEL) data.fraction=$(FRACTIONS) $(4)
	$(BIN)/python -m locseg.report $(2)
endef
PARALLEL := hydra/launcher=joblib hydra.launcher.n_jobs=2 logger=csv
REAL := experiment=real
FRACTIONS ?= 0.1,0.3,1.0

# The main job, on the embedded synthetic set (CPU, minutes): 1200 centre-only : 60 masked images.
DEMO_DATA ?= data/synthetic
DEMO_SWEEP ?= outputs/sweeps/demo
demo: install
	$(BIN)/python -m locseg.prepare synthetic $(DEMO_DATA) --n-localize 1200 --n-segment 60
	$(call experiment,data.root=$(DEMO_DATA),$(DEMO_SWEEP),localize,)

# The real recipe's crop geometry is chosen on ANOTHER dataset than the one it is reported on
# (docs/recipe.md): DRIONS-DB's on idrid-od, idrid-od's on DRIONS-DB. Each target trains the same
# localizer as the reported sweep would, runs stage 1 (multirun_templates/sweep/tune.yaml: crop
# side x jitter, 12 scratch jobs, fold 0, all masks, crops the localizer places), then stage 2 at
# the chosen geometry (tune_training.yaml: width x lr schedule, 4 jobs), and ranks each
# (S/tune/*/tune.md, chosen.yaml).
# $(call tune,DATA_ARGS,SWEEP_DIR)
define tune
	$(BIN)/python -m locseg.train -m +sweep=localize $(1) sweep_dir=$(2) $(PARALLEL)
	$(BIN)/python -m locseg.train -m +sweep=tune $(1) sweep_dir=$(2) $(PARALLEL)
	$(BIN)/python -m locseg.tune $(2)/tune/geometry
	$(BIN)/python -m locseg.train -m +sweep=tune_training $(1) sweep_dir=$(2) $(PARALLEL) \
		$$(cat $(2)/tune/geometry/chosen.overrides)
	$(BIN)/python -m locseg.tune $(2)/tune/training
endef
tune-drions: install
	$(call tune,data=idrid pool=idrid-centres $(REAL),outputs/sweeps/tune-drions-on-idrid)
tune-idrid: install
	$(call tune,data=drions pool=idrid-centres $(REAL),outputs/sweeps/tune-idrid-on-drions)

# Real photographs from ../shared (about 30 min each on 2 cores). The localizer learns from
# IDRiD's 508 centre-only photographs (pool=idrid-centres, copies of the masked photographs
# dropped by content); one localizer serves every fold and places every arm's test crops
# (roi=disc: 64-px disc-centred crops around its predicted centre; native metrics). Each
# dataset's recipe (experiment=real_idrid / real_drions) was chosen by the tune target of the
# OTHER dataset (docs/recipe.md). idrid: IDRiD's 81 masks; drions: DRIONS-DB's 109.
idrid: install
	$(call experiment,data=idrid pool=idrid-centres experiment=real_idrid,outputs/sweeps/idrid,localize,)
drions: install
	$(call experiment,data=drions pool=idrid-centres experiment=real_drions,outputs/sweeps/drions,localize,)

# The transfer arms on a crop-scale encoder (after make drions / make idrid): a second localizer
# learns the disc on 64-px windows of 2 disc diameters of the IDRiD pool (+sweep=localize_crops; the
# pool's disc is about 78 px across, ../shared/README.md), so its encoder sees the disc at the
# segmenter's scale; the whole-photograph localizer still places the test crops. Both transfer
# arms, paired by fold with the scratch arm of the base sweep (locseg.ablation).
POOL_DISC_PX := 78
# $(call crop_encoder,DATA_ARGS,BASE_SWEEP,SWEEP)
define crop_encoder
	$(BIN)/python -m locseg.train -m +sweep=localize_crops $(1) roi.localizer_diameter_px=$(POOL_DISC_PX) sweep_dir=$(3) $(PARALLEL)
	$(BIN)/python -m locseg.train -m +sweep=segment $(1) sweep_dir=$(3) $(PARALLEL) data.fraction=$(FRACTIONS) \
		init=localizer-frozen,localizer-finetune model.encoder_ckpt=$(3)/localize/crops/encoder.pt \
		roi.localizer_ckpt=$(2)/localize/shared/checkpoints/best.ckpt
	$(BIN)/python -m locseg.ablation whole-encoder=$(2) crop-encoder=$(3) --baseline whole-encoder --out $(3)/ablation.md
endef
drions-crops: install
	$(call crop_encoder,data=drions pool=idrid-centres experiment=real_drions,outputs/sweeps/drions,outputs/sweeps/drions-crops)
idrid-crops: install
	$(call crop_encoder,data=idrid pool=idrid-centres experiment=real_idrid,outputs/sweeps/idrid,outputs/sweeps/idrid-crops)

# The same on whole photographs squeezed to 64 px (the earlier recipe; the ablation's baseline).
REAL_WHOLE := experiment=real_whole
idrid-whole: install
	$(call experiment,data=idrid pool=idrid-centres $(REAL_WHOLE),outputs/sweeps/idrid-whole,localize,)
drions-whole: install
	$(call experiment,data=drions pool=idrid-centres $(REAL_WHOLE),outputs/sweeps/drions-whole,localize,)

# Ablation on idrid-od: localizer head (linear, heatmap) x pool (own images per fold, idrid-centres)
# x arm, on whole photographs. Scratch runs once, in `make idrid-whole`'s sweep; every variant
# is paired with it by fold.
ABLATION := outputs/sweeps/ablation
ablation: idrid-whole
	$(BIN)/python -m locseg.train -m +sweep=localize data=idrid $(REAL_WHOLE) pool=idrid-centres localizer_head=linear sweep_dir=$(ABLATION)/linear-pool $(PARALLEL)
	$(BIN)/python -m locseg.train -m +sweep=localize_per_fold data=idrid $(REAL_WHOLE) sweep_dir=$(ABLATION)/heatmap-own $(PARALLEL)
	$(BIN)/python -m locseg.train -m +sweep=localize_per_fold data=idrid $(REAL_WHOLE) localizer_head=linear sweep_dir=$(ABLATION)/linear-own $(PARALLEL)
	$(BIN)/python -m locseg.train -m +sweep=segment data=idrid $(REAL_WHOLE) pool=idrid-centres localizer_head=linear sweep_dir=$(ABLATION)/linear-pool $(PARALLEL) data.fraction=$(FRACTIONS) init=localizer-frozen,localizer-finetune
	$(BIN)/python -m locseg.train -m +sweep=segment data=idrid $(REAL_WHOLE) sweep_dir=$(ABLATION)/heatmap-own $(PARALLEL) data.fraction=$(FRACTIONS) init=localizer-frozen,localizer-finetune
	$(BIN)/python -m locseg.train -m +sweep=segment data=idrid $(REAL_WHOLE) localizer_head=linear sweep_dir=$(ABLATION)/linear-own $(PARALLEL) data.fraction=$(FRACTIONS) init=localizer-frozen,localizer-finetune
	$(BIN)/python -m locseg.ablation heatmap-pool=outputs/sweeps/idrid-whole linear-pool=$(ABLATION)/linear-pool \
		heatmap-own=$(ABLATION)/heatmap-own linear-own=$(ABLATION)/linear-own \
		--baseline heatmap-pool --out $(ABLATION)/ablation.md

# Paper scale on a GPU: 256 px, depth-4 width-32 U-Net, all ten fractions, three arms.
PAPER_DATA ?= data/synthetic-paper
paper: install
	$(BIN)/python -m locseg.prepare synthetic $(PAPER_DATA) --n-localize 3000 --n-segment 300 --size 512
	$(BIN)/python -m locseg.train -m +sweep=localize data.root=$(PAPER_DATA) sweep_dir=outputs/sweeps/paper experiment=paper
	$(BIN)/python -m locseg.train -m +sweep=segment data.root=$(PAPER_DATA) sweep_dir=outputs/sweeps/paper experiment=paper
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
