"""The piecewise-affine (PWA) warp between two landmark sets: for each pixel of a frame in the
driving pose, where to read the source (docs/method.md, "Motion"; `model.motion="landmark_pwa"`).

One fixed mesh: the Delaunay triangles of a mean face's 68 landmarks plus the spline's 16 frame
border anchors (`tps.border_anchors`, which stay fixed), computed once. The triangles are laid on
the driving landmarks; each pixel takes the affine map of the triangle it lies deepest in (the
largest smallest barycentric coordinate: the triangle that holds it, or where a fold leaves it in
none, the nearest one, extrapolated) and reads the source at the same barycentric point of that
triangle on the source landmarks. Where neither mesh folds it carries each driving landmark exactly
onto its source landmark (where one folds, as the thin mouth triangles can, overlapping triangles
compete and the deepest wins), like the classical warp
of `evaluation/baselines.py`, whose per-sample Delaunay mesh it trades for a fixed one so it runs
batched, jit-compiled and with fixed shapes under the device mesh. Written once against an array
module `xp`: numpy (the default; no jax import; `host_flow`, the generator's `tps_flow` input at
inference, in float64) or jax.numpy (the in-graph flow training computes).

Coordinates as in landmarks/tps.py: landmarks in crop pixels (x, y), the flow in normalized
coordinates, x and y in [-1, 1] across the frame.
"""

import functools

import numpy as np

from facegen_jax.landmarks import layout, tps

# Where the mean face sits in a crop, in normalized units: crops are 1.8x the landmark box
# (landmarks/crop.py), so the box's longest side spans 2 / 1.8 of the [-1, 1] frame.
_TEMPLATE_SCALE = 2.0 / 1.8
# A triangle whose driving area is below this (normalized units squared) is left out of the choice.
_MIN_AREA = 1e-12


@functools.lru_cache(maxsize=None)
def triangles() -> np.ndarray:
  """The mesh's triangles `[K, 3]`: indices into the 68 landmarks followed by the 16 anchors."""
  import scipy.spatial  # pylint: disable=import-outside-toplevel  # only here, once
  points = np.concatenate([layout.MEAN_FACE.astype(np.float64) * _TEMPLATE_SCALE,
                           tps.border_anchors(tps.ANCHORS_PER_SIDE, np.float64)])
  return scipy.spatial.Delaunay(points).simplices.astype(np.int32)


def mesh_points(landmarks, size: int, xp=np):
  """The mesh's vertices for landmarks `[B, 68, 2]` in pixels of a `size` crop: `[B, 84, 2]`
  normalized, the 16 border anchors last, in the landmarks' precision (at least float32)."""
  dtype = xp.result_type(landmarks, xp.float32)
  anchors = xp.broadcast_to(tps.border_anchors(tps.ANCHORS_PER_SIDE, dtype, xp),
                            (landmarks.shape[0], 4 * tps.ANCHORS_PER_SIDE, 2))
  return xp.concatenate([tps.to_normalized(landmarks.astype(dtype), size), anchors], axis=1)


def map_points(src, drv, points, xp=np):
  """Each of `points` `[B, M, 2]` (normalized, in the driving frame) read through the deepest
  triangle of the mesh on `drv` (`[B, 84, 2]`, `mesh_points`), at the same barycentric point of
  that triangle on `src`: `[B, M, 2]`."""
  tri = triangles()
  d0, d1, d2 = drv[:, tri[:, 0]], drv[:, tri[:, 1]], drv[:, tri[:, 2]]  # [B, K, 2]
  e1, e2 = d1 - d0, d2 - d0
  det = e1[..., 0] * e2[..., 1] - e1[..., 1] * e2[..., 0]  # [B, K]
  usable = xp.abs(det) > _MIN_AREA
  det = xp.where(usable, det, 1.0)
  rel = points[:, :, None, :] - d0[:, None]  # [B, M, K, 2]
  b1 = (rel[..., 0] * e2[:, None, :, 1] - rel[..., 1] * e2[:, None, :, 0]) / det[:, None]
  b2 = (e1[:, None, :, 0] * rel[..., 1] - e1[:, None, :, 1] * rel[..., 0]) / det[:, None]
  b0 = 1.0 - b1 - b2
  depth = xp.minimum(xp.minimum(b0, b1), b2)
  depth = xp.where(usable[:, None], depth, -xp.inf)
  k = xp.argmax(depth, axis=-1)[..., None]  # [B, M, 1]: the triangle each point reads through
  pick = lambda a: xp.take_along_axis(a, k, axis=-1)  # pylint: disable=unnecessary-lambda-assignment
  w0, w1, w2 = pick(b0), pick(b1), pick(b2)  # [B, M, 1]
  s0, s1, s2 = src[:, tri[:, 0]], src[:, tri[:, 1]], src[:, tri[:, 2]]  # [B, K, 2]
  pick_vertex = lambda s: xp.take_along_axis(s, k, axis=1)  # pylint: disable=unnecessary-lambda-assignment
  return w0 * pick_vertex(s0) + w1 * pick_vertex(s1) + w2 * pick_vertex(s2)


def landmark_flow(source_landmarks, driving_landmarks, size: int, xp=np):
  """`[B, size, size, 2]` normalized (x, y) source coordinates for each pixel centre of a `size`
  frame in the driving pose, from landmarks `[B, 68, 2]` in pixels of the `size` crop, in the
  landmarks' precision (at least float32)."""
  b = source_landmarks.shape[0]
  dtype = xp.result_type(source_landmarks, driving_landmarks, xp.float32)
  src = mesh_points(source_landmarks.astype(dtype), size, xp)
  drv = mesh_points(driving_landmarks.astype(dtype), size, xp)
  grid = xp.broadcast_to(tps.pixel_grid(size, dtype, xp).reshape(1, size * size, 2), (b, size * size, 2))
  return map_points(src, drv, grid, xp).reshape(b, size, size, 2)


def generator_flow(source_landmarks, driving_landmarks, resolution: int, xp=np):
  """The flow of a generator of `resolution` R with this motion, `[B, R/2, R/2, 2]`, from
  landmarks `[B, 68, 2]` in pixels of the R crop (at R/2, as `tps.generator_flow`)."""
  size = tps.flow_size(resolution)
  scale = size / resolution
  return landmark_flow(layout.rescale(source_landmarks, scale), layout.rescale(driving_landmarks, scale), size, xp=xp)


def rasterized_flow(source_landmarks: np.ndarray, driving_landmarks: np.ndarray, size: int) -> np.ndarray:
  """`landmark_flow` of one pair (`[68, 2]` pixels of the `size` crop, float64), triangle by
  triangle over each one's bounding box: `[size, size, 2]`, the same flow for a fraction of the work.

  A triangle that holds a pixel (depth >= 0) has it in its bounding box, so the pass over the
  boxes finds every pixel's deepest holding triangle, the first index winning ties as argmax
  does; a pixel no usable triangle holds (with the border anchors fixed the mesh covers the frame,
  so only rounding on a shared edge or a left-out degenerate triangle leaves one) is read by
  `map_points` over all triangles."""
  drv = mesh_points(driving_landmarks[None], size)[0]
  src = mesh_points(source_landmarks[None], size)[0]
  tri = triangles()
  grid = tps.pixel_grid(size, np.float64)
  best = np.full((size, size), -np.inf)
  out = np.zeros((size, size, 2))
  for k, (i0, i1, i2) in enumerate(tri):
    d0, d1, d2 = drv[i0], drv[i1], drv[i2]
    e1, e2 = d1 - d0, d2 - d0
    det = e1[0] * e2[1] - e1[1] * e2[0]
    if abs(det) <= _MIN_AREA:
      continue
    corners = np.stack([d0, d1, d2])
    lo = np.clip(np.floor((corners.min(0) + 1.0) * (size / 2.0) - 0.5).astype(int), 0, size - 1)
    hi = np.clip(np.ceil((corners.max(0) + 1.0) * (size / 2.0) - 0.5).astype(int), 0, size - 1)
    rows, cols = slice(lo[1], hi[1] + 1), slice(lo[0], hi[0] + 1)
    rel = grid[rows, cols] - d0
    b1 = (rel[..., 0] * e2[1] - rel[..., 1] * e2[0]) / det
    b2 = (e1[0] * rel[..., 1] - e1[1] * rel[..., 0]) / det
    b0 = 1.0 - b1 - b2
    depth = np.minimum(np.minimum(b0, b1), b2)
    region = best[rows, cols]
    take = (depth >= 0) & (depth > region)
    region[take] = depth[take]
    mapped = b0[..., None] * src[i0] + b1[..., None] * src[i1] + b2[..., None] * src[i2]
    out[rows, cols][take] = mapped[take]
  holes = ~(best >= 0)
  if holes.any():
    out[holes] = map_points(src[None], drv[None], grid[holes][None])[0]
  return out


def host_flow(source_landmarks, driving_landmarks, resolution: int) -> np.ndarray:
  """`generator_flow` in float64 numpy (`rasterized_flow`, one sample at a time), as float32
  `[B, R/2, R/2, 2]`: the generator's `tps_flow` input in every runtime."""
  src = np.asarray(source_landmarks, np.float64)
  drv = np.asarray(driving_landmarks, np.float64)
  if src.shape != drv.shape or src.ndim != 3 or src.shape[1:] != (layout.NUM_LANDMARKS, 2):
    raise ValueError(f"landmarks must be [B, 68, 2] crop pixels, got {src.shape} and {drv.shape}")
  size = tps.flow_size(resolution)
  scale = size / resolution
  return np.stack([rasterized_flow(layout.rescale(s, scale), layout.rescale(d, scale), size)
                   for s, d in zip(src, drv)]).astype(np.float32)
