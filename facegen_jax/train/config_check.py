"""`validate(config, devices, processes)`: every bad value of a training config, before anything compiles.

One line per bad key, naming the key, the value and what is allowed, e.g.
`config.global_batch_size=0: must be a positive multiple of the device count 4`. The allowed names
of the choice keys are the constants of the modules that implement them (models, losses, nets),
so a new choice is allowed here the moment it exists there. Keys this module does not know are
left to the code that reads them.
"""

import math
from typing import Callable, Optional

import ml_collections

from facegen_jax import nets
from facegen_jax.losses.adversarial import ADVERSARIAL_LOSSES
from facegen_jax.models import discriminator, factory, layers
from facegen_jax.models.conv import CONV_IMPLS
from facegen_jax.models.decoders import LEVEL_ORDERS
from facegen_jax.models.motion import MOTIONS
from facegen_jax.train.step import LOSS_TERMS

SCHEDULES = ("constant", "warmup_cosine")  # facegen_jax.train.state.learning_rate_schedule
MODULATIONS = ("residual", "plain")  # facegen_jax.models.mask_affine_norm.MaskAffineNorm
DATA_SOURCES = ("synthetic", "tfds")  # facegen_jax.train.loop.create_data_iterator


class ConfigError(ValueError):
  """A config with bad values; the message has one line per bad key."""


def _number(value) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _integer(value) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)


def _positive_int(value) -> Optional[str]:
  return None if _integer(value) and value > 0 else "must be a positive integer"


def _non_negative_int(value) -> Optional[str]:
  return None if _integer(value) and value >= 0 else "must be an integer >= 0"


def _positive(value) -> Optional[str]:
  return None if _number(value) and value > 0 else "must be a positive finite number"


def _non_negative(value) -> Optional[str]:
  return None if _number(value) and value >= 0 else "must be a finite number >= 0"


def _fraction(value) -> Optional[str]:
  return None if _number(value) and 0 <= value < 1 else "must be in [0, 1)"


def _unit(value) -> Optional[str]:
  return None if _number(value) and 0 <= value <= 1 else "must be in [0, 1]"


def _one_of(*choices) -> Callable:
  def check(value):
    return None if value in choices else "must be one of " + ", ".join(repr(c) for c in choices)
  return check


def _power_of_two(value) -> Optional[str]:
  ok = _integer(value) and value > 0 and value & (value - 1) == 0
  return None if ok else "must be a power of two (64, 128, 256, ...)"


def _activation(value) -> Optional[str]:
  try:
    layers.activation(value)
  except (ValueError, KeyError, TypeError) as e:
    return str(e)
  return None


def _kind_ratios(value) -> Optional[str]:
  ok = len(tuple(value)) == 3 and all(_number(v) and v >= 0 for v in value) and sum(value) > 0
  return None if ok else "must be 3 numbers >= 0 with a positive sum (same video, two people, perturbed)"


RULES = {
    "seed": _non_negative_int,
    "resolution": _power_of_two,
    "compute_dtype": _one_of(*factory.DTYPES),
    "num_train_steps": _positive_int,
    "log_every_steps": _positive_int,
    "checkpoint_every_steps": _positive_int,
    "image_every_steps": _non_negative_int,
    "keep_checkpoints": _positive_int,
    "model.bottleneck_size": _power_of_two,
    "model.base_features": _positive_int,
    "model.max_features": _positive_int,
    "model.hidden_features": _non_negative_int,
    "model.encoder_kernel": _positive_int,
    "model.decoder_kernel": _positive_int,
    "model.gamma_kernel": _positive_int,
    "model.beta_kernel": _positive_int,
    "model.norm": _one_of(*layers.NORMS),
    "model.mask_resize": _one_of(*layers.MASK_RESIZE_METHODS),
    "model.activation": _activation,
    "model.modulation": _one_of(*MODULATIONS),
    "model.level_order": _one_of(*LEVEL_ORDERS),
    "model.conv_impl": _one_of(*CONV_IMPLS),
    "model.motion": _one_of(*MOTIONS),
    "model.motion_features": _positive_int,
    "model.motion_max_residual": _non_negative,
    "model.motion_smoothing": _non_negative,
    "discriminator.num_scales": _positive_int,
    "discriminator.num_layers": _positive_int,
    "discriminator.base_features": _positive_int,
    "discriminator.max_features": _positive_int,
    "discriminator.norm": _one_of(*discriminator.NORMS),
    "loss.adversarial_kind": _one_of(*ADVERSARIAL_LOSSES),
    "loss.feature_matching": _non_negative,
    "loss.blend_prior": _non_negative,
    "loss.decoder_pixel": _non_negative,
    "loss.identity_net": _one_of("", *nets.NAMES),
    "loss.perceptual_net": _one_of("", *nets.NAMES),
    **{f"loss.{group}.{term}": _non_negative for group in ("first", "perturbed") for term in LOSS_TERMS},
    "optimizer.g_learning_rate": _positive,
    "optimizer.d_learning_rate": _positive,
    "optimizer.b1": _fraction,
    "optimizer.b2": _fraction,
    "optimizer.schedule": _one_of(*SCHEDULES),
    "optimizer.warmup_steps": _non_negative_int,
    "optimizer.grad_clip_norm": _non_negative,
    "optimizer.ema_decay": _unit,
    "data.source": _one_of(*DATA_SOURCES),
    "data.synthetic_identities": _positive_int,
    "data.kind_ratios": _kind_ratios,
    "data.num_workers": _non_negative_int,
    "data.worker_buffer_size": _positive_int,
    "data.read_threads": _positive_int,
}


def _get(config: ml_collections.ConfigDict, key: str):
  node = config
  for part in key.split("."):
    if not isinstance(node, ml_collections.ConfigDict) or part not in node:
      return _MISSING
    node = node[part]
  return node


_MISSING = object()


def problems(config: ml_collections.ConfigDict, devices: int = 1, processes: int = 1) -> list:
  """One line per bad value of `config` (empty if it is fine) for a mesh of `devices` over `processes`."""
  found = []
  for key, rule in RULES.items():
    value = _get(config, key)
    if value is _MISSING:
      continue
    why = rule(value)
    if why:
      found.append(f"config.{key}={value!r}: {why}")
  batch = _get(config, "global_batch_size")
  if batch is not _MISSING:
    step = math.lcm(devices, processes)
    if not (_integer(batch) and batch > 0 and batch % step == 0):
      found.append(f"config.global_batch_size={batch!r}: must be a positive multiple of the device count "
                   f"{devices}" + (f" and of the process count {processes}" if processes > 1 else ""))
  resolution, bottleneck = _get(config, "resolution"), _get(config, "model.bottleneck_size")
  if not _power_of_two(resolution) and not _power_of_two(bottleneck) and resolution < 4 * bottleneck:
    found.append(f"config.resolution={resolution}: must be at least 4 x config.model.bottleneck_size={bottleneck} "
                 "(the encoder halves it at least twice)")
  if _get(config, "data.source") == "tfds" and not str(_get(config, "data.data_dir") or ""):
    found.append("config.data.data_dir='': data.source='tfds' reads the --output folder of "
                 "experiments/prepare_data.py; set --config.data.data_dir")
  return found


def validate(config: ml_collections.ConfigDict, devices: int = 1, processes: int = 1) -> None:
  """Raises ConfigError listing every bad value of `config` (see `problems`)."""
  found = problems(config, devices, processes)
  if found:
    raise ConfigError("\n".join(found))
