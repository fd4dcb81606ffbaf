"""The shipped model's config: 128x128 on every identity of a prepared folder of faces, on a 2-core CPU.

Commands (experiments/train_demo_model.sh --input=../shared/faces runs them, then exports,
evaluates and draws the picture):
  python experiments/prepare_data.py --input=../shared/faces --output=workdirs/faces_tfds \
      --resolution=128 --image_format=jpeg \
      --test_identities=lp_d12_man,lp_d7_woman,pcavs_00015_man,hdtf_rd_radio2_woman,barack_obama,anne_hathaway
  python experiments/train.py --config=experiments/configs/faces.py --workdir=workdirs/faces_model

The warp-guided generator (docs/method.md, Motion): the source is carried into the driving pose by
the piecewise-affine landmark flow (`model.motion="landmark_pwa"`; on held-out pairs its plain
warp scores a higher SSIM than the thin-plate spline's) and its learned refinement, and the generation decoder adds a
correction to that warped source (`model.motion_residual`) instead of drawing the face anew, so a
face it never saw keeps its own texture. Every sample pairs two frames of one video (or a photo
with its own perturbed landmarks, the only pose a photo has): the other two kinds of the method
use the unmoved source as the pixel target, which teaches a warping generator to undo the warp.

`--config.model.motion=none` is the method without motion, the same data and budget (the
patent-only row of the README table).
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
  c.model.motion = "landmark_pwa"
  c.model.motion_residual = True
  c.model.motion_blend = False
  c.data.kind_ratios = (1.0, 0.0, 0.0)
  c.optimizer.g_learning_rate = 2e-4
  c.optimizer.d_learning_rate = 4e-4
  c.optimizer.ema_decay = 0.99
  c.data.source = "tfds"
  c.data.data_dir = "workdirs/faces_tfds"
  c.data.num_workers = 1
  c.log_every_steps = 10
  c.image_every_steps = 250
  c.checkpoint_every_steps = 250
  return c
