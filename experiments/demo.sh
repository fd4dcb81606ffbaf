#!/usr/bin/env bash
# The demo (run experiments/setup_env.sh first): the shipped demo model (weights/demo_128, trained by
# experiments/train_demo_model.sh) reenacts a bundled photo with a bundled clip of another person,
# neither of them seen in training -> workdirs/demo/out.mp4 (source | driving | output, with the
# clip's audio) and workdirs/demo/grid.png. About 30 s on a 2-core CPU.
#   DEMO_MODEL=DIR  use another training workdir or export instead of the shipped weights.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
MODEL=${DEMO_MODEL:-weights/demo_128}
$PY experiments/reenact.py --checkpoint="$MODEL" --source=sample_data/barack_obama__face_recognition__obama.jpg \
  --driving=sample_data/lp_d12_man__liveportrait__d12.mp4 --output=workdirs/demo/out.mp4 \
  --side_by_side --overwrite --grid=workdirs/demo/grid.png
echo "demo done: workdirs/demo/out.mp4 (source | driving | output) and workdirs/demo/grid.png"
