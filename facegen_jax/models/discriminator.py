"""Multi-scale PatchGAN discriminator (pix2pixHD-style), optionally spectral-normalized."""

import flax.linen as nn
import jax.numpy as jnp

from facegen_jax.models import layers

# Stateless norms only: the discriminator keeps no running statistics ("batch" is not offered).
NORMS = ("instance", "none")


class PatchDiscriminator(nn.Module):
  """One PatchGAN: 4x4 convs, stride 2 then stride 1, leaky ReLU, a 1-channel logit map.

  Attributes:
    base_features, max_features: channels, doubling per layer, capped.
    num_layers: number of stride-2 convolutions.
    norm: normalization of all but the first conv, one of NORMS ("instance" or "none").
    spectral_norm: wrap every conv in spectral normalization (stats in 'batch_stats').
    conv: the convolution constructor (`nn.Conv`-like), chosen by the model factory.
  """

  base_features: int = 64
  max_features: int = 512
  num_layers: int = 3
  norm: str = "instance"
  spectral_norm: bool = False
  dtype: jnp.dtype = jnp.float32
  conv: layers.ModuleDef = nn.Conv

  def _conv(self, x, feats, stride, name, train, use_bias=True):
    conv = self.conv(feats, (4, 4), strides=(stride, stride), padding="SAME", use_bias=use_bias, dtype=self.dtype,
                     name=name)
    if self.spectral_norm:
      return nn.SpectralNorm(conv, name=f"{name}_sn")(x, update_stats=train)
    return conv(x)

  @nn.compact
  def __call__(self, x: jnp.ndarray, *, train: bool) -> tuple[jnp.ndarray, list[jnp.ndarray]]:
    """Args: x `[B, H, W, C]`. Returns logits `[B, h, w, 1]` and the hidden feature maps."""
    if self.norm not in NORMS:
      raise ValueError(f"discriminator norm must be one of {NORMS} (stateless), got {self.norm!r}")
    features = []
    for i in range(self.num_layers + 1):
      feats = min(self.base_features * 2**i, self.max_features)
      stride = 2 if i < self.num_layers else 1
      normed = i > 0 and self.norm != "none"
      x = self._conv(x, feats, stride, f"conv_{i}", train, use_bias=not normed)  # a norm cancels a bias
      if normed:
        x = layers.Norm(self.norm, dtype=self.dtype, name=f"norm_{i}")(x, train=train)
      x = nn.leaky_relu(x, 0.2)
      features.append(x)
    logits = self._conv(x, 1, 1, "logits", train)
    return logits.astype(jnp.float32), features


class MultiScaleDiscriminator(nn.Module):
  """PatchGANs on the input at 1, 1/2, 1/4, ... resolution (average-pooled). The module reads
  whatever channels it gets: a conditional discriminator's caller concatenates the face mask to
  the image (`config.discriminator.conditional`).

  Attributes:
    num_scales: number of PatchGANs.
    patch: the PatchDiscriminator constructor of every scale, its settings bound
      (`functools.partial(PatchDiscriminator, ...)`); this module adds the dtype.
    dtype: computation dtype (parameters stay float32).
  """

  num_scales: int = 3
  patch: layers.ModuleDef = PatchDiscriminator
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, *, train: bool) -> tuple[list[jnp.ndarray], list[list[jnp.ndarray]]]:
    """Args: x `[B, H, W, C]` (image in [-1, 1], optionally with mask channels).

    Returns: per-scale logits `[B, h_k, w_k, 1]` and per-scale lists of feature maps.
    """
    x = x.astype(self.dtype)
    all_logits, all_features = [], []
    for k in range(self.num_scales):
      if k > 0:
        x = nn.avg_pool(x, (2, 2), strides=(2, 2))
      logits, feats = self.patch(dtype=self.dtype, name=f"scale_{k}")(x, train=train)
      all_logits.append(logits)
      all_features.append(feats)
    return all_logits, all_features
