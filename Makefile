# Two entry points: `make demo` (the main job on built-in data) and `make test`. Both install what they need.
# VENV may live outside the checkout (CI keys it by a hash of pyproject.toml so clones reuse it).
VENV ?= .venv
PY := $(VENV)/bin/python
DEPS := $(VENV)/.deps-$(shell sha1sum pyproject.toml | cut -c1-12)
DEMO_DATA ?= data/demo
PYTEST_ARGS ?=
# The checkout goes on sys.path as a plain folder: a folder named like a package in the working directory (the
# clone itself, seen from its parent) then cannot shadow the installed one, as it can an import hook's.
EDITABLE := --config-settings editable_mode=compat

.PHONY: install demo test test-fast lint clean

# The stamp's name carries the hash of pyproject.toml, so it needs no timestamp prerequisite (a fresh clone's
# files are all new).
$(DEPS):
	@ldconfig -p | grep -q libsndfile.so.1 || (apt-get update -qq && apt-get install -y -qq libsndfile1)
	test -x $(PY) || python3.11 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools
	$(PY) -m pip install -q -e '.[test]' $(EDITABLE)
	touch $@

# Re-point the (possibly shared) environment at this checkout; dependencies are already in place.
install: $(DEPS)
	$(PY) -m pip install -q --no-deps --no-build-isolation -e . $(EDITABLE)

DEMO_RUNS ?= runs/demo
DEMO_SEEDS := 0 1 2
comma := ,
space := $(subst x, ,x)
list = $(subst $(space),$(comma),$(strip $(1)))

# Built-in data -> three pretraining seeds (resumed if interrupted; seed 0 probed along the way for the learning
# curve, its stores kept for the table) -> fair linear probes and retrieval of the pretrained and the randomly
# initialised encoders and of fbank statistics -> fine-tuning of the seed-0 encoder and of a random one on one
# sound-event fold -> one table and the learning curve. The recipe is the time-to-quality study's choice (README).
DEMO_RECIPE ?= configs/pretrain/demo_fast.yaml
DEMO_CURVE ?= probe.every=$(DEMO_CURVE_EVERY) probe.recipe=configs/probes/demo.yaml \
  probe.overrides=[data.root=$(DEMO_DATA)] probe.store_dir=$(DEMO_RUNS)/embeddings
DEMO_CURVE_EVERY ?= 400
DEMO_FOLDS ?= [1]
demo: install
	$(PY) -m ssast.demo root=$(DEMO_DATA) scale=full
	for s in $(DEMO_SEEDS); do \
	  $(PY) -m pretrain --config $(DEMO_RECIPE) data.root=$(DEMO_DATA) run_dir=$(DEMO_RUNS)/seed$$s \
	    train.seed=$$s resume=auto $$(test $$s = 0 && echo "$(DEMO_CURVE)") || exit 1; done
	$(PY) -m probes linear --config configs/probes/demo.yaml data.root=$(DEMO_DATA) \
	  checkpoints=[$(call list,$(foreach s,$(DEMO_SEEDS),$(DEMO_RUNS)/seed$(s)/checkpoints/last.pt))] \
	  random_init_seeds=[$(call list,$(DEMO_SEEDS))] store_dir=$(DEMO_RUNS)/embeddings \
	  output=$(DEMO_RUNS)/probes.json overwrite=true
	for init in scratch $(DEMO_RUNS)/seed0/checkpoints/last.pt; do \
	  $(PY) -m finetune --config configs/finetune/demo_esc50.yaml data.root=$(DEMO_DATA)/esc50 init=$$init \
	    folds=$(DEMO_FOLDS) run_dir=$(DEMO_RUNS)/finetune_$$(test $$init = scratch && echo scratch || echo pretrained) \
	    resume=auto || exit 1; done
	$(PY) -m ssast.demo.report probes=$(DEMO_RUNS)/probes.json $(if $(DEMO_CURVE),curve=$(DEMO_RUNS)/seed0) \
	  'finetune={"fine-tuned from random init": $(DEMO_RUNS)/finetune_scratch, "fine-tuned from SSL pretrained (seed 0)": $(DEMO_RUNS)/finetune_pretrained}'

# The whole suite, slow integration tests included (real SLURM, fault injection): what CI runs.
test: install
	$(PY) -m pytest $(PYTEST_ARGS)

# ruff holds style, imports, bugbear's checks and docstrings (pyproject.toml); `ruff format` is the formatter.
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# Unit and integration tests without the slow ones (under 4 minutes on 2 cores), for quick iterations.
test-fast: PYTEST_ARGS = -m "not slow"
test-fast: test

clean:
	rm -rf runs data/demo .pytest_cache
