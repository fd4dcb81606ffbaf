"""Reference methods every evaluation report carries beside the model.

A *method* is a callable
  `method(source_image, source_landmarks, driving_image, driving_landmarks) -> image`
with images uint8 `[H, W, 3]` (all the same size) and landmarks float `[68, 2]` (x, y) pixels.

- `copy_source`: the source frame unchanged: what a model scores when it ignores the pose.
- `landmark_warp`: the classical answer: a piecewise-affine warp of the source through a Delaunay
  triangulation of its 68 landmarks plus fixed image-border points, each triangle carried onto the
  same triangle of the driving landmarks. It moves the face's geometry exactly and invents nothing
  (no teeth, no occluded regions): what a learned model must beat on texture.
"""

from typing import Callable, Dict

import numpy as np
import scipy.ndimage
import scipy.spatial

Method = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def copy_source(source_image: np.ndarray, source_landmarks: np.ndarray, driving_image: np.ndarray,
                driving_landmarks: np.ndarray) -> np.ndarray:
  """The source frame as the output."""
  del source_landmarks, driving_image, driving_landmarks
  return np.asarray(source_image, np.uint8).copy()


def border_points(height: int, width: int, per_side: int = 4) -> np.ndarray:
  """`per_side` evenly spaced points along each image edge (corners included), `[N, 2]` (x, y)."""
  xs = np.linspace(0, width - 1, per_side + 1)
  ys = np.linspace(0, height - 1, per_side + 1)
  top = np.stack([xs, np.zeros_like(xs)], -1)
  bottom = np.stack([xs, np.full_like(xs, height - 1)], -1)
  left = np.stack([np.zeros_like(ys[1:-1]), ys[1:-1]], -1)
  right = np.stack([np.full_like(ys[1:-1], width - 1), ys[1:-1]], -1)
  return np.concatenate([top, bottom, left, right]).astype(np.float64)


def piecewise_affine_coords(source_points: np.ndarray, target_points: np.ndarray, height: int, width: int,
                            triangles: np.ndarray) -> np.ndarray:
  """For each output pixel, where to sample the source: `[2, H, W]` (row, col) coordinates.

  `triangles` `[T, 3]` index both point sets. Each pixel inside target triangle t takes the
  barycentric coordinates it has there and maps to the same barycentric point of source triangle
  t. Where folded triangles overlap, the later triangle wins; uncovered pixels map to themselves.
  Vectorised as one pass over triangles, each touching only the pixels of its bounding box.
  """
  ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
  map_x, map_y = xs.copy(), ys.copy()
  for tri in triangles:
    d, s = target_points[tri], source_points[tri]
    x0, y0 = np.floor(d.min(0)).astype(int)
    x1, y1 = np.ceil(d.max(0)).astype(int)
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, width - 1), min(y1, height - 1)
    if x1 < x0 or y1 < y0:
      continue
    # Solve [d1 - d0, d2 - d0] @ (b1, b2) = p - d0 for every pixel p of the box.
    m = np.stack([d[1] - d[0], d[2] - d[0]], -1)
    det = np.linalg.det(m)
    if abs(det) < 1e-9:
      continue
    inv = np.linalg.inv(m)
    px = xs[y0:y1 + 1, x0:x1 + 1] - d[0, 0]
    py = ys[y0:y1 + 1, x0:x1 + 1] - d[0, 1]
    b1 = inv[0, 0] * px + inv[0, 1] * py
    b2 = inv[1, 0] * px + inv[1, 1] * py
    inside = (b1 >= -1e-6) & (b2 >= -1e-6) & (b1 + b2 <= 1 + 1e-6)
    sx = s[0, 0] + b1 * (s[1, 0] - s[0, 0]) + b2 * (s[2, 0] - s[0, 0])
    sy = s[0, 1] + b1 * (s[1, 1] - s[0, 1]) + b2 * (s[2, 1] - s[0, 1])
    map_x[y0:y1 + 1, x0:x1 + 1] = np.where(inside, sx, map_x[y0:y1 + 1, x0:x1 + 1])
    map_y[y0:y1 + 1, x0:x1 + 1] = np.where(inside, sy, map_y[y0:y1 + 1, x0:x1 + 1])
  return np.stack([map_y, map_x])


def landmark_warp(source_image: np.ndarray, source_landmarks: np.ndarray, driving_image: np.ndarray,
                  driving_landmarks: np.ndarray) -> np.ndarray:
  """Piecewise-affine warp of the source so its landmarks land on the driving landmarks.

  The mesh is a Delaunay triangulation of the source landmarks plus image-border points (which
  stay fixed, so the background bends smoothly and the whole frame is covered); the same triangles
  are placed on the driving landmarks and the source is sampled bilinearly.
  """
  del driving_image
  source_image = np.asarray(source_image)
  height, width = source_image.shape[:2]
  limit = np.array([width - 1, height - 1], np.float64)
  border = border_points(height, width)
  # Landmarks on or past the edge would leave the border hull: keep them just inside.
  src = np.concatenate([np.clip(np.asarray(source_landmarks, np.float64), 1, limit - 1), border])
  dst = np.concatenate([np.clip(np.asarray(driving_landmarks, np.float64), 1, limit - 1), border])
  triangles = scipy.spatial.Delaunay(src).simplices
  coords = piecewise_affine_coords(src, dst, height, width, triangles)
  channels = [scipy.ndimage.map_coordinates(source_image[..., c].astype(np.float32), coords, order=1,
                                            mode="nearest") for c in range(source_image.shape[-1])]
  return np.clip(np.round(np.stack(channels, -1)), 0, 255).astype(np.uint8)


BASELINES: Dict[str, Method] = {"copy-source": copy_source, "landmark-warp": landmark_warp}
