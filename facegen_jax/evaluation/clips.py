"""Test clips as the protocols see them: face crops at the evaluation resolution, one stable box per
clip (so the camera does not move between frames), with the landmarks detected on each crop.

`--videos` names the clips in one of three forms (`find_clips`): a folder of video files, one
video file (`VideoClip`: cropped and detected here), or a FaceFrames dataset prepared by
experiments/prepare_data.py (`dataset_clips.DatasetClip`: its records are crops already).
"""

import dataclasses
import os
from typing import Dict, List, Optional, Protocol, Tuple

import numpy as np
from PIL import Image

from facegen_jax.evaluation.face_analysis import LandmarkFn
from facegen_jax.inference import video_io

VIDEO_EXTENSIONS = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v")


@dataclasses.dataclass
class Clip:
  """Attributes:
    name: the file name without extension.
    frames: `[T, R, R, 3]` uint8 face crops.
    landmarks: T entries, `[68, 2]` float32 in crop pixels, or None where no face was found.
  """

  name: str
  frames: np.ndarray
  landmarks: List[Optional[np.ndarray]]


ACCEPTED_FORMS = (f"--videos takes (1) a folder of test clips ({', '.join(VIDEO_EXTENSIONS)}), (2) one video file, "
                  "or (3) a dataset prepared by experiments/prepare_data.py (its --output folder, which holds "
                  "face_frames/, or the face_frames/r<R>/<version> folder inside it)")


class ClipSource(Protocol):
  """One test clip before it is read: `name` labels it in the report; `identity` is the person
  when known (None for video files)."""

  name: str
  identity: Optional[str]

  def load(self, landmark_fn: LandmarkFn, resolution: int, max_frames: Optional[int] = None) -> "Clip":
    """The clip's `[T, R, R, 3]` crops at `resolution` and their landmarks."""


@dataclasses.dataclass(frozen=True)
class VideoClip:
  """A video file: cropped with one stable box and detected by `load_clip`."""

  path: str
  identity: Optional[str] = None

  @property
  def name(self) -> str:
    return os.path.splitext(os.path.basename(self.path))[0]

  def load(self, landmark_fn: LandmarkFn, resolution: int, max_frames: Optional[int] = None) -> "Clip":
    return load_clip(self.path, landmark_fn, resolution, max_frames)


def _videos_in(folder: str) -> List[str]:
  return sorted(os.path.join(folder, f) for f in os.listdir(folder) if f.lower().endswith(VIDEO_EXTENSIONS))


def list_videos(folder: str) -> List[str]:
  """The video files of `folder` (sorted), or `folder` itself if it is one video; raises if there is none."""
  if os.path.isfile(folder) and folder.lower().endswith(VIDEO_EXTENSIONS):
    return [folder]
  if not os.path.exists(folder):
    raise FileNotFoundError(f"--videos={folder} does not exist; {ACCEPTED_FORMS}")
  if not os.path.isdir(folder):
    raise ValueError(f"--videos={folder} is neither a folder of test clips, a video file nor a prepared dataset; "
                     f"{ACCEPTED_FORMS}")
  videos = _videos_in(folder)
  if not videos:
    raise ValueError(f"no videos ({', '.join(VIDEO_EXTENSIONS)}) in {folder}: pass a folder holding the test clips")
  return videos


def find_clips(videos: str, split: str = "test", resolution: int = 256,
               dataset_landmarks: str = "detect") -> Tuple[List[ClipSource], Dict[str, object]]:
  """The clips `--videos` names (see `ACCEPTED_FORMS`), and report lines saying where they came from.

  Args:
    videos: a folder of video files, one video file, or a prepared dataset (a folder with video
      files at its top level is taken as a folder of clips, even if it also holds a dataset).
    split: the dataset split to evaluate (datasets only).
    resolution: evaluation crop size; picks the dataset config `r<resolution>` when there are several.
    dataset_landmarks: datasets only; "detect" (landmarks found on the stored crops by the
      evaluation's detector, as for video files) or "stored" (the dataset's own landmarks).

  Raises:
    FileNotFoundError / ValueError listing the accepted forms when `videos` is none of them, or
    naming the split and the splits there are when the dataset's split is missing or empty.
  """
  if os.path.isdir(videos) and not _videos_in(videos):
    from facegen_jax.evaluation import dataset_clips  # pylint: disable=import-outside-toplevel
    builder_dir = dataset_clips.find_dataset(videos, resolution)
    if builder_dir is None:
      raise ValueError(f"no videos ({', '.join(VIDEO_EXTENSIONS)}) in {videos} and no dataset prepared by "
                       f"experiments/prepare_data.py; {ACCEPTED_FORMS}")
    return dataset_clips.list_clips(builder_dir, split, resolution, dataset_landmarks)
  return [VideoClip(p) for p in list_videos(videos)], {}


def stable_box(landmarks: List[np.ndarray], scale: float = 1.8) -> tuple:
  """One square box `(left, top, side)` holding every frame's face: the union of the landmark
  boxes, enlarged `scale` times about its centre and moved up a little for the forehead the 68
  landmarks do not cover. It may extend past the frame (crop() pads)."""
  points = np.concatenate(landmarks)
  lo, hi = points.min(0), points.max(0)
  side = float(np.max(hi - lo)) * scale
  cx, cy = (lo + hi) / 2
  cy -= 0.06 * side
  return int(round(cx - side / 2)), int(round(cy - side / 2)), int(round(side))


def crop(frame: np.ndarray, box: tuple, resolution: int) -> np.ndarray:
  """The `box` of `frame` (edge-padded where it leaves the frame), resized to `[R, R, 3]`."""
  left, top, side = box
  h, w = frame.shape[:2]
  pad = max(0, -left, -top, left + side - w, top + side - h)
  if pad:
    frame = np.pad(frame, ((pad, pad), (pad, pad), (0, 0)), mode="edge")
  patch = frame[top + pad:top + pad + side, left + pad:left + pad + side]
  return np.asarray(Image.fromarray(patch).resize((resolution, resolution), Image.LANCZOS))


def load_clip(path: str, landmark_fn: LandmarkFn, resolution: int = 256, max_frames: Optional[int] = None,
              box_scale: float = 1.8) -> Clip:
  """Reads a clip, crops it with one stable box and detects landmarks on each crop.

  Raises ValueError naming the file if it cannot be decoded or no frame shows a face.
  """
  frames = list(video_io.read_frames(path, max_frames=max_frames))
  full = [landmark_fn(f) for f in frames]
  found = [lm for lm in full if lm is not None]
  if not found:
    raise ValueError(f"no face found in any of the {len(frames)} frames read from {path}: "
                     "the evaluation needs talking-head clips with one visible face")
  box = stable_box(found, scale=box_scale)
  crops = np.stack([crop(f, box, resolution) for f in frames])
  return Clip(os.path.splitext(os.path.basename(path))[0], crops, [landmark_fn(c) for c in crops])
