"""Landmark-driven motion inside the generator (docs/method.md, "Motion").

For every output pixel, where to read the source: a thin-plate spline (TPS) that carries each
driving landmark onto the same landmark of the source face, with fixed anchors on the frame
border, solved per sample as a small dense linear system. The generator resamples the
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

from facegen_jax.landmarks import layout

MOTIONS = ("none", "landmark_tps")
ModuleDef = Any

# Ridge added to the kernel matrix's diagonal: keeps the system solvable when two driving
# landmarks coincide (the inner lips of a closed mouth) at a cost far below a pixel elsewhere.
DEFAULT_SMOOTHING = 1e-7


def to_normalized(points: jnp.ndarray, size: int) -> jnp.ndarray:
  """Crop pixels (x, y) of a `size` frame -> normalized [-1, 1] coordinates."""
  return (points + 0.5) * (2.0 / size) - 1.0


def to_pixels(points: jnp.ndarray, size: int) -> jnp.ndarray:
  """Normalized [-1, 1] coordinates -> pixels (x, y) of a `size` frame."""
  return (points + 1.0) * (size / 2.0) - 0.5


def border_anchors(per_side: int = 4, dtype=jnp.float32) -> jnp.ndarray:
  """`4 * per_side` fixed points on the frame's outer edge (corners included), normalized."""
  t = jnp.linspace(-1.0, 1.0, per_side + 1, dtype=dtype)
  one = jnp.ones(per_side, dtype)
  top = jnp.stack([t[:-1], -one], -1)
  right = jnp.stack([one, t[:-1]], -1)
  bottom = jnp.stack([-t[:-1], one], -1)
  left = jnp.stack([-one, -t[:-1]], -1)
  return jnp.concatenate([top, right, bottom, left])


def _tps_kernel(d2: jnp.ndarray) -> jnp.ndarray:
  """U(r) = r^2 log r from squared distances (0 at r = 0, with a finite gradient there)."""
  safe = jnp.where(d2 > 0, d2, 1.0)
  return jnp.where(d2 > 0, 0.5 * safe * jnp.log(safe), 0.0)


def _sq_dist(a: jnp.ndarray, b: jnp.ndarray) -> jnp.ndarray:
  """`[B, N, 2] x [B, M, 2] -> [B, N, M]` squared distances."""
  return jnp.sum(jnp.square(a[:, :, None, :] - b[:, None, :, :]), axis=-1)


def solve_elimination(a: jnp.ndarray, b: jnp.ndarray) -> jnp.ndarray:
  """`jnp.linalg.solve(a, b)` for `a` `[B, n, n]`, `b` `[B, n, k]` by Gaussian elimination with
  partial pivoting, as two `fori_loop`s of plain array operations (argmax, select, multiply-add):
  no LAPACK custom call, so it exports to StableHLO for any platform and to ONNX (a Loop; ONNX
  has no linear solve, and jax2onnx turns `lu` into per-element scatters). Row swaps are
  selects, so they are exact; the results agree with LAPACK's to the system's conditioning."""
  n = a.shape[-1]  # the loop bodies take everything through their carry (jax2onnx's Loop needs that)

  def eliminate(j, m):
    rows = jnp.arange(n)
    col = jax.lax.dynamic_index_in_dim(m, j, axis=2, keepdims=False)  # [B, n + k] -> [B, n]
    p = jnp.argmax(jnp.where(rows[None] >= j, jnp.abs(col), -1.0), axis=-1)  # the pivot row
    at_p = (rows[None] == p[:, None])[..., None]  # [B, n, 1]
    row_p = jnp.sum(jnp.where(at_p, m, 0.0), axis=1)  # exact: one non-zero term
    row_j = jax.lax.dynamic_index_in_dim(m, j, axis=1, keepdims=False)
    m = jnp.where((rows == j)[None, :, None], row_p[:, None], jnp.where(at_p, row_j[:, None], m))
    pivot = jax.lax.dynamic_index_in_dim(row_p, j, axis=1)  # [B, 1]
    col = jax.lax.dynamic_index_in_dim(m, j, axis=2, keepdims=False)
    factors = jnp.where(rows[None] > j, col / pivot, 0.0)
    return m - factors[..., None] * row_p[:, None]

  def substitute(i, carry):
    m, x = carry
    j = n - 1 - i
    row = jax.lax.dynamic_index_in_dim(m, j, axis=1, keepdims=False)  # [B, n + k]
    value = row[:, n:] - jnp.einsum("bi,bik->bk", row[:, :n], x)  # the rows of x from j on are still 0
    diagonal = jax.lax.dynamic_index_in_dim(row, j, axis=1)
    return m, jnp.where((jnp.arange(n) == j)[None, :, None], (value / diagonal)[:, None], x)

  m = jax.lax.fori_loop(0, n, eliminate, jnp.concatenate([a, b], axis=-1))
  return jax.lax.fori_loop(0, n, substitute, (m, jnp.zeros_like(b)))[1]


SOLVES = ("lapack", "elimination")


def tps_fit(controls: jnp.ndarray, values: jnp.ndarray, smoothing: float = DEFAULT_SMOOTHING, solve: str = "lapack"):
  """Solves the thin-plate spline through `controls` -> `values` (`[B, N, 2]` each).

  The interpolant is `f(p) = sum_i w_i U(|p - c_i|) + a_0 + a_1 x + a_2 y` with
  `(K + smoothing I) w + P a = values` and `P^T w = 0` (scipy's `RBFInterpolator` with
  `kernel="thin_plate_spline"`, `degree=1` solves the same system). Returns `(w [B, N, 2],
  a [B, 3, 2])`, in the inputs' precision (float32, or float64 where JAX has x64 enabled).
  `solve`: "lapack" (`jnp.linalg.solve`, one matrix at a time) or "elimination"
  (`solve_elimination`, what exported generators use).
  """
  if solve not in SOLVES:
    raise ValueError(f"solve must be one of {SOLVES}, got {solve!r}")
  dtype = jnp.result_type(controls, values, jnp.float32)
  controls, values = controls.astype(dtype), values.astype(dtype)
  b, n, _ = controls.shape
  k = _tps_kernel(_sq_dist(controls, controls)) + smoothing * jnp.eye(n, dtype=dtype)
  p = jnp.concatenate([jnp.ones((b, n, 1), dtype), controls], axis=-1)
  top = jnp.concatenate([k, p], axis=-1)
  bottom = jnp.concatenate([jnp.swapaxes(p, 1, 2), jnp.zeros((b, 3, 3), dtype)], axis=-1)
  lhs = jnp.concatenate([top, bottom], axis=1)
  rhs = jnp.concatenate([values, jnp.zeros((b, 3, 2), dtype)], axis=1)
  # One matrix at a time: XLA:CPU's batched LU kernel spreads a batch over the intra-op thread
  # pool, and with several devices per process each device's kernel waited for pool threads the
  # others held (the step hung); a single matrix is factored in place.
  if solve == "elimination":
    sol = solve_elimination(lhs, rhs)
  else:
    sol = jax.lax.map(lambda system: jnp.linalg.solve(*system), (lhs, rhs))
  return sol[:, :n], sol[:, n:]


def tps_apply(controls: jnp.ndarray, w: jnp.ndarray, a: jnp.ndarray, points: jnp.ndarray) -> jnp.ndarray:
  """The fitted spline at `points` `[B, M, 2]` -> `[B, M, 2]`."""
  u = _tps_kernel(_sq_dist(points.astype(w.dtype), controls.astype(w.dtype)))
  return jnp.einsum("bmn,bnd->bmd", u, w) + a[:, 0][:, None] + jnp.einsum("bmk,bkd->bmd", points, a[:, 1:])


def pixel_grid(size: int, dtype=jnp.float32) -> jnp.ndarray:
  """Normalized (x, y) of every pixel centre of a `size` x `size` frame, `[size, size, 2]`."""
  c = (2.0 * jnp.arange(size, dtype=dtype) + 1.0) / size - 1.0
  xs, ys = jnp.meshgrid(c, c, indexing="xy")
  return jnp.stack([xs, ys], axis=-1)


def landmark_map(source_landmarks: jnp.ndarray, driving_landmarks: jnp.ndarray, size: int, points: jnp.ndarray, *,
                 anchors_per_side: int = 4, smoothing: float = DEFAULT_SMOOTHING, solve: str = "lapack") -> jnp.ndarray:
  """The TPS from the driving pose onto the source at normalized `points` `[B, M, 2]`.

  Args:
    source_landmarks, driving_landmarks: `[B, 68, 2]` (x, y) pixels of a `size` x `size` crop.

  Returns: `[B, M, 2]` normalized (x, y) source coordinates, in the landmarks' precision (at least
  float32). The spline runs through every landmark pair and keeps the border anchors fixed.
  """
  b = source_landmarks.shape[0]
  dtype = jnp.result_type(source_landmarks, driving_landmarks, jnp.float32)
  anchors = jnp.broadcast_to(border_anchors(anchors_per_side, dtype), (b, 4 * anchors_per_side, 2))
  drv = jnp.concatenate([to_normalized(driving_landmarks.astype(dtype), size), anchors], axis=1)
  src = jnp.concatenate([to_normalized(source_landmarks.astype(dtype), size), anchors], axis=1)
  # The spline interpolates the displacement (source - driving), a few hundredths of the frame,
  # not the positions: float32's rounding then scales with the motion, not with the frame.
  w, a = tps_fit(drv, src - drv, smoothing, solve)
  points = points.astype(dtype)
  return points + tps_apply(drv, w, a, points)


def landmark_flow(source_landmarks: jnp.ndarray, driving_landmarks: jnp.ndarray, size: int, *,
                  anchors_per_side: int = 4, smoothing: float = DEFAULT_SMOOTHING, solve: str = "lapack") -> jnp.ndarray:
  """The TPS flow: for each pixel of a `size` frame in the driving pose, where to sample the source.

  `landmark_map` at every pixel centre: `[B, size, size, 2]` normalized (x, y) source coordinates
  (what `warp` reads), from landmarks `[B, 68, 2]` in pixels of the `size` crop. In float32 it is
  within about 5e-6 of the frame size of the exact spline (tests/motion_test.py).
  """
  b = source_landmarks.shape[0]
  dtype = jnp.result_type(source_landmarks, driving_landmarks, jnp.float32)
  grid = jnp.broadcast_to(pixel_grid(size, dtype).reshape(1, size * size, 2), (b, size * size, 2))
  return landmark_map(source_landmarks, driving_landmarks, size, grid, anchors_per_side=anchors_per_side,
                      smoothing=smoothing, solve=solve).reshape(b, size, size, 2)


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

