"""Identity loss L1 (docs/method.md, Losses): 1 - cosine similarity of face-recognition embeddings, per sample."""

import jax.numpy as jnp


def cosine_similarity(a: jnp.ndarray, b: jnp.ndarray, eps: float = 1e-8) -> jnp.ndarray:
  """Cosine of `[B, D]` embeddings, row by row. Returns `[B]`."""
  a, b = a.astype(jnp.float32), b.astype(jnp.float32)
  dot = jnp.sum(a * b, axis=-1)
  return dot / jnp.sqrt(jnp.sum(a * a, axis=-1) * jnp.sum(b * b, axis=-1) + eps)


def identity_loss(emb_ref: jnp.ndarray, emb_gen: jnp.ndarray) -> jnp.ndarray:
  """`1 - cos(emb_ref, emb_gen)` per sample.

  Args:
    emb_ref: `[B, D]` embeddings of the reference (sample) faces, usually under stop_gradient.
    emb_gen: `[B, D]` embeddings of the generated faces.
  Returns:
    `[B]`, in [0, 2]; 0 when the embeddings point the same way.
  """
  if emb_ref.shape != emb_gen.shape or emb_ref.ndim != 2:
    raise ValueError(f"identity_loss takes two [B, D] embeddings, got {emb_ref.shape} and {emb_gen.shape}")
  if emb_ref.shape[-1] == 0:
    raise ValueError("identity_loss needs a network with an embedding (vgg19 has none; use dlib_resnet)")
  return 1.0 - cosine_similarity(emb_ref, emb_gen)
