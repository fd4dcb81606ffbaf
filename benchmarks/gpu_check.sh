#!/usr/bin/env bash
# One prepared run for a machine with an NVIDIA GPU and CUDA JAX (FACEGEN_ACCELERATOR=cuda12 bash
# experiments/setup_env.sh), at most about 10 minutes; everything it makes goes into OUT:
#   1. train_step.json: the train step of the default model at 256x256, float32 and bfloat16, beside
#      the PyTorch reference on CUDA (when torch sees the GPU), with the GPU's bfloat16 matmul peak
#      measured in the same run (benchmarks/gpu_check.py --what=train);
#   3. about 6 minutes of training of a 256x256 model with the shipped model's recipe
#      (experiments/configs/faces.py, motion on) on JPEG shards of ../shared/faces prepared here
#      with the recipe's held-out identities, stopped by SIGTERM (train.py saves the step it is at),
#      then exported to OUT/export (train.log, prepare.log, export.log; the held-out identities'
#      self-reenactment scores every 500 steps in OUT/workdir/metrics.jsonl);
#   2. infer.json: the export's inference frames/s at batch 32, JAX float32 and bfloat16, and
#      onnxruntime where installed (benchmarks/gpu_check.py --what=infer);
#   plus nvidia-smi.txt, pip-freeze.txt and summary.txt (the figures, one line each).
#
#   bash benchmarks/gpu_check.sh [OUT]            # default OUT: workdirs/gpu_check
# Environment: FACEGEN_GPU_CHECK_TINY=1 runs every step at tiny sizes on whatever JAX sees (the CPU
# test of this script, tests/gpu_check_test.py): the tiny config at 64x64, batch 2, the bundled
# sample_data, 4 training steps. FACEGEN_GPU_CHECK_FACES (default ../shared/faces),
# FACEGEN_GPU_CHECK_TRAIN_SECONDS (default 360) and PYTHON (default .venv/bin/python) override.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=$(mkdir -p "${1:-workdirs/gpu_check}" && cd "${1:-workdirs/gpu_check}" && pwd)
PYTHON=${PYTHON:-.venv/bin/python}
TEST_IDS=lp_d12_man,lp_d7_woman,pcavs_00015_man,hdtf_rd_radio2_woman,barack_obama,anne_hathaway
if [ "${FACEGEN_GPU_CHECK_TINY:-0}" = 1 ]; then
  CONFIG=tiny; TRAIN_CONFIG=experiments/configs/tiny.py; RES=64; BATCH=2; INFER_BATCH=4; REPEATS=2; MATMUL_N=256
  FACES=${FACEGEN_GPU_CHECK_FACES:-sample_data}; TEST_IDS=lp_d12_man; SECONDS_TRAIN=${FACEGEN_GPU_CHECK_TRAIN_SECONDS:-300}
  TRAIN_BATCH=2; MAX_FRAMES=8; STEPS=4; EVAL_EVERY=4; EVAL_SAMPLES=4  # finishes well before the timeout
else
  CONFIG=default; TRAIN_CONFIG=experiments/configs/faces.py; RES=256; BATCH=8; INFER_BATCH=32; REPEATS=5; MATMUL_N=8192
  FACES=${FACEGEN_GPU_CHECK_FACES:-../shared/faces}; SECONDS_TRAIN=${FACEGEN_GPU_CHECK_TRAIN_SECONDS:-360}
  TRAIN_BATCH=16; MAX_FRAMES=60; STEPS=1000000; EVAL_EVERY=500; EVAL_SAMPLES=64  # stopped by the timeout
  "$PYTHON" -c "import jax, sys; sys.exit(0 if jax.default_backend() == 'gpu' else 'error: JAX sees no GPU (' + jax.default_backend() + '); install the cuda12 extra: FACEGEN_ACCELERATOR=cuda12 bash experiments/setup_env.sh')"
fi
start=$(date +%s)
logged() {  # logged LOG COMMAND...: COMMAND's output into LOG; on failure its tail and exit 1
  local log=$1; shift
  if ! "$@" > "$log" 2>&1; then
    echo "error: $(basename "$2") failed; see $log" >&2; tail -20 "$log" >&2; exit 1
  fi
}
(nvidia-smi || echo "no nvidia-smi") > "$OUT/nvidia-smi.txt" 2>&1
"$PYTHON" -m pip freeze > "$OUT/pip-freeze.txt" 2>/dev/null || true

echo "1/3 train step ($CONFIG at ${RES}x${RES}, batch $BATCH)"
"$PYTHON" benchmarks/gpu_check.py --what=train --config="$CONFIG" --resolution="$RES" --batch="$BATCH" \
  --repeats="$REPEATS" --matmul_n="$MATMUL_N" --out="$OUT/train_step.json"

echo "2/3 prepare $FACES and train $TRAIN_CONFIG at ${RES}x${RES} for ${SECONDS_TRAIN}s"
logged "$OUT/prepare.log" "$PYTHON" experiments/prepare_data.py --input="$FACES" --output="$OUT/data" \
  --resolution="$RES" --image_format=jpeg --test_identities="$TEST_IDS" --max_frames="$MAX_FRAMES"
set +e
timeout -s TERM -k 60 "$SECONDS_TRAIN" "$PYTHON" experiments/train.py --config="$TRAIN_CONFIG" \
  --workdir="$OUT/workdir" --config.resolution="$RES" --config.global_batch_size="$TRAIN_BATCH" \
  --config.data.source=tfds --config.data.data_dir="$OUT/data" --config.checkpoint_every_steps=100000 \
  --config.num_train_steps="$STEPS" --config.image_every_steps=200 --config.log_every_steps=20 \
  --config.eval_every_steps="$EVAL_EVERY" --config.eval_num_samples="$EVAL_SAMPLES" \
  > "$OUT/train.log" 2>&1
status=$?
set -e
# 124: stopped by the SIGTERM of `timeout`, after train.py saved its step (it exits 0 then, which
# `timeout` reports as 124); 0: it finished its steps first.
if [ "$status" != 0 ] && [ "$status" != 124 ]; then
  echo "error: training failed (exit $status); see $OUT/train.log" >&2; tail -20 "$OUT/train.log" >&2; exit 1
fi
logged "$OUT/export.log" "$PYTHON" experiments/export.py --workdir="$OUT/workdir" --output="$OUT/export"

echo "3/3 inference of the export at batch $INFER_BATCH"
"$PYTHON" benchmarks/gpu_check.py --what=infer --export="$OUT/export" --batch="$INFER_BATCH" --repeats="$REPEATS" \
  --out="$OUT/infer.json"

"$PYTHON" - "$OUT" "$(( $(date +%s) - start ))" > "$OUT/summary.txt" <<'EOF'
import json, sys
out, seconds = sys.argv[1], int(sys.argv[2])
train, infer = json.load(open(f"{out}/train_step.json")), json.load(open(f"{out}/infer.json"))
print(f"device: {train['device']} ({train['platform']}), jax {train['jax']}, {seconds} s in all")
print(f"bfloat16 matmul peak: {train['bf16_matmul_peak_flops'] / 1e12:.2f} TFLOP/s")
for r in train["rows"]:
  torch = (f", PyTorch ({r['torch_device']}) {r['torch_step_s'] * 1e3:.1f} ms, JAX/PyTorch {r['jax_over_torch_time']:.2f}x"
           if r["torch_step_s"] else f", PyTorch: {r['torch_device']}")
  print(f"train step {train['config']} {train['resolution']}x{train['resolution']} batch {train['batch']} {r['dtype']}: "
        f"{r['jax_step_s'] * 1e3:.1f} ms ({100 * r['share_of_bf16_matmul_peak']:.1f}% of the bf16 peak){torch}")
print(f"inference batch {infer['batch']} at {infer['resolution']}: JAX float32 {infer['jax_float32_frames_per_s']:.1f}, "
      f"bfloat16 {infer['jax_bfloat16_frames_per_s']:.1f} frames/s; onnxruntime: {infer['onnxruntime_frames_per_s']} "
      f"({infer['onnxruntime']})")
EOF
cat "$OUT/summary.txt"
echo "everything is in $OUT"
