#!/usr/bin/env bash
# The demo on the bundled sample data (run experiments/setup_env.sh first):
#   1. prepare sample_data/ into a TFDS dataset at 128x128 (dlib landmarks, crops, masks);
#   2. train the demo config for DEMO_STEPS steps on the CPU (default 30: minutes, a smoke run;
#      the config's full 3000 steps take hours here) -- rerunning resumes;
#   3. reenact a bundled photo with the first seconds of a bundled clip of another person
#      -> workdirs/demo/out.mp4 (source | driving | output, with the clip's audio).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
STEPS=${DEMO_STEPS:-30}
$PY experiments/prepare_data.py --input=sample_data --output=workdirs/sample_tfds --resolution=128 \
  --test_identities=lp_d12_man
$PY experiments/train.py --config=experiments/configs/demo.py --workdir=workdirs/demo \
  --config.data.data_dir=workdirs/sample_tfds --config.num_train_steps="$STEPS"
$PY experiments/reenact.py --checkpoint=workdirs/demo --source=sample_data/jianzhu_guo__3ddfa_v2__JianzhuGuo.jpg \
  --driving=sample_data/lp_d12_man__liveportrait__d12.mp4 --output=workdirs/demo/out.mp4 --max_frames=75 \
  --side_by_side --overwrite
echo "demo done: workdirs/demo/out.mp4, training samples in workdirs/demo/samples/, TensorBoard: workdirs/demo/tensorboard"
