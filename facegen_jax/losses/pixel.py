"""Pixel losses L3 (generated vs target) and L4 (reconstructed vs source): per-sample mean L1."""

import jax.numpy as jnp


def l1_per_sample(a: jnp.ndarray, b: jnp.ndarray) -> jnp.ndarray:
  """Mean absolute difference per sample. Args: `[B, ...]` each. Returns `[B]`."""
  diff = jnp.abs(a.astype(jnp.float32) - b.astype(jnp.float32))
  return diff.reshape(diff.shape[0], -1).mean(axis=1)
