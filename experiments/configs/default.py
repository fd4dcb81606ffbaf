"""Default config: 256x256, the GPU/TPU-scale model, trained on prepared TFDS shards.

Command (after `python experiments/prepare_data.py --input=VIDEOS --output=DATA --resolution=256`):
  python experiments/train.py --config=experiments/configs/default.py --workdir=WORKDIR \
      --config.data.data_dir=DATA
Expected cost: the G+D train step is 138.5 GFLOP per image at 256x256 (XLA's cost analysis, without
the identity and perceptual nets; BENCHMARKS.md), so a 16-image step is about 2.2 TFLOP and the
200k steps about 4.4e17 FLOP. Measured on a 2-core CPU: 1.0 image/s, i.e. ~15 s per step and
weeks for the run, so use tiny.py or demo.py there. No accelerator was available to this project:
on GPUs/TPUs the wall clock is FLOPs / sustained FLOP/s, e.g. about 5 hours per 100k steps (plus
the loss nets) at an assumed 12 TFLOP/s sustained, an A100 at ~8% of its TF32 peak, an unverified
assumption; measure it with `python benchmarks/run.py` on your machine.
Expected result: not measured here (no accelerator, and a VoxCeleb-scale dataset is needed); the
evaluation to judge it by is `experiments/evaluate.py` on held-out identities, where the model
should beat the copy-source baseline on L1/SSIM and the landmark-warp one on identity (CSIM).
"""

from facegen_jax.train.base_config import base_config


def get_config():
  c = base_config()
  c.resolution = 256
  c.global_batch_size = 16
  c.num_train_steps = 200_000
  c.data.source = "tfds"
  return c
