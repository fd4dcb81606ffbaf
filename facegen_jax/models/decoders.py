"""The two decoders (docs/method.md, "Decoders"): reconstruction and generation ("target
processing")."""

import dataclasses
from typing import Any, Optional, Sequence

import flax.linen as nn
import jax.numpy as jnp

from facegen_jax.models import layers
from facegen_jax.models.conv import ConvTranspose
from facegen_jax.models.mask_affine_norm import MaskAffineNorm


LEVEL_ORDERS = ("spade", "spec")


@dataclasses.dataclass(frozen=True)
class DecoderSettings:
  """What every level of both decoders shares.

  Attributes:
    kernel_size: kernel of the stride-2 transposed convolutions.
    norm: normalization after the transposed convs (one of layers.NORMS).
    activation: name of the decoder activation (layers.activation).
    dtype: computation dtype (parameters stay float32).
    conv_transpose: the transposed-convolution constructor (`ConvTranspose`-like), chosen by the
      model factory.
  """

  kernel_size: int = 4
  norm: str = "batch"
  activation: str = "relu"
  dtype: Any = jnp.float32
  conv_transpose: layers.ModuleDef = ConvTranspose

  def up(self, features: int, name: str, normed: bool = False, zero: bool = False) -> nn.Module:
    """A stride-2 transposed convolution that doubles H and W. With `normed` (a norm follows) and
    a norm configured it has no bias: the norm would cancel it, leaving a parameter whose
    gradient is zero. With `zero` its kernel starts at zero (so does its bias, always)."""
    init = {"kernel_init": nn.initializers.zeros} if zero else {}
    return self.conv_transpose(features, (self.kernel_size,) * 2, strides=(2, 2), padding="SAME",
                               use_bias=not normed or self.norm == "none", dtype=self.dtype, name=name, **init)

  def norm_layer(self, name: str) -> layers.Norm:
    return layers.Norm(self.norm, dtype=self.dtype, name=name)


class ReconstructionDecoder(nn.Module):
  """j >= 2 levels of `activation -> transposed conv -> norm`; the last outputs the image.

  Attributes:
    features: output channels of levels 1..j-1 (the intermediate outputs); level j outputs 3.
    settings: kernel, norm, activation, dtype and transposed convolution of every level.
  """

  features: Sequence[int]
  settings: DecoderSettings = DecoderSettings()

  @nn.compact
  def __call__(self, code: jnp.ndarray, *, train: bool) -> tuple[jnp.ndarray, list[jnp.ndarray]]:
    """Args: code `[B, h, w, C]`.

    Returns: the reconstructed image `[B, h * 2^j, w * 2^j, 3]` in [-1, 1] (tanh) and the
    intermediate outputs `[B, h * 2^k, w * 2^k, features[k-1]]` for k = 1..j-1.
    """
    if len(self.features) < 1:
      raise ValueError(f"ReconstructionDecoder needs j >= 2 levels (features for levels 1..j-1), got "
                       f"features={list(self.features)}")
    s = self.settings
    act = layers.activation(s.activation)
    x, intermediates = code, []
    for k, feats in enumerate(self.features):
      x = s.up(feats, f"up_{k}", normed=True)(act(x))
      x = s.norm_layer(f"norm_{k}")(x, train=train)
      intermediates.append(x)
    image = s.up(3, f"up_{len(self.features)}")(act(x))
    return jnp.tanh(image.astype(jnp.float32)), intermediates


class GenerationDecoder(nn.Module):
  """The target-processing levels: merge, fuse with the mask, decode (docs/method.md, "Decoders").

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
       - "spec": `transposed conv -> norm -> activation` (the order docs/method.md, "Decoders",
         writes), with no activation between (b) and the transposed conv.

  Attributes:
    features: output channels of the stem and of levels 1..n-1 (`len(features)` = n >= 2);
      the last level outputs 3.
    merge_levels: 1-based levels that concatenate a reconstruction output; None = all.
    settings: as in ReconstructionDecoder.
    fuse: the MaskAffineNorm constructor of step (b), its kernels, hidden features, modulation and
      convolution set (`functools.partial(MaskAffineNorm, ...)`); the decoder adds the norm and dtype.
    level_order: "spade" or "spec" (step c above).
    zero_output: the last transposed conv starts at zero, so the image starts at tanh(0) = 0: a
      correction that starts as none (the generator's residual mode adds it to the warped source).
  """

  features: Sequence[int]
  merge_levels: Optional[Sequence[int]] = None
  settings: DecoderSettings = DecoderSettings()
  fuse: layers.ModuleDef = MaskAffineNorm
  level_order: str = "spade"
  zero_output: bool = False

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
    s = self.settings
    act = layers.activation(s.activation)
    x = s.up(self.features[0], "stem", normed=True)(code)
    x = act(s.norm_layer("stem_norm")(x, train=train))
    for i in range(1, n + 1):
      if i in merge:
        x = jnp.concatenate([x, recon_outputs[i - 1].astype(x.dtype)], axis=-1)
      size = x.shape[1]
      if size not in masks:
        raise ValueError(f"no face mask of size {size} for generation level {i}")
      x = self.fuse(norm=s.norm, dtype=s.dtype, name=f"fuse_{i}")(x, masks[size], train=train)
      if not spec_order:
        x = act(x)
      if i < n:
        # "spade": the norm after this transposed conv is the next level's parameter-free
        # normalization (step b); a second one in between would be cancelled by it.
        x = s.up(self.features[i], f"up_{i}", normed=True)(x)
        if spec_order:
          x = act(s.norm_layer(f"up_{i}_norm")(x, train=train))
      else:
        x = s.up(3, f"up_{i}", zero=self.zero_output)(x)
    return jnp.tanh(x.astype(jnp.float32))
