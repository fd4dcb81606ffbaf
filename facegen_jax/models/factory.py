"""Builds the generator and discriminator from an experiment config (`config.model`, ...)."""

import jax.numpy as jnp
import ml_collections

from facegen_jax.landmarks import layout
from facegen_jax.models.discriminator import MultiScaleDiscriminator
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


def build_generator(config: ml_collections.ConfigDict) -> Generator:
  m = config.model
  return Generator(
      resolution=config.resolution, bottleneck_size=m.bottleneck_size, base_features=m.base_features,
      max_features=m.max_features, merge_levels=parse_merge_levels(m.merge_levels), mask_resize=m.mask_resize,
      encoder_kernel=m.encoder_kernel, decoder_kernel=m.decoder_kernel, norm=m.norm, activation=m.activation,
      gamma_kernel=m.gamma_kernel, beta_kernel=m.beta_kernel, hidden_features=m.hidden_features,
      modulation=m.modulation, dtype=compute_dtype(config), conv_impl=m.get("conv_impl", "auto"),
      level_order=m.get("level_order", "spade"),  # get: config.json files from before the option
      motion=m.motion, motion_refiner=m.motion_refiner, motion_blend=m.motion_blend,
      motion_features=m.motion_features, motion_max_residual=m.motion_max_residual,
      motion_smoothing=m.motion_smoothing)


def build_discriminator(config: ml_collections.ConfigDict) -> MultiScaleDiscriminator:
  d = config.discriminator
  if d.norm not in ("instance", "none"):
    raise ValueError(f"config.discriminator.norm must be 'instance' or 'none' (stateless), got {d.norm!r}")
  return MultiScaleDiscriminator(
      num_scales=d.num_scales, base_features=d.base_features, max_features=d.max_features,
      num_layers=d.num_layers, norm=d.norm, spectral_norm=d.spectral_norm, dtype=compute_dtype(config),
      conv_impl=config.model.get("conv_impl", "auto"))
