"""SPADE-style mask-conditioned affine normalization (docs/method.md, "Mask-conditioned affine
normalization").

The input is normalized by its batch mean and variance with no learned affine, then modulated
per pixel by a scale `gamma` and a shift `beta` predicted from the face mask: `gamma` by one
convolution over the mask, `beta` by a second convolution over the same mask with a *different*
kernel size, optionally after a shared hidden convolution.
"""

import functools
from typing import Optional

import flax.linen as nn
import jax.numpy as jnp

from facegen_jax.models import layers


class MaskAffineNorm(nn.Module):
  """Mask-conditioned affine normalization.

  Attributes:
    gamma_kernel: kernel size of the convolution predicting gamma.
    beta_kernel: kernel size of the convolution predicting beta (must differ from gamma's).
    hidden_features: channels of the shared hidden conv (3x3 + ReLU) over the mask before the
      gamma/beta convs; 0 or None to read the mask directly.
    modulation: "residual" for `x * (1 + gamma) + beta` (SPADE), "plain" for `x * gamma + beta`.
    norm: "batch" (batch statistics; running averages at inference) or "instance".
    momentum: running-average momentum of the batch statistics.
    conv: the convolution constructor (`nn.Conv`-like), chosen by the model factory.
  """

  gamma_kernel: int = 3
  beta_kernel: int = 1
  hidden_features: Optional[int] = 64
  modulation: str = "residual"
  norm: str = "batch"
  momentum: float = 0.9
  dtype: jnp.dtype = jnp.float32
  conv: layers.ModuleDef = nn.Conv

  @nn.compact
  def __call__(self, x: jnp.ndarray, mask: jnp.ndarray, *, train: bool) -> jnp.ndarray:
    """Args: x `[B, h, w, C]`; mask `[B, h, w, M]` in [0, 1] at the same size. Returns `[B, h, w, C]`."""
    if self.gamma_kernel == self.beta_kernel:
      raise ValueError(
          f"MaskAffineNorm: gamma_kernel and beta_kernel must differ (both {self.gamma_kernel}); "
          "the method asks for two convolutions with different kernel sizes")
    if self.modulation not in ("residual", "plain"):
      raise ValueError(f"MaskAffineNorm: modulation must be 'residual' or 'plain', got {self.modulation!r}")
    if x.shape[1:3] != mask.shape[1:3]:
      raise ValueError(f"MaskAffineNorm: x is {x.shape} but mask is {mask.shape}; resize the mask first")
    normalized = layers.Norm(self.norm, use_affine=False, momentum=self.momentum, name="param_free_norm")(
        x, train=train)
    feats = mask.astype(self.dtype)
    conv = functools.partial(self.conv, padding="SAME", dtype=self.dtype)
    if self.hidden_features:
      feats = nn.relu(conv(self.hidden_features, (3, 3), name="shared")(feats))
    channels = x.shape[-1]
    gamma = conv(channels, (self.gamma_kernel,) * 2, name="gamma")(feats)
    beta = conv(channels, (self.beta_kernel,) * 2, name="beta")(feats)
    if self.modulation == "residual":
      return normalized * (1.0 + gamma) + beta
    return normalized * gamma + beta
