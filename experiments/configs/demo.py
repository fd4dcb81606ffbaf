"""Demo config: 128x128 on the bundled sample data (sample_data/), trainable on a 2-core CPU.

Commands:
  python experiments/prepare_data.py --input=sample_data --output=workdirs/sample_tfds --resolution=128
  python experiments/train.py --config=experiments/configs/demo.py --workdir=workdirs/demo
Expected cost on this project's 2-core CPU: a few seconds per step (identity and perceptual losses
through the Flax dlib face-recognition ResNet included); the shipped demo weights come from a run
of about 60-90 minutes. Expected result: a generator that reproduces the bundled people's
textures in new poses, blurry (a demo, not a product: 7 files of 6 people).
"""

from facegen_jax.train.base_config import base_config


def get_config():
  c = base_config()
  c.resolution = 128
  c.global_batch_size = 8
  c.num_train_steps = 3000
  c.model.base_features = 32
  c.model.max_features = 256
  c.model.hidden_features = 64
  c.discriminator.num_scales = 2
  c.discriminator.base_features = 32
  c.discriminator.max_features = 256
  c.optimizer.g_learning_rate = 2e-4
  c.optimizer.d_learning_rate = 4e-4
  c.optimizer.ema_decay = 0.99
  c.data.source = "tfds"
  c.data.data_dir = "workdirs/sample_tfds"
  c.data.num_workers = 1
  c.log_every_steps = 10
  c.image_every_steps = 100
  c.checkpoint_every_steps = 100
  return c
