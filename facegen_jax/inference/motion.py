"""Driving landmarks -> the landmarks the source should take (see docs/method.md, Motion).

"absolute": the driving frame's landmarks as they are (right for self-reenactment; for another
person it imposes the driver's face shape).
"relative" (FOMM's relative keypoint transfer, the default for cross-identity driving): the
source's own landmarks plus the driving motion relative to a reference driving frame,
    out = source + (driving - driving_reference) * s,
where `s` = sqrt(area of the source's landmark hull / area of the reference driving frame's), so
a small driver face moving 10 px moves a large source face proportionally more.
"""

import numpy as np
from scipy.spatial import ConvexHull

MOTIONS = ("relative", "absolute")


def hull_area(landmarks: np.ndarray) -> float:
  return float(ConvexHull(np.asarray(landmarks, np.float64)).volume)  # 2-D "volume" is the area


def transfer(source: np.ndarray, driving: np.ndarray, driving_reference: np.ndarray, motion: str = "relative",
             adapt_scale: bool = True) -> np.ndarray:
  """Landmarks `[68, 2]` for the output frame. `driving` may be `[T, 68, 2]` (a whole clip)."""
  if motion == "absolute":
    return np.asarray(driving, np.float32)
  if motion != "relative":
    raise ValueError(f"unknown motion {motion!r}; choose one of {MOTIONS}")
  scale = np.sqrt(hull_area(source) / hull_area(driving_reference)) if adapt_scale else 1.0
  out = np.asarray(source, np.float32) + (np.asarray(driving, np.float32) - np.asarray(driving_reference, np.float32)) * scale
  return out.astype(np.float32)
