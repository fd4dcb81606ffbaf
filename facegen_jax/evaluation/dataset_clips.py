"""Test clips from a FaceFrames dataset prepared by experiments/prepare_data.py (`--videos=DATA_DIR`).

A split's records (face crops, one still box per clip, with landmarks; see
facegen_jax/data/tfds_builder.py) are grouped into clips by `video_id` through the split's video
table (records of a video are contiguous) and ordered by `frame_index`. The crops are used as they
are (resized by `landmarks.crop` when the dataset's resolution is not the evaluation's): they are
framed as `clips.load_clip` frames a video file. Landmarks:
- "detect" (default): found on each crop by the evaluation's detector, exactly as for video files,
  so AKD means the same for both inputs (the real frame scores 0);
- "stored": the dataset's own landmarks (what the model was trained with; no detection pass). They
  come from prepare_data.py's tracker and smoother, which puts them ~1-4 px (at 256) from a fresh
  detection on tracked frames (~0.6 px on detected ones), and that gap adds to every method's AKD.
Opened with `builder.as_data_source` (no TensorFlow), images decoded only for the frames read.
"""

import dataclasses
import functools
import pathlib
from typing import Dict, List, Optional, Tuple

import numpy as np
from absl import logging

from facegen_jax.data import frames as frames_lib
from facegen_jax.data import reading, tfds_builder
from facegen_jax.evaluation.clip import Clip, check_landmark_source
from facegen_jax.evaluation.face_analysis import LandmarkFn
from facegen_jax.landmarks import crop as crop_lib


def find_dataset(path: str, resolution: int) -> Optional[pathlib.Path]:
  """The dataset version folder if `path` is a prepared dataset, else None.

  `path` may be prepare_data.py's --output (holding `face_frames/`), that `face_frames` folder,
  one config folder in it (`r256`) or a version folder (`r256/1.0.0`, holding dataset_info.json).
  Among several configs, `r<resolution>` is taken.
  """
  p = pathlib.Path(path)
  if (p / "dataset_info.json").is_file():
    return p
  name = tfds_builder.DATASET_NAME
  if (p / name).is_dir():
    data_dir, config = p, ""
  elif p.name == name:
    data_dir, config = p.parent, ""
  elif p.parent.name == name:
    data_dir, config = p.parent.parent, p.name
  else:
    return None
  root = data_dir / name
  configs = sorted(c.name for c in root.iterdir() if c.is_dir() and not c.name.startswith("."))
  if not config and len(configs) > 1 and f"r{resolution}" not in configs:
    raise ValueError(f"{root} holds datasets at several resolutions ({', '.join(configs)}) and none is "
                     f"r{resolution}: pass --resolution to match one, or point --videos at {root}/<config>")
  return reading.find_builder_dir(data_dir, resolution, dataset_config=config)


@functools.lru_cache(maxsize=4)
def _open(builder_dir: str, split: str):
  """(data source with undecoded images, VideoTable, dataset resolution), opened once per split."""
  return reading.open_split(builder_dir, split)


@dataclasses.dataclass(frozen=True)
class DatasetClip:
  """The records `start : start + num_records` of a split: one video of the dataset.

  Attributes:
    builder_dir: the dataset version folder.
    split: the split holding the video.
    video_id: the clip's id in the dataset (its name in the report).
    identity: the person.
    start, num_records: where the video's records are in the split.
    dataset_resolution: the stored crops' size.
    landmarks: "detect" or "stored" (see the module docstring).
  """

  builder_dir: str
  split: str
  video_id: str
  identity: str
  start: int
  num_records: int
  dataset_resolution: int
  landmarks: str = "detect"

  @property
  def name(self) -> str:
    return self.video_id

  def load(self, landmark_fn: LandmarkFn, resolution: int, max_frames: Optional[int] = None) -> Clip:
    """The stored crops in frame order (the first `max_frames`), at `resolution`, with their landmarks.

    Raises ValueError naming the dataset if the records are not this video's (a damaged dataset).
    """
    source, _, _ = _open(self.builder_dir, self.split)
    records = [source[i] for i in range(self.start, self.start + self.num_records)]
    others = sorted({reading.as_text(r["video_id"]) for r in records} - {self.video_id})
    if others:
      raise ValueError(f"{self.builder_dir} [{self.split}]: records {self.start}-{self.start + self.num_records - 1} "
                       f"should all be video {self.video_id} (by the video table in metadata.json) but some are "
                       f"{others}; the dataset is inconsistent, rebuild it with experiments/prepare_data.py")
    records.sort(key=lambda r: int(r["frame_index"]))
    records = records[:max_frames] if max_frames else records
    frames = [frames_lib.decode_image(r["image"], 3) for r in records]
    marks = [np.asarray(r["landmarks"], np.float32) for r in records]
    if resolution != self.dataset_resolution:  # the whole stored crop, resized as crops are made
      whole = (0.0, 0.0, float(self.dataset_resolution), float(self.dataset_resolution))
      resized = [crop_lib.crop_and_resize(f, whole, resolution) for f in frames]
      frames = [crop for crop, _ in resized]
      marks = [transform.apply(lm) for (_, transform), lm in zip(resized, marks)]
    frames = np.stack(frames)
    if self.landmarks == "detect":
      marks = [landmark_fn(f) for f in frames]
    return Clip(self.video_id, frames, marks)


def list_clips(builder_dir, split: str, resolution: int,
               landmarks: str = "detect") -> Tuple[List[DatasetClip], Dict[str, object]]:
  """The videos of `split`, in record order, and report lines naming the dataset, split and landmarks.

  Raises ValueError naming the dataset and its splits if `split` is not there or holds no record.
  """
  check_landmark_source(landmarks)
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  splits = sorted(tfds.builder_from_directory(str(builder_dir)).info.splits)
  fix = ("prepare_data.py puts the identities of --test_identities (or a --test_fraction of them) in the test "
         "split; rebuild the dataset with one of them, or pass --split=<one of its splits>")
  if split not in splits:
    raise ValueError(f"the dataset {builder_dir} has no {split!r} split (it has: {', '.join(splits) or 'none'}); "
                     f"{fix}")
  source, table, dataset_resolution = _open(str(builder_dir), split)
  if len(source) == 0 or not table.video_ids:
    raise ValueError(f"split {split!r} of the dataset {builder_dir} is empty (splits: {', '.join(splits)}); {fix}")
  if dataset_resolution != resolution:
    logging.warning("dataset %s holds %dx%d crops; resizing them to --resolution=%d", builder_dir,
                    dataset_resolution, dataset_resolution, resolution)
  clips = [DatasetClip(str(builder_dir), split, vid, ident, int(start), int(n), dataset_resolution, landmarks)
           for vid, ident, start, n in zip(table.video_ids, table.identities, table.starts, table.num_frames)]
  info: Dict[str, object] = {
      "dataset": str(builder_dir),
      "split": split,
      "landmarks": ("detected on the stored crops" if landmarks == "detect"
                    else "stored in the dataset (prepare_data.py's tracked, smoothed landmarks)"),
  }
  if dataset_resolution != resolution:
    info["dataset_resolution"] = dataset_resolution
  return clips, info
