"""Opening a prepared FaceFrames dataset and decoding its records.

`open_split` finds `<data_dir>/face_frames/<config>/<version>`, opens the split with
`builder.as_data_source` with image decoding skipped (the training pipeline decodes only the
images a sample needs), and returns the split's `VideoTable`: which records belong to which
video and identity, in record order, without reading any image.
"""

import dataclasses
import hashlib
import pathlib
from typing import Optional

import numpy as np
import tensorflow_datasets as tfds
from absl import logging
from etils import epath

from facegen_jax.data import frames as frames_lib
from facegen_jax.data import tfds_builder
from facegen_jax.io import paths
from facegen_jax.landmarks import layout

IMAGE_FEATURES = ("image", "mask", "part_masks")


@dataclasses.dataclass(frozen=True)
class VideoTable:
  """The videos of a split in record order: video v holds records `starts[v] : starts[v] + num_frames[v]`."""
  video_ids: tuple
  identities: tuple
  num_frames: np.ndarray  # [V] int64

  @property
  def starts(self) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(self.num_frames)[:-1]]).astype(np.int64)

  @property
  def num_records(self) -> int:
    return int(self.num_frames.sum())


def find_builder_dir(data_dir, resolution: Optional[int] = None, dataset_name: str = tfds_builder.DATASET_NAME,
                     dataset_config: str = "") -> pathlib.Path:
  """The generated dataset folder `<data_dir>/<name>/<config>/<version>` (newest version), local.

  `dataset_config` "" picks `r{resolution}` if it exists, else the only config there. A `data_dir`
  URL (`gs://...`) is searched there and the version folder is mirrored into a local folder
  (`stage_locally`), which is returned: ArrayRecord reads local files only.
  """
  version = _find_version(data_dir, resolution, dataset_name, dataset_config)
  return stage_locally(version) if paths.is_url(data_dir) else pathlib.Path(version)


def stage_locally(builder_dir: epath.Path) -> pathlib.Path:
  """A local mirror of the dataset version folder at URL `builder_dir`, said in one log line. The
  folder (`paths.staging_dir`) is named by the URL and the dataset's info files, so a resumed run
  finds its earlier copy (and copies only what is missing) and a rebuilt dataset gets a new one."""
  info = "".join((builder_dir / name).read_text() for name in ("dataset_info.json", "metadata.json")
                 if (builder_dir / name).exists())
  key = f"{builder_dir}\0{hashlib.sha256(info.encode()).hexdigest()}"
  local = pathlib.Path(paths.staging_dir(key, "datasets")) / builder_dir.name
  copied = paths.mirror(builder_dir, local)
  size = sum(p.stat().st_size for p in local.rglob("*") if p.is_file())
  logging.info("dataset %s staged to the local folder %s (%d files copied now, %.1f MB in all): ArrayRecord "
               "reads local files only (google/array_record#120)", builder_dir, local, copied, size / 1e6)
  return local


def _find_version(data_dir, resolution, dataset_name: str, dataset_config: str) -> epath.Path:
  root = paths.as_path(data_dir) / dataset_name
  if not root.is_dir():
    raise FileNotFoundError(f"no {dataset_name} dataset in {data_dir!r}; build one with "
                            f"`python experiments/prepare_data.py --input=VIDEOS_OR_PHOTOS --output={data_dir}`")
  configs = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
  if dataset_config:
    name = dataset_config
  elif resolution is not None and f"r{resolution}" in configs:
    name = f"r{resolution}"
  elif len(configs) == 1:
    name = configs[0]
  else:
    raise ValueError(f"{root} holds configs {configs}; set data.dataset_config to one of them")
  versions = sorted((p for p in (root / name).glob("*.*.*") if (p / "dataset_info.json").exists()),
                    key=lambda p: tuple(int(x) for x in p.name.split(".")))
  if not versions:
    raise FileNotFoundError(f"no complete dataset version under {root / name}; rerun prepare_data.py")
  return versions[-1]


def open_split(builder_dir, split: str):
  """(data source with undecoded images, VideoTable, dataset resolution) of one split."""
  builder = tfds.builder_from_directory(str(builder_dir))
  if split not in builder.info.splits:
    raise ValueError(f"split {split!r} not in {builder_dir} (splits: {sorted(builder.info.splits)})")
  source = builder.as_data_source(split, decoders={k: tfds.decode.SkipDecoding() for k in IMAGE_FEATURES})
  meta = builder.info.metadata or {}
  entry = (meta.get("splits") or {}).get(split)
  if entry:
    table = VideoTable(tuple(entry["video_ids"]), tuple(entry["identities"]), np.asarray(entry["num_frames"], np.int64))
  else:
    logging.warning("%s has no video table for split %s (built with Beam?); scanning all %d records once",
                    builder_dir, split, len(source))
    table = scan_video_table(source)
  if table.num_records != len(source):
    raise ValueError(f"{builder_dir}: video table lists {table.num_records} records, split {split} has "
                     f"{len(source)}; the dataset is inconsistent, rebuild it with prepare_data.py")
  resolution = int(builder.info.features["image"].shape[0])
  return source, table, resolution


def scan_video_table(source) -> VideoTable:
  """Builds the VideoTable by reading every record (records of a video are contiguous)."""
  vids, ids, counts = [], [], []
  for i in range(len(source)):
    rec = source[i]
    vid, ident = as_text(rec["video_id"]), as_text(rec["identity"])
    if vids and vids[-1] == vid:
      counts[-1] += 1
    else:
      vids.append(vid)
      ids.append(ident)
      counts.append(1)
  return VideoTable(tuple(vids), tuple(ids), np.asarray(counts, np.int64))


def as_text(value) -> str:
  """A TFDS text feature (bytes or str) as str."""
  return value.decode() if isinstance(value, bytes) else str(value)


def decode_record(record: dict) -> dict:
  """A raw record (images undecoded) -> numpy arrays: image [R,R,3], mask [R,R,1], part_masks [R,R,P]."""
  return {
      "image": frames_lib.decode_image(record["image"], 3),
      "mask": frames_lib.decode_image(record["mask"], 1),
      "part_masks": frames_lib.untile_parts(frames_lib.decode_image(record["part_masks"], 1), len(layout.PART_NAMES)),
      "landmarks": np.asarray(record["landmarks"], np.float32),
      "identity": as_text(record["identity"]),
      "video_id": as_text(record["video_id"]),
      "frame_index": int(record["frame_index"]),
      "source": as_text(record["source"]),
  }
