# clsrl-exp — every target installs what it needs first (a stamp per pyproject.toml content).
#   make demo    the real pipeline on the tiny model + synthetic data (CPU, minutes)
#   make test    the test suite (what CI runs)
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
# GPU box with vLLM: make setup EXTRAS=vllm,dev
EXTRAS ?= cpu,dev
PY := $(VENV)/bin/python
comma := ,
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-10)-$(subst $(comma),_,$(EXTRAS))
RUNS ?= outputs
OUT ?= outputs/report
SWEEP ?= smoke
export HF_HUB_OFFLINE ?= 1

.PHONY: setup demo test lint report bench bench-learning bench-ranks bench-gpu sweep clean

setup: $(STAMP)
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[$(EXTRAS)]"   # torch/torchvision pinned as a pair by the extra, same command
	rm -f $(VENV)/.installed-* && touch $@

demo: setup                        ## warm start -> zero-shot -> No-Thinking / CLS-RL GRPO -> eval -> 2x2 free lunch -> report
	@mkdir -p outputs/demo
	@echo "CLS-RL arm in the background (log: outputs/demo/clsrl.log); No-Thinking + zero-shot sweep:"
	@$(PY) -m clsrl_exp experiment=demo/clsrl dataset=synthetic-colors > outputs/demo/clsrl.log 2>&1 & arm=$$!; \
	$(PY) -m clsrl_exp +sweep=demo; sweep=$$?; \
	wait $$arm || { echo "CLS-RL arm failed: see outputs/demo/clsrl.log"; exit 1; }; exit $$sweep
	$(PY) -m clsrl_exp.report outputs/demo/runs --out outputs/demo/report --print

test: setup                        ## the whole suite, slow learning checks included (CI runs this)
	$(PY) -m pytest -q

lint: setup
	$(PY) -m ruff check .

report: setup                      ## tables + heatmaps from every result.json under RUNS
	$(PY) -m clsrl_exp.report $(RUNS) --out $(OUT)

bench: setup                       ## CPU: eval items/s at two batch sizes + GRPO/eval step timings on the tiny model
	$(PY) -m clsrl_exp.bench --tiny

bench-learning: setup              ## 3 seeds x {No-Thinking, CLS-RL} + a shuffled-label control per arm (~10 min)
	$(PY) -m clsrl_exp.bench.learning

bench-ranks: setup                 ## CPU: one eval set scored by 1 vs 2 ranks (torchrun, gloo): wall time, same predictions
	$(PY) -m clsrl_exp.bench.ranks

bench-gpu: setup                   ## paper-scale GRPO step + eval throughput on one GPU (Qwen2-VL-2B shapes, random weights)
	$(PY) -m clsrl_exp.bench

sweep: setup                       ## make sweep SWEEP=paper-fewshot ARGS="seed=1,2,3"
	$(PY) -m clsrl_exp +sweep=$(SWEEP) $(ARGS)

clean:                             ## remove runs, caches and reports (keeps the venv)
	find outputs -mindepth 1 ! -name .gitkeep -exec rm -rf {} +
	rm -rf .pytest_cache .ruff_cache .hypothesis
