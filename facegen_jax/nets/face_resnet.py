"""dlib's face-recognition ResNet (`dlib_face_recognition_resnet_model_v1`) in Flax.

The network of dlib's `examples/dnn_face_recognition_ex.cpp` (its `anet_type`):

    loss_metric<fc_no_bias<128, avg_pool_everything<
      alevel0<alevel1<alevel2<alevel3<alevel4<
      max_pool<3,3,2,2, relu<affine<con<32,7,7,2,2, input_rgb_image_sized<150>>>>>>>>>>>>

with `alevel4` = 3 residual blocks of 32 channels, `alevel3` = a down-sampling block + 3 blocks
of 64, `alevel2` = down + 2 of 128, `alevel1` = down + 2 of 256, `alevel0` = down of 256. A block
is `conv3x3 -> affine -> relu -> conv3x3 -> affine`, added to its input, then relu; in a
down-sampling block the first conv has stride 2 and the shortcut is a 2x2 average pool whose
output is added to the block's with dlib's zero-padding rule (the sum takes the larger of the
two shapes and treats missing channels / rows as zeros). The affines are dlib's batch norms
folded into per-channel scale and shift. dlib's convolutions with stride 2 have no padding
(`con_`'s default padding is `size // 2` only for stride 1); these values come from the file.

Input: the 150x150 RGB chip, `(pixel - mean_rgb) / 256`. Output: the 128-D descriptor dlib's
`compute_face_descriptor` returns, plus intermediate feature maps for a perceptual loss.
"""

from typing import Dict, List, Sequence, Tuple

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from facegen_jax.nets import dlib_format

CHIP_SIZE = 150
# (channels, number of blocks, first block down-samples) from the input side (alevel4) to alevel0.
LEVELS: Tuple[Tuple[int, int, bool], ...] = (
    (32, 3, False), (64, 4, True), (128, 3, True), (256, 3, True), (256, 1, True))


def _structure() -> List[str]:
  """The nesting of layers, tags and skips as `dlib_format.read_network` expects (outer first)."""
  ares = ["layer"] * 7 + ["tag"]  # relu, add_prev1, affine, con, relu, affine, con, tag1
  ares_down = ["layer"] * 3 + ["skip", "tag"] + ["layer"] * 5 + ["tag"]  # relu, add_prev2, avg_pool, skip1, tag2, ...
  out = ["layer", "layer"]  # fc_no_bias, avg_pool_everything
  for _, blocks, down in reversed(LEVELS):
    out += ares * (blocks - int(down)) + (ares_down if down else [])
  return out + ["layer"] * 4  # max_pool, relu, affine, con


STRUCTURE = tuple(_structure())


class ChannelAffine(nn.Module):
  """dlib's `affine_` layer in CONV_MODE: `x * scale[c] + bias[c]` (a folded batch norm)."""

  features: int

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    scale = self.param("scale", nn.initializers.ones, (self.features,))
    bias = self.param("bias", nn.initializers.zeros, (self.features,))
    return x * scale + bias


def add_zero_padded(a: jnp.ndarray, b: jnp.ndarray) -> jnp.ndarray:
  """dlib's `add_prev`: sum of `[B, h, w, c]` tensors of different shapes, missing entries = 0."""
  shape = tuple(max(s, t) for s, t in zip(a.shape, b.shape))

  def pad(x):
    return jnp.pad(x, [(0, s - d) for s, d in zip(shape, x.shape)])

  return pad(a) + pad(b)


class ResidualBlock(nn.Module):
  """`relu(add_prev(block(x), shortcut(x)))` with dlib's block of two 3x3 convs and affines."""

  features: int
  downsample: bool

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    stride = 2 if self.downsample else 1
    pad1 = 0 if self.downsample else 1  # dlib: padding = size // 2 only when stride == 1
    y = nn.Conv(self.features, (3, 3), strides=stride, padding=((pad1, pad1), (pad1, pad1)), name="conv1")(x)
    y = nn.relu(ChannelAffine(self.features, name="affine1")(y))
    y = nn.Conv(self.features, (3, 3), padding=((1, 1), (1, 1)), name="conv2")(y)
    y = ChannelAffine(self.features, name="affine2")(y)
    shortcut = nn.avg_pool(x, (2, 2), strides=(2, 2)) if self.downsample else x
    return nn.relu(add_zero_padded(y, shortcut))


class FaceRecognitionResNet(nn.Module):
  """The 29-conv ResNet behind dlib's 128-D face descriptor.

  Attributes:
    mean_rgb: dlib's input mean, subtracted from 0..255 pixels before dividing by 256.
  """

  mean_rgb: Tuple[float, float, float] = (122.782, 117.001, 104.298)

  @nn.compact
  def __call__(self, chips: jnp.ndarray) -> Dict[str, object]:
    """Args: chips `[B, 150, 150, 3]` RGB in [-1, 1] (dlib face chips). Returns a dict:
    `descriptor` `[B, 128]` (dlib's raw output), `embedding` `[B, 128]` (L2-normalised) and
    `features`: `[B, 35, 35, 32]` (stem), then the outputs of the 32-, 64-, 128- and 256-channel
    levels `[B, 35, 35, 32]`, `[B, 17, 17, 64]`, `[B, 8, 8, 128]`, `[B, 4, 4, 256]`.
    """
    x = ((chips.astype(jnp.float32) + 1.0) * 127.5 - jnp.asarray(self.mean_rgb, jnp.float32)) / 256.0
    x = nn.Conv(32, (7, 7), strides=2, padding="VALID", name="stem_conv")(x)
    x = nn.relu(ChannelAffine(32, name="stem_affine")(x))
    x = nn.max_pool(x, (3, 3), strides=(2, 2), padding="VALID")
    features = [x]
    i = 0
    for level, (channels, blocks, down) in enumerate(LEVELS):
      for b in range(blocks):
        x = ResidualBlock(channels, downsample=down and b == 0, name=f"block{i:02d}")(x)
        i += 1
      if level < len(LEVELS) - 1:
        features.append(x)
    x = jnp.mean(x, axis=(1, 2))  # avg_pool_everything
    descriptor = nn.Dense(128, use_bias=False, name="fc")(x)
    norm = jnp.sqrt(jnp.sum(descriptor * descriptor, axis=-1, keepdims=True) + 1e-12)
    return {"descriptor": descriptor, "embedding": descriptor / norm, "features": features}


def _conv_params(layer: dlib_format.Layer, stride: int, padding: int, kernel: int) -> Dict[str, np.ndarray]:
  a = layer.attrs
  if (a["nr"], a["nc"], a["stride_y"], a["stride_x"], a["padding_y"], a["padding_x"]) != (
      kernel, kernel, stride, stride, padding, padding):
    raise dlib_format.DlibFormatError(
        f"conv layer {a} differs from the architecture ({kernel}x{kernel}, stride {stride}, pad {padding})")
  return {"kernel": np.transpose(layer.arrays["filters"], (2, 3, 1, 0)),  # [out,in,kh,kw] -> HWIO
          "bias": layer.arrays["biases"]}


def _affine_params(layer: dlib_format.Layer) -> Dict[str, np.ndarray]:
  if layer.attrs["mode"] != 0 or layer.attrs["disabled"]:
    raise dlib_format.DlibFormatError(f"expected a per-channel affine layer, got {layer.attrs}")
  return {"scale": layer.arrays["gamma"], "bias": layer.arrays["beta"]}


def params_from_dlib(network: dlib_format.Network) -> Dict[str, object]:
  """Maps the parsed dlib layers (innermost first) onto `FaceRecognitionResNet`'s parameters."""
  layers = iter(network.layers)

  def expect(*kinds: str) -> List[dlib_format.Layer]:
    got = [next(layers) for _ in kinds]
    if [l.kind for l in got] != list(kinds):
      raise dlib_format.DlibFormatError(f"expected layers {kinds}, found {[l.version for l in got]}")
    return got

  params = {}
  conv, affine, _, pool = expect("con", "affine", "relu", "max_pool")
  params["stem_conv"] = _conv_params(conv, 2, 0, 7)
  params["stem_affine"] = _affine_params(affine)
  if (pool.attrs["nr"], pool.attrs["stride_y"], pool.attrs["padding_y"]) != (3, 2, 0):
    raise dlib_format.DlibFormatError(f"unexpected max pool {pool.attrs}")
  i = 0
  for _, blocks, down in LEVELS:
    for b in range(blocks):
      is_down = down and b == 0
      c1, a1, _, c2, a2 = expect("con", "affine", "relu", "con", "affine")
      if is_down:
        (avg,) = expect("avg_pool")
        if (avg.attrs["nr"], avg.attrs["stride_y"], avg.attrs["padding_y"]) != (2, 2, 0):
          raise dlib_format.DlibFormatError(f"unexpected shortcut pool {avg.attrs}")
      expect("add_prev", "relu")
      params[f"block{i:02d}"] = {
          "conv1": _conv_params(c1, 2 if is_down else 1, 0 if is_down else 1, 3),
          "affine1": _affine_params(a1), "conv2": _conv_params(c2, 1, 1, 3), "affine2": _affine_params(a2)}
      i += 1
  (avg, fc) = expect("avg_pool", "fc")
  if avg.attrs["nr"] != 0 or fc.attrs["bias_mode"] != 1:
    raise dlib_format.DlibFormatError("expected avg_pool_everything then fc_no_bias")
  params["fc"] = {"kernel": fc.arrays["weights"]}  # [256, 128]
  if next(layers, None) is not None:
    raise dlib_format.DlibFormatError("more layers in the file than in the architecture")
  return {"params": params}


def input_mean(network: dlib_format.Network) -> Tuple[float, float, float]:
  a = network.input.attrs
  if (a.get("nr"), a.get("nc")) != (CHIP_SIZE, CHIP_SIZE):
    raise dlib_format.DlibFormatError(f"expected a {CHIP_SIZE}x{CHIP_SIZE} input layer, got {a}")
  return (a["avg_red"], a["avg_green"], a["avg_blue"])
