#!/usr/bin/env bash
# Everything a lent GPU should check, as one prepared script of at most 8
# minutes for the device tool (one call): the GPU test tier, the benchmark
# (every path at float32, TF32 and bfloat16 against flax and PyTorch's cuDNN
# LSTM, batch 100 and 1024), the default config's 5-seed accuracy at each
# precision, and 16 vmapped models against 16 sequential runs.
#
# Prepare here, once (what the GPU image lacks: wheels and MNIST):
#   ../shared/gpu/make_carry.sh .gpu-carry && echo /.gpu-carry/ >> .git/info/exclude
# then, through the device tool:
#   run(command='bash experiments/gpu_benchmark.sh', carry=['.gpu-carry'], timeout_s=540)
# Results go to $OUT (default experiments/results/gpu; the device tool brings
# back at most 8 files): log.txt, gpu_tier.txt, benchmark.{json,md,png},
# precision.json, sweep_throughput.json. TOY=1 runs every step at toy sizes
# (how it is tried on a CPU).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-experiments/results/gpu}
PY=${PYTHON:-python3}
TOY=${TOY:-0}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/log.txt") 2>&1
start=$SECONDS
say() { echo "[$((SECONDS - start)) s] $*"; }

if [ -d .gpu-carry ]; then  # The GPU image: its own jax, the rest carried.
  "$PY" -m pip install -q --no-index --no-deps --no-compile --target /tmp/site \
    .gpu-carry/whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD TFDS_DATA_DIR=/tmp/tfds
  mkdir -p /tmp/tfds/downloads/manual
  cp -r .gpu-carry/data/downloads/manual/mnist /tmp/tfds/downloads/manual/
else
  export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
"$PY" -c 'import jax, flax; print("jax", jax.__version__, "flax", flax.__version__, jax.devices())'
"$PY" -m seqclf prepare-data || { say "MNIST could not be prepared"; exit 2; }

if [ "$TOY" = 1 ]; then
  TIER=(-k 'precision and float64 or recurrent_api and lengths')
  BENCH=(--batch_sizes 8 --steps 2 --rounds 1 --num_examples 2000)
  SWEEP=(--config.num_train_steps=20 --config.eval_every=20 --config.hidden_size=16)
  THROUGHPUT=(--models 2 --steps 20 --repeats 1)
  TORCH=cpu
else
  TIER=()
  BENCH=(--batch_sizes 100,1024 --examples_per_call 20000 --rounds 3)
  SWEEP=()
  THROUGHPUT=(--models 16 --steps 200 --repeats 2)
  TORCH=cuda
fi

say "1/4 the GPU tier (make test-gpu: every path against float64 at each precision, nn.RNN's contract, training and resume, a sweep, checkpoints, export)"
XLA_FLAGS="--xla_gpu_deterministic_ops=true ${XLA_FLAGS:-}" timeout 300 \
  "$PY" -m pytest -q -m gpu -p no:cacheprovider "${TIER[@]}" > "$OUT/gpu_tier.txt" 2>&1
echo "GPU tier exit status $?"; tail -n 3 "$OUT/gpu_tier.txt"

say "2/4 benchmark: paths x precisions, flax, PyTorch cuDNN"
timeout 170 "$PY" experiments/benchmark.py \
  --impls seqclf,seqclf-fused,seqclf-scan,seqclf-bf16,seqclf-fused-bf16,seqclf-scan-bf16,seqclf-tf32,seqclf-fused-tf32,flax,torch \
  "${BENCH[@]}" --no_tta --torch_device "$TORCH" --out "$OUT"

say "3/4 default, 5 seeds, at each matmul precision"
for precision in float32 tensorfloat32 bfloat16; do
  timeout 60 "$PY" -m seqclf sweep --config default --seeds 5 --quiet \
    --workdir "/tmp/seqclf-precision/$precision" --compilation_cache='' \
    --config.matmul_precision="$precision" "${SWEEP[@]}" || true
done
"$PY" - "$OUT/precision.json" <<'EOF'
import json, sys
from pathlib import Path
out = {}
for path in sorted(Path('/tmp/seqclf-precision').glob('*/results.json')):
  r = json.loads(path.read_text())
  out[path.parent.name] = {k: r[k] for k in (
      'test_accuracies', 'test_accuracy_mean', 'test_accuracy_std', 'impl',
      'train_examples_per_second', 'wall_seconds', 'machine')}
Path(sys.argv[1]).write_text(json.dumps(out, indent=1) + '\n')
print(json.dumps(out, indent=1))
EOF

say "4/4 16 models in one vmapped step against 16 sequential runs"
timeout 90 "$PY" experiments/sweep_throughput.py "${THROUGHPUT[@]}" \
  --out "$OUT/sweep_throughput.json"
say "done"
