"""Identity (L1) and perceptual (L2) losses: values, per-sample shape, gradients, bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from facegen_jax.losses.identity import cosine_similarity, identity_loss
from facegen_jax.losses.perceptual import perceptual_loss


def test_identity_loss_is_one_minus_cosine_per_sample():
  ref = jnp.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [3.0, 4.0]])
  gen = jnp.array([[2.0, 0.0], [0.0, 5.0], [-1.0, 0.0], [4.0, 3.0]])
  np.testing.assert_allclose(identity_loss(ref, gen), [0.0, 1.0, 2.0, 1.0 - 24.0 / 25.0], atol=1e-6)
  np.testing.assert_allclose(cosine_similarity(ref, gen), [1.0, 0.0, -1.0, 0.96], atol=1e-6)


def test_identity_loss_gradient_is_finite_even_for_zero_embeddings():
  grad = jax.grad(lambda g: identity_loss(jnp.ones((2, 4)), g).sum())(jnp.zeros((2, 4)))
  assert np.all(np.isfinite(grad))


def test_identity_loss_rejects_mismatched_or_empty_embeddings():
  with pytest.raises(ValueError, match=r"two \[B, D\] embeddings"):
    identity_loss(jnp.ones((2, 3)), jnp.ones((2, 4)))
  with pytest.raises(ValueError, match="vgg19 has none"):
    identity_loss(jnp.ones((2, 0)), jnp.ones((2, 0)))


def test_perceptual_loss_weighted_mean_of_per_map_l1():
  a = [jnp.zeros((2, 4, 4, 3)), jnp.zeros((2, 2, 2, 8))]
  b = [jnp.stack([jnp.full((4, 4, 3), 1.0), jnp.full((4, 4, 3), 2.0)]), jnp.full((2, 2, 2, 8), 4.0)]
  np.testing.assert_allclose(perceptual_loss(a, b), [(1 + 4) / 2, (2 + 4) / 2])
  np.testing.assert_allclose(perceptual_loss(a, b, [3.0, 1.0]), [(3 + 4) / 4, (6 + 4) / 4])
  np.testing.assert_allclose(perceptual_loss(a, b, [1.0, 0.0]), [1.0, 2.0])
  assert perceptual_loss(a, a).shape == (2,)
  np.testing.assert_allclose(perceptual_loss(a, a), [0.0, 0.0])


def test_perceptual_loss_rejects_bad_weights_and_shapes():
  f = [jnp.zeros((1, 2, 2, 1))]
  with pytest.raises(ValueError, match="2 perceptual layer weights for 1 feature maps"):
    perceptual_loss(f, f, [1.0, 1.0])
  with pytest.raises(ValueError, match="positive sum"):
    perceptual_loss(f, f, [0.0])
  with pytest.raises(ValueError, match="differ in shape"):
    perceptual_loss(f, [jnp.zeros((1, 3, 2, 1))])
  with pytest.raises(ValueError, match="matching non-empty"):
    perceptual_loss([], [])
