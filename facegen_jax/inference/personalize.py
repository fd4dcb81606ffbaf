"""One-shot personalization: fine-tune a copy of the generator on the single source photo, posed
by randomly perturbed copies of its own landmarks (the perturbed sample kind, see docs/method.md,
Sample kinds), before reenacting. Fine-tuning is training: it runs the generator-only step of
`train/finetune.py` (the losses of training without the adversarial terms: a fresh discriminator
would only add noise over a few hundred steps), with the identity/perceptual terms on when their
network loads.
"""

import copy
from typing import Optional

import jax
import numpy as np
from absl import logging

from facegen_jax.data import batch as batch_lib
from facegen_jax.inference.generator_model import GeneratorModel
from facegen_jax.inference.reenactor import Reenactor, SourceFace
from facegen_jax.landmarks import crop as crop_lib
from facegen_jax.landmarks.masks import render_mask
from facegen_jax.landmarks.perturb import perturb_landmarks
from facegen_jax.train import finetune, loop, sharding


def perturbed_batch(source, batch_size: int, rng: np.random.Generator, per_part: bool, feature_shift: float = 0.04,
                    contour_shift: float = 0.02, feature_scale: float = 0.1) -> dict:
  """A training batch of the source crop posed by perturbed copies of its own landmarks."""
  r = source.crop.shape[0]
  own_mask = render_mask(source.landmarks, r, per_part=per_part)
  samples = []
  for i in range(batch_size):
    lm = source.landmarks if i == 0 else perturb_landmarks(
        source.landmarks, rng, feature_shift=feature_shift, contour_shift=contour_shift,
        feature_scale=feature_scale, image_size=r)
    samples.append(batch_lib.make_sample(batch_lib.SampleKind.PERTURBED, source.crop, source.landmarks, lm,
                                         mask_per_part=per_part, target_mask=own_mask))
  return {k: np.stack([s[k] for s in samples]) for k in samples[0]}


def personalize(reenactor, source_image: np.ndarray, steps: int, *, source_landmarks: Optional[np.ndarray] = None,
                batch_size: int = 4, learning_rate: float = 2e-4, seed: int = 0, progress: bool = True):
  """Returns a new Reenactor whose generator was fine-tuned for `steps` steps on `source_image`.

  `source_image` is a photo (its face found and cropped by `Reenactor.prepare_source`), or, with
  `source_landmarks` (`[68, 2]` in its pixels), a face crop already, of any size: it is taken whole,
  resized to the model's resolution as `Reenactor.face_outputs` resizes the crops it is given.
  """
  from tqdm import tqdm  # pylint: disable=import-outside-toplevel

  config = copy.deepcopy(reenactor.model.config)
  config.unlock()
  config.optimizer.g_learning_rate = learning_rate
  config.optimizer.schedule = "constant"
  try:
    loss_nets = loop.load_loss_nets(config)
  except Exception as e:  # pylint: disable=broad-except
    logging.warning("personalization without identity/perceptual losses (%s)", e)
    for group in (config.loss.first, config.loss.perturbed):
      group.identity = group.perceptual = 0.0
    loss_nets = loop.load_loss_nets(config)

  mesh = sharding.make_mesh()
  batch_size = -(-batch_size // mesh.devices.size) * mesh.devices.size
  if source_landmarks is None:
    source = reenactor.prepare_source(source_image)
  else:
    image = np.asarray(source_image)
    whole = (0.0, 0.0, float(image.shape[1]), float(image.shape[0]))
    crop, transform = crop_lib.crop_and_resize(image, whole, reenactor.resolution)
    source = SourceFace(image, transform, crop, transform.apply(source_landmarks))
  variables = jax.device_get(reenactor.model.variables)  # host copies: the step donates its input buffers
  state = sharding.replicate(finetune.create_generator_state(config, variables, seed), mesh)
  frozen = sharding.replicate(loss_nets.frozen_params(), mesh)
  step_fn = sharding.jit_train_step(finetune.make_generator_step(config, loss_nets), mesh)
  rng = np.random.default_rng(seed)
  bar = tqdm(range(steps), desc="personalize", unit="step", disable=not progress)
  for _ in bar:
    batch = sharding.shard_batch(perturbed_batch(source, batch_size, rng, reenactor.model.mask_per_part), mesh)
    state, metrics, _ = step_fn(state, batch, frozen)
    bar.set_postfix(pixel=f"{float(metrics['g/pixel']):.4f}")
  g_vars = jax.device_get(state.g_vars)
  model = GeneratorModel(config, {"params": g_vars["params"], "batch_stats": g_vars["batch_stats"]})
  return Reenactor(model, detector=reenactor.detector, crop_scale=reenactor.crop_scale)
