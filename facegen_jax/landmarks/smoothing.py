"""Temporal smoothing of per-frame landmarks: the One-Euro filter (Casiez, Roussel, Vogel, CHI 2012).

A first-order low-pass filter whose cutoff frequency rises with the speed of the signal: still
faces get a low cutoff (jitter removed), fast motion a high one (little lag). Causal, so it runs
online frame by frame (`OneEuroFilter`) or over a whole track (`smooth_landmarks`).

    cutoff = min_cutoff + beta * speed,    speed = |d landmark / dt| / face size

Speeds are measured per landmark point in **face sizes per second** (face size = longer side of
the landmarks' bounding box), so the same `beta` works for any face size and resolution. Defaults
(min_cutoff 1.0 Hz, beta 16, derivative cutoff 1 Hz; also those of `landmarks.video.track_frames`)
were chosen on the talking-head clips of ../shared/faces: they remove most of dlib's frame-to-frame
jitter while a face moving at one face size per second lags by under 1% of its size (at 25 fps).
"""

import dataclasses
from typing import Optional

import numpy as np

from facegen_jax.landmarks.perturb import face_size


def _alpha(cutoff, dt: float):
  tau = 1.0 / (2.0 * np.pi * cutoff)
  return 1.0 / (1.0 + tau / dt)


@dataclasses.dataclass
class OneEuroFilter:
  """Online One-Euro filter for one face's `[68, 2]` landmarks (see module docstring).

  Attributes:
    fps: frame rate of the track (frames per second).
    min_cutoff: cutoff frequency at rest, Hz (lower: smoother, more lag when slow).
    beta: speed coefficient, Hz per (face size / s) (higher: less lag when fast, more jitter).
    d_cutoff: cutoff frequency of the speed estimate, Hz.
  """
  fps: float = 25.0
  min_cutoff: float = 1.0
  beta: float = 16.0
  d_cutoff: float = 1.0
  _x: Optional[np.ndarray] = dataclasses.field(default=None, repr=False)
  _dx: Optional[np.ndarray] = dataclasses.field(default=None, repr=False)

  def reset(self) -> None:
    """Forget the past (call after a gap in the track)."""
    self._x = self._dx = None

  def __call__(self, landmarks: np.ndarray) -> np.ndarray:
    """Filters the next frame's `[N, 2]` landmarks; returns float32 `[N, 2]`."""
    x = np.asarray(landmarks, np.float64)
    if self._x is None:
      self._x, self._dx = x.copy(), np.zeros_like(x)
      return x.astype(np.float32)
    dt = 1.0 / float(self.fps)
    dx = (x - self._x) / dt
    self._dx = self._dx + _alpha(self.d_cutoff, dt) * (dx - self._dx)
    speed = np.linalg.norm(self._dx, axis=-1, keepdims=True) / max(face_size(x), 1.0)
    a = _alpha(self.min_cutoff + self.beta * speed, dt)
    self._x = self._x + a * (x - self._x)
    return self._x.astype(np.float32)


def smooth_landmarks(landmarks: np.ndarray, found: Optional[np.ndarray] = None, *, fps: float = 25.0,
                     min_cutoff: float = 1.0, beta: float = 16.0, d_cutoff: float = 1.0) -> np.ndarray:
  """One-Euro filters a track `[T, 68, 2]`; frames where `found` is False are left as they are and
  restart the filter (no smoothing across gaps). Returns float32 `[T, 68, 2]`."""
  landmarks = np.asarray(landmarks, np.float32)
  found = np.ones(len(landmarks), bool) if found is None else np.asarray(found, bool)
  filt = OneEuroFilter(fps=fps, min_cutoff=min_cutoff, beta=beta, d_cutoff=d_cutoff)
  out = landmarks.copy()
  for t in range(len(landmarks)):
    if not found[t]:
      filt.reset()
      continue
    out[t] = filt(landmarks[t])
  return out
