"""Random landmark perturbation: the poses of the perturbed kind of training sample
(see docs/method.md, Sample kinds).

A face's own landmarks with its facial features and/or its contour moved: each feature group
(`FEATURE_GROUPS`: each brow, the nose, each eye, the mouth) is translated as a rigid group and
optionally scaled about its centroid; the contour (the 17 jaw points) is translated as a group.

Magnitudes are **fractions of the face size** (the longer side of the landmarks' bounding box),
so one configuration means the same at every crop resolution and face scale: with
`feature_shift=0.05` each feature group moves by up to 5% of the face size. Each translation is
drawn uniformly from the disc of that radius; each scale factor uniformly from
`[1 - feature_scale, 1 + feature_scale]`. The result is clipped into the image.
"""

from typing import Sequence, Tuple, Union

import numpy as np

from facegen_jax.landmarks import layout

# Groups that move together. Nose bridge and base are one group, outer and inner lips are one.
FEATURE_GROUPS = {
    "right_brow": tuple(range(17, 22)),
    "left_brow": tuple(range(22, 27)),
    "nose": tuple(range(27, 36)),
    "right_eye": tuple(range(36, 42)),
    "left_eye": tuple(range(42, 48)),
    "mouth": tuple(range(48, 68)),
}
CONTOUR_GROUP = layout.CONTOUR


def face_size(landmarks: np.ndarray) -> float:
  """Longer side of the landmarks' bounding box, in pixels: the unit of the perturbation."""
  pts = np.asarray(landmarks, np.float64)
  return float(np.max(pts.max(0) - pts.min(0)))


def _disc(rng: np.random.Generator, radius: float) -> np.ndarray:
  """A point drawn uniformly from the disc of `radius` around 0."""
  angle = rng.uniform(0.0, 2.0 * np.pi)
  r = radius * np.sqrt(rng.uniform(0.0, 1.0))
  return np.array([r * np.cos(angle), r * np.sin(angle)])


def perturb_landmarks(landmarks: np.ndarray, rng: np.random.Generator, *, feature_shift: float,
                      contour_shift: float, feature_scale: float = 0.0,
                      image_size: Union[int, Tuple[int, int], Sequence[int]]) -> np.ndarray:
  """Moves feature groups and the contour of one face at random.

  Args:
    landmarks: `[68, 2]` (x, y) pixels, iBUG order.
    rng: numpy generator (the only source of randomness: same state, same result).
    feature_shift: largest translation of each feature group, fraction of the face size.
    contour_shift: largest translation of the jaw contour, fraction of the face size.
    feature_scale: largest relative size change of each feature group (0.1: x0.9 .. x1.1).
    image_size: `S` or `(H, W)` of the image the landmarks live in; the result is clipped to
      `[0, W - 1] x [0, H - 1]`.

  Returns:
    float32 `[68, 2]`.
  """
  pts = np.asarray(landmarks, np.float64)
  if pts.shape != (layout.NUM_LANDMARKS, 2) or not np.all(np.isfinite(pts)):
    raise ValueError(f"landmarks must be finite [68, 2], got shape {pts.shape}")
  for name, value in (("feature_shift", feature_shift), ("contour_shift", contour_shift),
                      ("feature_scale", feature_scale)):
    if not 0.0 <= value < 1.0:
      raise ValueError(f"{name} must be in [0, 1) (a fraction of the face size), got {value}")
  h, w = (int(image_size), int(image_size)) if np.ndim(image_size) == 0 else map(int, image_size)
  unit = face_size(pts)
  out = pts.copy()
  for idx in FEATURE_GROUPS.values():
    idx = list(idx)
    centre = pts[idx].mean(0)
    scale = 1.0 + rng.uniform(-feature_scale, feature_scale)
    out[idx] = centre + (pts[idx] - centre) * scale + _disc(rng, feature_shift * unit)
  out[list(CONTOUR_GROUP)] += _disc(rng, contour_shift * unit)
  out[:, 0] = np.clip(out[:, 0], 0.0, w - 1.0)
  out[:, 1] = np.clip(out[:, 1], 0.0, h - 1.0)
  return out.astype(np.float32)
