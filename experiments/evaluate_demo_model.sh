#!/usr/bin/env bash
# Evaluates a demo-sized model (default: the shipped weights/demo_128) on the bundled held-out clip
# (lp_d12_man, never seen in training) beside the motion-free model of the same recipe
# (weights/demo_128_spec) and the copy-source and landmark-warp baselines; writes the table into
# README.md and the model's card, and draws the README picture (docs/demo_grid.png).
#   bash experiments/evaluate_demo_model.sh [MODEL_DIR]
#   SPEC_MODEL=DIR  another motion-free model to compare with ("" to leave it out).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
MODEL=${1:-weights/demo_128}
SPEC_MODEL=${SPEC_MODEL-weights/demo_128_spec}
COMPARE=()
if [ -n "$SPEC_MODEL" ]; then
  COMPARE=(--compare="motion-free model=$SPEC_MODEL")
fi
READMES=README.md
if grep -q "evaluate.py table: begin" "$MODEL/README.md" 2>/dev/null; then
  READMES="README.md,$MODEL/README.md"
fi
$PY experiments/evaluate.py --checkpoint="$MODEL" "${COMPARE[@]}" \
  --videos=sample_data/lp_d12_man__liveportrait__d12.mp4 --output=workdirs/demo_eval --resolution=128 \
  --readme="$READMES"
$PY experiments/reenact.py --checkpoint="$MODEL" --source=sample_data/jianzhu_guo__3ddfa_v2__JianzhuGuo.jpg \
  --driving=sample_data/lp_d12_man__liveportrait__d12.mp4 --output=workdirs/demo_eval/out.mp4 --overwrite \
  --grid=docs/demo_grid.png --grid_frames=6
