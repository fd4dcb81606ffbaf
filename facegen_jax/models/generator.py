"""The generator (docs/method.md): texture encoder, reconstruction decoder, mask-fused generation
decoder, and optionally the landmark-driven warp ("Motion (landmark-driven warping)")."""

import functools
import math
from typing import Optional, Sequence

import flax.linen as nn
import jax.numpy as jnp

from facegen_jax.models import layers
from facegen_jax.models import motion as motion_lib
from facegen_jax.models.conv import ConvTranspose
from facegen_jax.models.decoders import DecoderSettings, GenerationDecoder, ReconstructionDecoder
from facegen_jax.models.encoder import TextureEncoder
from facegen_jax.models.mask_affine_norm import MaskAffineNorm


def num_levels(resolution: int, bottleneck_size: int) -> int:
  """s, the number of encoder layers: how many halvings take `resolution` to `bottleneck_size`.

  Raises ValueError for a resolution that is not a power of two or leaves fewer than 3 levels
  (the generation decoder needs n = s - 1 >= 2).
  """
  if resolution <= 0 or resolution & (resolution - 1):
    raise ValueError(f"resolution must be a power of two (64, 128, 256, 512), got {resolution}")
  if bottleneck_size <= 0 or bottleneck_size & (bottleneck_size - 1):
    raise ValueError(f"bottleneck_size must be a power of two, got {bottleneck_size}")
  s = int(math.log2(resolution // bottleneck_size))
  if s < 3:
    raise ValueError(f"resolution {resolution} with bottleneck {bottleneck_size} gives {s} encoder layers; "
                     "at least 3 are needed (use resolution >= 8 * bottleneck_size)")
  return s


def level_features(s: int, base_features: int, max_features: int) -> list[int]:
  """Encoder channels of layers 1..s: base doubling per layer, capped at max_features."""
  return [min(base_features * 2**k, max_features) for k in range(s)]


class Generator(nn.Module):
  """One-shot reenactment generator.

  `Generator(...)(source, mask)` encodes the source face into a texture code, decodes it back
  into a reconstruction of the source (a training signal), and decodes it a second time into the
  target image, fusing the driving face mask at every level and concatenating the matching
  reconstruction-decoder outputs.

  Attributes:
    resolution: input and output size (power of two).
    bottleneck_size: spatial size of the texture code; s = log2(resolution / bottleneck_size).
    base_features, max_features: channel plan (doubling per encoder layer, capped).
    merge_levels: generation levels (1..s-1) that concatenate a reconstruction output; None = all.
    mask_resize: how the first mask is resized per level (see layers.MASK_RESIZE_METHODS).
    encoder_kernel, decoder_kernel: kernels of the stride-2 convs and transposed convs.
    norm: normalization of encoder and decoders ("batch" in the method).
    activation: decoder activation.
    gamma_kernel, beta_kernel, hidden_features, modulation: MaskAffineNorm settings.
    level_order: generation-decoder order, "spade" or "spec" (see GenerationDecoder).
    motion: "none" (the decoders alone move the texture), "landmark_tps" or "landmark_pwa": the
      reconstruction outputs are warped into the driving pose by a flow from the landmarks (a
      thin-plate spline, or a piecewise-affine mesh) before the generation decoder concatenates
      them (models/motion.py).
    motion_refiner: with motion, a learned residual flow and per-level occlusion maps.
    motion_blend: with motion, the output is `m * warp(source) + (1 - m) * decoded`, m learned.
    motion_residual: with motion, the generation decoder's image is a correction added to the
      warped source (`decoded = clip(warp(source) + decoder, -1, 1)`), so where the decoder has
      nothing to add (a face it never saw) the output stays the warp; off, it is the image itself.
      The decoder's last layer starts at zero, so an untrained generator outputs the warp.
    motion_features: channels of the MotionNet.
    motion_max_residual: bound of the residual flow (normalized units; 0.1 = 5% of the frame).
    motion_blend_bias: initial logit of the blend mask (2.0: the output starts 88% warp).
    motion_smoothing: ridge of the TPS solve (0 = exact interpolation).
    dtype: computation dtype (parameters stay float32).
    conv, conv_transpose: the convolution and transposed-convolution constructors (`nn.Conv`- and
      `conv.ConvTranspose`-like) of every layer, chosen by the model factory (models/conv/).
  """

  resolution: int = 256
  bottleneck_size: int = 8
  base_features: int = 64
  max_features: int = 512
  merge_levels: Optional[Sequence[int]] = None
  mask_resize: str = "nearest"
  encoder_kernel: int = 4
  decoder_kernel: int = 4
  norm: str = "batch"
  activation: str = "relu"
  gamma_kernel: int = 3
  beta_kernel: int = 1
  hidden_features: Optional[int] = 64
  modulation: str = "residual"
  dtype: jnp.dtype = jnp.float32
  conv: layers.ModuleDef = nn.Conv
  conv_transpose: layers.ModuleDef = ConvTranspose
  level_order: str = "spade"
  motion: str = "none"
  motion_refiner: bool = True
  motion_blend: bool = True
  motion_features: int = 32
  motion_max_residual: float = 0.1
  motion_blend_bias: float = 0.0
  motion_residual: bool = False
  motion_smoothing: float = motion_lib.DEFAULT_SMOOTHING

  @property
  def encoder_features(self) -> list[int]:
    return level_features(num_levels(self.resolution, self.bottleneck_size), self.base_features, self.max_features)

  @nn.compact
  def __call__(self, source: jnp.ndarray, mask: jnp.ndarray, source_landmarks: Optional[jnp.ndarray] = None,
               driving_landmarks: Optional[jnp.ndarray] = None, *, train: bool,
               tps_flow: Optional[jnp.ndarray] = None) -> dict[str, jnp.ndarray]:
    """Args:
      source: reference face `[B, R, R, 3]` in [-1, 1].
      mask: first face mask (from the pose) `[B, R, R, M]` in [0, 1].
      source_landmarks, driving_landmarks: `[B, 68, 2]` (x, y) crop pixels of the source face and
        of the pose the mask was rendered from; read only by a generator with motion.
      train: batch norm in training mode (batch statistics) or with its running statistics.
      tps_flow: with motion, the spline's flow `[B, R/2, R/2, 2]` of these landmarks computed
        outside (inference: `landmarks.tps.host_flow`, float64); None solves it here, in the
        inputs' precision and differentiably (training).

    Returns: {"generated": `[B, R, R, 3]`, "reconstructed": `[B, R, R, 3]`}, both in [-1, 1]; with
    motion also "warped" (the source warped by the final flow, `[B, R, R, 3]`) and, with the
    output blend, "blend_mask" (`[B, R, R, 1]` in [0, 1], 1 = keep the warped source) and
    "decoded" (the generation decoder's image before the blend).
    """
    motion_lib.check_motion(self.motion)
    r = self.resolution
    if source.shape[1:3] != (r, r) or mask.shape[1:3] != (r, r):
      raise ValueError(f"Generator(resolution={r}) got source {source.shape} and mask {mask.shape}")
    enc = self.encoder_features
    dec = enc[-2::-1]  # channels at sizes 2h, 4h, ..., R/2
    code, _ = TextureEncoder(enc, kernel_size=self.encoder_kernel, norm=self.norm, dtype=self.dtype, conv=self.conv,
                             name="encoder")(source, train=train)
    settings = DecoderSettings(kernel_size=self.decoder_kernel, norm=self.norm, activation=self.activation,
                               dtype=self.dtype, conv_transpose=self.conv_transpose)
    reconstructed, recon_outputs = ReconstructionDecoder(dec, settings=settings, name="reconstruction_decoder")(
        code, train=train)
    sizes = [code.shape[1] * 2**k for k in range(1, len(dec) + 1)]
    masks = layers.MaskPyramid(sizes, self.mask_resize, dtype=self.dtype, conv=self.conv, name="mask_pyramid")(mask)
    extra = {}
    if self.motion != "none":
      recon_outputs, extra = self._warp(source, mask, source_landmarks, driving_landmarks, tps_flow, recon_outputs,
                                        sizes)
    residual = self.motion != "none" and self.motion_residual
    fuse = functools.partial(MaskAffineNorm, gamma_kernel=self.gamma_kernel, beta_kernel=self.beta_kernel,
                             hidden_features=self.hidden_features, modulation=self.modulation, conv=self.conv)
    generated = GenerationDecoder(dec, merge_levels=self.merge_levels, settings=settings, fuse=fuse,
                                  level_order=self.level_order, zero_output=residual, name="generation_decoder")(
                                      code, recon_outputs, masks, train=train)
    if residual:
      generated = jnp.clip(extra["warped"].astype(generated.dtype) + generated, -1.0, 1.0)
    if "blend_mask" in extra:
      m = extra["blend_mask"]
      extra["decoded"] = generated
      generated = m * extra["warped"] + (1.0 - m) * generated
    return {"generated": generated, "reconstructed": reconstructed, **extra}

  def _warp(self, source, mask, source_landmarks, driving_landmarks, tps_flow, recon_outputs, sizes):
    """The reconstruction outputs in the driving pose (occlusion-weighted), and the warped source
    and blend mask for the output."""
    if source_landmarks is None or driving_landmarks is None:
      raise ValueError(f"Generator(motion={self.motion!r}) needs source_landmarks and driving_landmarks")
    r = self.resolution
    # The spline at the largest decoder level (R/2; a quarter of the kernel evaluations of R):
    # the levels below average it down, the full-size source warp upsamples its displacement.
    if tps_flow is None:
      flow = motion_lib.generator_flow(source_landmarks, driving_landmarks, r, self.motion_smoothing, self.motion)
    else:
      want = (source.shape[0], r // 2, r // 2, 2)
      if tuple(tps_flow.shape) != want:
        raise ValueError(f"Generator(resolution={r}) got tps_flow {tps_flow.shape}, wants {want}")
      flow = tps_flow.astype(jnp.float32)
    heads = {}
    if self.motion_refiner or self.motion_blend:
      net_size = r // 4
      conv = functools.partial(self.conv, dtype=self.dtype)
      inputs = motion_lib.motion_inputs(source, mask, source_landmarks, driving_landmarks, flow, net_size)
      heads = motion_lib.MotionNet(conv, num_levels=len(sizes), features=self.motion_features,
                                   refine=self.motion_refiner, blend=self.motion_blend,
                                   max_residual=self.motion_max_residual, blend_bias=self.motion_blend_bias,
                                   name="motion_net")(inputs.astype(self.dtype))
    if "residual" in heads:
      flow = flow + motion_lib.resize_map(heads["residual"], r // 2)
    warped_outputs = []
    for k, (feats, size) in enumerate(zip(recon_outputs, sizes)):
      x = motion_lib.warp(feats, motion_lib.downsample_flow(flow, size))
      if "occlusion" in heads:
        x = x * motion_lib.resize_map(heads["occlusion"][..., k:k + 1], size).astype(x.dtype)
      warped_outputs.append(x)
    extra = {"warped": motion_lib.warp(source.astype(jnp.float32), motion_lib.upsample_flow(flow, r))}
    if "blend" in heads:
      extra["blend_mask"] = motion_lib.resize_map(heads["blend"], r)
    return warped_outputs, extra
