"""facegen-jax: one-shot, landmark-conditioned face reenactment in JAX/Flax."""

__version__ = "0.1.0"
