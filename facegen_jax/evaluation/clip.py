"""A test clip as the protocols see it, and the seam its two sources (video files in `clips.py`, a
prepared dataset in `dataset_clips.py`) share."""

import dataclasses
from typing import List, Optional, Protocol

import numpy as np

from facegen_jax.evaluation.face_analysis import LandmarkFn

# Whose landmarks a clip carries: "detect" (found on each crop by the evaluation's detector, so the
# real frame scores AKD 0) or "stored" (prepare_data.py's tracked, smoothed ones mapped into the crop).
LANDMARK_SOURCES = ("detect", "stored")


@dataclasses.dataclass
class Clip:
  """Attributes:
    name: the file name without extension, or a dataset's video id.
    frames: `[T, R, R, 3]` uint8 face crops.
    landmarks: T entries, `[68, 2]` float32 in crop pixels, or None where no face was found.
  """

  name: str
  frames: np.ndarray
  landmarks: List[Optional[np.ndarray]]


class ClipSource(Protocol):
  """One test clip before it is read: `name` labels it in the report; `identity` is the person
  when known (None for video files)."""

  name: str
  identity: Optional[str]

  def load(self, landmark_fn: LandmarkFn, resolution: int, max_frames: Optional[int] = None) -> Clip:
    """The clip's `[T, R, R, 3]` crops at `resolution` and their landmarks."""


def check_landmark_source(landmarks: str) -> None:
  """Raises ValueError unless `landmarks` is one of LANDMARK_SOURCES."""
  if landmarks not in LANDMARK_SOURCES:
    raise ValueError(f"--dataset_landmarks={landmarks}: choose one of {', '.join(LANDMARK_SOURCES)}")
