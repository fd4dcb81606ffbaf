"""Texture encoder (docs/method.md, "Texture encoder"): s stacked `conv -> batch-norm -> ReLU`
layers, each halving H and W."""

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from facegen_jax.models import layers


class TextureEncoder(nn.Module):
  """Encodes the reference face into texture features.

  Attributes:
    features: output channels of each layer; `len(features)` = s >= 2 layers.
    kernel_size: spatial kernel of every stride-2 convolution.
    norm: normalization after each conv ("batch" in the method).
    conv: the convolution constructor (`nn.Conv`-like), chosen by the model factory.
  """

  features: Sequence[int]
  kernel_size: int = 4
  norm: str = "batch"
  dtype: jnp.dtype = jnp.float32
  conv: layers.ModuleDef = nn.Conv

  @nn.compact
  def __call__(self, image: jnp.ndarray, *, train: bool) -> tuple[jnp.ndarray, list[jnp.ndarray]]:
    """Args: image `[B, H, W, 3]` in [-1, 1].

    Returns: the texture code `[B, H / 2^s, W / 2^s, features[-1]]` and the list of every
    layer's output (largest first).
    """
    if len(self.features) < 2:
      raise ValueError(f"TextureEncoder needs s >= 2 layers, got features={list(self.features)}")
    x, outputs = image.astype(self.dtype), []
    for i, feats in enumerate(self.features):
      x = self.conv(feats, (self.kernel_size,) * 2, strides=(2, 2), padding="SAME", use_bias=False,
                    dtype=self.dtype, name=f"conv_{i}")(x)
      x = layers.Norm(self.norm, dtype=self.dtype, name=f"norm_{i}")(x, train=train)
      x = nn.relu(x)
      outputs.append(x)
    return x, outputs
