"""One-shot personalization (SPEC claim 7 at inference time): fine-tune a copy of the generator on
the single source photo, posed by randomly perturbed copies of its own landmarks, before
reenacting. The same train step as training, with the adversarial terms off (a fresh
discriminator would only add noise over a few hundred steps) and the identity/perceptual terms on
when their network loads.
"""

import copy

import jax
import numpy as np
from absl import logging

from facegen_jax.data import batch as batch_lib
from facegen_jax.inference.generator_model import GeneratorModel
from facegen_jax.landmarks.masks import render_mask
from facegen_jax.landmarks.perturb import perturb_landmarks


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
    samples.append({
        "source": source.crop, "source_landmarks": source.landmarks,
        "driving_mask": render_mask(lm, r, per_part=per_part), "driving_landmarks": np.asarray(lm, np.float32),
        "target": source.crop, "target_mask": own_mask, "target_landmarks": source.landmarks,
        "sample_kind": np.int32(batch_lib.KIND_PERTURBED),
    })
  return {k: np.stack([s[k] for s in samples]) for k in samples[0]}


def personalize(reenactor, source_image: np.ndarray, steps: int, *, batch_size: int = 4,
                learning_rate: float = 2e-4, seed: int = 0, progress: bool = True):
  """Returns a new Reenactor whose generator was fine-tuned for `steps` steps on `source_image`."""
  from tqdm import tqdm  # pylint: disable=import-outside-toplevel
  from facegen_jax.inference.reenactor import Reenactor  # pylint: disable=import-outside-toplevel
  from facegen_jax.train import loop, sharding  # pylint: disable=import-outside-toplevel
  from facegen_jax.train.state import create_train_state  # pylint: disable=import-outside-toplevel
  from facegen_jax.train.step import make_train_step  # pylint: disable=import-outside-toplevel

  config = copy.deepcopy(reenactor.model.config)
  config.unlock()
  for group in (config.loss.first, config.loss.perturbed):
    group.adversarial = 0.0
  config.loss.feature_matching = 0.0
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
  source = reenactor.prepare_source(source_image)
  state = create_train_state(config)
  variables = jax.device_get(reenactor.model.variables)  # host copies: the step donates its input buffers
  state = state.replace(g_vars={"params": variables["params"], "batch_stats": variables["batch_stats"]},
                        g_opt_state=make_g_opt_state(config, variables["params"]),
                        ema_params=jax.tree.map(np.copy, variables["params"]))
  state = sharding.replicate(state, mesh)
  frozen = sharding.replicate(loss_nets.frozen_params(), mesh)
  step_fn = sharding.jit_train_step(make_train_step(config, loss_nets), mesh)
  rng = np.random.default_rng(seed)
  bar = tqdm(range(steps), desc="personalize", unit="step", disable=not progress)
  for _ in bar:
    batch = sharding.shard_batch(perturbed_batch(source, batch_size, rng, reenactor.model.mask_per_part), mesh)
    state, metrics, _ = step_fn(state, batch, frozen)
    bar.set_postfix(pixel=f"{float(metrics['g/pixel']):.4f}")
  g_vars = jax.device_get(state.g_vars)
  model = GeneratorModel(config, {"params": g_vars["params"], "batch_stats": g_vars["batch_stats"]})
  return Reenactor(model, detector=reenactor.detector, crop_scale=reenactor.crop_scale)


def make_g_opt_state(config, params):
  from facegen_jax.train.state import make_optimizers  # pylint: disable=import-outside-toplevel
  g_tx, _ = make_optimizers(config)
  return g_tx.init(params)
