"""The thin-plate spline (TPS) between two landmark sets: for each pixel of a frame in the driving
pose, where to read the source (docs/method.md, "Motion").

The spline carries each driving landmark onto the same landmark of the source face, with fixed
anchors on the frame border, solved per sample as a small dense linear system of `68 + 16 + 3`
unknowns. It is written once, against an array module `xp`: numpy (the default; no jax import) or
jax.numpy (models/motion.py: the generator's differentiable in-graph spline, what training runs).

`host_flow` is the flow a generator with motion warps by at inference, computed here in float64
and given to every runtime (JAX, its StableHLO export, the ONNX graph) as the input `tps_flow`:
when two driving landmarks nearly coincide (the inner lips of a closed mouth, a quarter pixel
apart) the spline's weights grow to thousands, and in float32 both the solve and the evaluation's
sum lose up to 0.2 px of the flow to rounding (measured on the bundled clip against float64; the
solve's condition number reaches ~2e6). Two float32 programs that sum in their own order then
disagree by about as much, and bilinear sampling at a sharp edge turns that into visible pixels.
In float64 the rounding is ~1e-9 px, so every runtime warps by the same flow.

Coordinates: landmarks come in crop pixels (x, y), pixel centres at integers. The flow is in
normalized coordinates, x and y in [-1, 1] across the frame (pixel j of n has centre
`(2 j + 1) / n - 1`).
"""

from typing import Callable, Optional

import numpy as np

from facegen_jax.landmarks import layout

# Ridge added to the kernel matrix's diagonal: keeps the system solvable when two driving
# landmarks coincide (the inner lips of a closed mouth) at a cost far below a pixel elsewhere.
DEFAULT_SMOOTHING = 1e-7
ANCHORS_PER_SIDE = 4


def to_normalized(points, size: int):
  """Crop pixels (x, y) of a `size` frame -> normalized [-1, 1] coordinates."""
  return (points + 0.5) * (2.0 / size) - 1.0


def to_pixels(points, size: int):
  """Normalized [-1, 1] coordinates -> pixels (x, y) of a `size` frame."""
  return (points + 1.0) * (size / 2.0) - 0.5


def border_anchors(per_side: int = ANCHORS_PER_SIDE, dtype=np.float32, xp=np):
  """`4 * per_side` fixed points on the frame's outer edge (corners included), normalized."""
  t = xp.linspace(-1.0, 1.0, per_side + 1, dtype=dtype)
  one = xp.ones(per_side, dtype)
  top = xp.stack([t[:-1], -one], -1)
  right = xp.stack([one, t[:-1]], -1)
  bottom = xp.stack([-t[:-1], one], -1)
  left = xp.stack([-one, -t[:-1]], -1)
  return xp.concatenate([top, right, bottom, left])


def kernel(d2, xp=np):
  """U(r) = r^2 log r from squared distances (0 at r = 0, with a finite gradient there)."""
  safe = xp.where(d2 > 0, d2, 1.0)
  return xp.where(d2 > 0, 0.5 * safe * xp.log(safe), 0.0)


def sq_dist(a, b, xp=np):
  """`[B, N, 2] x [B, M, 2] -> [B, N, M]` squared distances. numpy adds x and y apart (its sum over
  a trailing axis of 2 is ten times slower; the same values); XLA fuses the sum (the form training
  has always run: XLA fuses the other form with other rounding)."""
  if xp is np:
    return np.square(a[:, :, None, 0] - b[:, None, :, 0]) + np.square(a[:, :, None, 1] - b[:, None, :, 1])
  return xp.sum(xp.square(a[:, :, None, :] - b[:, None, :, :]), axis=-1)


def fit(controls, values, smoothing: float = DEFAULT_SMOOTHING, xp=np, solve: Optional[Callable] = None):
  """Solves the thin-plate spline through `controls` -> `values` (`[B, N, 2]` each).

  The interpolant is `f(p) = sum_i w_i U(|p - c_i|) + a_0 + a_1 x + a_2 y` with
  `(K + smoothing I) w + P a = values` and `P^T w = 0` (scipy's `RBFInterpolator` with
  `kernel="thin_plate_spline"`, `degree=1` solves the same system). Returns `(w [B, N, 2],
  a [B, 3, 2])` in the inputs' precision (at least float32). `solve(lhs [B, n, n], rhs [B, n, 2])`
  defaults to `xp.linalg.solve`.
  """
  dtype = xp.result_type(controls, values, xp.float32)
  controls, values = controls.astype(dtype), values.astype(dtype)
  b, n, _ = controls.shape
  k = kernel(sq_dist(controls, controls, xp), xp) + smoothing * xp.eye(n, dtype=dtype)
  p = xp.concatenate([xp.ones((b, n, 1), dtype), controls], axis=-1)
  top = xp.concatenate([k, p], axis=-1)
  bottom = xp.concatenate([xp.swapaxes(p, 1, 2), xp.zeros((b, 3, 3), dtype)], axis=-1)
  lhs = xp.concatenate([top, bottom], axis=1)
  rhs = xp.concatenate([values, xp.zeros((b, 3, 2), dtype)], axis=1)
  sol = (solve or xp.linalg.solve)(lhs, rhs)
  return sol[:, :n], sol[:, n:]


def apply(controls, w, a, points, xp=np):
  """The fitted spline at `points` `[B, M, 2]` -> `[B, M, 2]`."""
  u = kernel(sq_dist(points.astype(w.dtype), controls.astype(w.dtype), xp), xp)
  return xp.einsum("bmn,bnd->bmd", u, w) + a[:, 0][:, None] + xp.einsum("bmk,bkd->bmd", points, a[:, 1:])


def pixel_grid(size: int, dtype=np.float32, xp=np):
  """Normalized (x, y) of every pixel centre of a `size` x `size` frame, `[size, size, 2]`."""
  c = (2.0 * xp.arange(size, dtype=dtype) + 1.0) / size - 1.0
  xs, ys = xp.meshgrid(c, c, indexing="xy")
  return xp.stack([xs, ys], axis=-1)


def landmark_map(source_landmarks, driving_landmarks, size: int, points, *, anchors_per_side: int = ANCHORS_PER_SIDE,
                 smoothing: float = DEFAULT_SMOOTHING, xp=np, solve: Optional[Callable] = None):
  """The TPS from the driving pose onto the source at normalized `points` `[B, M, 2]`.

  Args:
    source_landmarks, driving_landmarks: `[B, 68, 2]` (x, y) pixels of a `size` x `size` crop.

  Returns: `[B, M, 2]` normalized (x, y) source coordinates, in the landmarks' precision (at least
  float32). The spline runs through every landmark pair and keeps the border anchors fixed.
  """
  b = source_landmarks.shape[0]
  dtype = xp.result_type(source_landmarks, driving_landmarks, xp.float32)
  anchors = xp.broadcast_to(border_anchors(anchors_per_side, dtype, xp), (b, 4 * anchors_per_side, 2))
  drv = xp.concatenate([to_normalized(driving_landmarks.astype(dtype), size), anchors], axis=1)
  src = xp.concatenate([to_normalized(source_landmarks.astype(dtype), size), anchors], axis=1)
  # The spline interpolates the displacement (source - driving), a few hundredths of the frame,
  # not the positions: the rounding then scales with the motion, not with the frame.
  w, a = fit(drv, src - drv, smoothing, xp, solve)
  points = points.astype(dtype)
  return points + apply(drv, w, a, points, xp)


def landmark_flow(source_landmarks, driving_landmarks, size: int, *, anchors_per_side: int = ANCHORS_PER_SIDE,
                  smoothing: float = DEFAULT_SMOOTHING, xp=np, solve: Optional[Callable] = None):
  """`landmark_map` at every pixel centre of a `size` frame: `[B, size, size, 2]` normalized (x, y)
  source coordinates (what `models.motion.warp` reads), from landmarks `[B, 68, 2]` in pixels of
  the `size` crop."""
  b = source_landmarks.shape[0]
  dtype = xp.result_type(source_landmarks, driving_landmarks, xp.float32)
  grid = xp.broadcast_to(pixel_grid(size, dtype, xp).reshape(1, size * size, 2), (b, size * size, 2))
  return landmark_map(source_landmarks, driving_landmarks, size, grid, anchors_per_side=anchors_per_side,
                      smoothing=smoothing, xp=xp, solve=solve).reshape(b, size, size, 2)


def flow_size(resolution: int) -> int:
  """The size of the generator's flow: its largest decoder level, R/2 (a quarter of the kernel
  evaluations of R; the levels below average it down, the full-size warp upsamples it)."""
  return resolution // 2


def generator_flow(source_landmarks, driving_landmarks, resolution: int, smoothing: float = DEFAULT_SMOOTHING, xp=np,
                   solve: Optional[Callable] = None):
  """The flow of a generator of `resolution` R with motion, `[B, R/2, R/2, 2]`: the spline at
  `flow_size(R)` from landmarks `[B, 68, 2]` in pixels of the R crop."""
  size = flow_size(resolution)
  scale = size / resolution
  return landmark_flow(layout.rescale(source_landmarks, scale), layout.rescale(driving_landmarks, scale), size,
                       smoothing=smoothing, xp=xp, solve=solve)


def host_flow(source_landmarks, driving_landmarks, resolution: int, smoothing: float = DEFAULT_SMOOTHING) -> np.ndarray:
  """`generator_flow` in float64 numpy, one sample at a time (a `[(R/2)^2, 84, 2]` array at most),
  as float32 `[B, R/2, R/2, 2]`: the generator's `tps_flow` input in every runtime."""
  src = np.asarray(source_landmarks, np.float64)
  drv = np.asarray(driving_landmarks, np.float64)
  if src.shape != drv.shape or src.ndim != 3 or src.shape[1:] != (layout.NUM_LANDMARKS, 2):
    raise ValueError(f"landmarks must be [B, 68, 2] crop pixels, got {src.shape} and {drv.shape}")
  size = flow_size(resolution)
  out = np.empty((len(src), size, size, 2), np.float32)
  for i in range(len(src)):
    out[i] = generator_flow(src[i:i + 1], drv[i:i + 1], resolution, smoothing)[0]
  return out
