"""Default config: 256x256, the GPU/TPU-scale model, trained on prepared TFDS shards.

Command (after `python experiments/prepare_data.py --input=VIDEOS --output=DATA --resolution=256`):
  python experiments/train.py --config=experiments/configs/default.py --workdir=WORKDIR \
      --config.data.data_dir=DATA
Expected cost: `python benchmarks/run.py` measures this model's FLOPs per image and step time on
the machine at hand (BENCHMARKS.md). No accelerator was available to this project, so GPU/TPU
wall-clock figures are not measured; on its 2-core CPU one step takes tens of seconds, so use
tiny.py or demo.py there.
Expected result: pixel L1 on held-out self-reenactment falling below the copy-source baseline
within the first 20k steps.
"""

from facegen_jax.train.base_config import base_config


def get_config():
  c = base_config()
  c.resolution = 256
  c.global_batch_size = 16
  c.num_train_steps = 200_000
  c.data.source = "tfds"
  return c
