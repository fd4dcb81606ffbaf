"""Test clips from video files: face crops at the evaluation resolution, framed exactly as
experiments/prepare_data.py frames training clips (`load_clip`) and photos (`load_photo`).

`--videos` names the clips in one of three forms (`find_clips`): a folder of video files, one
video file (`FileClip`: cropped here), or a FaceFrames dataset prepared by
experiments/prepare_data.py (`dataset_clips.DatasetClip`: its records are crops already).
`--sources` names cross-identity sources (`find_sources`): photos (`FileClip` too: a one-frame
clip) and clips, or folders of them. A file's person is prepare_data.py's: the file name's part before
`__` (`file_identity`).
"""

import dataclasses
import os
import pathlib
from typing import Dict, List, Optional, Sequence, Tuple

from facegen_jax.data import extract, frames as frames_lib, prepare
from facegen_jax.evaluation import dataset_clips
from facegen_jax.evaluation.clip import Clip, ClipSource, check_landmark_source
from facegen_jax.evaluation.face_analysis import LandmarkFn
from facegen_jax.io.video import VIDEO_EXTENSIONS
from facegen_jax.landmarks import crop as crop_lib
from facegen_jax.landmarks import video as video_lib

ACCEPTED_FORMS = (f"--videos takes (1) a folder of test clips ({', '.join(VIDEO_EXTENSIONS)}), (2) one video file, "
                  "or (3) a dataset prepared by experiments/prepare_data.py (its --output folder, which holds "
                  "face_frames/, or the face_frames/r<R>/<version> folder inside it)")


def file_identity(path: str) -> str:
  """The person of a clip or photo file, as experiments/prepare_data.py names it
  (`prepare.identity_of`): the file name's part before `__`, else the file name (without extension)."""
  name = pathlib.PurePosixPath(os.path.basename(path))
  return prepare.identity_of(name, name.stem)


@dataclasses.dataclass(frozen=True)
class FileClip:
  """A video file, cropped by `load_clip`, or a photo, a one-frame clip cropped by `load_photo`;
  `landmarks` as there. A video is named by its file name without extension, a photo with it."""

  path: str
  identity: Optional[str] = None
  landmarks: str = "detect"

  @property
  def is_photo(self) -> bool:
    return self.path.lower().endswith(prepare.IMAGE_EXTENSIONS)

  @property
  def name(self) -> str:
    base = os.path.basename(self.path)
    return base if self.is_photo else os.path.splitext(base)[0]

  def load(self, landmark_fn: LandmarkFn, resolution: int, max_frames: Optional[int] = None) -> Clip:
    if self.is_photo:
      return load_photo(self.path, landmark_fn, resolution, self.landmarks)
    return load_clip(self.path, landmark_fn, resolution, max_frames, self.landmarks)


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
    dataset_landmarks: whose landmarks the clips carry (`clip.LANDMARK_SOURCES`): "detect" (found
      on each crop by the evaluation's detector) or "stored" (prepare_data.py's tracked, smoothed
      landmarks: a dataset's own; for a video file, those its crops were framed by).

  Raises:
    FileNotFoundError / ValueError listing the accepted forms when `videos` is none of them, or
    naming the split and the splits there are when the dataset's split is missing or empty.
  """
  check_landmark_source(dataset_landmarks)
  if os.path.isdir(videos) and not _videos_in(videos):
    builder_dir = dataset_clips.find_dataset(videos, resolution)
    if builder_dir is None:
      raise ValueError(f"no videos ({', '.join(VIDEO_EXTENSIONS)}) in {videos} and no dataset prepared by "
                       f"experiments/prepare_data.py; {ACCEPTED_FORMS}")
    return dataset_clips.list_clips(builder_dir, split, resolution, dataset_landmarks)
  return [FileClip(p, file_identity(p), dataset_landmarks) for p in list_videos(videos)], {}


def _is_source_file(name: str) -> bool:
  return name.lower().endswith(prepare.IMAGE_EXTENSIONS + VIDEO_EXTENSIONS)


def find_sources(paths: Sequence[str], landmarks: str = "detect") -> List[ClipSource]:
  """The cross-identity sources `--sources` names (`FileClip`s): each path a photo, a clip or a
  folder (every photo and clip at its top level, sorted), with their people (`file_identity`).

  Raises FileNotFoundError / ValueError naming a path that is none of these, a folder without
  photos or clips, or two sources of the same name.
  """
  check_landmark_source(landmarks)
  files = []
  for path in paths:
    if os.path.isdir(path):
      found = sorted(os.path.join(path, f) for f in os.listdir(path) if not f.startswith(".") and _is_source_file(f))
      if not found:
        raise ValueError(f"--sources={path}: no photos ({', '.join(prepare.IMAGE_EXTENSIONS)}) or clips "
                         f"({', '.join(VIDEO_EXTENSIONS)}) in that folder")
      files.extend(found)
    elif not os.path.exists(path):
      raise FileNotFoundError(f"--sources={path} does not exist; give photos, clips or folders of them")
    elif _is_source_file(path):
      files.append(path)
    else:
      raise ValueError(f"--sources={path} is neither a photo ({', '.join(prepare.IMAGE_EXTENSIONS)}), a clip "
                       f"({', '.join(VIDEO_EXTENSIONS)}) nor a folder of them")
  sources = [FileClip(f, file_identity(f), landmarks) for f in files]
  names = [s.name for s in sources]
  repeated = sorted({n for n in names if names.count(n) > 1})
  if repeated:
    raise ValueError(f"--sources names two sources called {', '.join(repeated)}; each source needs its own name")
  return sources


def load_clip(path: str, landmark_fn: LandmarkFn, resolution: int = 256, max_frames: Optional[int] = None,
              landmarks: str = "detect") -> Clip:
  """Reads a clip and crops it as experiments/prepare_data.py crops training clips: the face tracked
  with prepare_data.py's default detector, `detect_every` and smoothing (`landmarks.video`), every
  frame cut out with one still box by `landmarks.crop.crop_clip` (expand 1.8, bicubic).

  Args:
    path: the video file.
    landmark_fn: the evaluation's detector (used when `landmarks` is "detect").
    resolution: crop size R.
    max_frames: read at most this many frames.
    landmarks: "detect" (found on each crop by `landmark_fn`, so the real frame scores AKD 0) or
      "stored" (the tracked landmarks mapped into the crop: what prepare_data.py stores).

  Raises ValueError naming the file if it cannot be decoded or no frame shows a face.
  """
  check_landmark_source(landmarks)
  try:
    track = video_lib.track_video(path, max_frames=max_frames, keep_frame=lambda i: True)
  except video_lib.NoFaceError as e:
    raise ValueError(f"{e}: the evaluation needs talking-head clips with one visible face") from e
  frames = [track.frames[i] for i in range(len(track.found))]
  crops, crop_landmarks, _ = crop_lib.crop_clip(frames, track.landmarks, track.found, resolution)
  if landmarks == "stored":
    marks = [lm if ok else None for lm, ok in zip(crop_landmarks, track.found)]
  else:
    marks = [landmark_fn(c) for c in crops]
  return Clip(os.path.splitext(os.path.basename(path))[0], crops, marks)


def load_photo(path: str, landmark_fn: LandmarkFn, resolution: int = 256, landmarks: str = "detect") -> Clip:
  """A photo's face as experiments/prepare_data.py crops it (`data.extract.prepare_file`: the largest
  face dlib finds, its own box `landmarks.crop.photo_crop_box`, bicubic resize), as a one-frame clip
  named by the file name. `landmarks` as in `load_clip` ("stored": prepare_data.py's own).

  Raises ValueError naming the file if it cannot be read, shows no face or one smaller than
  prepare_data.py keeps.
  """
  check_landmark_source(landmarks)
  name = os.path.basename(path)
  inp = prepare.InputFile(path=os.path.abspath(path), rel=name, identity=file_identity(path), video_id=name,
                          is_video=False)
  prepared = extract.prepare_file(inp, prepare.PrepareOptions(resolution=resolution))
  if isinstance(prepared, frames_lib.Skipped):
    raise ValueError(f"{path}: {prepared.detail} ({prepared.reason}); a source photo needs one visible face")
  crop = frames_lib.decode_image(prepared.images[0], 3)
  mark = prepared.landmarks[0] if landmarks == "stored" else landmark_fn(crop)
  return Clip(name, crop[None], [mark])
