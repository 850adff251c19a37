#!/usr/bin/env bash
# The benchmark on a GPU machine (prepared; not yet run: no device was lent to
# the session that wrote it). Runs from the repository root, e.g. through the
# device tool with `carry: [wheelhouse]`, and finishes in a few minutes:
#
#   bash experiments/gpu_benchmark.sh            # writes $OUT or experiments/results/gpu
#
# The GPU image has jax, flax, optax, orbax and torch but not
# tensorflow-datasets, which seqclf imports; wheels for it and its small
# dependencies can travel in ./wheelhouse (made here with
#   pip download -d wheelhouse tensorflow-datasets==4.9.10 importlib_resources \
#     array_record ml_collections tensorboardX -c constraints.txt --no-deps
# plus what `pip install --no-index` then reports missing). Without MNIST on
# that machine the benchmark trains on random data of MNIST's shape, which
# does not change the speed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT_DIR=${OUT:-experiments/results/gpu}

if ! "$PY" -c 'import tensorflow_datasets' 2>/dev/null; then
  if [ -d wheelhouse ]; then
    "$PY" -m pip install -q --no-index --find-links wheelhouse \
      tensorflow-datasets importlib_resources array_record ml_collections \
      tensorboardX
  else
    echo "tensorflow_datasets is missing and ./wheelhouse is absent: carry a" \
         "wheelhouse (see the header of $0)." >&2
    exit 2
  fi
fi
"$PY" -m pip install -q --no-index --no-deps -e . 2>/dev/null || true
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
"$PY" -c 'import jax; print("jax devices:", jax.devices())'

# cuDNN LSTM for torch; seqclf (default config, and impl=fused) and Flax on
# jax's GPU. Larger batches are where a GPU differs; 2 rounds keep it short.
PYTHONPATH=. "$PY" experiments/benchmark.py \
  --impls seqclf,seqclf-fused,flax,torch \
  --batch_sizes 100,256,1024 --examples_per_call 20000 --rounds 3 \
  --torch_device cuda --out "$OUT_DIR"
