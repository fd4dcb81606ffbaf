"""The training input pipeline: grain over a FaceFrames split, yielding `batch.py` batches.

Sample kinds (`batch.SampleKind`, mixed by `data.kind_ratios`; see docs/method.md, Sample kinds):
  (a) SAME_VIDEO: source = frame s, driving = frame d of the same clip; the target is the
      driving frame (ground truth for the pixel loss);
  (b) OTHER_PERSON: the driving frame's landmarks and stored mask (of another person) are the
      pose; the target is the source itself (and target_mask its own mask);
  (c) PERTURBED: the source's own landmarks randomly perturbed (`landmarks.perturb`, magnitudes
      in `data.perturb`) as the pose, mask rendered from them; target = source.
  A one-frame video cannot give (a) and a one-identity shard cannot give (b): those samples
  become (c), so even a single photo trains. This module chooses the frames and landmarks;
  `batch.make_sample` builds the sample, then one flip and colour jitter apply to all of it.

Each sample is a pure function of (seed, process, stream position i, record): the records of
this process are shuffled per epoch by grain (`MapDataset.shuffle(...).repeat()`), partners and
augmentations come from `np.random.default_rng([seed, process_index, i])`. The iterator state is
the number of batches consumed; restoring it re-slices the same stream, so a resumed run sees
exactly the samples it would have seen (independent of the worker count).

Sharding: each JAX process reads a disjoint, contiguous set of whole videos (balanced by frame
count), so pairs (a) never cross processes and no record is read by two processes.
"""

from typing import Optional

import grain
import ml_collections
import numpy as np
from absl import flags
from absl import logging
from PIL import Image

from facegen_jax.data import augment
from facegen_jax.data import batch as batch_lib
from facegen_jax.data import reading
from facegen_jax.data.batch import SampleKind
from facegen_jax.landmarks import layout
from facegen_jax.landmarks import masks as masks_lib
from facegen_jax.landmarks import perturb as perturb_lib


def shard_videos(num_frames: np.ndarray, process_index: int, process_count: int) -> np.ndarray:
  """Indices of the videos of `process_index`: contiguous, balanced by frame count, disjoint."""
  num_frames = np.asarray(num_frames, np.int64)
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index {process_index} not in [0, {process_count})")
  mid = np.cumsum(num_frames) - num_frames / 2.0
  owner = np.minimum((mid * process_count / max(num_frames.sum(), 1)).astype(np.int64), process_count - 1)
  counts = np.bincount(owner, minlength=process_count)
  if np.any(counts == 0):
    raise ValueError(f"cannot give each of {process_count} processes whole videos: the split has "
                     f"{len(num_frames)} videos ({int(num_frames.sum())} frames); prepare more data or "
                     f"use fewer processes")
  return np.flatnonzero(owner == process_index)


class SampleMaker:
  """Makes sample `i` from local record `k` (see module docstring). Picklable for grain workers."""

  def __init__(self, builder_dir: str, split: str, table: reading.VideoTable, videos: np.ndarray, *,
               dataset_resolution: int, resolution: int, mask_per_part: bool, seed: int, process_index: int,
               config: ml_collections.ConfigDict):
    self.builder_dir, self.split = builder_dir, split
    self.dataset_resolution, self.resolution, self.mask_per_part = dataset_resolution, resolution, mask_per_part
    self.seed, self.process_index = seed, process_index
    ratios = np.asarray(config.kind_ratios, np.float64)
    if ratios.shape != (3,) or ratios.min() < 0 or ratios.sum() <= 0:
      raise ValueError(f"data.kind_ratios must be 3 non-negative numbers, got {config.kind_ratios}")
    self.ratios = ratios / ratios.sum()
    self.perturb = dict(config.perturb)
    self.augment = dict(config.augment)
    # Local record k -> global record, video, identity; records of a video/identity are contiguous.
    starts, counts = table.starts[videos], table.num_frames[videos]
    self.records = np.concatenate([np.arange(s, s + n) for s, n in zip(starts, counts)])
    self.video_start = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    self.video_len = counts
    self.rec_video = np.repeat(np.arange(len(videos)), counts)
    names = [table.identities[v] for v in videos]
    _, ident = np.unique(names, return_inverse=True)
    rec_ident = self.rec_ident = np.repeat(ident, counts)
    self.ident_start = np.array([np.flatnonzero(rec_ident == j)[0] for j in range(ident.max() + 1)], np.int64)
    self.ident_len = np.bincount(rec_ident).astype(np.int64)
    if np.any(np.diff(rec_ident) < 0):
      raise ValueError(f"{builder_dir}: records are not grouped by identity; rebuild with prepare_data.py")
    self._source = None

  def __len__(self) -> int:
    return len(self.records)

  def __getstate__(self):
    state = dict(self.__dict__)
    state["_source"] = None  # each worker opens its own reader
    return state

  def _read(self, k: int) -> dict:
    if self._source is None:
      self._source, _, _ = reading.open_split(self.builder_dir, self.split)
    return self._source[int(self.records[k])]

  def _image(self, rec: dict) -> np.ndarray:
    img = reading.frames_lib.decode_image(rec["image"], 3)
    if self.dataset_resolution != self.resolution:
      img = np.asarray(Image.fromarray(img).resize((self.resolution,) * 2, Image.BILINEAR))
    return img

  def _mask(self, rec: dict) -> np.ndarray:
    if self.mask_per_part:
      m = reading.frames_lib.untile_parts(reading.frames_lib.decode_image(rec["part_masks"], 1),
                                          masks_lib.mask_channels(True))
    else:
      m = reading.frames_lib.decode_image(rec["mask"], 1)
    if self.dataset_resolution != self.resolution:
      m = np.stack([np.asarray(Image.fromarray(m[..., c]).resize((self.resolution,) * 2, Image.BILINEAR))
                    for c in range(m.shape[-1])], -1)
    return m

  def _landmarks(self, rec: dict) -> np.ndarray:
    lm = np.asarray(rec["landmarks"], np.float32)
    if self.dataset_resolution != self.resolution:
      lm = layout.rescale(lm, self.resolution / self.dataset_resolution)
    return lm.astype(np.float32)

  @staticmethod
  def _outside(rng, start: int, length: int, n: int) -> int:
    """A uniform pick from [0, n) outside [start, start + length)."""
    r = int(rng.integers(n - length))
    return r if r < start else r + length

  def __call__(self, i: int, k: int) -> dict:
    rng = np.random.default_rng([self.seed, self.process_index, int(i)])
    kind = SampleKind(int(rng.choice(3, p=self.ratios)))
    v, ident = self.rec_video[k], self.rec_ident[k]
    if kind == SampleKind.SAME_VIDEO and self.video_len[v] < 2:
      kind = SampleKind.PERTURBED
    if kind == SampleKind.OTHER_PERSON and self.ident_len[ident] == len(self):
      kind = SampleKind.PERTURBED
    src = self._read(k)
    source, src_lm = self._image(src), self._landmarks(src)
    if kind == SampleKind.SAME_VIDEO:
      pos = k - self.video_start[v]
      d = int(rng.integers(self.video_len[v] - 1))
      drv = self._read(int(self.video_start[v] + d + (d >= pos)))
      sample = batch_lib.make_sample(kind, source, src_lm, self._landmarks(drv), mask_per_part=self.mask_per_part,
                                     target=self._image(drv), driving_mask=self._mask(drv))
    elif kind == SampleKind.OTHER_PERSON:
      drv = self._read(self._outside(rng, self.ident_start[ident], self.ident_len[ident], len(self)))
      sample = batch_lib.make_sample(kind, source, src_lm, self._landmarks(drv), mask_per_part=self.mask_per_part,
                                     driving_mask=self._mask(drv), target_mask=self._mask(src))
    else:
      drv_lm = perturb_lib.perturb_landmarks(src_lm, rng, image_size=self.resolution, **self.perturb)
      sample = batch_lib.make_sample(kind, source, src_lm, drv_lm, mask_per_part=self.mask_per_part,
                                     target_mask=self._mask(src))
    return self._augment(sample, rng)

  def _augment(self, sample: dict, rng: np.random.Generator) -> dict:
    """The same flip and colour jitter for every image, mask and landmark set of `sample`."""
    aug, s = self.augment, dict(sample)
    same = s["target"] is s["source"]
    if rng.uniform() < aug["flip_probability"]:
      r = self.resolution
      shared_mask = s["target_mask"] is s["driving_mask"]
      s["source"] = augment.flip_image(s["source"])
      s["source_landmarks"] = augment.flip_landmarks(s["source_landmarks"], r)
      s["driving_mask"] = augment.flip_mask(s["driving_mask"])
      s["driving_landmarks"] = augment.flip_landmarks(s["driving_landmarks"], r)
      s["target"] = s["source"] if same else augment.flip_image(s["target"])
      s["target_landmarks"] = s["source_landmarks"] if same else augment.flip_landmarks(s["target_landmarks"], r)
      s["target_mask"] = s["driving_mask"] if shared_mask else augment.flip_mask(s["target_mask"])
    if aug["brightness"] or aug["contrast"] or aug["saturation"]:
      params = augment.draw_color_jitter(rng, aug["brightness"], aug["contrast"], aug["saturation"])
      s["source"] = augment.color_jitter(s["source"], params)
      s["target"] = s["source"] if same else augment.color_jitter(s["target"], params)
    return s


class TrainIterator:
  """Iterator of this process's batches with `get_state()` / `set_state()` (JSON-serialisable)."""

  def __init__(self, maker: SampleMaker, batch_size: int, *, seed: int, process_index: int, process_count: int,
               num_workers: int, worker_buffer_size: int, read_threads: int):
    self.maker, self.batch_size = maker, batch_size
    self.seed, self.process_index, self.process_count = seed, process_index, process_count
    self._options = (num_workers, worker_buffer_size, read_threads)
    self._batches = (grain.MapDataset.range(len(maker))
                     .shuffle(seed=_shuffle_seed(seed, process_index))
                     .repeat(None)
                     .map_with_index(maker)
                     .batch(batch_size, drop_remainder=True))
    self._next_batch = 0
    self._it = None

  def _start(self):
    num_workers, buffer_size, threads = self._options
    ds = self._batches[self._next_batch:].to_iter_dataset(
        grain.ReadOptions(num_threads=max(threads, 1), prefetch_buffer_size=max(threads, 1) * 2))
    if num_workers > 0:
      if not flags.FLAGS.is_parsed():  # grain's workers read absl flags; outside an absl app use defaults
        flags.FLAGS.mark_as_parsed()
      ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers,
                                                       per_worker_buffer_size=buffer_size))
    self._it = iter(ds)

  def __iter__(self):
    return self

  def __next__(self) -> dict:
    if self._it is None:
      self._start()
    batch = next(self._it)
    self._next_batch += 1
    return {k: np.array(v) for k, v in batch.items()}  # plain arrays (grain may hand shared memory)

  def get_state(self) -> dict:
    return {"next_batch": self._next_batch, "seed": self.seed, "process_index": self.process_index,
            "process_count": self.process_count, "batch_size": self.batch_size}

  def set_state(self, state: dict) -> None:
    for key in ("seed", "process_count", "batch_size"):
      if key in state and state[key] != getattr(self, key):
        logging.warning("data iterator state was saved with %s=%s, now %s: the sample stream differs",
                        key, state[key], getattr(self, key))
    self.close()
    self._next_batch = int(state["next_batch"])

  def close(self) -> None:
    """Stops the grain workers (they also stop when the iterator is garbage-collected)."""
    it, self._it = self._it, None
    if it is not None and hasattr(it, "close"):
      it.close()


def _shuffle_seed(seed: int, process_index: int) -> int:
  return int(np.random.default_rng([seed, process_index, 0xDA7A]).integers(2**31))


def create_train_iterator(data_config: ml_collections.ConfigDict, *, global_batch_size: int, resolution: int,
                          mask_per_part: bool, seed: int, process_index: Optional[int] = None,
                          process_count: Optional[int] = None) -> TrainIterator:
  """This process's iterator of training batches from `data_config.data_dir` (see module docstring).

  Args:
    data_config: `config.data` (fields: `data/config.py`).
    global_batch_size: samples per step over all processes; each process yields
      `global_batch_size // process_count`.
    resolution: image size R of the batch; a dataset prepared at another size is resized.
    mask_per_part: masks with one channel per landmark part instead of one.
    seed: sampling seed (with the same seed the stream is the same).
    process_index, process_count: this process and the number of processes (default: JAX's).
  """
  if process_index is None or process_count is None:
    import jax  # pylint: disable=import-outside-toplevel
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
  if global_batch_size % process_count:
    raise ValueError(f"global_batch_size {global_batch_size} is not divisible by {process_count} processes")
  if not data_config.data_dir:
    raise ValueError("config.data.data_dir is empty: set it to the --output of experiments/prepare_data.py")
  builder_dir = reading.find_builder_dir(data_config.data_dir, resolution, data_config.dataset_name,
                                         data_config.dataset_config)
  _, table, dataset_resolution = reading.open_split(builder_dir, data_config.split)
  if dataset_resolution != resolution:
    logging.warning("dataset %s is %dx%d; resizing every sample to %dx%d (prepare it at --resolution=%d to "
                    "save the time)", builder_dir, dataset_resolution, dataset_resolution, resolution, resolution,
                    resolution)
  videos = shard_videos(table.num_frames, process_index, process_count)
  maker = SampleMaker(str(builder_dir), data_config.split, table, videos, dataset_resolution=dataset_resolution,
                      resolution=resolution, mask_per_part=mask_per_part, seed=seed, process_index=process_index,
                      config=data_config)
  logging.info("data: process %d/%d reads %d videos, %d frames of %s[%s]", process_index, process_count,
               len(videos), len(maker), builder_dir, data_config.split)
  return TrainIterator(maker, global_batch_size // process_count, seed=seed, process_index=process_index,
                       process_count=process_count, num_workers=data_config.num_workers,
                       worker_buffer_size=data_config.worker_buffer_size, read_threads=data_config.read_threads)
