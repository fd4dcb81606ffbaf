"""Builds the generator and discriminator from an experiment config (`config.model`, ...).

The one place that reads `config.model.conv_impl`: the convolution back-end is resolved here once
and handed to every module as its convolution constructors (models/conv/).
"""

import functools

import jax.numpy as jnp
import ml_collections

from facegen_jax.landmarks import layout
from facegen_jax.models import conv
from facegen_jax.models.discriminator import NORMS as DISCRIMINATOR_NORMS
from facegen_jax.models.discriminator import MultiScaleDiscriminator, PatchDiscriminator
from facegen_jax.models.generator import Generator

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def compute_dtype(config: ml_collections.ConfigDict):
  if config.compute_dtype not in DTYPES:
    raise ValueError(f"config.compute_dtype must be one of {sorted(DTYPES)}, got {config.compute_dtype!r}")
  return DTYPES[config.compute_dtype]


def mask_channels(config: ml_collections.ConfigDict) -> int:
  """Channels M of the face mask: 1, or one per landmark part."""
  return len(layout.PART_NAMES) if config.mask_per_part else 1


def parse_merge_levels(value: str):
  """"all" -> None (every level); "1,3" -> (1, 3); "" or "none" -> () (no concatenation)."""
  value = value.strip().lower()
  if value == "all":
    return None
  if value in ("", "none"):
    return ()
  try:
    return tuple(int(v) for v in value.split(","))
  except ValueError:
    raise ValueError(f"config.model.merge_levels must be 'all', 'none' or a list like '1,2'; got {value!r}") from None


# The config.model keys the generator reads besides the ones every config has had.
ADDED_MODEL_KEYS = ("conv_impl", "level_order", "motion", "motion_refiner", "motion_blend", "motion_features",
                    "motion_max_residual", "motion_smoothing", "motion_blend_bias", "motion_residual")


def check_model_keys(config: ml_collections.ConfigDict) -> None:
  """Raises ValueError naming the `config.model` keys an older config.json lacks, and the fix."""
  missing = [k for k in ADDED_MODEL_KEYS if k not in config.model]
  if missing:
    raise ValueError(f"config.model lacks {', '.join(missing)} (a config from before these options); add them with "
                     "`python experiments/migrate_config.py --path=DIR` (DIR: the folder holding config.json)")


def convolutions(config: ml_collections.ConfigDict) -> tuple[conv.ModuleDef, conv.ModuleDef]:
  """(conv, conv_transpose) constructors on the back-end `config.model.conv_impl` resolves to."""
  check_model_keys(config)
  return conv.constructors(config.model.conv_impl)


def build_generator(config: ml_collections.ConfigDict) -> Generator:
  m = config.model
  conv2d, conv_transpose = convolutions(config)
  return Generator(
      resolution=config.resolution, bottleneck_size=m.bottleneck_size, base_features=m.base_features,
      max_features=m.max_features, merge_levels=parse_merge_levels(m.merge_levels), mask_resize=m.mask_resize,
      encoder_kernel=m.encoder_kernel, decoder_kernel=m.decoder_kernel, norm=m.norm, activation=m.activation,
      gamma_kernel=m.gamma_kernel, beta_kernel=m.beta_kernel, hidden_features=m.hidden_features,
      modulation=m.modulation, dtype=compute_dtype(config), conv=conv2d, conv_transpose=conv_transpose,
      level_order=m.level_order, motion=m.motion, motion_refiner=m.motion_refiner, motion_blend=m.motion_blend,
      motion_features=m.motion_features, motion_max_residual=m.motion_max_residual,
      motion_smoothing=m.motion_smoothing, motion_blend_bias=m.motion_blend_bias,
      motion_residual=m.motion_residual)


def build_discriminator(config: ml_collections.ConfigDict) -> MultiScaleDiscriminator:
  d = config.discriminator
  if d.norm not in DISCRIMINATOR_NORMS:
    raise ValueError(f"config.discriminator.norm must be one of {DISCRIMINATOR_NORMS} (stateless), got {d.norm!r}")
  conv2d, _ = convolutions(config)
  patch = functools.partial(PatchDiscriminator, base_features=d.base_features, max_features=d.max_features,
                            num_layers=d.num_layers, norm=d.norm, spectral_norm=d.spectral_norm, conv=conv2d)
  return MultiScaleDiscriminator(num_scales=d.num_scales, patch=patch, dtype=compute_dtype(config))
