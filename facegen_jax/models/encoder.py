"""Texture encoder (SPEC 1.1): s stacked `conv -> batch-norm -> ReLU` layers, each halving H and W."""

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from facegen_jax.models import fast_conv, layers


class TextureEncoder(nn.Module):
  """Encodes the reference face into texture features.

  Attributes:
    features: output channels of each layer; `len(features)` = s >= 2 layers.
    kernel_size: spatial kernel of every stride-2 convolution.
    norm: normalization after each conv (SPEC: "batch").
    conv_impl: convolution implementation, "auto" | "onednn" | "fast" | "xla" (see models/fast_conv.py).
  """

  features: Sequence[int]
  kernel_size: int = 4
  norm: str = "batch"
  dtype: jnp.dtype = jnp.float32
  conv_impl: str = "auto"

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
      x = nn.Conv(feats, (self.kernel_size,) * 2, strides=(2, 2), padding="SAME", use_bias=False,
                  dtype=self.dtype, conv_general_dilated=fast_conv.conv_fn(self.conv_impl), name=f"conv_{i}")(x)
      x = layers.Norm(self.norm, dtype=self.dtype, name=f"norm_{i}")(x, train=train)
      x = nn.relu(x)
      outputs.append(x)
    return x, outputs
