#!/usr/bin/env bash
# The recipe of the shipped demo weights (weights/demo_128/), end to end on a CPU:
#   1. prepare sample_data/ into a 128x128 TFDS dataset (lp_d12_man held out as the test identity);
#   2. train experiments/configs/demo.py (4000 steps, about 70 minutes on a 2-core CPU; rerunning resumes);
#   3. export the EMA generator to weights/demo_128/ (config.json + generator.msgpack);
#   4. evaluate it on the held-out bundled clip beside the copy-source and landmark-warp baselines and
#      write the table into README.md;
#   5. draw the README picture (docs/demo_grid.png).
# WORKDIR (default workdirs/demo_model) and OUT (default weights/demo_128) may be overridden.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
WORKDIR=${WORKDIR:-workdirs/demo_model}
OUT=${OUT:-weights/demo_128}
$PY experiments/prepare_data.py --input=sample_data --output=workdirs/sample_tfds --resolution=128 \
  --test_identities=lp_d12_man
$PY experiments/train.py --config=experiments/configs/demo.py --workdir="$WORKDIR"
$PY experiments/export.py --workdir="$WORKDIR" --output="$OUT"
bash experiments/evaluate_demo_model.sh "$OUT"
