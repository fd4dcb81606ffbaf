"""Small building blocks shared by the generator and discriminator."""

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

ModuleDef = Any

NORMS = ("batch", "instance", "none")
MASK_RESIZE_METHODS = ("nearest", "bilinear", "area", "strided_conv")


class Norm(nn.Module):
  """Batch, instance or no normalization, chosen by name.

  With "batch" the statistics are those of the whole global batch: under `jax.jit` with the
  batch sharded over a device mesh, XLA reduces across devices (synchronized batch norm).

  Attributes:
    kind: one of NORMS.
    use_affine: learn a per-channel scale and bias.
    momentum: running-average momentum ("batch" only).
  """

  kind: str = "batch"
  use_affine: bool = True
  momentum: float = 0.9
  epsilon: float = 1e-5
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, *, train: bool) -> jnp.ndarray:
    if self.kind == "batch":
      return nn.BatchNorm(
          use_running_average=not train, momentum=self.momentum, epsilon=self.epsilon,
          use_scale=self.use_affine, use_bias=self.use_affine, dtype=self.dtype)(x)
    if self.kind == "instance":
      return nn.InstanceNorm(
          epsilon=self.epsilon, use_scale=self.use_affine, use_bias=self.use_affine, dtype=self.dtype)(x)
    if self.kind == "none":
      return x
    raise ValueError(f"unknown norm {self.kind!r}; choose one of {NORMS}")


def activation(name: str):
  """Returns the activation function called `name` (relu, leaky_relu, gelu, silu)."""
  table = {
      "relu": nn.relu,
      "leaky_relu": lambda x: nn.leaky_relu(x, 0.2),
      "gelu": nn.gelu,
      "silu": nn.silu,
  }
  if name not in table:
    raise ValueError(f"unknown activation {name!r}; choose one of {sorted(table)}")
  return table[name]


def resize_mask(mask: jnp.ndarray, size: int, method: str) -> jnp.ndarray:
  """Down-samples a face mask `[B, H, W, M]` to `[B, size, size, M]` without parameters.

  Methods: "nearest" (jax.image.resize's nearest pixels; a strided slice where `size` divides the
  input), "bilinear" (anti-aliased) or "area" (mean over each `H/size` block; the
  sizes in facegen-jax are powers of two, so blocks tile exactly).
  """
  b, h, w, m = mask.shape
  if h == size and w == size:
    return mask
  if method == "nearest":
    if h % size == 0 and w % size == 0:
      # jax.image.resize's nearest pixel of output pixel i is input pixel floor((i + 0.5) * f): for
      # a whole factor f that is the strided slice below (the same values), which exports to ONNX
      # as a plain Slice (jax2onnx 0.17.1 converts the resize wrongly).
      fh, fw = h // size, w // size
      return mask[:, fh // 2::fh, fw // 2::fw]
    return jax.image.resize(mask, (b, size, size, m), "nearest")
  if method == "bilinear":
    return jax.image.resize(mask, (b, size, size, m), "linear", antialias=True)
  if method == "area":
    if h % size or w % size:
      raise ValueError(f"area resize needs {h}x{w} to be a multiple of {size}")
    return mask.reshape(b, size, h // size, size, w // size, m).mean(axis=(2, 4))
  raise ValueError(f"unknown mask resize method {method!r}; choose one of {MASK_RESIZE_METHODS}")


class MaskPyramid(nn.Module):
  """The level-i face masks: the first mask resized to each requested size.

  Attributes:
    sizes: the output sizes (each divides the input size by a power of two).
    method: one of MASK_RESIZE_METHODS; "strided_conv" learns the down-sampling with a chain of
      3x3 stride-2 convolutions (`features` channels each, leaky ReLU), one per halving.
    features: channels of the strided-conv path.
    conv: the convolution constructor (`nn.Conv`-like), chosen by the model factory.
  """

  sizes: Sequence[int]
  method: str = "nearest"
  features: int = 16
  dtype: jnp.dtype = jnp.float32
  conv: ModuleDef = nn.Conv

  @nn.compact
  def __call__(self, mask: jnp.ndarray) -> dict[int, jnp.ndarray]:
    """Args: mask `[B, H, W, M]` in [0, 1]. Returns {size: `[B, size, size, M']`}."""
    if self.method not in MASK_RESIZE_METHODS:
      raise ValueError(f"unknown mask resize method {self.method!r}; choose one of {MASK_RESIZE_METHODS}")
    if self.method != "strided_conv":
      return {s: resize_mask(mask, s, self.method) for s in self.sizes}
    out, x, size = {}, mask.astype(self.dtype), mask.shape[1]
    wanted = set(self.sizes)
    if size in wanted:
      out[size] = x
    while size > min(wanted):
      conv = self.conv(self.features, (3, 3), strides=(2, 2), padding="SAME", dtype=self.dtype,
                       name=f"down_{size // 2}")
      x = nn.leaky_relu(conv(x), 0.2)
      size //= 2
      if size in wanted:
        out[size] = x
    return out
