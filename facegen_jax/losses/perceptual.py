"""Perceptual / texture loss L2 (docs/method.md, Losses): weighted mean-L1 between deep feature maps, per sample."""

from typing import Optional, Sequence

import jax.numpy as jnp


def perceptual_loss(feats_ref: Sequence[jnp.ndarray], feats_gen: Sequence[jnp.ndarray],
                    weights: Optional[Sequence[float]] = None) -> jnp.ndarray:
  """Weighted mean over feature maps of the per-sample mean absolute difference.

  Args:
    feats_ref: feature maps `[B, h_k, w_k, c_k]` of the reference images (usually under
      stop_gradient), e.g. `FrozenNet.apply(...)["features"]`.
    feats_gen: the same maps of the generated images.
    weights: one non-negative weight per map; None = equal. Normalised to sum to 1, so the loss
      scale does not depend on how many maps there are.
  Returns:
    `[B]`: `sum_k w_k mean|f_ref_k - f_gen_k| / sum_k w_k`.
  """
  if len(feats_ref) != len(feats_gen) or not feats_ref:
    raise ValueError(f"perceptual_loss needs matching non-empty feature lists, got {len(feats_ref)} and "
                     f"{len(feats_gen)} maps")
  if weights is None:
    weights = [1.0] * len(feats_ref)
  if len(weights) != len(feats_ref):
    raise ValueError(f"{len(weights)} perceptual layer weights for {len(feats_ref)} feature maps")
  if any(w < 0 for w in weights) or sum(weights) <= 0:
    raise ValueError(f"perceptual layer weights must be >= 0 with a positive sum, got {list(weights)}")
  total = 0.0
  for w, a, b in zip(weights, feats_ref, feats_gen):
    if a.shape != b.shape:
      raise ValueError(f"feature maps differ in shape: {a.shape} vs {b.shape}")
    diff = jnp.abs(a.astype(jnp.float32) - b.astype(jnp.float32))
    total = total + w * diff.reshape(diff.shape[0], -1).mean(axis=1)
  return total / float(sum(weights))
