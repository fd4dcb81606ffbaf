"""The two decoders of SPEC 1.3: reconstruction and generation ("target processing")."""

from typing import Optional, Sequence

import flax.linen as nn
import jax.numpy as jnp

from facegen_jax.models import fast_conv, layers
from facegen_jax.models.mask_affine_norm import MaskAffineNorm


LEVEL_ORDERS = ("spade", "spec")


def _up(features: int, kernel_size: int, dtype, name: str, use_bias: bool = True,
        conv_impl: str = "auto") -> fast_conv.ConvTranspose:
  """A stride-2 transposed convolution that doubles H and W (no bias when a norm follows: it
  would cancel it, leaving a parameter whose gradient is zero). Parameters as `nn.ConvTranspose`."""
  return fast_conv.ConvTranspose(features, (kernel_size,) * 2, strides=(2, 2), padding="SAME", use_bias=use_bias,
                                 dtype=dtype, conv_impl=conv_impl, name=name)


class ReconstructionDecoder(nn.Module):
  """j >= 2 levels of `activation -> transposed conv -> norm`; the last outputs the image.

  Attributes:
    features: output channels of levels 1..j-1 (the intermediate outputs); level j outputs 3.
    kernel_size: kernel of the transposed convolutions.
    norm: normalization after each intermediate transposed conv.
    activation: name of the activation opening each level.
    conv_impl: convolution implementation, "auto" | "onednn" | "fast" | "xla" (see models/fast_conv.py).
  """

  features: Sequence[int]
  kernel_size: int = 4
  norm: str = "batch"
  activation: str = "relu"
  dtype: jnp.dtype = jnp.float32
  conv_impl: str = "auto"

  @nn.compact
  def __call__(self, code: jnp.ndarray, *, train: bool) -> tuple[jnp.ndarray, list[jnp.ndarray]]:
    """Args: code `[B, h, w, C]`.

    Returns: the reconstructed image `[B, h * 2^j, w * 2^j, 3]` in [-1, 1] (tanh) and the
    intermediate outputs `[B, h * 2^k, w * 2^k, features[k-1]]` for k = 1..j-1.
    """
    if len(self.features) < 1:
      raise ValueError(f"ReconstructionDecoder needs j >= 2 levels (features for levels 1..j-1), got "
                       f"features={list(self.features)}")
    act = layers.activation(self.activation)
    x, intermediates = code, []
    for k, feats in enumerate(self.features):
      x = _up(feats, self.kernel_size, self.dtype, f"up_{k}", self.norm == "none", self.conv_impl)(act(x))
      x = layers.Norm(self.norm, dtype=self.dtype, name=f"norm_{k}")(x, train=train)
      intermediates.append(x)
    image = _up(3, self.kernel_size, self.dtype, f"up_{len(self.features)}", conv_impl=self.conv_impl)(act(x))
    return jnp.tanh(image.astype(jnp.float32)), intermediates


class GenerationDecoder(nn.Module):
  """The target-processing levels: merge, fuse with the mask, decode (SPEC 1.3 a-c).

  The texture code is first decoded (`transposed conv -> norm -> activation`) to the size of the
  reconstruction decoder's first intermediate output. Then each level i = 1..n:
    a. concatenates, along channels, its input with the reconstruction decoder's output of the
       same size (if i is in `merge_levels`),
    b. fuses the result with the level-i face mask by mask-conditioned affine normalization,
    c. decodes it to twice the size; the last level outputs the target image (tanh). Two orders
       (`level_order`):
       - "spade" (default): `activation -> transposed conv`, as in SPADE's residual blocks. The
         norm after the transposed conv is left out: the next level's parameter-free batch norm
         (b) follows it with only the channel-wise concatenation in between, which would cancel
         its per-channel scale and shift exactly.
       - "spec": `transposed conv -> norm -> activation` (the order SPEC 1.3c and the core issue
         write), with no activation between (b) and the transposed conv.

  Attributes:
    features: output channels of the stem and of levels 1..n-1 (`len(features)` = n >= 2);
      the last level outputs 3.
    merge_levels: 1-based levels that concatenate a reconstruction output; None = all.
    kernel_size, norm, activation: as in ReconstructionDecoder.
    gamma_kernel, beta_kernel, hidden_features, modulation: MaskAffineNorm settings.
    conv_impl: convolution implementation, "auto" | "onednn" | "fast" | "xla" (see models/fast_conv.py).
    level_order: "spade" or "spec" (step c above).
  """

  features: Sequence[int]
  merge_levels: Optional[Sequence[int]] = None
  kernel_size: int = 4
  norm: str = "batch"
  activation: str = "relu"
  gamma_kernel: int = 3
  beta_kernel: int = 1
  hidden_features: Optional[int] = 64
  modulation: str = "residual"
  dtype: jnp.dtype = jnp.float32
  conv_impl: str = "auto"
  level_order: str = "spade"

  @nn.compact
  def __call__(self, code: jnp.ndarray, recon_outputs: Sequence[jnp.ndarray], masks: dict[int, jnp.ndarray],
               *, train: bool) -> jnp.ndarray:
    """Args:
      code: texture code `[B, h, w, C]`.
      recon_outputs: the reconstruction decoder's intermediates, sizes 2h, 4h, ... (n of them).
      masks: {size: level mask `[B, size, size, M]`} for sizes 2h .. 2^n h.

    Returns: the target image `[B, h * 2^(n+1), w * 2^(n+1), 3]` in [-1, 1].
    """
    n = len(self.features)
    if n < 2:
      raise ValueError(f"GenerationDecoder needs n >= 2 levels, got features={list(self.features)}")
    if self.level_order not in LEVEL_ORDERS:
      raise ValueError(f"model.level_order must be one of {LEVEL_ORDERS}, got {self.level_order!r}")
    spec_order = self.level_order == "spec"
    if len(recon_outputs) != n:
      raise ValueError(f"GenerationDecoder: {n} levels but {len(recon_outputs)} reconstruction outputs")
    merge = set(range(1, n + 1) if self.merge_levels is None else self.merge_levels)
    if not merge <= set(range(1, n + 1)):
      raise ValueError(f"merge_levels {sorted(merge)} must be within 1..{n}")
    act = layers.activation(self.activation)
    x = _up(self.features[0], self.kernel_size, self.dtype, "stem", self.norm == "none", self.conv_impl)(code)
    x = act(layers.Norm(self.norm, dtype=self.dtype, name="stem_norm")(x, train=train))
    for i in range(1, n + 1):
      if i in merge:
        x = jnp.concatenate([x, recon_outputs[i - 1].astype(x.dtype)], axis=-1)
      size = x.shape[1]
      if size not in masks:
        raise ValueError(f"no face mask of size {size} for generation level {i}")
      x = MaskAffineNorm(self.gamma_kernel, self.beta_kernel, self.hidden_features, self.modulation,
                         norm=self.norm, dtype=self.dtype, conv_impl=self.conv_impl, name=f"fuse_{i}")(
                             x, masks[size], train=train)
      if not spec_order:
        x = act(x)
      if i < n:
        # "spade": the norm after this transposed conv is the next level's parameter-free
        # normalization (step b); a second one in between would be cancelled by it.
        x = _up(self.features[i], self.kernel_size, self.dtype, f"up_{i}", self.norm == "none", self.conv_impl)(x)
        if spec_order:
          x = act(layers.Norm(self.norm, dtype=self.dtype, name=f"up_{i}_norm")(x, train=train))
      else:
        x = _up(3, self.kernel_size, self.dtype, f"up_{i}", conv_impl=self.conv_impl)(x)
    return jnp.tanh(x.astype(jnp.float32))
