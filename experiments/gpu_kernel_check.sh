#!/usr/bin/env bash
# impl='gpu' (seqclf/kernels/gpu_lstm.py) on a lent GPU, one prepared script
# of at most 8 minutes (each stage has its own time limit; a failing stage
# is logged and the next one runs):
#   1. tests/kernels/test_gpu_lstm.py, compiled on the GPU (every test; the
#      GPU-only ones against fast_lstm at HIGHEST precision and a bfloat16
#      reference at T=28, B=100 and 1000, H=128, every tiling);
#   2. experiments/gpu_kernel_tune.py: the recurrence's training step under
#      each launch option (tiling) beside fast_lstm, T=28 at B=1024 and 100,
#      then T=784 at B=100, bfloat16 first, as far as 60 s reach;
#   3. experiments/benchmark.py, row MNIST (28 x 28) at batch 100 and 1024:
#      seqclf (auto), seqclf-gpu / -gpu-tf32 / -gpu-bf16, seqclf-fused,
#      seqclf-scan, flax, torch (cuDNN), interleaved, medians, achieved
#      GFLOP/s and the float32 (TF32) GEMM peak;
#   4. the same on the 784-step pixel task at batch 100.
# Writes log.txt, tune.json, row.json, row.md, pixel.json, pixel.md to $OUT
# (else experiments/results/gpu-kernel). Through the device tool, after
# preparing the packages the GPU image lacks, here:
#   ../shared/gpu/make_carry.sh .gpu-carry && echo /.gpu-carry/ >> .git/info/exclude
#   run: bash experiments/gpu_kernel_check.sh   carry: [.gpu-carry]   timeout_s: 560
# Without MNIST the benchmark trains on random data of its shape (the same
# speed). TOY=1 runs every stage at toy sizes, kernels interpreted off a GPU:
# a check of this script on a CPU, not a measurement.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT_DIR=${OUT:-experiments/results/gpu-kernel}
mkdir -p "$OUT_DIR"
LOG="$OUT_DIR/log.txt"
: > "$LOG"
TMP=$(mktemp -d)
# Several processes (the benchmark's workers) share the GPU.
export XLA_PYTHON_CLIENT_PREALLOCATE=false

stage() {  # stage NAME SECONDS COMMAND...: runs it with a limit, logs all.
  local name=$1 limit=$2 start rc
  shift 2
  echo "== $name (limit ${limit} s): $*" >> "$LOG"
  start=$(date +%s)
  timeout "$limit" "$@" >> "$LOG" 2>&1
  rc=$?
  echo "== $name: exit $rc after $(( $(date +%s) - start )) s" >> "$LOG"
}

export PYTHONPATH=$PWD
if ! "$PY" -c 'import tensorflow_datasets, ml_collections' 2>/dev/null; then
  if [ -d .gpu-carry/whl ]; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --target /tmp/site \
      .gpu-carry/whl/*.whl >> "$LOG" 2>&1
    export PYTHONPATH=/tmp/site:$PWD
  else
    echo "tensorflow_datasets is missing and .gpu-carry/whl is absent: carry" \
         "what ../shared/gpu/make_carry.sh prepares." | tee -a "$LOG" >&2
    exit 2
  fi
fi

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
  "$PY" -c 'import jax, jaxlib; print("jax", jax.__version__, "jaxlib",
jaxlib.__version__, jax.devices())'
  git log -1 --format='commit %H %s' 2>/dev/null || true; } >> "$LOG" 2>&1

if [ "${TOY:-0}" = 1 ]; then
  stage tests 120 "$PY" -m pytest -q -p no:cacheprovider -m 'not slow' \
    tests/kernels/test_gpu_lstm.py
  stage tune 120 "$PY" experiments/gpu_kernel_tune.py --interpret \
    --shapes 3x20 --precisions bfloat16 --rounds 1 --target_seconds 0.01 \
    --out "$OUT_DIR/tune.json"
  ROW=(--impls seqclf-gpu,seqclf-gpu-bf16,seqclf-fused,flax --batch_sizes 8
       --steps 2 --rounds 1 --num_examples 200 --gemm_gflop 0.05
       --torch_device cpu)
  PIXEL=(--impls seqclf-gpu-bf16,seqclf-fused --batch_sizes 2 --steps 1
         --rounds 1 --num_examples 50 --gemm_gflop 0.05 --torch_device cpu)
  LIMITS=(300 300)
else
  stage tests 90 "$PY" -m pytest -q -p no:cacheprovider \
    tests/kernels/test_gpu_lstm.py
  stage tune 80 "$PY" experiments/gpu_kernel_tune.py --max_seconds 60 \
    --shapes 28x1024,28x100,784x100 --precisions bfloat16,tensorfloat32,float32 \
    --out "$OUT_DIR/tune.json"
  ROW=(--impls seqclf,seqclf-gpu,seqclf-gpu-tf32,seqclf-gpu-bf16,seqclf-fused,seqclf-scan,flax,torch
       --batch_sizes 100,1024 --examples_per_call 20000 --rounds 3
       --gemm_gflop 20 --torch_device cuda)
  PIXEL=(--impls seqclf-gpu,seqclf-gpu-tf32,seqclf-gpu-bf16,seqclf-fused,seqclf-scan,flax,torch
         --batch_sizes 100 --examples_per_call 2000 --rounds 3
         --gemm_gflop 20 --torch_device cuda)
  LIMITS=(160 120)
fi
stage bench-row "${LIMITS[0]}" "$PY" experiments/benchmark.py "${ROW[@]}" \
  --no_tta --out "$TMP/row"
stage bench-pixel "${LIMITS[1]}" "$PY" experiments/benchmark.py --task pixel \
  "${PIXEL[@]}" --no_tta --out "$TMP/pixel"
for run in row pixel; do
  for ext in json md; do
    [ -f "$TMP/$run/benchmark.$ext" ] && cp "$TMP/$run/benchmark.$ext" \
      "$OUT_DIR/$run.$ext"
  done
done
rm -rf "$TMP"
grep '^== ' "$LOG"
