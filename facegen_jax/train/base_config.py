"""Every config field, with its default. Experiment configs (experiments/configs/*.py) start here.

Loss weights (see docs/method.md, Losses): `loss.first` holds a1..a5 for first-kind samples, `loss.perturbed`
a6..a10 for perturbed-landmark samples (defaults 1, 1, 25, 25, 1 each).
"""

import ml_collections

from facegen_jax.data.config import default_data_config


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.resolution = 256
  c.mask_per_part = False  # one mask channel per landmark part instead of one
  c.compute_dtype = "float32"  # or "bfloat16" (params stay float32)
  c.global_batch_size = 16
  c.num_train_steps = 200_000

  c.model = ml_collections.ConfigDict()
  c.model.bottleneck_size = 8  # texture-code size; encoder layers s = log2(resolution / 8)
  c.model.base_features = 64
  c.model.max_features = 512
  c.model.merge_levels = "all"  # generation levels that concatenate reconstruction outputs: all | none | "1,2"
  c.model.mask_resize = "nearest"  # nearest | bilinear | area | strided_conv
  c.model.encoder_kernel = 4
  c.model.decoder_kernel = 4
  c.model.norm = "batch"  # batch | instance
  c.model.activation = "relu"
  c.model.gamma_kernel = 3
  c.model.beta_kernel = 1
  c.model.hidden_features = 128  # shared conv over the mask before gamma/beta; 0 = none
  c.model.modulation = "residual"  # x * (1 + gamma) + beta; "plain": x * gamma + beta
  c.model.level_order = "spade"  # generation decoder: fuse -> act -> up; "spec": fuse -> up -> norm -> act
  # Convolutions of generator and discriminator: "auto" = "onednn" (models/conv/onednn.py) on CPU
  # where it builds, else "fast" (models/conv/xla_rewrites.py); XLA's own on GPU/TPU. "onednn" | "fast" |
  # "xla" to force one (env FACEGEN_CONV_IMPL overrides "auto").
  c.model.conv_impl = "auto"
  # Landmark-driven warping inside the generator (docs/method.md, Motion): "none" | "landmark_tps"
  # (thin-plate spline) | "landmark_pwa" (piecewise-affine mesh).
  c.model.motion = "none"
  c.model.motion_refiner = True  # learned residual flow + per-level occlusion maps
  c.model.motion_blend = True  # output = m * warp(source) + (1 - m) * decoded, m learned
  c.model.motion_features = 32
  c.model.motion_max_residual = 0.1  # normalized units (0.1 = 5% of the frame)
  c.model.motion_blend_bias = 0.0  # initial logit of the blend mask (2.0: the output starts 88% warp)
  c.model.motion_residual = False  # the decoder adds a correction to the warped source instead of drawing the image
  c.model.motion_smoothing = 1e-7  # ridge of the thin-plate-spline solve (keeps coincident landmarks solvable); unused by landmark_pwa

  c.discriminator = ml_collections.ConfigDict()
  c.discriminator.num_scales = 3
  c.discriminator.num_layers = 3
  c.discriminator.base_features = 64
  c.discriminator.max_features = 512
  c.discriminator.norm = "instance"  # instance | none
  c.discriminator.spectral_norm = False
  c.discriminator.conditional = True  # the discriminator sees image + face mask

  c.loss = ml_collections.ConfigDict()
  c.loss.first = ml_collections.ConfigDict(  # a1..a5
      dict(identity=1.0, perceptual=1.0, pixel=25.0, reconstruction=25.0, adversarial=1.0))
  c.loss.perturbed = ml_collections.ConfigDict(  # a6..a10
      dict(identity=1.0, perceptual=1.0, pixel=25.0, reconstruction=25.0, adversarial=1.0))
  c.loss.adversarial_kind = "hinge"  # hinge | non_saturating
  c.loss.feature_matching = 0.0  # pix2pixHD discriminator feature matching weight
  # With motion and the output blend: weight of mean(1 - m), the share of the output not taken from
  # the warped source (the decoder is used only where it beats the warp by this much).
  c.loss.blend_prior = 0.0
  # With the output blend: weight of the pixel L1 of the decoder's own image (before the blend), so
  # the decoder keeps learning where the blend mask hands the output to the warp.
  c.loss.decoder_pixel = 0.0
  c.loss.identity_net = "dlib_resnet"  # face-recognition net for L1 ("" = none)
  c.loss.perceptual_net = "dlib_resnet"  # feature net for L2: dlib_resnet | vgg19 ("" = none)
  c.loss.vgg19_weights = ""  # VGG19 ImageNet weights, .npz or torchvision .pth, when perceptual_net = vgg19
  c.loss.perceptual_layer_weights = ()  # per-feature-map weights; () = equal

  c.optimizer = ml_collections.ConfigDict()
  c.optimizer.g_learning_rate = 1e-4
  c.optimizer.d_learning_rate = 4e-4  # TTUR
  c.optimizer.b1 = 0.0
  c.optimizer.b2 = 0.999
  c.optimizer.schedule = "constant"  # constant | warmup_cosine
  c.optimizer.warmup_steps = 1000
  c.optimizer.grad_clip_norm = 0.0  # 0 = off
  c.optimizer.ema_decay = 0.999

  # Input: "synthetic" faces (tests, smoke runs) or "tfds" (experiments/prepare_data.py output).
  c.data = default_data_config()

  c.log_every_steps = 50
  c.image_every_steps = 500
  c.checkpoint_every_steps = 1000
  c.keep_checkpoints = 3
  # Evaluation of the EMA generator during training (self-reenactment L1, PSNR, SSIM on the data's
  # test split; facegen_jax/evaluation/during_training.py) every this many steps and at the last
  # one, into TensorBoard and <workdir>/metrics.jsonl; 0 = none.
  c.eval_every_steps = 0
  c.eval_num_samples = 64  # test pairs scored per evaluation (rounded up to whole global batches)
  c.profile_steps = ""  # "FIRST-LAST" (e.g. "100-105"): a jax.profiler trace of those steps in <workdir>/profile
  return c
