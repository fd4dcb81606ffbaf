"""Tiny CPU config: seconds per step on synthetic faces; for tests and smoke runs.

Command:
  python experiments/train.py --config=experiments/configs/tiny.py --workdir=/tmp/tiny
Expected: 20 steps in well under a minute on a 2-core CPU (most of it compilation); losses
finite and falling. Identity and perceptual losses are off (weights 0) to stay fast.
"""

from facegen_jax.train.base_config import base_config


def get_config():
  c = base_config()
  c.resolution = 64
  c.global_batch_size = 4
  c.num_train_steps = 20
  c.model.base_features = 8
  c.model.max_features = 32
  c.model.hidden_features = 8
  c.discriminator.num_scales = 2
  c.discriminator.num_layers = 2
  c.discriminator.base_features = 8
  c.discriminator.max_features = 32
  for group in (c.loss.first, c.loss.perturbed):
    group.identity = 0.0
    group.perceptual = 0.0
  c.data.source = "synthetic"
  c.data.synthetic_identities = 8
  c.log_every_steps = 5
  c.image_every_steps = 10
  c.checkpoint_every_steps = 10
  return c
