#!/usr/bin/env bash
# The benchmark on a GPU machine, one prepared script of at most 8 minutes:
# what impl='auto' picks there (the seqclf row's notes), scan vs fused vs
# PyTorch's cuDNN LSTM at batch 100 and 1024, and a 16-model vmapped sweep
# against the same 16 models run one after another. Runs from the repository
# root, e.g. through the device tool with `carry: [wheelhouse]`:
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

# cuDNN LSTM for torch; seqclf (default config: auto decides by timing on
# the GPU) and each portable path forced, and Flax, on jax's GPU.
PYTHONPATH=. timeout 360 "$PY" experiments/benchmark.py \
  --impls seqclf,seqclf-fused,seqclf-scan,flax,torch \
  --batch_sizes 100,1024 --examples_per_call 20000 --rounds 3 --no_tta \
  --torch_device cuda --out "$OUT_DIR"
# 16 models in one vmapped step against 16 sequential runs.
PYTHONPATH=. timeout 100 "$PY" experiments/sweep_throughput.py --models 16 \
  --steps 200 --repeats 2 --out "$OUT_DIR/sweep_throughput.json"
