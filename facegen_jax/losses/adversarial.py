"""Adversarial loss L5 (hinge or non-saturating) and discriminator feature matching.

Every function takes the per-scale logits lists of `MultiScaleDiscriminator` and returns a
per-sample vector `[B]` (mean over patches, summed over scales divided by the number of scales).
"""

from typing import Sequence

import jax
import jax.numpy as jnp

ADVERSARIAL_LOSSES = ("hinge", "non_saturating")


def _per_sample_mean(x: jnp.ndarray) -> jnp.ndarray:
  return x.reshape(x.shape[0], -1).mean(axis=1)


def _check(kind: str) -> None:
  if kind not in ADVERSARIAL_LOSSES:
    raise ValueError(f"unknown adversarial loss {kind!r}; choose one of {ADVERSARIAL_LOSSES}")


def discriminator_loss(real_logits: Sequence[jnp.ndarray], fake_logits: Sequence[jnp.ndarray],
                       kind: str = "hinge") -> jnp.ndarray:
  """The discriminator's loss per sample `[B]`: real patches up, fake patches down."""
  _check(kind)
  total = 0.0
  for real, fake in zip(real_logits, fake_logits):
    if kind == "hinge":
      total += _per_sample_mean(jax.nn.relu(1.0 - real)) + _per_sample_mean(jax.nn.relu(1.0 + fake))
    else:
      total += _per_sample_mean(jax.nn.softplus(-real)) + _per_sample_mean(jax.nn.softplus(fake))
  return total / len(real_logits)


def generator_loss(fake_logits: Sequence[jnp.ndarray], kind: str = "hinge") -> jnp.ndarray:
  """The generator's adversarial loss L5 per sample `[B]`."""
  _check(kind)
  total = 0.0
  for fake in fake_logits:
    total += _per_sample_mean(-fake) if kind == "hinge" else _per_sample_mean(jax.nn.softplus(-fake))
  return total / len(fake_logits)


def feature_matching_loss(real_features: Sequence[Sequence[jnp.ndarray]],
                          fake_features: Sequence[Sequence[jnp.ndarray]]) -> jnp.ndarray:
  """pix2pixHD feature matching per sample `[B]`: mean L1 between the discriminator's hidden
  features of the real and the generated image, averaged over layers and scales. The real
  features are treated as constants."""
  total, count = 0.0, 0
  for real_scale, fake_scale in zip(real_features, fake_features):
    for real, fake in zip(real_scale, fake_scale):
      total += _per_sample_mean(jnp.abs(fake - jax.lax.stop_gradient(real)))
      count += 1
  return total / count
