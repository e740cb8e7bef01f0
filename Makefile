# mlmctl — set up, run the demo chain, test, benchmark.
#   make demo    set up (first time) and run the whole chain, clean -> eval, on the built-in corpus
#   make demo-modern  the same chain with the ModernBERT-class encoder (configs/modern)
#   make demo-zh the same chain in Chinese (configs/zh) on a generated Chinese corpus
#   make smoke   the same chain on a tiny slice (configs/smoke), about a minute
#   make test    set up (first time) and run the whole test suite (what CI runs)
#   make docs-images  the pictures of docs/monitoring.md, from the smoke chain's own runs
#   make glue GLUE=path/to/GLUE  the GLUE dev table of the demo's pretrained model (docs/glue.md)
# Variables: PYTHON (interpreter for the venv), VENV, TORCH (pip spec for torch), TORCH_INDEX (index to
# take torch from, e.g. https://download.pytorch.org/whl/cpu for the CPU-only wheel), WORKERS.

PYTHON  ?= python3
VENV    ?= .venv
TORCH   ?= torch==2.13.0
TORCH_INDEX ?=
WORKERS ?= 2
PY      := $(VENV)/bin/python
MLMCTL  := $(VENV)/bin/mlmctl
PYTEST_ARGS ?=
# pytest-xdist processes: the suite is process-safe (every test has its own tmp dirs).
TEST_JOBS ?= 2

.PHONY: install demo demo-modern demo-zh smoke test test-quick bench lint clean-demo docs-images glue

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first and pinned, so the extras below do not pull another build. pip takes the wheel its
	# index offers: on Linux, PyPI's is the CUDA build (GBs); TORCH_INDEX=https://download.pytorch.org/whl/cpu
	# takes the CPU-only one. pyproject.toml itself asks only for a range (TORCH= overrides the pin).
	$(PY) -m pip install -q "$(TORCH)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(PY) -m pip install -q -e ".[dev,zh,formats,tensorboard,plot,bench]"
	touch $@

install: $(VENV)/.installed

# The main job: every stage on the built-in corpus with configs/demo, then one summary.
demo: install
	MLMCTL="$(MLMCTL)" WORKERS=$(WORKERS) CONFIGS=configs/demo bash scripts/chain.sh

# The same chain on a tiny slice (configs/smoke): the shape of a CI smoke job, about a minute.
smoke: install
	MLMCTL="$(MLMCTL)" WORKERS=$(WORKERS) CONFIGS=configs/smoke bash scripts/chain.sh

test: install
	$(PY) -m pytest -q -n $(TEST_JOBS) $(PYTEST_ARGS)

test-quick: install
	$(PY) -m pytest -q -n $(TEST_JOBS) -m "not slow" $(PYTEST_ARGS)

# The bench extra (datasets) is in the install line; installed again here for a venv made before it.
bench: install
	$(PY) -m pip install -q -e ".[bench]"
	$(PY) benchmarks/run_all.py

lint: install
	$(PY) -m pip install -q ruff
	$(VENV)/bin/ruff check mlmctl tests benchmarks

clean-demo:
	rm -rf data/demo runs/demo data/smoke runs/smoke data/zh runs/zh data/modern runs/modern

# The same chain with the modern encoder (model.arch: modernbert, documents packing, 30% masking, WSD).
demo-modern: install
	MLMCTL="$(MLMCTL)" WORKERS=$(WORKERS) CONFIGS=configs/modern bash scripts/chain.sh

# The Chinese chain (configs/zh) on a generated Chinese corpus (mlmctl/zh_corpus.py, no download):
# clean, 分词 + character vocabulary, whole-word-masking pretraining, pretrained vs random on a topic task.
demo-zh: install
	$(PY) -c "from mlmctl.zh_corpus import write_jsonl; write_jsonl('data/zh/corpus.jsonl', 6000)"
	MLMCTL="$(MLMCTL)" WORKERS=$(WORKERS) CONFIGS=configs/zh bash scripts/chain.sh

# The pictures in docs/monitoring.md (docs/img/*.png), drawn from a chain's own runs: the smoke
# chain by default (a minute); DOCS_CHAIN=demo for the demo's. The chain step is a no-op when its
# runs are up to date (it runs with --rebuild).
DOCS_CHAIN ?= smoke
docs-images: install
	MLMCTL="$(MLMCTL)" WORKERS=$(WORKERS) CONFIGS=configs/$(DOCS_CHAIN) bash scripts/chain.sh
	$(PY) -c "from mlmctl.report_html import write_images; write_images('docs/img', 'data/$(DOCS_CHAIN)', 'runs/$(DOCS_CHAIN)')"

# The GLUE dev table (docs/glue.md) of a pretrained model, from a folder in the public GLUE release
# layout (nothing is downloaded): every task present, one global hyper-parameter set
# (configs/glue/glue.yaml), SEEDS runs per task. Rerun after a stop: finished tasks are skipped.
GLUE       ?= GLUE
GLUE_MODEL ?= runs/demo/pretrain
GLUE_OUT   ?= runs/glue
SEEDS      ?= 1
glue: install
	$(MLMCTL) glue -c configs/glue/glue.yaml --glue-dir $(GLUE) --input $(GLUE_MODEL) --output $(GLUE_OUT) --seeds $(SEEDS) --rebuild
