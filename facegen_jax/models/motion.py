"""Landmark-driven motion inside the generator (docs/method.md, "Motion").

For every output pixel, where to read the source, from the two landmark sets with fixed anchors
on the frame border: "landmark_tps", a thin-plate spline that carries each driving landmark onto
the same landmark of the source face, solved per sample as a small dense linear system
(landmarks/tps.py), or "landmark_pwa", a piecewise-affine warp over a fixed triangle mesh
(landmarks/pwa.py). Each is written once for numpy and JAX; here the JAX form is what training
runs; at inference every runtime takes the flow `host_flow` computes in float64 as an input. The generator resamples the
reconstruction decoder's outputs (and the source image) by this flow, so what the generation
decoder fuses with the driving mask is already in the driving pose.

`MotionNet` refines the flow: from the driving mask, landmark heatmaps of the source and of the
driving face and the warped source, it predicts a bounded residual flow, one occlusion map per
decoder level (where the warped features are down-weighted so the decoder inpaints) and the
output blend mask `m` of `image = m * warp(source) + (1 - m) * decoded`.

Coordinates: landmarks come in crop pixels (x, y), pixel centres at integers. The flow is in
normalized coordinates, x and y in [-1, 1] across the frame (pixel j of n has centre
`(2 j + 1) / n - 1`), so one flow serves every decoder level.
"""

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from facegen_jax.landmarks import layout, pwa, tps

MOTIONS = ("none", "landmark_tps", "landmark_pwa")
ModuleDef = Any
DEFAULT_SMOOTHING = tps.DEFAULT_SMOOTHING
to_normalized, to_pixels = tps.to_normalized, tps.to_pixels  # plain arithmetic: any array


def border_anchors(per_side: int = tps.ANCHORS_PER_SIDE, dtype=jnp.float32) -> jnp.ndarray:
  """`tps.border_anchors` in JAX."""
  return tps.border_anchors(per_side, dtype, xp=jnp)


def _solve_each(lhs: jnp.ndarray, rhs: jnp.ndarray) -> jnp.ndarray:
  """`jnp.linalg.solve` one matrix at a time: XLA:CPU's batched LU kernel spreads a batch over the
  intra-op thread pool, and with several devices per process each device's kernel waited for pool
  threads the others held (the step hung); a single matrix is factored in place."""
  return jax.lax.map(lambda system: jnp.linalg.solve(*system), (lhs, rhs))


def tps_fit(controls: jnp.ndarray, values: jnp.ndarray, smoothing: float = DEFAULT_SMOOTHING):
  """`tps.fit` in JAX (LAPACK's LU, one matrix at a time): `(w [B, N, 2], a [B, 3, 2])`."""
  return tps.fit(controls, values, smoothing, xp=jnp, solve=_solve_each)


def tps_apply(controls: jnp.ndarray, w: jnp.ndarray, a: jnp.ndarray, points: jnp.ndarray) -> jnp.ndarray:
  """`tps.apply` in JAX: the fitted spline at `points` `[B, M, 2]` -> `[B, M, 2]`."""
  return tps.apply(controls, w, a, points, xp=jnp)


def pixel_grid(size: int, dtype=jnp.float32) -> jnp.ndarray:
  """Normalized (x, y) of every pixel centre of a `size` x `size` frame, `[size, size, 2]`."""
  return tps.pixel_grid(size, dtype, xp=jnp)


def landmark_map(source_landmarks: jnp.ndarray, driving_landmarks: jnp.ndarray, size: int, points: jnp.ndarray, *,
                 anchors_per_side: int = tps.ANCHORS_PER_SIDE, smoothing: float = DEFAULT_SMOOTHING) -> jnp.ndarray:
  """`tps.landmark_map` in JAX: the spline from the driving pose onto the source at normalized
  `points` `[B, M, 2]`, for landmarks `[B, 68, 2]` in pixels of a `size` crop."""
  return tps.landmark_map(source_landmarks, driving_landmarks, size, points, anchors_per_side=anchors_per_side,
                          smoothing=smoothing, xp=jnp, solve=_solve_each)


def landmark_flow(source_landmarks: jnp.ndarray, driving_landmarks: jnp.ndarray, size: int, *,
                  anchors_per_side: int = tps.ANCHORS_PER_SIDE, smoothing: float = DEFAULT_SMOOTHING) -> jnp.ndarray:
  """`tps.landmark_flow` in JAX: for each pixel of a `size` frame in the driving pose, where to
  sample the source, `[B, size, size, 2]` normalized (x, y) (what `warp` reads), from landmarks
  `[B, 68, 2]` in pixels of the `size` crop. In float32 it is within about 5e-6 of the frame size
  of the exact spline on ordinary faces (tests/motion_test.py); near-coincident driving landmarks
  cost more (landmarks/tps.py)."""
  return tps.landmark_flow(source_landmarks, driving_landmarks, size, anchors_per_side=anchors_per_side,
                           smoothing=smoothing, xp=jnp, solve=_solve_each)


def generator_flow(source_landmarks: jnp.ndarray, driving_landmarks: jnp.ndarray, resolution: int,
                   smoothing: float = DEFAULT_SMOOTHING, motion: str = "landmark_tps") -> jnp.ndarray:
  """The generator's flow at R/2 from landmarks in R crop pixels, in JAX: `tps.generator_flow`
  ("landmark_tps") or `pwa.generator_flow` ("landmark_pwa", which has no smoothing)."""
  if motion == "landmark_pwa":
    return pwa.generator_flow(source_landmarks, driving_landmarks, resolution, xp=jnp)
  return tps.generator_flow(source_landmarks, driving_landmarks, resolution, smoothing, xp=jnp, solve=_solve_each)


def host_flow(source_landmarks, driving_landmarks, resolution: int, smoothing: float = DEFAULT_SMOOTHING,
              motion: str = "landmark_tps"):
  """`generator_flow` in float64 numpy (`tps.host_flow` or `pwa.host_flow`), float32 `[B, R/2, R/2, 2]`."""
  if motion == "landmark_pwa":
    return pwa.host_flow(source_landmarks, driving_landmarks, resolution)
  return tps.host_flow(source_landmarks, driving_landmarks, resolution, smoothing)


def upsample_flow(flow: jnp.ndarray, size: int) -> jnp.ndarray:
  """A flow `[B, s, s, 2]` at a larger `size`: its displacement from the identity resized
  bilinearly (near-identity and smooth, unlike the coordinates themselves at the frame's edge)."""
  s = flow.shape[1]
  if s == size:
    return flow
  disp = flow - pixel_grid(s, flow.dtype)[None]
  disp = resize_linear(disp, size)
  return disp + pixel_grid(size, flow.dtype)[None]


def downsample_flow(flow: jnp.ndarray, size: int) -> jnp.ndarray:
  """A flow `[B, S, S, 2]` at `size` (S a power-of-two multiple of it): the mean over each block,
  which for normalized coordinates is the flow at the coarse pixel's centre (exact where affine)."""
  b, s, _, c = flow.shape
  if s == size:
    return flow
  f = s // size
  return flow.reshape(b, size, f, size, f, c).mean(axis=(2, 4))


def warp(features: jnp.ndarray, coords: jnp.ndarray) -> jnp.ndarray:
  """Bilinear resampling of `features` `[B, h, w, C]` at normalized (x, y) `coords` `[B, H, W, 2]`
  -> `[B, H, W, C]`; reads outside the frame take the nearest edge pixel. Differentiable in both."""
  b, h, w, c = features.shape
  coords = coords.astype(jnp.float32)
  x = jnp.clip((coords[..., 0] + 1.0) * (w / 2.0) - 0.5, 0.0, w - 1.0)
  y = jnp.clip((coords[..., 1] + 1.0) * (h / 2.0) - 0.5, 0.0, h - 1.0)
  x0, y0 = jnp.floor(x), jnp.floor(y)
  wx, wy = (x - x0)[..., None], (y - y0)[..., None]
  x0i, y0i = x0.astype(jnp.int32), y0.astype(jnp.int32)
  x1i, y1i = jnp.minimum(x0i + 1, w - 1), jnp.minimum(y0i + 1, h - 1)
  flat = features.reshape(b, h * w, c)
  out_hw = coords.shape[1:3]

  def gather(yi, xi):
    idx = (yi * w + xi).reshape(b, -1)
    return jax.vmap(lambda f, i: f[i])(flat, idx).reshape((b,) + out_hw + (c,)).astype(jnp.float32)

  top = gather(y0i, x0i) * (1.0 - wx) + gather(y0i, x1i) * wx
  bottom = gather(y1i, x0i) * (1.0 - wx) + gather(y1i, x1i) * wx
  return (top * (1.0 - wy) + bottom * wy).astype(features.dtype)


def part_heatmaps(landmarks: jnp.ndarray, size: int, frame_size: int, sigma: float = 0.05) -> jnp.ndarray:
  """One Gaussian heatmap per landmark part (`layout.PART_NAMES`), `[B, size, size, P]` in [0, 1]:
  the largest `exp(-d^2 / 2 sigma^2)` over the part's points (`sigma` in normalized units).

  `landmarks` are `[B, 68, 2]` pixels of a `frame_size` crop."""
  pts = to_normalized(landmarks.astype(jnp.float32), frame_size)
  grid = pixel_grid(size).reshape(1, size * size, 1, 2)
  g = jnp.exp(-jnp.sum(jnp.square(grid - pts[:, None]), -1) / (2.0 * sigma**2))  # [B, size^2, 68]
  maps = [g[..., lo:hi].max(axis=-1) for lo, hi, _ in layout.PARTS.values()]
  return jnp.stack(maps, axis=-1).reshape(landmarks.shape[0], size, size, len(maps))


def resize_map(x: jnp.ndarray, size: int) -> jnp.ndarray:
  """A map `[B, s, s, C]` at `size` (a power-of-two ratio): block mean down, bilinear up."""
  s = x.shape[1]
  if s == size:
    return x
  if s > size:
    return downsample_flow(x, size)
  return resize_linear(x, size)


def resize_linear(x: jnp.ndarray, size: int) -> jnp.ndarray:
  """`jax.image.resize(x, (B, size, size, C), "linear")` for a square map `[B, s, s, C]`, written as
  the `scale_and_translate` it runs (the same weights and contraction, so the same values): under
  jax2onnx, `jax.image.resize` becomes an ONNX Resize that needs a static batch size."""
  scale = jnp.full((2,), size / x.shape[1], jnp.result_type(float))
  return jax.image.scale_and_translate(x, (x.shape[0], size, size, x.shape[-1]), (1, 2), scale,
                                       jnp.zeros((2,), scale.dtype), "linear", antialias=True,
                                       precision=jax.lax.Precision.HIGHEST)


class MotionNet(nn.Module):
  """The learned part of the motion: residual flow, occlusion maps and the output blend mask.

  A small U-Net at `size` (two scales): from the driving mask, the source and driving landmark
  heatmaps, the TPS-warped source image and the TPS displacement, it predicts
  - `residual` `[B, size, size, 2]`: added to the TPS flow, bounded by `max_residual` (tanh;
    normalized units, so 0.1 is 5% of the frame);
  - `occlusion` `[B, size, size, L]` in (0, 1), one per decoder level (starts near 1: visible);
  - `blend` `[B, size, size, 1]` in (0, 1): where the output keeps the warped source.
  Heads that are switched off (`refine=False`, `blend=False`) are not built.

  Attributes:
    conv: the convolution constructor (`nn.Conv`-like), chosen by the model factory.
    num_levels: L, how many occlusion maps.
    features: channels of the first scale (the second has twice as many).
    refine, blend: which heads to build.
    max_residual: bound of the residual flow.
    blend_bias: initial logit of the blend mask (its head's bias).
  """

  conv: ModuleDef
  num_levels: int
  features: int = 32
  refine: bool = True
  blend: bool = True
  max_residual: float = 0.1
  blend_bias: float = 0.0

  @nn.compact
  def __call__(self, inputs: jnp.ndarray) -> dict[str, jnp.ndarray]:
    """Args: inputs `[B, size, size, C]` (size even). Returns the heads described above."""
    conv3 = functools.partial(self.conv, kernel_size=(3, 3), padding="SAME")
    x1 = nn.leaky_relu(conv3(self.features, name="in_0")(inputs), 0.2)
    x1 = nn.leaky_relu(conv3(self.features, name="in_1")(x1), 0.2)
    x2 = nn.leaky_relu(conv3(2 * self.features, strides=(2, 2), name="down")(x1), 0.2)
    x2 = nn.leaky_relu(conv3(2 * self.features, name="mid")(x2), 0.2)
    up = jnp.repeat(jnp.repeat(x2, 2, axis=1), 2, axis=2)
    x = nn.leaky_relu(conv3(self.features, name="out_0")(jnp.concatenate([up, x1], axis=-1)), 0.2)
    out = {}
    if self.refine:
      res = conv3(2, kernel_init=nn.initializers.zeros, name="residual")(x)
      out["residual"] = self.max_residual * jnp.tanh(res.astype(jnp.float32))
      occ = conv3(self.num_levels, bias_init=nn.initializers.constant(3.0), name="occlusion")(x)
      out["occlusion"] = jax.nn.sigmoid(occ.astype(jnp.float32))
    if self.blend:
      m = conv3(1, bias_init=nn.initializers.constant(self.blend_bias), name="blend")(x)
      out["blend"] = jax.nn.sigmoid(m.astype(jnp.float32))
    return out


def motion_inputs(source: jnp.ndarray, mask: jnp.ndarray, source_landmarks: jnp.ndarray,
                  driving_landmarks: jnp.ndarray, flow: jnp.ndarray, size: int) -> jnp.ndarray:
  """What MotionNet reads at `size`: driving mask, source and driving part heatmaps, the warped
  source and the displacement of the TPS flow from the identity, concatenated `[B, size, size, C]`."""
  r = source.shape[1]
  flow_s = downsample_flow(flow, size)
  warped = warp(resize_map(source.astype(jnp.float32), size), flow_s)
  displacement = flow_s - pixel_grid(size)[None]
  return jnp.concatenate([
      resize_map(mask.astype(jnp.float32), size),
      part_heatmaps(source_landmarks, size, r),
      part_heatmaps(driving_landmarks, size, r),
      warped, displacement], axis=-1)


def check_motion(motion: str) -> None:
  if motion not in MOTIONS:
    raise ValueError(f"model.motion must be one of {MOTIONS}, got {motion!r}")

