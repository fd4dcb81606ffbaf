"""Demo config: 128x128 on the bundled sample data (sample_data/), trainable on a 2-core CPU.

Commands (`experiments/train_demo_model.sh --input=sample_data --test_identities=lp_d12_man,barack_obama
--config=experiments/configs/demo.py --data_dir=workdirs/sample_tfds --workdir=workdirs/demo_model
--out=workdirs/demo_model_export --spec_out= --readme= --grid=` runs them, then exports and evaluates):
  python experiments/prepare_data.py --input=sample_data --output=workdirs/sample_tfds --resolution=128 \
      --test_identities=lp_d12_man,barack_obama
  python experiments/train.py --config=experiments/configs/demo.py --workdir=workdirs/demo_model
Expected cost on this project's 2-core CPU: about 1 step/s (identity and perceptual losses
through the Flax dlib face-recognition ResNet included), so the 4000 steps take about 70 minutes.
The shipped weights (weights/demo_128/) come from experiments/configs/faces.py, the same model
trained on every identity of the shared face set; this config is the recipe a fresh clone can run
on its own files (6 files of 5 people for training; lp_d12_man and barack_obama are held out).
"""

from facegen_jax.train.base_config import base_config


def get_config():
  c = base_config()
  c.resolution = 128
  c.global_batch_size = 8
  c.num_train_steps = 4000
  c.model.base_features = 32
  c.model.max_features = 256
  c.model.hidden_features = 64
  c.discriminator.num_scales = 2
  c.discriminator.base_features = 32
  c.discriminator.max_features = 256
  # The landmark-driven warp (docs/method.md, Motion); "none" is the decoders alone.
  c.model.motion = "landmark_tps"
  # Mostly pairs of frames of one video: samples of the other two kinds use the unmoved source as
  # the pixel target, which teaches a warping generator to hold the warp back.
  c.data.kind_ratios = (0.8, 0.1, 0.1)
  c.optimizer.g_learning_rate = 2e-4
  c.optimizer.d_learning_rate = 4e-4
  c.optimizer.ema_decay = 0.99
  c.data.source = "tfds"
  c.data.data_dir = "workdirs/sample_tfds"
  c.data.num_workers = 1
  c.log_every_steps = 10
  c.image_every_steps = 100
  c.checkpoint_every_steps = 250
  return c
