"""`FaceFrames`: the TFDS dataset of cropped face frames with landmarks and masks.

One example per kept video frame (or photo):

| feature       | type                          | meaning                                         |
|---------------|-------------------------------|-------------------------------------------------|
| `image`       | PNG/JPEG `[R, R, 3]` uint8    | the face crop (PNG unless prepared as JPEG)     |
| `mask`        | PNG `[R, R, 1]` uint8         | face mask of its landmarks, all parts           |
| `part_masks`  | PNG `[R, R * P, 1]` uint8     | one mask per part (layout.PART_NAMES), tiled    |
| `landmarks`   | `[68, 2]` float32             | (x, y) in crop pixels, iBUG order               |
| `identity`    | text                          | the person; the train/test split key            |
| `video_id`    | text                          | the clip (a photo is a one-frame "video")       |
| `frame_index` | int32                         | frame number in the clip                        |
| `source`      | text                          | input file, relative to the input folder        |

Written as `array_record` without TensorFlow (images arrive as PNG bytes) and read with
`builder.as_data_source(split)`. Records are in a fixed order (`disable_shuffling`): sorted by
identity, video, frame, so a video's frames are contiguous. `info.metadata["splits"]` holds the
per-split video table (ids, identities, frame counts) in that order, so the training pipeline
finds pairs and shards by video without reading any image.

Train/test split by identity: nobody is in both. Identities are ranked by the SHA-256 of their
name; the first `round(n * test_fraction)` go to `test` (at least one when the fraction is
positive and there are two or more identities, never all), or exactly `test_identities` if given.
Deterministic for a given set of identities.

The builder does not read the input folder: it is given `entries` (see `FrameSource`), each of
which yields one input file's `PreparedFile`. `experiments/prepare_data.py` makes them.
"""

import dataclasses
import hashlib
from typing import Optional, Protocol, Sequence

import numpy as np
import tensorflow_datasets as tfds
from absl import logging

from facegen_jax.data import frames as frames_lib
from facegen_jax.data.config import DATASET_NAME
from facegen_jax.landmarks import layout

MAX_FRAMES_PER_VIDEO = 10**6  # example key = video rank * this + frame position


class FrameSource(Protocol):
  """One input file as the builder sees it (must pickle, for Beam workers)."""
  identity: str
  video_id: str
  num_frames: Optional[int]  # None when not known before processing (Beam)

  def load(self):
    """Returns the file's `frames.PreparedFile`, or a `frames.Skipped`."""


@dataclasses.dataclass(frozen=True)
class CachedFrames:
  """A `FrameSource` already in a `frames.FrameCache`."""
  cache_root: str
  key: str
  identity: str
  video_id: str
  num_frames: Optional[int]

  def load(self):
    return frames_lib.FrameCache(self.cache_root).load(self.key)


class FaceFramesConfig(tfds.core.BuilderConfig):
  """Resolution R (the config name is `r{R}`) and the identity split."""

  def __init__(self, *, resolution: int, test_fraction: float = 0.1, test_identities: Sequence[str] = (),
               image_format: str = "png", **kwargs):
    kwargs.setdefault("name", f"r{resolution}")
    kwargs.setdefault("description", f"{resolution}x{resolution} face crops")
    super().__init__(**kwargs)
    if not 0.0 <= test_fraction < 1.0:
      raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}")
    self.resolution = int(resolution)
    self.test_fraction = float(test_fraction)
    self.test_identities = tuple(test_identities)
    self.image_format = image_format


def split_identities(identities, test_fraction: float, test_identities: Sequence[str] = ()) -> dict:
  """identity -> "train" | "test" (see module docstring)."""
  ids = sorted(set(identities))
  if test_identities:
    unknown = sorted(set(test_identities) - set(ids))
    if unknown:
      logging.warning("test identities %s have no data (identities: %s)", unknown, ids)
    test = set(test_identities)
  else:
    n_test = int(round(len(ids) * test_fraction))
    if test_fraction > 0 and len(ids) >= 2:
      n_test = min(max(n_test, 1), len(ids) - 1)
    ranked = sorted(ids, key=lambda s: hashlib.sha256(s.encode()).hexdigest())
    test = set(ranked[:n_test])
  return {i: ("test" if i in test else "train") for i in ids}


class FaceFrames(tfds.core.GeneratorBasedBuilder):
  """Cropped face frames with landmarks and masks (see module docstring)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First version."}
  # Configs are made per build (`FaceFramesConfig(resolution=R, ...)`): the resolution is a flag.

  def __init__(self, *, entries: Sequence[FrameSource] = (), beam: bool = False, **kwargs):
    """`entries`: the input files; `beam`: generate with Apache Beam (see prepare_data.py)."""
    self._entries = list(entries)
    self._beam = beam
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    r = self.builder_config.resolution
    p = len(layout.PART_NAMES)
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(r, r, 3), encoding_format=self.builder_config.image_format),
            "mask": tfds.features.Image(shape=(r, r, 1), encoding_format="png"),
            "part_masks": tfds.features.Image(shape=(r, r * p, 1), encoding_format="png"),
            "landmarks": tfds.features.Tensor(shape=(layout.NUM_LANDMARKS, 2), dtype=np.float32),
            "identity": tfds.features.Text(),
            "video_id": tfds.features.Text(),
            "frame_index": tfds.features.Scalar(dtype=np.int32),
            "source": tfds.features.Text(),
        }),
        metadata=tfds.core.MetadataDict(),
        disable_shuffling=True,
    )

  def _split_generators(self, dl_manager):
    del dl_manager
    if not self._entries:
      raise ValueError("FaceFrames needs `entries` (the prepared input files); build it with "
                       "experiments/prepare_data.py")
    cfg = self.builder_config
    splits = split_identities([e.identity for e in self._entries], cfg.test_fraction, cfg.test_identities)
    ordered = sorted(self._entries, key=lambda e: (e.identity, e.video_id))
    per_split = {}
    for rank, entry in enumerate(ordered):
      per_split.setdefault(splits[entry.identity], []).append((rank, entry))
    table = {}
    if all(e.num_frames is not None for e in self._entries):
      for split, items in per_split.items():
        items = [(r, e) for r, e in items if e.num_frames]
        table[split] = {"video_ids": [e.video_id for _, e in items],
                        "identities": [e.identity for _, e in items],
                        "num_frames": [int(e.num_frames) for _, e in items]}
    self.info.metadata.update({"resolution": cfg.resolution, "part_names": list(layout.PART_NAMES),
                               "identity_split": splits, "splits": table})
    return {split: self._generate_examples(items) for split, items in per_split.items()
            if self._beam or sum(e.num_frames or 0 for _, e in items) > 0}

  def _generate_examples(self, items):
    if self._beam:
      import apache_beam as beam  # pylint: disable=import-outside-toplevel
      return beam.Create(items) | beam.FlatMap(_examples_of)
    return (ex for item in items for ex in _examples_of(item))


def _examples_of(item):
  """(key, example) for every frame of one ranked entry."""
  rank, entry = item
  prepared = entry.load()
  if isinstance(prepared, frames_lib.Skipped):
    return
  if prepared.num_frames >= MAX_FRAMES_PER_VIDEO:
    raise ValueError(f"{prepared.source}: {prepared.num_frames} frames; at most {MAX_FRAMES_PER_VIDEO - 1} per video")
  for j in range(prepared.num_frames):
    yield rank * MAX_FRAMES_PER_VIDEO + j, {
        "image": prepared.images[j],
        "mask": prepared.masks[j],
        "part_masks": prepared.part_masks[j],
        "landmarks": np.asarray(prepared.landmarks[j], np.float32),
        "identity": prepared.identity,
        "video_id": prepared.video_id,
        "frame_index": np.int32(prepared.frame_indices[j]),
        "source": prepared.source,
    }
