"""One-shot personalization: fine-tune a copy of the generator on the single source photo before
reenacting. A motion-free generator is posed by randomly perturbed copies of the photo's own
landmarks with the photo as the target (the perturbed sample kind, see docs/method.md, Sample
kinds). A generator with motion would learn from those to undo its warp, so it gets pairs whose
ground truth is the photo: the photo warped onto perturbed landmarks is the source, and the model
must carry it back to the photo's own pose (`warped_pair_batch`); its motion network (where to
sample the source) is left as trained, so the few steps go to the texture the decoders draw.
Batch normalization keeps its trained statistics (`TRAIN_BATCH_NORM`): a batch of copies of one face
would pull them towards that face. Fine-tuning is training: it runs the generator-only step of
`train/finetune.py` (the losses of training without the adversarial terms: a fresh discriminator
would only add noise over a few hundred steps), with the identity/perceptual terms on when their
network loads.
"""

import copy
from typing import Optional

import functools

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from facegen_jax.data import batch as batch_lib
from facegen_jax.inference.generator_model import GeneratorModel
from facegen_jax.inference.reenactor import Reenactor, SourceFace
from facegen_jax.landmarks import crop as crop_lib
from facegen_jax.landmarks.masks import render_mask
from facegen_jax.landmarks.perturb import perturb_landmarks
from facegen_jax.models import motion as motion_lib
from facegen_jax.train import finetune, loop, sharding


PERTURBATION = dict(feature_shift=0.04, contour_shift=0.02, feature_scale=0.1)  # landmarks.perturb magnitudes
# What fine-tuning leaves as trained: these parameter subtrees (where present) and batch-norm statistics.
FROZEN_SUBTREES = ("motion_net",)
TRAIN_BATCH_NORM = False


def perturbed_poses(source, batch_size: int, rng: np.random.Generator) -> np.ndarray:
  """`[batch_size, 68, 2]`: the source's landmarks, then randomly perturbed copies of them."""
  r = source.crop.shape[0]
  poses = [source.landmarks] + [perturb_landmarks(source.landmarks, rng, image_size=r, **PERTURBATION)
                                for _ in range(batch_size - 1)]
  return np.stack(poses).astype(np.float32)


def _stack(samples) -> dict:
  return {k: np.stack([s[k] for s in samples]) for k in samples[0]}


def perturbed_batch(source, batch_size: int, rng: np.random.Generator, per_part: bool) -> dict:
  """A training batch of the source crop posed by perturbed copies of its own landmarks."""
  own_mask = render_mask(source.landmarks, source.crop.shape[0], per_part=per_part)
  return _stack([batch_lib.make_sample(batch_lib.SampleKind.PERTURBED, source.crop, source.landmarks, lm,
                                       mask_per_part=per_part, target_mask=own_mask)
                 for lm in perturbed_poses(source, batch_size, rng)])


@functools.partial(jax.jit, static_argnames="size")
def _warp_onto(image, landmarks, targets, size: int):
  """`image` `[R, R, 3]` (float) warped by the landmark spline so `landmarks` `[68, 2]` land on each
  of `targets` `[B, 68, 2]`: `[B, R, R, 3]`."""
  src = jnp.broadcast_to(landmarks, targets.shape)
  flow = motion_lib.landmark_flow(src, targets, size)
  return motion_lib.warp(jnp.broadcast_to(image, (targets.shape[0],) + image.shape), flow)


def warped_pair_batch(source, batch_size: int, rng: np.random.Generator, per_part: bool) -> dict:
  """A training batch of same-video pairs made from the source crop alone: the crop warped onto
  perturbed copies of its landmarks (the first copy unperturbed) is the source, the crop in its
  own pose the driving pose and the target."""
  r = source.crop.shape[0]
  poses = perturbed_poses(source, batch_size, rng)
  warped = _warp_onto(jnp.asarray(source.crop, jnp.float32), jnp.asarray(source.landmarks, jnp.float32),
                      jnp.asarray(poses), r)
  warped = np.clip(np.round(np.asarray(warped)), 0, 255).astype(np.uint8)
  own_mask = render_mask(source.landmarks, r, per_part=per_part)
  return _stack([batch_lib.make_sample(batch_lib.SampleKind.SAME_VIDEO, w, lm, source.landmarks,
                                       mask_per_part=per_part, target=source.crop, driving_mask=own_mask)
                 for w, lm in zip(warped, poses)])


_FINE_TUNING = {}  # (config JSON, fixed subtrees, train_batch_norm) -> (config, loss nets, mesh, jitted step)


def _fine_tuning(config, fixed_subtrees=(), train_batch_norm=True):
  """(config, loss nets, mesh, jitted generator step) for a fine-tuning config, made once per
  config, so that personalizing many sources (an evaluation's clips) loads the loss nets and
  compiles the step once."""
  key = (config.to_json_best_effort(sort_keys=True), tuple(fixed_subtrees), train_batch_norm)
  if key not in _FINE_TUNING:
    try:
      loss_nets = loop.load_loss_nets(config)
    except Exception as e:  # pylint: disable=broad-except
      logging.warning("personalization without identity/perceptual losses (%s)", e)
      for group in (config.loss.first, config.loss.perturbed):
        group.identity = group.perceptual = 0.0
      loss_nets = loop.load_loss_nets(config)
    mesh = sharding.make_mesh()
    _FINE_TUNING.clear()  # one compiled step at a time: a new config's replaces the last
    _FINE_TUNING[key] = (config, loss_nets, mesh,
                         sharding.jit_train_step(
                             finetune.make_generator_step(config, loss_nets, fixed_subtrees, train_batch_norm), mesh))
  return _FINE_TUNING[key]


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

  variables = jax.device_get(reenactor.model.variables)  # host copies: the step donates its input buffers
  kept = tuple(k for k in FROZEN_SUBTREES if k in variables["params"])
  config, loss_nets, mesh, step_fn = _fine_tuning(config, kept, TRAIN_BATCH_NORM)
  batch_size = -(-batch_size // mesh.devices.size) * mesh.devices.size
  if source_landmarks is None:
    source = reenactor.prepare_source(source_image)
  else:
    image = np.asarray(source_image)
    whole = (0.0, 0.0, float(image.shape[1]), float(image.shape[0]))
    crop, transform = crop_lib.crop_and_resize(image, whole, reenactor.resolution)
    source = SourceFace(image, transform, crop, transform.apply(source_landmarks))
  state = sharding.replicate(finetune.create_generator_state(config, variables, seed, kept), mesh)
  frozen = sharding.replicate(loss_nets.frozen_params(), mesh)
  rng = np.random.default_rng(seed)
  make_batch = perturbed_batch if config.model.get("motion", "none") == "none" else warped_pair_batch
  bar = tqdm(range(steps), desc="personalize", unit="step", disable=not progress)
  for _ in bar:
    batch = sharding.shard_batch(make_batch(source, batch_size, rng, reenactor.model.mask_per_part), mesh)
    state, metrics, _ = step_fn(state, batch, frozen)
    bar.set_postfix(pixel=f"{float(metrics['g/pixel']):.4f}")
  g_vars = jax.device_get(state.g_vars)
  model = GeneratorModel(config, {"params": g_vars["params"], "batch_stats": g_vars["batch_stats"]})
  return Reenactor(model, detector=reenactor.detector, crop_scale=reenactor.crop_scale)
