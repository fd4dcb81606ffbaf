"""Landmarks on video: detect every N frames, track in between, smooth over time.

`FaceTracker.update(frame)` follows one face through a stream of frames:
- on frames 0, N, 2N, ... (and whenever the track is lost) it runs the detector; with several
  faces it keeps the one overlapping the previous track, else the largest;
- on the other frames it refits the landmarks inside the box derived from the previous frame's
  landmarks (`detector.box_from_landmarks`), which costs one landmark fit (~1-2 ms with dlib)
  instead of a detection;
  (with dlib, the box is first refined by a HOG detection in a small window around it,
  `locate_near`, ~3 ms, so fast head motion does not make the track lag or drift);
- a tracked fit must pass a sanity check, else the frame is re-detected: the local re-detection
  found the face, the face size changed by less than `max_scale_change` and its centre moved by
  less than `max_motion` face sizes since the previous frame.
Optionally the landmarks are smoothed online by a One-Euro filter (`smoothing.py`).

`track_video(path, ...)` runs this over a clip and returns a `VideoLandmarks` with per-frame
landmarks and a per-frame `found` flag. Frames without a face are reported (found False, NaN
landmarks); only a clip with no face at all is an error.
"""

import dataclasses
import logging
from typing import Callable, Iterable, Optional, Tuple

import numpy as np

from facegen_jax.io import video as video_io
from facegen_jax.landmarks import detectors as detectors_lib
from facegen_jax.landmarks.smoothing import OneEuroFilter


class NoFaceError(ValueError):
  """No face was found in any frame of a video."""


@dataclasses.dataclass
class TrackStep:
  """The tracker's output for one frame."""
  landmarks: Optional[np.ndarray]  # [68, 2] float32 (smoothed if smoothing is on), None: no face
  raw_landmarks: Optional[np.ndarray]  # [68, 2] float32 before smoothing
  box: Optional[Tuple[float, float, float, float]]
  detected: bool  # the detector ran on this frame
  num_faces: int  # faces the detector saw (-1 on tracked frames)

  @property
  def found(self) -> bool:
    return self.landmarks is not None


class FaceTracker:
  """Detect-every-N, track-in-between landmark tracker for one face (see module docstring).

  Args:
    detector: a `detectors.LandmarkDetector`.
    detect_every: N; 1 detects on every frame (no tracking).
    smoothing: a `OneEuroFilter` to smooth the landmarks with, or None for raw landmarks.
    max_scale_change: largest accepted size ratio of the face between consecutive frames.
    max_motion: largest accepted move of the face centre between frames, in face sizes.
    relocate: refine the box from the previous landmarks with the detector's cheap local
      re-detection (`locate_near`, dlib's HOG on a small window), when it has one; a miss there
      fails the sanity check.
  """

  def __init__(self, detector, detect_every: int = 10, smoothing: Optional[OneEuroFilter] = None,
               max_scale_change: float = 1.25, max_motion: float = 0.3, relocate: bool = True):
    if detect_every < 1:
      raise ValueError(f"detect_every must be >= 1, got {detect_every}")
    self.detector, self.detect_every, self.smoothing = detector, int(detect_every), smoothing
    self.max_scale_change, self.max_motion = float(max_scale_change), float(max_motion)
    self.relocate = relocate and hasattr(detector, "locate_near")
    self._prev: Optional[np.ndarray] = None
    self._prev_box = None
    self._frame = 0
    self.redetections = 0  # tracked fits rejected by the sanity check

  def _sane(self, landmarks: np.ndarray) -> bool:
    prev = self._prev
    size_prev, size_new = np.ptp(prev, axis=0), np.ptp(landmarks, axis=0)
    ratio = float(np.sqrt(np.prod(np.maximum(size_new, 1.0)) / np.prod(np.maximum(size_prev, 1.0))))
    if not 1.0 / self.max_scale_change < ratio < self.max_scale_change:
      return False
    move = np.linalg.norm(landmarks.mean(0) - prev.mean(0)) / max(float(size_prev.max()), 1.0)
    return move <= self.max_motion

  def _pick(self, faces):
    if self._prev_box is not None:
      best = max(faces, key=lambda f: detectors_lib.box_iou(f.box, self._prev_box))
      if detectors_lib.box_iou(best.box, self._prev_box) > 0.3:
        return best
    return faces[0]  # largest

  def update(self, image: np.ndarray) -> TrackStep:
    """Landmarks of the tracked face in the next frame (uint8 RGB `[H, W, 3]`)."""
    scheduled = self._frame % self.detect_every == 0
    self._frame += 1
    raw, box, detected, num_faces = None, None, False, -1
    if self._prev is not None and not scheduled:
      box = self.detector.box_from_landmarks(self._prev)
      if self.relocate:
        box = self.detector.locate_near(image, box)
      raw = None if box is None else self.detector.landmarks_in_box(image, box)
      if raw is None or not self._sane(raw):
        self.redetections += 1
        raw = None
    if raw is None:
      faces = self.detector.detect(image)
      detected, num_faces = True, len(faces)
      if faces:
        face = self._pick(faces)
        raw, box = face.landmarks, face.box
    if raw is None:
      self._prev = self._prev_box = None
      if self.smoothing is not None:
        self.smoothing.reset()
      return TrackStep(None, None, None, detected, num_faces)
    self._prev, self._prev_box = raw, box
    smooth = self.smoothing(raw) if self.smoothing is not None else raw
    return TrackStep(smooth, raw, tuple(float(v) for v in box), detected, num_faces)


@dataclasses.dataclass
class VideoLandmarks:
  """Per-frame landmarks of one clip (T frames).

  Attributes:
    landmarks: `[T, 68, 2]` float32, smoothed if smoothing was on; NaN where `found` is False.
    raw_landmarks: `[T, 68, 2]` float32 before smoothing.
    found: `[T]` bool, a face was found in the frame.
    detected: `[T]` bool, the detector ran (else the face was tracked).
    num_faces: `[T]` int32, faces the detector saw (-1 on tracked frames).
    fps: the clip's frame rate.
    frame_size: `(H, W)`.
    frames: the frames that were asked for with `keep_frame`, by index.
  """
  landmarks: np.ndarray
  raw_landmarks: np.ndarray
  found: np.ndarray
  detected: np.ndarray
  num_faces: np.ndarray
  fps: float
  frame_size: Tuple[int, int]
  frames: dict

  @property
  def missing_frames(self) -> np.ndarray:
    """Indices of frames without a face."""
    return np.flatnonzero(~self.found)


def make_tracker(detector=None, *, fps: float = 25.0, detect_every: int = 10, smoothing: bool = True,
                 min_cutoff: float = 1.0, beta: float = 16.0) -> FaceTracker:
  """The FaceTracker `track_frames` runs (default detector: dlib, HOG, no CNN fallback), for
  callers that feed frames one at a time (`tracker.update(frame)`)."""
  if detector is None:
    detector = detectors_lib.create_detector("dlib", cnn_fallback=False)
  smoother = OneEuroFilter(fps=fps, min_cutoff=min_cutoff, beta=beta) if smoothing else None
  return FaceTracker(detector, detect_every=detect_every, smoothing=smoother)


def track_frames(frames: Iterable[np.ndarray], detector=None, *, fps: float = 25.0, detect_every: int = 10,
                 smoothing: bool = True, min_cutoff: float = 1.0, beta: float = 16.0,
                 keep_frame: Optional[Callable[[int], bool]] = None, name: str = "frames") -> VideoLandmarks:
  """Tracks the face through `frames` (uint8 RGB `[H, W, 3]` each); see `track_video`."""
  tracker = make_tracker(detector, fps=fps, detect_every=detect_every, smoothing=smoothing, min_cutoff=min_cutoff,
                         beta=beta)
  nan = np.full((68, 2), np.nan, np.float32)
  steps, kept, size = [], {}, (0, 0)
  for i, frame in enumerate(frames):
    size = frame.shape[:2]
    steps.append(tracker.update(frame))
    if keep_frame is not None and keep_frame(i):
      kept[i] = frame
  if not steps:
    raise ValueError(f"{name}: no frames")
  found = np.array([s.found for s in steps])
  if not found.any():
    raise NoFaceError(f"no face found in any of the {len(steps)} frames of {name}; is a face visible "
                      "and at least ~80 px tall? (try a detector with a larger upsample)")
  if (~found).any():
    logging.info("%s: no face in %d of %d frames", name, int((~found).sum()), len(steps))
  if tracker.redetections:
    logging.info("%s: %d tracked frames failed the sanity check and were re-detected", name,
                 tracker.redetections)
  return VideoLandmarks(
      landmarks=np.stack([s.landmarks if s.found else nan for s in steps]).astype(np.float32),
      raw_landmarks=np.stack([s.raw_landmarks if s.found else nan for s in steps]).astype(np.float32),
      found=found, detected=np.array([s.detected for s in steps]),
      num_faces=np.array([s.num_faces for s in steps], np.int32), fps=float(fps),
      frame_size=tuple(int(v) for v in size), frames=kept)


def track_video(path: str, detector=None, *, detect_every: int = 10, smoothing: bool = True,
                min_cutoff: float = 1.0, beta: float = 16.0, max_frames: Optional[int] = None,
                keep_frame: Optional[Callable[[int], bool]] = None, progress: bool = False) -> VideoLandmarks:
  """Landmarks of the (largest) face in every frame of a video file (decoded with PyAV).

  Args:
    path: the video.
    detector: a `detectors.LandmarkDetector`; default dlib (HOG, no CNN fallback).
    detect_every: run the detector every this many frames, track in between (1: every frame).
    smoothing: One-Euro smoothing of the landmarks (`min_cutoff` Hz, `beta`; see smoothing.py);
      False returns the raw per-frame landmarks.
    max_frames: stop after this many frames.
    keep_frame: `keep_frame(i) -> bool`; the frames it selects are returned in `.frames`, so a
      caller that samples frames need not decode the clip twice.
    progress: show a progress bar (frames/s and ETA) while the landmarks are found.

  Raises:
    FileNotFoundError / ValueError: the file is missing, unreadable or damaged (named).
    NoFaceError: no frame has a face.
  """
  info = video_io.probe(path)
  fps = float(info.fps)
  frames = video_io.read_frames(path, max_frames)
  if progress:
    from tqdm import tqdm  # pylint: disable=import-outside-toplevel
    total = min(info.num_frames, max_frames) if max_frames else info.num_frames
    frames = tqdm(frames, total=total, unit="frame", desc="landmarks")
  return track_frames(frames, detector, fps=fps, detect_every=detect_every,
                      smoothing=smoothing, min_cutoff=min_cutoff, beta=beta, keep_frame=keep_frame,
                      name=str(path))
